"""The ``translation`` attribute of :class:`~retrain_plugins.dagster.component.RetrainingComponent`.

Dagster's asset-spec translation, as in dagster-dbt's and dagster-sling's components: owners, tags,
kinds, group, automation condition... of every asset the retraining builds, templated with
``spec``, ``retraining`` and ``asset_name`` (:class:`RetrainingAsset`). What would break the
retraining (its keys, partitions, code version, skippable steps) is refused with the reason, when
the YAML is resolved (:data:`REFUSED_TRANSLATION`) and again on each translated spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import dagster as dg
from dagster.components.utils.translation import TranslationFn, TranslatorResolvingInfo
from pydantic import BaseModel

from retrain_plugins.dagster.component_attributes import AttributesError, located
from retrain_plugins.errors import SpecError

__all__ = ["REFUSED_TRANSLATION", "RetrainingAsset", "resolve_translation", "translated"]

REFUSED_TRANSLATION = {
    "key": "the keys are `<name>/<asset>`: the sensor and the runs address them; rename the retraining (`name:`)",
    "key_prefix": "the keys are `<name>/<asset>`: the sensor and the runs address them; rename the retraining (`name:`)",
    "partitions_def": "the partitions are window x cohort, from `windows:` and `cohorts:`",
    "code_version": (
        "the code version is the retraining's definition version (feature service, labels, lookback, "
        "trainer); it changes when they do, and the sensor's definition-change detection relies on it"
    ),
    "skippable": (
        "Dagster takes it from the asset's step, not from a mapped spec: training_set and sub_model are "
        "skippable (one subsettable step), the other assets are not"
    ),
}
"""``translation`` attributes the retraining cannot take, and why (every other AssetSpec attribute works)."""


class RetrainingAsset(NamedTuple):
    """What ``translation`` templates see besides ``spec``: ``retraining`` and ``asset_name``."""

    retraining: str  # the retraining's name, the key prefix
    asset_name: str  # labels, features, training_set, sub_model, fallback_model, model_bundle, online_features


def _refuse(context: dg.ResolutionContext, names: Sequence[str]) -> None:
    if names:
        reasons = "; ".join(f"`{n}`: {REFUSED_TRANSLATION[n]}" for n in names)
        where = located(context, [*context.path, names[0]])
        raise AttributesError(f"{'.'.join(map(str, context.path))}{where} cannot set {', '.join(names)}: {reasons}")


def resolve_translation(context: dg.ResolutionContext, model: Any) -> TranslationFn[RetrainingAsset]:
    """Dagster's ``translation`` (as in dagster-dbt and dagster-sling), minus what would break the retraining."""
    if isinstance(model, BaseModel):
        _refuse(context, [n for n in REFUSED_TRANSLATION if n in model.model_fields_set])
    info = TranslatorResolvingInfo(asset_attributes=model, resolution_context=context, model_key="translation")

    def translate(spec: dg.AssetSpec, asset: RetrainingAsset) -> dg.AssetSpec:
        return info.get_asset_spec(spec, {"spec": spec, **asset._asdict()})

    return translate


def translated(translation: TranslationFn[RetrainingAsset], spec: dg.AssetSpec, asset: RetrainingAsset) -> dg.AssetSpec:
    """``spec`` through ``translation``; a :class:`SpecError` if that changed what the retraining owns.

    A template can render a refused attribute that resolution could not see (``{{ ... }}``).
    """
    out = translation(spec, asset)
    changed = [n for n in ("key", "partitions_def", "code_version") if getattr(out, n) != getattr(spec, n)]
    if changed:
        reasons = "; ".join(f"`{n}`: {REFUSED_TRANSLATION[n]}" for n in changed)
        raise SpecError(f"translation of {spec.key.to_user_string()} changes {', '.join(changed)}: {reasons}")
    return out
