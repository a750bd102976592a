"""Launchers: validate, flatten, allocate, pick block sizes and launch a backend; no autograd here."""
