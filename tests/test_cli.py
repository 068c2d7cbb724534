"""The `retrain` command: the demo story end to end, status, and errors with exit codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
RETRAIN = str(Path(sys.executable).with_name("retrain"))


def _spec_file(root: Path, **changes) -> Path:
    raw = yaml.safe_load((REPO_ROOT / "dagster_project" / "defs" / "churn" / "defs.yaml").read_text())["attributes"]
    raw.update(feature_repo="feature_repo", data_dir="data")
    raw["windows"]["end"] = "2025-04-01"
    raw["trainer"]["params"] = {"iterations": 25, "depth": 4}
    raw.update(changes)
    path = root / "retraining.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(*args: str, root: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(root / "dagster_home")}
    env.pop("RETRAIN_SPEC", None)
    return subprocess.run([RETRAIN, *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


def test_demo_then_status(tmp_path):
    shutil.copytree(REPO_ROOT / "feature_repo", tmp_path / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    spec = _spec_file(tmp_path)
    done = _run("demo", "--spec", str(spec), "--size", "small", root=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    lines = [line for line in out.splitlines() if line.startswith("2025-")]
    assert len(lines) == 12
    retrained = [line for line in lines if "RETRAINED" in line]
    assert len(retrained) == 1 and "edited_rows" in retrained[0] and "2025-02-01  east" in retrained[0]
    assert "initial full run" in out and "partial (tick + runs)" in out
    # the history is in the Dagster instance the UI would open
    assert any((tmp_path / "dagster_home").iterdir())

    status = _run("status", "--spec", str(spec), root=tmp_path)
    assert status.returncode == 0, status.stderr
    rows = [line.split() for line in status.stdout.splitlines() if line.startswith("2025-")]
    assert len(rows) == 12 and all(r[2] == "current" for r in rows)


def test_errors_exit_non_zero_with_a_message(tmp_path):
    shutil.copytree(REPO_ROOT / "feature_repo", tmp_path / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    bad = _spec_file(tmp_path, cohorts=[])
    done = _run("status", "--spec", str(bad), root=tmp_path, timeout=120)
    assert done.returncode == 1
    assert "invalid retraining spec" in done.stderr and "cohorts" in done.stderr
    usage = _run("status", root=tmp_path, timeout=120)
    assert usage.returncode == 2 and "--spec" in usage.stderr


def test_help_lists_every_subcommand(tmp_path):
    done = _run("--help", root=tmp_path, timeout=120)
    assert done.returncode == 0
    for command in ("demo", "apply", "status", "predict"):
        assert command in done.stdout


def test_progress_reaches_the_terminal_while_a_runs_log_capture_holds_stderr(tmp_path, capfd):
    """Dagster's compute-log capture points descriptor 2 at the run's log file for the whole run and
    echoes it with a ``tail -F`` it terminates at the run's end; progress written to stderr in the
    run's last moments can miss the terminal. Progress goes around the capture, straight to it."""
    from dagster._core.execution.compute_logs import redirect_to_file

    from retrain_plugins.cli.runs import uncaptured_stderr

    log = tmp_path / "run.log"
    with uncaptured_stderr() as terminal:
        with redirect_to_file(sys.stderr, str(log)):  # what a run's capture does to stderr
            print("library output", file=sys.stderr, flush=True)
            print("step train: done in 1.0 s", file=terminal, flush=True)
    assert capfd.readouterr().err == "step train: done in 1.0 s\n"
    assert log.read_text() == "library output\n"
