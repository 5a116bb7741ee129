"""Benchmarks of the platform's building blocks; run them all with ``make bench``.

Each module ``bench/<name>.py`` (not starting with ``_``) defines ``run() -> dict`` (sync or
async) returning ``{"parameters": {...}, "figures": {...}, "targets": [...]}``;
``python -m bench`` runs every one, prints the figures and writes
``bench/results/<name>.json``. Targets are reported, never asserted.
"""
