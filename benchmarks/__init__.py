"""Throughput and latency benchmarks, runnable on their own (see README.md)."""
