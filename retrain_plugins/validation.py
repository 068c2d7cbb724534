"""The spec checked against the Feast feature service it names: joins, columns, supported objects.

Run wherever a feature service view is loaded (:func:`retrain_plugins.feast_view.load_feature_service_view`),
so ``build_definitions``, the Component, every sensor tick, every run and ``retrain apply`` refuse
the same mistakes the same way, with a :class:`~retrain_plugins.errors.SpecError` that names the
feature view or column and says what to change. Objects Feast has but retraining cannot use (on-demand
and stream feature views, non-file sources) are refused while the view is described.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from retrain_plugins.errors import DataError, SpecError

if TYPE_CHECKING:
    from retrain_plugins.feast_view import FeatureServiceView
    from retrain_plugins.spec import RetrainingSpec

RESERVED = ("row_id", "window")  # columns every training set carries besides the label rows' own
FEAST_ON_OBJECT_STORES = (
    "Feast's DuckDB offline store reads a FileSource through ibis, which installs and loads DuckDB's "
    "httpfs extension for every s3:// path (a download from extensions.duckdb.org: it fails offline, "
    "and httpfs does not use the fsspec/AWS configuration this library reads with; "
    "see docs/feast-findings.md)"
)


def remote_feature_sources(view: "FeatureServiceView") -> dict[str, str]:
    """Feature view -> source URL, for the views whose source is on an object store (``s3://...``)."""
    from retrain_plugins.remote import is_remote

    return {fv.name: fv.source_path for fv in view.views if is_remote(fv.source_path)}


def check_feast_can_read(view: "FeatureServiceView", what: str, fix: str) -> None:
    """Refuse ``what`` (a Feast call) when a feature source is on an object store: Feast cannot read
    it offline (:data:`FEAST_ON_OBJECT_STORES`). ``fix`` says what to do instead."""
    remote = remote_feature_sources(view)
    if remote:
        first, url = next(iter(remote.items()))
        raise SpecError(
            f"{what} cannot read feature view {first!r}'s source {url}"
            + (f" (and {len(remote) - 1} more object-store source(s))" if len(remote) > 1 else "")
            + f": {FEAST_ON_OBJECT_STORES}. {fix}"
        )


def _check_s3_endpoints(view: "FeatureServiceView") -> None:
    """Refuse a FileSource whose ``s3_endpoint_override`` is not the endpoint its files are read from.

    Sources are read through fsspec configured by the environment (:mod:`retrain_plugins.remote`),
    one S3 filesystem per process; a source naming another endpoint would be read from the wrong
    server (or not found), so the two must agree.
    """
    from retrain_plugins.remote import configured_s3_endpoint, protocol

    for fv in view.views:
        override = fv.s3_endpoint_override
        if not override or protocol(fv.source_path) not in ("s3", "s3a"):
            continue
        configured = configured_s3_endpoint()
        if (configured or "").rstrip("/") != override.rstrip("/"):
            raise SpecError(
                f"feature view {fv.name!r}'s FileSource sets s3_endpoint_override={override!r}, but its "
                f"files are read through fsspec/s3fs from {configured or 'the default AWS endpoint'}: set "
                f"AWS_ENDPOINT_URL_S3={override} (or FSSPEC_S3_ENDPOINT_URL) where the sensor and runs "
                "execute, or remove the override"
            )


def check_spec_against_view(spec: "RetrainingSpec", view: "FeatureServiceView") -> None:
    """Refuse a spec whose label rows cannot be joined to ``view`` exactly as Feast joins them.

    Raises:
        SpecError: A view's join key has no label column (``labels.entity_columns``), a mapped key
            is used by no view, a feature name collides with a label-row column or another
            view's feature, or a column name is reserved; or ``retrieval: feast`` with a feature
            source on an object store (Feast cannot read it offline: use ``duckdb_asof``).
    """
    _check_s3_endpoints(view)
    if spec.retrieval == "feast":
        check_feast_can_read(
            view,
            "retrieval: feast",
            "Set `retrieval: duckdb_asof` (the same frames, read through fsspec), or keep the feature "
            "sources on a local or mounted path.",
        )
    lab = spec.labels
    mapped = lab.keys
    needed: dict[str, list[str]] = {}
    for fv in view.views:
        for key in fv.label_keys:
            needed.setdefault(key, []).append(fv.name)
        unmapped = [k for k in fv.label_keys if k not in mapped]
        if unmapped:
            hint = ", ".join(f"{k}: <label column>" for k in unmapped)
            raise SpecError(
                f"feature view {fv.name!r} of feature service {spec.feature_service!r} joins on "
                f"{list(fv.label_keys)}, but the label rows map only {sorted(mapped)}: add "
                f"labels.entity_columns {{{hint}}}"
                + (f" (and the key(s) already mapped: {', '.join(f'{k}: {c}' for k, c in mapped.items())})" if mapped else "")
            )
    unused = sorted(set(mapped) - set(needed))
    if unused:
        raise SpecError(
            f"labels.entity_columns maps {unused}, which no feature view of {spec.feature_service!r} joins on; "
            f"its views join on {sorted(needed)}"
        )
    label_columns = set(lab.columns)
    for column in (*label_columns,):
        if column in RESERVED:
            raise SpecError(f"label column {column!r} is a name the training sets reserve ({list(RESERVED)}): rename it")
    counts = Counter(view.feature_columns)
    twice = sorted(f for f, n in counts.items() if n > 1)
    if twice:
        owners = {f: [fv.name for fv in view.views if f in fv.features] for f in twice}
        raise SpecError(f"feature service {spec.feature_service!r} has features of the same name in several views: {owners}")
    for fv in view.views:
        for feature in fv.features:
            if feature in label_columns or feature in RESERVED:
                raise SpecError(
                    f"feature {feature!r} of feature view {fv.name!r} has the name of a label-row column "
                    f"or a reserved column ({sorted(label_columns | set(RESERVED))}): rename one of them"
                )


def check_label_source(spec: "RetrainingSpec", view: "FeatureServiceView | None" = None) -> None:
    """Fail with a message naming the column if the label source does not fit the spec.

    ``view`` also checks the spec against the feature service (see
    :func:`retrain_plugins.validation.check_spec_against_view`).
    """
    from retrain_plugins.sql import connect, parquet

    try:
        con = connect(spec.label_glob)
        described = con.execute(f"DESCRIBE SELECT * FROM {parquet('p')}", {"p": spec.label_glob}).fetchall()
    except Exception as exc:  # duckdb raises IOException/InvalidInputException variants
        raise DataError(f"cannot read label source {spec.label_glob}: {exc}") from exc
    types = {name: dtype for name, dtype, *_ in described}
    labels = spec.labels
    roles = [(f"entity_columns.{key}", column) for key, column in labels.keys.items()]
    roles += [
        ("timestamp_column", labels.timestamp_column),
        ("label_column", labels.label_column),
        ("cohort_column", labels.cohort_column),
        *(("feature_columns", c) for c in labels.feature_columns),
    ]
    for role, column in roles:
        if column not in types:
            raise SpecError(
                f"labels.{role} {column!r} is not a column of the label source {spec.label_glob}; "
                f"columns are {sorted(types)}"
            )
    if not types[labels.timestamp_column].startswith("TIMESTAMP"):
        raise DataError(
            f"label column {labels.timestamp_column!r} in {spec.label_glob} has type "
            f"{types[labels.timestamp_column]}, expected a timestamp"
        )
    if view is not None:
        check_spec_against_view(spec, view)
