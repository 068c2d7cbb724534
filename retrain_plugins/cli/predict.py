"""``retrain predict``: score rows (batch, a parquet file) or entities (online, Feast's online store)."""

from __future__ import annotations

import argparse

from retrain_plugins.cli.common import AddCommand, load_spec
from retrain_plugins.errors import RetrainError
from retrain_plugins.spec import RetrainingSpec


def cmd_predict(args: argparse.Namespace) -> int:
    import polars as pl

    from retrain_plugins.cli.table import render
    from retrain_plugins.layout import model_store
    from retrain_plugins.routing import RoutedModel

    spec = load_spec(args)
    model = RoutedModel.load(model_store(spec).storage)
    if args.entities or args.entity:
        from retrain_plugins.feast_store import feature_store
        from retrain_plugins.online import online_frame

        entities = _entities(spec, args)
        # An empty entry (``--cohorts north,,west``) reads that entity's cohort from its newest label row.
        cohorts = [c.strip() or None for c in args.cohorts.split(",")] if args.cohorts else None
        if cohorts is not None and len(cohorts) != len(entities):
            raise RetrainError(f"--cohorts lists {len(cohorts)} cohorts for {len(entities)} entities")
        frame = online_frame(spec, feature_store(str(spec.feature_repo)), entities, cohorts)
    elif args.input:
        frame = pl.read_parquet(args.input)
    else:
        raise RetrainError("predict needs --input rows.parquet, --entities id,id,... or --entity key=value,...")
    scored = model.predict(frame, timestamp_column=args.timestamp_column)
    if args.output:
        scored.write_parquet(args.output)
        print(f"wrote {scored.height} predictions to {args.output}")
    else:
        columns = [c for c in dict.fromkeys([*spec.labels.key_columns, spec.labels.cohort_column]) if c in scored.columns]
        print(render([*columns, "served_by", "route", "prediction"], scored.select([*columns, "served_by", "route", "prediction"]).head(50).rows()))
    return 0


def _entities(spec: RetrainingSpec, args: argparse.Namespace) -> list[dict]:
    """``--entities 1,2`` (one join key) or ``--entity k=v,k2=v2`` (repeated), typed like the label source."""
    from retrain_plugins.sql import connect, parquet

    lab = spec.labels
    described = connect(spec.label_glob).execute(f"DESCRIBE SELECT * FROM {parquet('p')}", {"p": spec.label_glob}).fetchall()
    numeric = {name for name, dtype, *_ in described if dtype.startswith(("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "U", "HUGEINT"))}
    floating = {name for name, dtype, *_ in described if dtype.startswith(("FLOAT", "DOUBLE", "DECIMAL"))}

    def typed(field: str, text: str):
        column = lab.keys.get(field, field)
        return int(text) if column in numeric else float(text) if column in floating else text

    if args.entities:
        if len(lab.keys) != 1:
            raise RetrainError(f"the feature service joins on {list(lab.keys)}: give each entity as --entity " + ",".join(f"{k}=..." for k in lab.keys))
        (key,) = lab.keys
        return [{key: typed(key, e)} for e in args.entities.split(",")]
    entities = []
    for given in args.entity:
        pairs = [part.split("=", 1) for part in given.split(",")]
        if any(len(p) != 2 for p in pairs):
            raise RetrainError(f"--entity {given!r}: expected key=value,key=value")
        entities.append({k: typed(k, v) for k, v in pairs})
    return entities


def register(add: AddCommand) -> None:
    predict = add("predict", "Score a parquet file through the routed model.", cmd_predict)
    predict.add_argument("--input", help="parquet with the cohort column and the features (batch)")
    predict.add_argument("--entities", help="comma-separated entity ids (one join key): features from Feast's online store")
    predict.add_argument(
        "--entity", action="append", default=[],
        help="one entity as key=value,... (every join key, plus request-time label columns); repeat per entity",
    )
    predict.add_argument(
        "--cohorts",
        help="comma-separated cohort per entity, for entities without label rows (an empty entry: read it from "
        "the entity's newest label row)",
    )
    predict.add_argument("--output", help="parquet to write (default: print the first rows)")
    predict.add_argument("--timestamp-column", help="route each row by its time to that window's sub-model")
