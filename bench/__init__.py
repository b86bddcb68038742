"""Benchmark programs for the ordering service, run from a checkout (not shipped in the wheel)."""
