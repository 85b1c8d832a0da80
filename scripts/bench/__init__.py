"""The benchmark behind scripts/benchmark.py: harness (timing, bytes, deviations), sections, report, peers."""
