"""The peer benchmark harness: `python -m benchmarks.peers` (benchmarks/README.md)."""
