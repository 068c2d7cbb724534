"""Reporting: result tables, target checks, and the markdown of bench/RESULTS.md."""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
from collections.abc import Sequence
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class Table:
    """One result table: a title, column headers, rows of cells and notes printed under it."""

    title: str
    headers: Sequence[str]
    rows: list[Sequence[Any]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def markdown(self) -> str:
        """The table as GitHub markdown (readable as plain text too)."""
        cells = [[_cell(c) for c in row] for row in self.rows]
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.headers) + " |"]
        lines.append("|" + "|".join("---" for _ in self.headers) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|")


@dataclasses.dataclass(frozen=True)
class Check:
    """A target from the issue and what this run measured against it (``met`` None: no verdict)."""

    figure: str
    measured: str
    target: str
    met: bool | None
    sized: bool = True  # the verdict needs the default size (speed, quality); False: correctness

    @property
    def status(self) -> str:
        return {True: "met", False: "NOT met", None: "n/a"}[self.met]


@dataclasses.dataclass
class BenchResult:
    """What one benchmark module reports."""

    name: str
    title: str
    tables: list[Table]
    checks: list[Check]
    notes: list[str] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)  # raised, or wrong values: never speed
    seconds: float = 0.0

    def markdown(self) -> str:
        """Section of RESULTS.md: title, notes, every table."""
        parts = [f"## {self.title}", f"_Benchmark `{self.name}`, {self.seconds:.0f} s._"]
        parts += [f"- {n}" for n in self.notes]
        parts += [t.markdown() for t in self.tables]
        if self.failures:
            parts.append("**Failures:**\n\n" + "\n".join(f"- {f}" for f in self.failures))
        return "\n\n".join(parts)


def versions() -> dict[str, str]:
    """Versions of Python and of the packages whose speed is measured (no imports needed)."""
    found = {"python": platform.python_version()}
    for package in ("dagster", "feast", "duckdb", "catboost", "polars", "pyarrow"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores (`os.cpu_count()`), {memory:.0f} GiB RAM, {platform.platform()}"


def summary_table(results: list[BenchResult]) -> Table:
    """The one combined table: every target with its measured value and verdict."""
    table = Table("Targets", ["benchmark", "figure", "measured", "target", "status"])
    for result in results:
        for check in result.checks:
            table.rows.append([result.title.split(".")[0], check.figure, check.measured, check.target, check.status])
    return table


def verdicts(checks: list[Check]) -> list[str]:
    """The short 'targets met / not met' list."""
    met = [c.figure for c in checks if c.met is True]
    missed = [f"{c.figure} ({c.measured}; target {c.target})" for c in checks if c.met is False]
    other = [c.figure for c in checks if c.met is None]
    lines = [f"- Met ({len(met)}): " + ("; ".join(met) if met else "none")]
    lines.append(f"- Not met ({len(missed)}): " + ("; ".join(missed) if missed else "none"))
    if other:
        lines.append(f"- No verdict ({len(other)}): " + "; ".join(other))
    return lines


def revision() -> str:
    """Which code was measured: ``BENCH_REVISION`` if set, else the git commit of the checkout."""
    given = os.environ.get("BENCH_REVISION")
    if given:
        return given
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "retrain_plugins", "feature_repo"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {commit.stdout.strip()}" + (" with uncommitted changes in retrain_plugins/ or feature_repo/" if dirty.stdout.strip() else "")


def report(results: list[BenchResult], command: str, size: str, started: datetime, seconds: float, load: tuple) -> str:
    """The whole markdown report."""
    found = versions()
    checks = [c for r in results for c in r.checks]
    head = [
        "# Benchmark results",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC",
        f"- Machine: {_machine()}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in found.items()),
        f"- Command: `{command}` (size `{size}`), whole run {seconds / 60:.1f} min",
        f"- Library: {revision()}",
        f"- Load average (1 min) at start / end: {load[0]:.2f} / {load[1]:.2f} (the machine is shared: "
        "absolute times are indicative, ratios are measured side by side in the same run)",
        "",
        "Each figure is the median of the repetitions with (min-max); see bench/README.md for what each "
        "benchmark does and how to read the ratios.",
        "",
        "## Summary",
        "",
        summary_table(results).markdown(),
        "",
        *verdicts(checks),
    ]
    return "\n".join(head) + "\n\n" + "\n\n".join(r.markdown() for r in results) + "\n"


