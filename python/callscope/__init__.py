"""callscope: record the function calls of Python programs.

    import callscope

    @callscope.monitor
    def solve(x, tol=1e-6): ...

    with callscope.span("assemble"):
        ...

    run = callscope.load("latest")
    run.stats()

The engine is C (the ``_callscope`` extension and the ``callscope`` command);
this package is the thin layer users import.
"""
import atexit as _atexit

from . import _callscope, _procs, _trace
from ._callscope import CallscopeError, run_dir, set_rank, span
from ._trace import profile_all, trace, tracing, untrace

# The read side (runs, comparisons, values) is imported on first use, so
# that a decorator left in production code costs little at start-up:
# sqlite3, pickle, typing and re load only when a run is read.
_LAZY = {
    "Change": "_compare", "Comparison": "_compare", "Digits": "_compare",
    "compare": "_compare", "diff": "_compare",
    "Call": "_run", "Function": "_run", "Process": "_run", "Run": "_run", "load": "_run",
    "Args": "_values", "Failed": "_values", "Identity": "_values", "Redacted": "_values",
    "Replay": "_values", "ReprOnly": "_values", "Truncated": "_values",
    "handlers": "_values", "register": "_values", "unregister": "_values",
}


def __getattr__(name):
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'callscope' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module("." + where, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

__version__ = "0.1.0"
__all__ = [
    "monitor", "span", "load", "Run", "Call", "Function", "Process", "CallscopeError", "run_dir", "set_rank",
    "trace", "tracing", "untrace", "profile_all",
    "register", "unregister", "handlers", "Args", "Replay",
    "Truncated", "ReprOnly", "Failed", "Redacted", "Identity",
    "compare", "diff", "Comparison", "Digits", "Change",
]

_CO_COROUTINE = 0x80


def monitor(func=None, /, *, cpu=False, memory=False, name=None, args=False, result=False,
            redact=None, sanitize=None, max_arg_length=None, max_bytes=None,
            capture_self=False, print=False, capture="full"):
    """Record every call of ``func``: time, thread, process, and any exception.

    Use bare (``@monitor``) or with options (``@monitor(cpu=True)``):

    - ``cpu``: also record the thread's CPU time of each call.
    - ``memory``: also record the change of resident memory and its peak.
    - ``name``: the name shown in the run (default: ``module.qualname``).
    - ``args``: record the arguments of each call, as passed; read them
      back with ``Run.get`` and ``Run.get_args``, or ``Run.replay`` the call.
    - ``result``: record the value each call returns (``Run.get_result``).
    - ``redact``: parameter-name patterns (globs, case-insensitive) whose
      values are never written; dict items with matching keys are hidden too.
    - ``sanitize``: a function ``str -> str`` applied to every captured
      string and repr, and to the message and traceback of errors.
    - ``max_arg_length``: cut strings and reprs to this many characters.
    - ``max_bytes``: the most bytes one argument may take (default 4 MiB);
      larger values are cut and marked as truncated.
    - ``capture_self``: record ``self``/``cls`` by value; by default it is
      recorded by identity (type and id).
    - ``capture``: ``"full"`` (default) keeps any value, calling its
      ``__repr__``, ``__reduce__`` or a registered handler when it is not
      a built-in type, a container of them or a numpy array: that runs the
      program's own code inside the call. ``"safe"`` never does: such a
      value is kept as its type and id, so a slow or hanging ``__repr__``
      cannot slow or hang the call.
    - ``print``: write each finished call to ``sys.stderr`` as one line
      (``True``: name, arguments, result or error, time) or as JSON
      (``"json"``); redaction and ``sanitize`` apply.

    Works on functions, methods, staticmethods, classmethods, generators
    (a call lasts until the generator is exhausted or closed) and coroutines
    (from the first await until completion). The result keeps ``__wrapped__``,
    the name, the docstring and the signature, and pickles by reference.
    """
    opts = dict(cpu=cpu, memory=memory, name=name, args=args, result=result, redact=redact,
                sanitize=sanitize, max_arg_length=max_arg_length, max_bytes=max_bytes,
                capture_self=capture_self, print=print, capture=capture)
    if func is None:
        _callscope.Monitor(len, **opts)  # bad options fail here, at decoration
        import functools

        return functools.partial(monitor, **opts)
    if isinstance(func, staticmethod):
        return staticmethod(monitor(func.__func__, **opts))
    if isinstance(func, classmethod):
        return classmethod(monitor(func.__func__, **opts))
    wrapper = _callscope.Monitor(func, **opts)
    code = getattr(func, "__code__", None)
    if code is not None and code.co_flags & _CO_COROUTINE:
        import inspect

        if hasattr(inspect, "markcoroutinefunction"):  # 3.12+
            inspect.markcoroutinefunction(wrapper)
    return wrapper


# Close this process's log and store its calls in run.db at exit. Registered
# first, it runs after the program's own exit handlers, which are recorded.
_atexit.register(_callscope._finish)


_procs.install()
_trace._from_environment()
