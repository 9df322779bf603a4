"""Benchmarks against real peers (run with `python -m bench.<name>`)."""
