"""Which columns of a training set a model sees, and what kind each is.

A training set carries the label rows' own columns (join keys, label time, cohort, label, and
``labels.feature_columns``), a ``window`` column, and the feature service's features. A model sees
the feature service's features followed by the label rows' feature columns. Whether a feature is
categorical is read off its type in the frame: strings (and polars categoricals, enums, booleans
stored as text) are categorical, everything else numeric. The type comes from the source's
schema, so it is the same for every partition of one retraining.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from retrain_plugins.feast_view import FeatureServiceView
    from retrain_plugins.spec import RetrainingSpec

_CATEGORICAL = (pl.String, pl.Categorical, pl.Enum)


def model_features(spec: "RetrainingSpec", view: "FeatureServiceView") -> list[str]:
    """The columns a sub-model is fitted on, in order: the feature service's, then the label rows'."""
    return list(dict.fromkeys([*view.feature_columns, *spec.labels.feature_columns]))


def is_categorical(dtype: pl.DataType) -> bool:
    """Whether a column of this polars type is a categorical feature."""
    return isinstance(dtype, _CATEGORICAL) or dtype in _CATEGORICAL


def categorical_features(frame: pl.DataFrame | pl.Schema, features: Sequence[str]) -> list[str]:
    """The categorical ones among ``features``, by their type in ``frame`` (or a schema)."""
    schema = frame.schema if isinstance(frame, pl.DataFrame) else frame
    return [f for f in features if f in schema and is_categorical(schema[f])]
