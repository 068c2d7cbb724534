"""Trainer plugins, found by short name (entry points) or dotted path."""

from __future__ import annotations

import functools
import importlib
import inspect
from importlib.metadata import entry_points
from collections.abc import Sequence
from typing import Any

from retrain_plugins.errors import SpecError
from retrain_plugins.tasks import Task
from retrain_plugins.trainers.base import FitOutcome, Trainer, evaluate, fit_and_evaluate

ENTRY_POINT_GROUP = "retrain_plugins.trainers"


@functools.lru_cache(maxsize=1)  # scanning every installed distribution costs ~12 ms a call
def _registered() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def trainer_class(name: str) -> type[Trainer]:
    """Resolve a trainer by registered short name or ``package.module:Class`` / ``package.module.Class``.

    Args:
        name: A name registered in the ``retrain_plugins.trainers`` entry-point group, or a
            dotted path to a Trainer subclass.

    Raises:
        SpecError: The name is unknown, cannot be imported, or is not a concrete Trainer subclass
            declaring ``name`` and ``suffix``.
    """
    registered = _registered()
    if name in registered:
        try:
            cls = registered[name].load()
        except (ImportError, AttributeError) as exc:
            raise SpecError(f"trainer {name!r} ({registered[name].value}) cannot be imported: {exc}") from exc
    elif "." in name or ":" in name:
        module_name, _, attr = name.replace(":", ".").rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise SpecError(f"trainer {name!r} cannot be imported: {exc}") from exc
    else:
        raise SpecError(f"unknown trainer {name!r}; registered trainers: {sorted(registered)}")
    if not (isinstance(cls, type) and issubclass(cls, Trainer)):
        raise SpecError(f"trainer {name!r} resolves to {cls!r}, which is not a retrain_plugins Trainer")
    if inspect.isabstract(cls):
        raise SpecError(f"trainer {name!r} resolves to {cls!r}, which leaves abstract methods unimplemented")
    undeclared = [attr for attr in ("name", "suffix") if not isinstance(getattr(cls, attr, None), str)]
    if undeclared:
        raise SpecError(f"trainer {name!r} resolves to {cls!r}, which does not declare {undeclared}")
    return cls


def make_trainer(
    name: str, params: dict[str, Any] | None = None, *, task: Task = "binary", categorical: Sequence[str] = ()
) -> Trainer:
    """Resolve ``name`` with :func:`trainer_class` and instantiate it for ``task`` and ``categorical``.

    Args:
        name: Registered short name or dotted path.
        params: Trainer parameters.
        task: The task the trainer fits (see :mod:`retrain_plugins.tasks`).
        categorical: The categorical feature columns (by name) of the data it fits on.

    Raises:
        SpecError: The trainer cannot be resolved, does not declare ``task`` in its ``tasks``, or
            is given categorical columns while not ``supports_categorical``.
    """
    cls = trainer_class(name)
    declared = getattr(cls, "tasks", frozenset({"binary"}))
    if task not in declared:
        raise SpecError(
            f"trainer {name!r} does not support task {task!r} (it supports {sorted(declared)}); "
            "choose another trainer or set the spec's task"
        )
    if categorical and not getattr(cls, "supports_categorical", False):
        raise SpecError(
            f"trainer {name!r} does not support categorical features, and the data has categorical "
            f"(string) columns {list(categorical)}: choose a trainer with supports_categorical "
            "(e.g. catboost) or encode them as numbers in the source"
        )
    if task == "binary" and not categorical:
        return cls(params)  # the only call a trainer written before tasks existed accepts
    return cls(params, task=task, categorical=tuple(categorical))


__all__ = ["ENTRY_POINT_GROUP", "FitOutcome", "Trainer", "evaluate", "fit_and_evaluate", "make_trainer", "trainer_class"]
