"""Benchmarks (``python -m tmkd.bench.<name>``); they print numbers, tests never time anything."""
