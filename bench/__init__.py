"""Benchmarks of the fastkd losses against their peers, and the report that turns results into tables."""
