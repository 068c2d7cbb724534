"""``import_feast`` defers typeguard's instrumentation of Feast to first call and keeps its checks.

Each check runs in a fresh interpreter (``feast`` is imported once per process): the deferred
import next to a plain ``import feast``, so the type errors compared are typeguard's own. Three
kinds of function: Feast's imported with ``feast``, Feast's imported later (its DuckDB offline
store imports the MLflow data source at the first read), and another package's ``@typechecked``.
"""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import REPO_ROOT

# Another package's typechecked function (typeguard needs a module with source: not `-c`'s __main__).
OTHER = """
from typeguard import typechecked

@typechecked
def double(x: int) -> int:
    return 2 * x
"""

PROBE = """
import json, sys
sys.path.insert(0, sys.argv[2])
if sys.argv[1] == "deferred":
    from retrain_plugins.feast_import import import_feast
    feast = import_feast()
else:
    import feast
from feast import FeatureService, Field
from feast.types import Int64

out = {"later_imported_before_use": "feast.infra.data_sources.mlflow.mlflow_dataset_source" in sys.modules}
from feast.infra.data_sources.mlflow.mlflow_dataset_source import MlflowDatasetSource
from other_package import double
out["deferred"] = {
    "feast": hasattr(FeatureService.__init__, "__wrapped__"),
    "feast imported later": hasattr(MlflowDatasetSource.__init__, "__wrapped__"),
    "other package": hasattr(double, "__wrapped__"),
}
errors = []
for make in (
    lambda: FeatureService(name=5, features=[]),
    lambda: Field(name="x", dtype=Int64, description=7),
    lambda: MlflowDatasetSource(name=5, batch_source=None),
    lambda: double("two"),
):
    try:
        make()
        errors.append(None)
    except Exception as exc:
        errors.append([type(exc).__name__, str(exc)])
out["errors"] = errors
service = FeatureService(name="ok", features=[])
out["good"] = [service.name, Field(name="x", dtype=Int64).name, double(2)]
print(json.dumps(out))
"""


def _probe(mode: str, other: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode, other], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_deferred_instrumentation_keeps_every_check_feast_makes(tmp_path):
    (tmp_path / "other_package.py").write_text(OTHER)
    plain, deferred = _probe("plain", str(tmp_path)), _probe("deferred", str(tmp_path))
    assert not plain["later_imported_before_use"] and not deferred["later_imported_before_use"]
    assert plain["deferred"] == {"feast": False, "feast imported later": False, "other package": False}
    # every Feast method is instrumented at its first call, also in a Feast module imported after
    # `feast`; another package's @typechecked is typeguard's own, at definition
    assert deferred["deferred"] == {"feast": True, "feast imported later": True, "other package": False}
    # the same typeguard errors, message for message, and correct calls work
    assert deferred["errors"] == plain["errors"]
    assert all(e is not None and e[0] == "TypeCheckError" for e in deferred["errors"]), deferred["errors"]
    assert 'argument "name" (int) is not an instance of str' in deferred["errors"][0][1]
    assert deferred["good"] == plain["good"] == ["ok", "x", 4]
