"""Benchmark package: run ``python -m bench`` (see __main__)."""
