"""Trainer plugins, found by short name (entry points) or dotted path."""

from __future__ import annotations

import functools
import importlib
import inspect
from importlib.metadata import entry_points
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from retrain_plugins.errors import SpecError
from retrain_plugins.tasks import Task
from retrain_plugins.trainers.base import FitOutcome, Trainer, evaluate, fit_and_evaluate

if TYPE_CHECKING:
    from retrain_plugins.spec import RetrainingSpec

ENTRY_POINT_GROUP = "retrain_plugins.trainers"


@functools.lru_cache(maxsize=1)  # scanning every installed distribution costs ~12 ms a call
def _registered() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def trainer_class(name: str, *, allow_import: bool = True) -> type[Trainer]:
    """Resolve a trainer by registered short name or ``package.module:Class`` / ``package.module.Class``.

    Args:
        name: A name registered in the ``retrain_plugins.trainers`` entry-point group, or a
            dotted path to a Trainer subclass.

        allow_import: Whether a dotted path may be imported (a spec opts in with
            ``trainer.allow_import``: naming a module in a spec runs its code).

    Raises:
        SpecError: The name is unknown, cannot be imported, is a dotted path while imports are not
            allowed, or is not a concrete Trainer subclass declaring ``name`` and ``suffix``.
    """
    registered = _registered()
    if name in registered:
        try:
            cls = registered[name].load()
        except (ImportError, AttributeError) as exc:
            raise SpecError(f"trainer {name!r} ({registered[name].value}) cannot be imported: {exc}") from exc
    elif ("." in name or ":" in name) and not allow_import:
        raise SpecError(
            f"trainer {name!r} is a dotted path, not a registered trainer ({sorted(registered)}): importing it "
            "runs that module's code, so the spec must opt in with trainer.allow_import: true (or register "
            "the trainer under the retrain_plugins.trainers entry point)"
        )
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


@functools.lru_cache(maxsize=64)
def _checked(name: str, params_json: str, task: str, allow_import: bool) -> None:
    import json

    cls = trainer_class(name, allow_import=allow_import)
    tasks = [task] if task != "auto" else sorted(getattr(cls, "tasks", frozenset({"binary"})))[:1]
    for one in tasks:
        trainer = make_trainer(name, json.loads(params_json), task=one)  # type: ignore[arg-type]
        try:
            trainer.check_params()
        except (TypeError, ValueError) as exc:
            raise SpecError(f"trainer.params are not valid for trainer {name!r} ({one}): {exc}") from None


def check_trainer_spec(spec: "RetrainingSpec") -> None:
    """Refuse a spec whose trainer cannot be resolved, lacks the task, or rejects its parameters.

    A dry construction (and, for CatBoost, a one-tree fit on 8 rows): run when definitions load,
    by the sensor before it requests anything, and by every run, once per process and trainer spec.

    Raises:
        SpecError: naming the trainer and the problem.
    """
    import json

    trainer = spec.trainer
    _checked(trainer.name, json.dumps(trainer.params, sort_keys=True, default=str), spec.task, trainer.allow_import)


__all__ = ["ENTRY_POINT_GROUP", "FitOutcome", "Trainer", "check_trainer_spec", "evaluate", "fit_and_evaluate", "make_trainer", "trainer_class"]
