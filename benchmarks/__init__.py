"""Benchmarks of sid: ``python -m benchmarks.learn | render | cli | naive``, each printing one JSON object.

None of them is a timed test; ``tests/test_benchmarks.py`` only runs each with tiny settings so they
keep working. Results measured so far are in ``benchmarks/results/`` and docs/performance.md.
"""
