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
import functools as _functools

from . import _callscope, _procs, _trace
from ._callscope import CallscopeError, run_dir, set_rank, span
from ._run import Call, Function, Process, Run, load
from ._trace import profile_all, trace, tracing, untrace

__version__ = "0.1.0"
__all__ = [
    "monitor", "span", "load", "Run", "Call", "Function", "Process", "CallscopeError", "run_dir", "set_rank",
    "trace", "tracing", "untrace", "profile_all",
]

_CO_COROUTINE = 0x80


def monitor(func=None, /, *, cpu=False, memory=False, name=None):
    """Record every call of ``func``: time, thread, process, and any exception.

    Use bare (``@monitor``) or with options (``@monitor(cpu=True)``):

    - ``cpu``: also record the thread's CPU time of each call.
    - ``memory``: also record the change of resident memory and its peak.
    - ``name``: the name shown in the run (default: ``module.qualname``).

    Works on functions, methods, staticmethods, classmethods, generators
    (a call lasts until the generator is exhausted or closed) and coroutines
    (from the first await until completion). The result keeps ``__wrapped__``,
    the name, the docstring and the signature, and pickles by reference.
    """
    if func is None:
        return _functools.partial(monitor, cpu=cpu, memory=memory, name=name)
    if isinstance(func, staticmethod):
        return staticmethod(monitor(func.__func__, cpu=cpu, memory=memory, name=name))
    if isinstance(func, classmethod):
        return classmethod(monitor(func.__func__, cpu=cpu, memory=memory, name=name))
    wrapper = _callscope.Monitor(func, cpu=cpu, memory=memory, name=name)
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
