"""``retrain``: command-line entry point (demo, apply, status, predict)."""

from retrain_plugins.cli.main import main

__all__ = ["main"]
