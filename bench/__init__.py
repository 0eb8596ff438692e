"""Benchmark harness: `python -m bench all` (see bench/README.md)."""
