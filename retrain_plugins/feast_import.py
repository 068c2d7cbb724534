"""``import feast`` with typeguard's instrumentation deferred from import to first call.

Feast decorates its public classes (feature views, data sources, services, ...) with typeguard's
``@typechecked``, which instruments every method when the class is defined: it re-reads,
re-parses and re-compiles the whole module's source once per method. That is most of
``import feast`` (measured here: 7.8-12 s of import with it, 1.8-3.3 s without it on the same
loaded machine), and every run process of the Feast retrieval path pays it again (typeguard
issue #468 describes the cost and this remedy; featurebyte patches the same decorator in
Feast for the same reason).

:func:`import_feast` imports Feast with typeguard's ``instrument`` replaced, for the duration of
that import only, by one that returns a thin wrapper: the first call of a method instruments it
(the same typeguard code, the same checks) and every call goes through the instrumented function.
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
from types import ModuleType


def _deferred(instrument):
    def defer(f):
        if inspect.isgeneratorfunction(f) or inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f):
            return instrument(f)
        if not getattr(f, "__code__", None) or hasattr(f, "__wrapped__"):
            return instrument(f)  # typeguard's own refusal (a message), unchanged
        instrumented = None

        @functools.wraps(f)
        def call(*args, **kwargs):
            nonlocal instrumented
            if instrumented is None:
                result = instrument(f)
                instrumented = result if inspect.isfunction(result) else f  # a message: as typechecked, unchecked
            return instrumented(*args, **kwargs)

        return call

    return defer


def import_feast() -> ModuleType:
    """``feast``, imported with typeguard's instrumentation deferred (see the module docstring)."""
    if "feast" in sys.modules:
        return sys.modules["feast"]
    try:
        from typeguard import _decorators
    except ImportError:  # a Feast without typeguard: nothing to defer
        import feast

        return feast
    original = _decorators.instrument
    _decorators.instrument = _deferred(original)
    try:
        import feast
    finally:
        _decorators.instrument = original
    return feast
