"""The demo code location: everything it defines comes from its ``defs/`` folder.

Thin on purpose: ``defs/churn/defs.yaml`` declares the demo retraining as a
:class:`retrain_plugins.dagster.component.RetrainingComponent`; every piece comes from
``retrain_plugins``. ``dagster dev`` (see the README) loads this module; the defs folder is read
when Dagster loads definitions, not at import.
"""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
