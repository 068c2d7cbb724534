"""In-process runs for the CLI, with progress lines read off the run's own events.

Same runs as :func:`retrain_plugins.dagster.execution.execute` makes (the retraining's assets, the
request's tags, recorded on the instance of ``DAGSTER_HOME``), with a run id chosen here so an
event listener can follow it: one line per step (started, done, failed) and, inside the train
step, partitions done / total (at most every few seconds, and when each half is complete). Progress,
and whatever libraries print during the run, goes to stderr; what a command reports stays on stdout.

Progress lines are written to a duplicate of stderr's descriptor taken before the run starts, not
to descriptor 2. For the whole run Dagster's compute-log capture points descriptors 1 and 2 at the
run's log file and echoes that file to the terminal with ``tail -F``, which it terminates when the
run ends: what was written in the run's last moments can miss the terminal (dagster-io/dagster
#23336; measured here: a run's last ``step ...: done`` line lost on a loaded machine). What
libraries print still goes through the capture, so it stays in the run's compute logs as well.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TextIO

from retrain_plugins.dagster.execution import retraining_assets
from retrain_plugins.spec import RetrainingSpec

if TYPE_CHECKING:
    from dagster import AssetKey, DagsterInstance, Definitions, EventLogEntry, ExecuteInProcessResult

# What the train step logs per partition (dagster/assets.py): its training set, then its sub-model.
_TRAINING_SET = re.compile(r": \d+ rows, fingerprint \S+$")
_SUB_MODEL = re.compile(r": (trained|rejected|skipped|failed) \([^()]*\)$")


def progress_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def uncaptured_stderr() -> Iterator[TextIO]:
    """A stream on a duplicate of stderr's descriptor, which a run's log capture does not redirect
    (see the module docstring); stderr itself when it has no descriptor (a test's in-memory one)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, io.UnsupportedOperation):
        yield sys.stderr
        return
    sys.stderr.flush()
    with os.fdopen(os.dup(fd), "w", buffering=1, encoding=sys.stderr.encoding, errors="replace") as stream:
        yield stream


class Progress:
    """Prints one run's progress from its events (an instance event listener)."""

    def __init__(self, total: int, say: Callable[[str], None] = progress_line, every_seconds: float = 2.0):
        self.total, self.say, self.every = total, say, every_seconds
        self.training_sets = 0
        self.sub_models: Counter[str] = Counter()
        self.step_started: dict[str, float] = {}
        self._last = 0.0

    def __call__(self, entry: EventLogEntry) -> None:
        event = entry.dagster_event
        if event is not None:
            step, kind = entry.step_key, event.event_type_value
            if kind == "STEP_START" and step:
                self.step_started[step] = time.perf_counter()
                self.say(f"step {step}: started")
            elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and step:
                seconds = time.perf_counter() - self.step_started.get(step, time.perf_counter())
                self.say(f"step {step}: {'done' if kind == 'STEP_SUCCESS' else 'FAILED'} in {seconds:.1f} s")
            return
        message = entry.user_message or ""
        if _TRAINING_SET.search(message):
            self.training_sets += 1
            self._report(self.training_sets == self.total, lambda: f"training sets {self.training_sets}/{self.total}")
        elif found := _SUB_MODEL.search(message):
            self.sub_models[found.group(1)] += 1
            done = sum(self.sub_models.values())
            self._report(done == self.total, lambda: f"sub-models {done}/{self.total} (" + ", ".join(
                f"{status} {n}" for status, n in sorted(self.sub_models.items())
            ) + ")")

    def _report(self, complete: bool, line: Callable[[], str]) -> None:
        now = time.perf_counter()
        if complete or now - self._last >= self.every:
            self._last = now
            self.say(line())


def run_in_process(
    defs: Definitions,
    spec: RetrainingSpec,
    instance: DagsterInstance,
    *,
    selection: Sequence[AssetKey] | None,
    tags: dict[str, str],
    partitions: int,
    say: Callable[[str], None] | None = None,
) -> ExecuteInProcessResult:
    """One in-process run of ``spec``'s assets (``selection``: all of them when None) over the
    partition range in ``tags``; failures are returned, not raised (the run is recorded failed).
    Progress goes to ``say``, by default lines on :func:`uncaptured_stderr`."""
    from dagster import Definitions, define_asset_job
    from dagster._core.definitions.materialize import EPHEMERAL_JOB_NAME
    from dagster._core.utils import make_new_run_id

    job_defs = Definitions(
        jobs=[define_asset_job(name=EPHEMERAL_JOB_NAME, selection=selection)],
        assets=retraining_assets(defs, spec),
        resources=defs.resources,
    )
    run_id = make_new_run_id()
    with contextlib.ExitStack() as stack:
        if say is None:
            terminal = stack.enter_context(uncaptured_stderr())
            say = functools.partial(print, file=terminal, flush=True)
        instance.add_event_listener(run_id, Progress(partitions, say))
        # What libraries print during the run (Feast's materialize) is progress too, not the command's report.
        stack.enter_context(contextlib.redirect_stdout(sys.stderr))
        return job_defs.resolve_job_def(EPHEMERAL_JOB_NAME).execute_in_process(
            # Dagster's own console lines would drown the progress; warnings and errors still print.
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            instance=instance,
            raise_on_error=False,
            tags=tags,
            run_id=run_id,
        )
