"""Throughput/MFU benchmarks (not timed tests). Each prints one JSON line."""
