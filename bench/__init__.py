"""Benchmarks of retrain_plugins: what partial retraining saves and what it costs.

Run ``python -m bench`` from the repository root (``--quick`` for a smoke run); see bench/README.md.
"""
