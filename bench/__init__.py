"""Benchmarks of MM-IM on the real stack: ``make bench`` (``QUICK=1`` for a smoke run)."""
