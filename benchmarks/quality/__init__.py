"""The quality benchmark (see ``benchmarks/bench_quality.py``)."""
