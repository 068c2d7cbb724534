"""``import_feast`` defers typeguard's instrumentation of Feast to first call and keeps its checks.

Each check runs in a fresh interpreter (``feast`` is imported once per process): the deferred
import next to a plain ``import feast``, so the type errors compared are typeguard's own.
"""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import REPO_ROOT

PROBE = """
import json, sys
import typeguard._decorators as decorators
original = decorators.instrument
if sys.argv[1] == "deferred":
    from retrain_plugins.feast_import import import_feast
    feast = import_feast()
else:
    import feast
from feast import FeatureService, Field
from feast.types import Int64

out = {"restored": decorators.instrument is original,
       "deferred": hasattr(FeatureService.__init__, "__wrapped__")}
errors = []
for make in (lambda: FeatureService(name=5, features=[]), lambda: Field(name="x", dtype=Int64, description=7)):
    try:
        make()
        errors.append(None)
    except Exception as exc:
        errors.append([type(exc).__name__, str(exc)])
out["errors"] = errors
service = FeatureService(name="ok", features=[])
out["good"] = [service.name, Field(name="x", dtype=Int64).name]
print(json.dumps(out))
"""


def _probe(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_deferred_instrumentation_keeps_every_check_feast_makes():
    plain, deferred = _probe("plain"), _probe("deferred")
    assert not plain["deferred"] and deferred["deferred"]  # instrumented at first call, not at import
    assert deferred["restored"]  # typeguard is itself again after the import
    # the same typeguard errors, message for message, and correct calls work
    assert deferred["errors"] == plain["errors"]
    assert all(e is not None and e[0] == "TypeCheckError" for e in deferred["errors"]), deferred["errors"]
    assert 'argument "name" (int) is not an instance of str' in deferred["errors"][0][1]
    assert deferred["good"] == plain["good"] == ["ok", "x"]
