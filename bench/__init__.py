"""Benchmarks that print figures and record them in docs/performance.md (not tests).

``python -m bench`` runs all of them; ``python -m bench NAME [options]`` runs one
(``submit``, ``event``, ``cluster``, ``uploads``); ``--help`` after a name lists its options.
"""
