"""Benchmarks of sid: ``python -m benchmarks.learn | render | video | threed | cli | naive``, each printing
one JSON object; ``python -m benchmarks.gpu`` runs them all on a GPU (``benchmarks.bundle`` prepares it).

None of them is a timed test; ``tests/test_benchmarks.py`` only runs each with tiny settings so they
keep working. Results measured so far are in ``benchmarks/results/`` and docs/performance.md.
"""
