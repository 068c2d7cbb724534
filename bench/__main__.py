"""``python -m bench [--quick] [--only NAME]``: run the benchmarks, print one table, write RESULTS.md.

Each benchmark lives in its own module with ``run(size, workdir, cache) -> BenchResult``. The
combined table lists every target of the issue with what this run measured; the detail tables of
each benchmark are printed as it finishes and written to ``bench/RESULTS.md`` with the machine's
core count, the date, the package versions and the command. Speed targets are reported, never
asserted: the exit status is 1 only for a failure (a benchmark that raised, or a correctness
failure such as Feast and the DuckDB ASOF join disagreeing on a value).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import os
import shutil
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from bench.common import quiet
from bench.report import BenchResult, report, summary_table, verdicts

BENCHMARKS = {
    "partial_vs_full": "bench.partial_vs_full",
    "detection": "bench.detection",
    "retrieval": "bench.retrieval",
    "quality": "bench.quality",
    "memory": "bench.memory",
    "store": "bench.store",
    "daemon": "bench.daemon",
}
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
# A default-size run of the daemon benchmark alone writes its own file (it takes ~10 min and starts
# `dagster dev` servers; the other benchmarks' committed figures stay as they are).
ALONE = {"daemon": Path(__file__).resolve().parent / "RESULTS-daemon.md"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (see ``python -m bench --help``)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition: a smoke run (CI)")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="write the markdown report here (default: bench/RESULTS.md, only for a full default-size run; "
        "bench/RESULTS-daemon.md for a default-size run of the daemon benchmark alone)",
    )
    parser.add_argument("--reps", type=int, help="repetitions per figure instead of the size's default (development)")
    parser.add_argument("--workdir", type=Path, help="parent folder of the temporary projects (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary projects (their path is printed)")
    return parser.parse_args(argv)


_TITLES = {
    "partial_vs_full": "1. Partial vs full, end to end",
    "detection": "2. Detection cost",
    "retrieval": "3. Training-set retrieval",
    "quality": "4. Quality",
    "memory": "5. Memory",
    "store": "6. Model store",
    "daemon": "7. Daemon path",
}


def _run(name: str, size: str, workdir: Path, reps: int | None) -> BenchResult:
    """Run one benchmark, its libraries' prints (Feast's materialize progress) sent to a log.

    A benchmark that raises is reported as failed (with the error and the log's tail) and the
    others still run: one broken benchmark does not throw away the figures of the rest.
    """
    log = workdir / f"{name}.log"
    workdir.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as sink:
        try:
            with contextlib.redirect_stdout(sink):
                return importlib.import_module(BENCHMARKS[name]).run(size, workdir / name, workdir / "cache", reps)
        except Exception as exc:  # reported below and in the exit status, not swallowed
            sink.flush()
            tail = "\n".join(log.read_text().splitlines()[-20:])
            error = "".join(traceback.format_exception(exc)[-6:])
            print(f"{name} failed:\n{error}\nlast lines of its output:\n{tail}", file=sys.stderr)
            return BenchResult(name, _TITLES[name], [], [], failures=[f"the benchmark raised: {error.strip()}"])


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; return the process exit status."""
    args = parse_args(argv)
    quiet()
    size = "quick" if args.quick else "default"
    names = list(dict.fromkeys(args.only or BENCHMARKS))
    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    complete = size == "default" and names == list(BENCHMARKS) and args.reps is None
    alone = ALONE.get(names[0]) if len(names) == 1 and size == "default" and args.reps is None else None
    output = args.output or (RESULTS if complete else alone)
    started, load_start = datetime.now(timezone.utc), os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="retrain-bench-", dir=args.workdir))
    results: list[BenchResult] = []
    t0 = time.perf_counter()
    try:
        for name in names:
            print(f"\n=== {name} ({size}) ===", flush=True)
            t = time.perf_counter()
            result = _run(name, size, workdir, args.reps)
            result.seconds = time.perf_counter() - t
            if size == "quick":  # tiny sizes say nothing about the targets: keep the figures, drop verdicts
                result.checks = [
                    dataclasses.replace(c, met=None, target=f"{c.target} (no verdict at --quick)") if c.sized else c
                    for c in result.checks
                ]
            results.append(result)
            print(result.markdown(), flush=True)
    finally:
        if args.keep:
            print(f"\nprojects kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.perf_counter() - t0
    text = report(results, command, size, started, seconds, (load_start, os.getloadavg()[0]))
    print("\n" + summary_table(results).markdown())
    print("\n".join(verdicts([c for r in results for c in r.checks])))
    print(f"\nwhole run: {seconds / 60:.1f} min")
    if output is not None:
        output.write_text(text)
        print(f"report written to {output}")
    else:
        print("report not written (quick or partial run; pass --output PATH to write it)")
    failures = [f"{r.name}: {f}" for r in results for f in r.failures]
    for failure in failures:
        print(f"FAILURE: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
