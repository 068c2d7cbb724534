"""Conformance checks a trainer plugin must pass, for built-in and third-party trainers alike.

Run them all from a plugin's own test suite::

    from retrain_plugins.testing import check_trainer

    def test_my_trainer_conforms():
        check_trainer(MyTrainer)

or one by one (``CHECKS``), e.g. parametrized with pytest. Every check takes the trainer class
and optional params (default: the class's ``test_params``), fits on :func:`make_dataset`, and
raises ``AssertionError`` naming what is wrong. A check fits at most twice on a few hundred rows.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import pickle
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from retrain_plugins.trainers.base import Trainer, fit_and_evaluate

Check = Callable[[type[Trainer], Mapping[str, Any] | None], None]

PICKLE_PROTO = 0x80  # first byte of every pickle of protocol 2 or higher
LABEL = "label"
MIN_AUC = 0.65  # holdout AUC on make_dataset's signal; a working learner gets about 0.8


def make_dataset(n_rows: int = 480, seed: int = 0) -> tuple[pl.DataFrame, np.ndarray]:
    """A deterministic, learnable binary problem with missing values.

    Args:
        n_rows: Number of rows.
        seed: Seed of the generator; the same arguments always give the same data.

    Returns:
        Float64 features ``signal`` (no NaN), ``inverse`` and ``noise`` (10% NaN) and ``sparse``
        (40% NaN, its missingness is informative), and int64 labels in {0, 1}.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_rows, 4))
    x[:, 1:3][rng.random((n_rows, 2)) < 0.1] = np.nan
    x[:, 3][rng.random(n_rows) < 0.4] = np.nan
    logit = 2.0 * x[:, 0] - 1.2 * np.nan_to_num(x[:, 1]) + 0.8 * np.isnan(x[:, 3])
    labels = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return pl.DataFrame(x, schema=["signal", "inverse", "noise", "sparse"]), labels


@contextlib.contextmanager
def forbid_pickle() -> Iterator[list[str]]:
    """Make the ``pickle`` module's loaders refuse to run, recording every attempt.

    Patches ``pickle.load``, ``pickle.loads``, ``pickle.Unpickler`` and the pure-Python
    unpickler (used by joblib) for the duration; not thread-safe. Yields the list of attempts.
    """
    attempts: list[str] = []

    def refuse(what: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            attempts.append(what)
            raise pickle.UnpicklingError(f"{what} is forbidden while loading a model artifact")

        return refused

    targets: list[tuple[Any, str]] = [
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "Unpickler"),
        (pickle, "_load"),
        (pickle, "_loads"),
        (pickle._Unpickler, "load"),
    ]
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr in targets]
    try:
        for owner, attr in targets:
            setattr(owner, attr, refuse(f"pickle {attr}"))
        yield attempts
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)


