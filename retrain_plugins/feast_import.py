"""``import feast`` with typeguard's instrumentation of Feast deferred from import to first call.

Feast decorates its public classes (feature views, data sources, services, ...) with typeguard's
``@typechecked``, which instruments every method when the class is defined: it re-reads,
re-parses and re-compiles the whole module's source once per method. That is most of
``import feast`` (measured here: 7.8-12 s of import with it, 1.8-3.3 s without it on the same
loaded machine), and every run process of the Feast retrieval path pays it again (typeguard
issue #468 describes the cost and this remedy; featurebyte patches the same decorator in
Feast for the same reason).

:func:`import_feast` installs, once per process and before importing Feast, a typeguard
``instrument`` that returns a thin wrapper for a function of a Feast module (``feast`` and
``feast.*``): the first call of a method instruments it (the same typeguard code, the same checks)
and every call goes through the instrumented function. Every other module's ``@typechecked`` is
typeguard's own, unchanged. It stays installed after the import because Feast imports some of its
typechecked modules later, at first use: its DuckDB offline store imports
``feast.infra.data_sources.mlflow`` at the first read of any source (for an ``isinstance``), and
instrumenting that module's 19 methods at once was 0.4 s of a one-partition retrieval here.

Nothing is skipped: a wrong argument type to a Feast constructor still raises typeguard's
``TypeCheckError``, at that call (tests/test_feast_import.py). Generator and coroutine functions
are instrumented at once as before (a plain wrapper would hide what they are). One difference:
typeguard resolves an annotation naming a local of the *defining* scope from the frame that
decorates it; deferred, it finds no such local and treats the name as a forward reference.
Feast's classes are defined at module level, where annotations name module globals.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
from types import ModuleType

_install_lock = threading.Lock()


def _is_feast(f) -> bool:
    module = getattr(f, "__module__", None) or ""
    return module == "feast" or module.startswith("feast.")


def _deferred(instrument):
    """``instrument``, deferring to first call for Feast's plain functions (see the module docstring)."""

    def defer(f):
        if not _is_feast(f) or inspect.isgeneratorfunction(f) or inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f):
            return instrument(f)
        if not getattr(f, "__code__", None) or hasattr(f, "__wrapped__"):
            return instrument(f)  # typeguard's own refusal (a message), unchanged
        instrumented = None

        @functools.wraps(f)
        def call(*args, **kwargs):
            nonlocal instrumented
            if instrumented is None:  # two threads racing here both instrument: the same function
                result = instrument(f)
                instrumented = result if inspect.isfunction(result) else f  # a message: as typechecked, unchecked
            return instrumented(*args, **kwargs)

        return call

    defer.deferring = instrument  # marks it installed, and keeps typeguard's own
    return defer


def import_feast() -> ModuleType:
    """``feast``, imported with typeguard's instrumentation of Feast deferred (see the module docstring)."""
    if "feast" in sys.modules:
        return sys.modules["feast"]
    try:
        from typeguard import _decorators
    except ImportError:  # a Feast without typeguard: nothing to defer
        import feast

        return feast
    with _install_lock:
        if not hasattr(_decorators.instrument, "deferring"):
            _decorators.instrument = _deferred(_decorators.instrument)
    import feast

    return feast
