"""The demo code location: one retraining, declared in ``retraining.yaml``.

Thin on purpose: every piece comes from ``retrain_plugins``. ``dagster dev`` (see the README)
loads this module; the spec is read when Dagster loads definitions, not at import.
"""

from pathlib import Path

import dagster as dg

from retrain_plugins import RetrainingSpec, build_definitions

SPEC_FILE = Path(__file__).resolve().parent / "retraining.yaml"


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(RetrainingSpec.from_yaml(SPEC_FILE))
