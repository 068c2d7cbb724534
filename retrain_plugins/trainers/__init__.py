"""Trainer plugins, found by short name (entry points) or dotted path."""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import os
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path
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


def check_cache_dir() -> Path:
    """Where passed trainer checks are remembered: ``$RETRAIN_PLUGINS_CACHE`` or the user's cache folder."""
    given = os.environ.get("RETRAIN_PLUGINS_CACHE")
    if given:
        return Path(given) / "trainer-checks"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "retrain_plugins" / "trainer-checks"


def _passed_marker(cls: type[Trainer], name: str, params_json: str, task: str) -> Path | None:
    """The file that says this exact check passed with these library versions (None: not cacheable).

    Only a trainer that names its library (``Trainer.library``, a distribution name) is cached: the
    key holds that library's version and this package's, so an upgrade of either checks again.
    """
    library = getattr(cls, "library", None)
    if not library:
        return None
    try:
        versions = [version("retrain-plugins"), version(library)]
    except PackageNotFoundError:
        return None
    key = "\0".join([name, f"{cls.__module__}.{cls.__qualname__}", params_json, task, *versions])
    return check_cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()}.ok"


@functools.lru_cache(maxsize=64)
def _checked(name: str, params_json: str, task: str, allow_import: bool) -> None:
    import json

    cls = trainer_class(name, allow_import=allow_import)
    marker = _passed_marker(cls, name, params_json, task)
    if marker is not None and marker.exists():
        return  # passed before with the same library versions: the sensor's process need not import it
    tasks = [task] if task != "auto" else sorted(getattr(cls, "tasks", frozenset({"binary"})))[:1]
    for one in tasks:
        trainer = make_trainer(name, json.loads(params_json), task=one)  # type: ignore[arg-type]
        try:
            trainer.check_params()
        except (TypeError, ValueError) as exc:
            raise SpecError(f"trainer.params are not valid for trainer {name!r} ({one}): {exc}") from None
    if marker is not None:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:  # a read-only home: the check simply runs again in the next process
            pass


def check_trainer_spec(spec: "RetrainingSpec") -> None:
    """Refuse a spec whose trainer cannot be resolved, lacks the task, or rejects its parameters.

    A dry construction (and, for CatBoost, a one-tree fit on 8 rows): run when definitions load,
    by the sensor before it requests anything, and by every run, once per process and trainer spec.
    A check that passed is remembered on disk (:func:`check_cache_dir`, keyed by the trainer, its
    parameters, the task and the versions of this package and of the trainer's ``library``), so
    processes that only load definitions (the code server evaluating the sensor, a run's start)
    skip the fit and the import of CatBoost (over a second) once it passed on this machine; a
    failing check is never remembered.

    Raises:
        SpecError: naming the trainer and the problem.
    """
    import json

    trainer = spec.trainer
    _checked(trainer.name, json.dumps(trainer.params, sort_keys=True, default=str), spec.task, trainer.allow_import)


__all__ = ["ENTRY_POINT_GROUP", "FitOutcome", "Trainer", "check_trainer_spec", "evaluate", "fit_and_evaluate", "make_trainer", "trainer_class"]
