"""``retrain materialize --all``: build everything of a retraining in one command.

``dagster asset materialize --partition-range`` refuses a selection that mixes backfill policies
(the partitioned ``training_set`` / ``sub_model`` have a single-run policy, the serving assets
are unpartitioned), so a full build from Dagster's CLI takes two commands. This is one run on the
instance of ``DAGSTER_HOME``, as the demo's full materialization: every (window x cohort)
partition of both partitioned assets (one step, a single-run range), then ``fallback_model``,
``model_bundle`` and ``online_features``, in-process, with progress lines (steps, and partitions
done / total) on stderr.
"""

from __future__ import annotations

import argparse
import time

from retrain_plugins.cli.common import AddCommand, instance, load_retraining
from retrain_plugins.errors import RetrainError


def cmd_materialize(args: argparse.Namespace) -> int:
    from retrain_plugins.cli.runs import progress_line, run_in_process
    from retrain_plugins.dagster.definitions import build_definitions
    from retrain_plugins.dagster.assets import asset_keys
    from retrain_plugins.dagster.execution import full_build_tags, retraining_assets
    from retrain_plugins.partitions import cohorts, windows

    if not args.all:
        raise RetrainError("say what to build: --all (every partition and the serving assets)")
    spec, resources = load_retraining(args)
    defs = build_definitions(spec, resources=resources)
    with instance() as dagster:
        tags = full_build_tags(spec, dagster)
        n_windows, n_cohorts = len(windows(spec)), len(cohorts(spec, dagster))
        total = n_windows * n_cohorts
        progress_line(f"materializing {spec.name}: {total} partition(s) ({n_windows} windows x {n_cohorts} cohorts) and the serving assets, one run")
        started = time.perf_counter()
        result = run_in_process(defs, spec, dagster, selection=None, tags=tags, partitions=total)
    outcome = "success" if result.success else "FAILED"
    present = {key for assets in retraining_assets(defs, spec) for key in assets.keys}
    built = [name for name, key in asset_keys(spec).items() if key in present]
    print(f"run {result.run_id}: {outcome} in {time.perf_counter() - started:.1f} s ({total} partitions; {', '.join(built)})")
    return 0 if result.success else 1


def register(add: AddCommand) -> None:
    materialize = add("materialize", "Build a retraining on $DAGSTER_HOME's instance in one run, with progress.", cmd_materialize)
    materialize.add_argument(
        "--all", action="store_true",
        help="every (window x cohort) partition of training_set and sub_model, then fallback_model, model_bundle and "
        "online_features",
    )
