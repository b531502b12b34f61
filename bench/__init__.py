"""Benchmarks: `python -m bench` (the full run, `make bench`) and single-purpose scripts."""
