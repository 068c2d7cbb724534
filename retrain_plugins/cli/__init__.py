"""``retrain``: command-line entry point (see :mod:`retrain_plugins.cli.main`)."""

from retrain_plugins.cli.main import main

__all__ = ["main"]
