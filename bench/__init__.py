"""The benchmark: our compiler on the repository's real-data models, beside the paper's table.

    python -m bench [--quick] [--models a,b] [--out DIR] [--append]

See bench/run.py for what is measured and docs/benchmarks.md for the last full run.
"""
