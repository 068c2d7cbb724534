"""Trainer plugins, found by short name (entry points) or dotted path."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from retrain_plugins.errors import SpecError
from retrain_plugins.trainers.base import FitOutcome, Trainer, fit_and_evaluate

ENTRY_POINT_GROUP = "retrain_plugins.trainers"


def _registered() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def trainer_class(name: str) -> type[Trainer]:
    """Resolve a trainer by registered short name or ``package.module:Class`` / ``package.module.Class``."""
    registered = _registered()
    if name in registered:
        cls = registered[name].load()
    elif "." in name or ":" in name:
        module_name, _, attr = name.replace(":", ".").rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise SpecError(f"trainer {name!r} cannot be imported: {exc}") from exc
    else:
        raise SpecError(f"unknown trainer {name!r}; registered trainers: {sorted(registered)}")
    if not (isinstance(cls, type) and issubclass(cls, Trainer)):
        raise SpecError(f"trainer {name!r} resolves to {cls!r}, which is not a retrain_plugins Trainer")
    return cls


def make_trainer(name: str, params: dict[str, Any] | None = None) -> Trainer:
    return trainer_class(name)(params)


__all__ = ["ENTRY_POINT_GROUP", "FitOutcome", "Trainer", "fit_and_evaluate", "make_trainer", "trainer_class"]
