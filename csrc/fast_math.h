// Branch-free fp32 exp and log that compilers vectorise (no libm call in the loop).
//
// Both follow the classic Cephes single-precision recipes (S. L. Moshier, "Methods and Programs for
// Mathematical Functions", 1989): exp by x = n·ln2 + r with a two-part ln2 and a degree-5 polynomial
// in r; log by splitting off the binary exponent and a degree-8 polynomial around 1. Error about one
// ulp on the ranges used here. Unlike libm they flush results below FLT_MIN to 0 (exp) and treat
// denormal inputs as 0 (log), which only ever touches probabilities under 1e-38.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

// Row helpers are forced inline so that they are compiled for each target clone of their caller.
#if defined(__GNUC__)
#define FASTKD_INLINE inline __attribute__((always_inline))
#else
#define FASTKD_INLINE inline
#endif

namespace fastkd {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

FASTKD_INLINE float bits_to_float(std::int32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

FASTKD_INLINE std::int32_t float_to_bits(float x) {
  std::int32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
}

// exp(x); 0 for x < -87.3 (so exp(-inf) = 0), inputs above 88.3 clamp there.
FASTKD_INLINE float fast_exp(float x) {
  const float xc = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
  const float shifter = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer in the low bits
  const float t = xc * 1.44269504088896341f + shifter;
  const std::int32_t n = float_to_bits(t) - float_to_bits(shifter);
  const float nf = t - shifter;
  const float r = (xc - nf * 0.693359375f) + nf * 2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const float result = y * bits_to_float((n + 127) << 23);
  return x < -87.3f ? 0.0f : result;
}

// log(x) for x >= 0: -inf at 0 (and for denormals); finite positive normals otherwise.
FASTKD_INLINE float fast_log(float x) {
  const std::int32_t bits = float_to_bits(x);
  std::int32_t e = (bits >> 23) - 126;                                 // x = m·2^e, m in [0.5, 1)
  float m = bits_to_float((bits & 0x007FFFFF) | 0x3F000000);
  const bool low = m < 0.707106781186547524f;
  e -= low ? 1 : 0;
  m = low ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  const float ef = static_cast<float>(e);
  y = y * m * z - 2.12194440e-4f * ef - 0.5f * z;
  const float result = m + y + 0.693359375f * ef;
  return x < 1.17549435e-38f ? kNegInf : result;
}

}  // namespace fastkd
