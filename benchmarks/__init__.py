"""Speed and memory benchmarks (``bench_*.py``), each comparing variants side by side in one run.

Run them with ``python -m benchmarks`` (or ``make bench``); see ``benchmarks/__main__.py``.
"""
