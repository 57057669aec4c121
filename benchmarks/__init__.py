"""Benchmarks (make bench): figures, never assertions. See BENCHMARKS.md."""
