"""The benchmark behind scripts/benchmark.py: harness (timing, bytes, deviations), sections, assisted, report, peers."""