def _require(condition: Any, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _trainer(trainer_cls: type[Trainer], params: Mapping[str, Any] | None) -> Trainer:
    return trainer_cls(dict(trainer_cls.test_params if params is None else params))


def _predictions(trainer: Trainer, model: Any, features: pl.DataFrame, what: str) -> np.ndarray:
    p = trainer.predict_proba(model, features)
    _require(isinstance(p, np.ndarray), f"{what}: predict_proba returned {type(p).__name__}, not a numpy array")
    _require(p.shape == (features.height,), f"{what}: predictions have shape {p.shape}, not ({features.height},)")
    _require(np.issubdtype(p.dtype, np.floating), f"{what}: predictions have dtype {p.dtype}, not float")
    _require(np.all((p >= 0.0) & (p <= 1.0)), f"{what}: predictions outside [0, 1] (or NaN)")
    return p


def _saved(trainer: Trainer, model: Any, folder: Path, stem: str = "model") -> Path:
    path = folder / f"{stem}{trainer.suffix}"
    trainer.save(model, path)
    _require(path.is_file() and path.stat().st_size > 0, f"save wrote no file (or an empty one) at {path}")
    return path


def check_declarations(trainer_cls: type[Trainer], params: Mapping[str, Any] | None = None) -> None:
    """The class is a concrete Trainer declaring ``name``, ``suffix``, ``defaults`` and ``test_params``."""
    is_trainer = isinstance(trainer_cls, type) and issubclass(trainer_cls, Trainer)
    _require(is_trainer, f"{trainer_cls!r} is not a Trainer subclass")
    _require(not inspect.isabstract(trainer_cls), f"{trainer_cls.__qualname__} leaves abstract methods unimplemented")
    name, suffix = getattr(trainer_cls, "name", None), getattr(trainer_cls, "suffix", None)
    _require(isinstance(name, str) and name and name == "".join(name.split()), f"name must be a word, got {name!r}")
    ok_suffix = isinstance(suffix, str) and suffix.startswith(".") and len(suffix) > 1
    _require(ok_suffix, f"suffix must look like '.ext', got {suffix!r}")
    _require(isinstance(trainer_cls.defaults, Mapping), "defaults must be a mapping")
    _require(isinstance(trainer_cls.test_params, Mapping), "test_params must be a mapping")
    trainer = _trainer(trainer_cls, params)
    missing = [k for k in trainer_cls.defaults if k not in trainer.params]
    _require(not missing, f"instance params lack defaults {missing}; call Trainer.__init__")


def check_fit_predict(trainer_cls: type[Trainer], params: Mapping[str, Any] | None = None) -> None:
    """Fits on rows with NaNs; predictions lie in [0, 1], beat chance, and ignore batch composition."""
    from sklearn.metrics import roc_auc_score  # deferred: importing sklearn.metrics takes ~1.3 s

    features, labels = make_dataset()
    n_train = features.height * 3 // 4
    trainer = _trainer(trainer_cls, params)
    model = trainer.fit(features.head(n_train), labels[:n_train])
    holdout = features.tail(features.height - n_train)
    p = _predictions(trainer, model, holdout, "holdout")
    auc = roc_auc_score(labels[n_train:], p)
    _require(auc >= MIN_AUC, f"holdout AUC {auc:.3f} < {MIN_AUC} on a learnable signal: not learning")
    parts = np.concatenate([_predictions(trainer, model, holdout.slice(s, 7), "subset") for s in (0, 7)])
    _require(np.array_equal(parts, p[:14]), "a row's prediction depends on the other rows in the batch")


def check_deterministic_refit(trainer_cls: type[Trainer], params: Mapping[str, Any] | None = None) -> None:
    """Two fits on the same rows, by two instances, give identical predictions."""
    features, labels = make_dataset()
    first = _trainer(trainer_cls, params)
    second = _trainer(trainer_cls, params)
    p1 = _predictions(first, first.fit(features, labels), features, "first fit")
    p2 = _predictions(second, second.fit(features, labels), features, "second fit")
    differ = int(np.sum(p1 != p2))
    _require(differ == 0, f"refit is not deterministic: {differ} of {len(p1)} predictions differ (fix seeds)")


def check_save_load_round_trip(trainer_cls: type[Trainer], params: Mapping[str, Any] | None = None) -> None:
    """A saved and reloaded model, loaded by a fresh instance, predicts exactly the same."""
    features, labels = make_dataset()
    trainer = _trainer(trainer_cls, params)
    model = trainer.fit(features, labels)
    before = _predictions(trainer, model, features, "fitted model")
    with tempfile.TemporaryDirectory() as tmp:  # predict while the file exists: loading may be lazy
        loaded = _trainer(trainer_cls, params).load(_saved(trainer, model, Path(tmp)))
        after = _predictions(trainer, loaded, features, "loaded model")
    differ = int(np.sum(before != after))
    gap = float(np.max(np.abs(before - after)))
    _require(differ == 0, f"save/load changes {differ} of {len(before)} predictions (max difference {gap:.3g})")


def check_save_is_repeatable(trainer_cls: type[Trainer], params: Mapping[str, Any] | None = None) -> None:
    """Saving one model twice gives identical bytes (the model store names artifacts by hash)."""
    features, labels = make_dataset()
    trainer = _trainer(trainer_cls, params)
    model = trainer.fit(features, labels)
    with tempfile.TemporaryDirectory() as tmp:
        first = _saved(trainer, model, Path(tmp), "first").read_bytes()
        second = _saved(trainer, model, Path(tmp), "second").read_bytes()
    _require(first == second, "saving the same model twice gives different bytes (timestamps in the file?)")


def check_artifact_not_pickle(trainer_cls: type[Trainer], params: Mapping[str, Any] | None = None) -> None:
    """The saved file is not a pickle and loads with every ``pickle`` loader disabled."""
    features, labels = make_dataset()
    trainer = _trainer(trainer_cls, params)
    model = trainer.fit(features, labels)
    with tempfile.TemporaryDirectory() as tmp:
        path = _saved(trainer, model, Path(tmp))
        _require(path.read_bytes()[0] != PICKLE_PROTO, f"{path.name} starts with the pickle protocol opcode 0x80")
        with forbid_pickle() as attempts:
            try:
                loaded = _trainer(trainer_cls, params).load(path)
            except Exception as exc:
                _require(not attempts, f"load tried to unpickle ({', '.join(attempts)}); artifacts must not be pickles")
                raise AssertionError(f"load failed with pickle disabled: {type(exc).__name__}: {exc}") from exc
        _require(not attempts, f"load tried to unpickle ({', '.join(attempts)}); artifacts must not be pickles")
        _predictions(trainer, loaded, features.head(5), "model loaded with pickle disabled")


def check_fit_and_evaluate_metadata(trainer_cls: type[Trainer], params: Mapping[str, Any] | None = None) -> None:
    """``fit_and_evaluate`` gives JSON-ready metrics describing the returned model."""
    from sklearn.metrics import roc_auc_score  # deferred, see check_fit_predict

    features, labels = make_dataset()
    frame = features.with_columns(pl.Series(LABEL, labels))
    trainer = _trainer(trainer_cls, params)
    outcome = fit_and_evaluate(trainer, frame, features.columns, LABEL, 0.25, where="conformance")
    m = outcome.metrics
    n, n_hold = features.height, round(features.height * 0.25)
    for key in ("rows", "rows_train", "rows_holdout"):
        _require(type(m.get(key)) is int, f"metrics[{key!r}] is {m.get(key)!r}, not an int")
    _require((m["rows"], m["rows_train"], m["rows_holdout"]) == (n, n - n_hold, n_hold), f"row counts {m}")
    rate = m.get("label_rate")
    _require(type(rate) is float and math.isclose(rate, labels.mean()), f"label_rate {rate!r} is not the label mean")
    auc = m.get("auc_holdout")
    _require(type(auc) is float and 0.0 <= auc <= 1.0, f"auc_holdout {auc!r} is not a float in [0, 1]")
    p = _predictions(trainer, outcome.model, features.tail(n_hold), "fit_and_evaluate model")
    _require(math.isclose(auc, roc_auc_score(labels[-n_hold:], p)), "auc_holdout does not describe the returned model")
    loss = m.get("logloss_holdout")
    _require(loss is None or (type(loss) is float and math.isfinite(loss) and loss >= 0), f"logloss_holdout {loss!r}")
    _require(isinstance(outcome.seconds, float) and outcome.seconds >= 0, f"seconds {outcome.seconds!r}")
    json.dumps(m)  # metrics go into the manifest


CHECKS: tuple[Check, ...] = (
    check_declarations,
    check_fit_predict,
    check_deterministic_refit,
    check_save_load_round_trip,
    check_save_is_repeatable,
    check_artifact_not_pickle,
    check_fit_and_evaluate_metadata,
)


def check_trainer(trainer_cls: type[Trainer], params: Mapping[str, Any] | None = None) -> None:
    """Run every conformance check on a trainer class.

    Args:
        trainer_cls: The Trainer subclass to check.
        params: Trainer params to fit with; ``None`` uses ``trainer_cls.test_params``.

    Raises:
        AssertionError: Listing every failed check and why.
    """
    failures = []
    for check in CHECKS:
        try:
            check(trainer_cls, params)
        except AssertionError as exc:
            failures.append(f"{check.__name__}: {exc}")
        except Exception as exc:  # a crash is a failed check too; report it with the rest
            failures.append(f"{check.__name__}: raised {type(exc).__name__}: {exc}")
    if failures:
        who = f"{getattr(trainer_cls, '__module__', '?')}.{getattr(trainer_cls, '__qualname__', trainer_cls)}"
        listing = "\n- ".join(failures)
        raise AssertionError(f"trainer {who} fails {len(failures)} of {len(CHECKS)} checks:\n- {listing}")


__all__ = [
    "CHECKS",
    "Check",
    "check_artifact_not_pickle",
    "check_declarations",
    "check_deterministic_refit",
    "check_fit_and_evaluate_metadata",
    "check_fit_predict",
    "check_save_is_repeatable",
    "check_save_load_round_trip",
    "check_trainer",
    "forbid_pickle",
    "make_dataset",
]
