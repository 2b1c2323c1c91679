"""Selecting functions by name: ``callscope.trace``, ``untrace`` and
``tracing``. The matching and the recording are the C engine's; this keeps
the current selection so calls can add to it and a ``with`` block can
restore it."""
import contextlib
import os

from . import _callscope

def _empty():
    """No selection: patterns, modules, excludes, and the recording options."""
    return {"patterns": [], "modules": [], "excludes": [], "cpu": False, "memory": False,
            "args": False, "result": False, "redact": [], "sanitize": None,
            "max_arg_length": None, "max_bytes": None, "print": False, "c_functions": False,
            "safe": False}


# the selection in force
_current = _empty()


def _as_list(value, key):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{key}: expected a string or a list of strings, "
                        f"not {type(value).__name__}") from None
    return items


_OWN = os.path.dirname(os.path.abspath(__file__)) + os.sep  # never selected


def _apply(sel):
    if sel["patterns"] or sel["modules"]:
        _callscope._trace_start(sel["patterns"], sel["modules"], sel["excludes"],
                                sel["cpu"], sel["memory"], _OWN, args=sel["args"],
                                result=sel["result"], redact=sel["redact"] or None,
                                sanitize=sel["sanitize"], max_arg_length=sel["max_arg_length"],
                                max_bytes=sel["max_bytes"], print=sel["print"],
                                c_functions=sel["c_functions"],
                                capture="safe" if sel["safe"] else "full")
    else:
        _callscope._trace_stop()
    _current.clear()
    _current.update(sel)


def _copy(sel):
    return {k: list(v) if isinstance(v, list) else v for k, v in sel.items()}


def trace(*patterns, module=None, exclude=None, cpu=False, memory=False, args=False,
          result=False, redact=None, sanitize=None, max_arg_length=None, max_bytes=None,
          print=False, c_functions=False, capture="full"):
    """Record every call of the functions that ``patterns`` name, in any
    code: yours, a library's, the standard library's.

    Patterns are qualified names, ``module.Class.method``, with glob syntax
    (``"mypkg.solver.*"``); a dotted tail such as ``"JSONDecoder.raw_decode"``
    matches in any module, and a bare name such as ``"step"`` matches that
    function name anywhere. ``module`` includes whole modules with their
    submodules; ``exclude`` leaves patterns out. Calls add to the selection;
    ``untrace()`` ends it. Functions defined later (late imports, new
    classes) are found too. Recorded calls are stored like decorated ones.

    Python 3.12+ uses PEP 669 sys.monitoring; 3.10 and 3.11 a PEP 523
    frame-evaluation hook, installed only while something is selected (it
    turns off 3.11's inlined Python-to-Python calls meanwhile). On 3.10
    code objects carry no qualified name: patterns see module.function.

    ``args``, ``result``, ``redact``, ``sanitize``, ``max_arg_length``,
    ``max_bytes``, ``print`` and ``capture`` capture and show values as
    ``@callscope.monitor`` does; they apply to the whole selection.

    ``c_functions=True`` lets the patterns select C functions too:
    builtins (``"sorted"``), functions of extension modules
    (``"math.sqrt"``) and methods of built-in types (``"str.join"``). Their
    calls are timed; arguments and results are not captured. It costs a
    callback on every call of the program while it is on (3.12+:
    sys.monitoring CALL events; 3.10 and 3.11: the C profile hook, which
    another profiler must not hold)."""
    sel = _copy(_current)
    for p in patterns:
        sel["patterns"].extend(_as_list(p, "trace"))
    sel["modules"].extend(_as_list(module, "module"))
    sel["excludes"].extend(_as_list(exclude, "exclude"))
    sel["cpu"] = sel["cpu"] or bool(cpu)
    sel["memory"] = sel["memory"] or bool(memory)
    sel["args"] = sel["args"] or bool(args)
    sel["result"] = sel["result"] or bool(result)
    sel["redact"].extend(_as_list(redact, "redact"))
    if print:
        sel["print"] = print
    sel["c_functions"] = sel["c_functions"] or bool(c_functions)
    if capture not in ("full", "safe"):
        raise ValueError(f"capture must be 'full' or 'safe', not {capture!r}")
    sel["safe"] = sel["safe"] or capture == "safe"
    for key, value in (("sanitize", sanitize), ("max_arg_length", max_arg_length),
                       ("max_bytes", max_bytes)):
        if value is not None:
            sel[key] = value
    _apply(sel)


def untrace():
    """Stop recording functions selected by name."""
    _apply(_empty())


@contextlib.contextmanager
def tracing(*patterns, **options):
    """``trace(...)`` for the duration of a ``with`` block; the selection
    in force before is restored after it."""
    saved = _copy(_current)
    trace(*patterns, **options)
    try:
        yield
    finally:
        _apply(saved)


_ENV_KEYS = {"t": "patterns", "m": "modules", "x": "excludes", "r": "redact"}
_ENV_INTS = {"l": "max_arg_length", "b": "max_bytes"}
_FLAGS = ("cpu", "memory", "args", "result", "c_functions", "safe")


def _parse_env(spec):
    """The selection in $CALLSCOPE_TRACE: lines "t:PAT", "m:MODULE",
    "x:PAT", "r:PAT" (redact), "o:cpu", "o:memory", "o:args", "o:result",
    "l:N" (max_arg_length), "b:N" (max_bytes)."""
    sel = _empty()
    for item in (spec or "").split("\n"):
        kind, _, value = item.partition(":")
        if kind in _ENV_KEYS and value:
            sel[_ENV_KEYS[kind]].append(value)
        elif kind == "o" and value in _FLAGS:
            sel[value] = True
        elif kind == "o" and value in ("print", "printjson"):
            sel["print"] = "json" if value == "printjson" else True
        elif kind in _ENV_INTS and value.isdigit():
            sel[_ENV_INTS[kind]] = int(value)
    return sel


def _to_env(sel):
    lines = [f"{k}:{v}" for k, key in _ENV_KEYS.items() for v in sel[key]]
    lines += [f"o:{o}" for o in _FLAGS if sel[o]]
    if sel.get("print"):
        lines.append("o:printjson" if sel["print"] == "json" else "o:print")
    lines += [f"{k}:{sel[key]}" for k, key in _ENV_INTS.items() if sel[key] is not None]
    return "\n".join(lines)


def _merge_config(cli, config):
    """Command-line settings first, then the configuration file's."""
    sel = _copy(cli)
    for key, ours in (("trace", "patterns"), ("module", "modules"), ("exclude", "excludes"),
                      ("redact", "redact")):
        if not sel[ours] and config.get(key):
            sel[ours] = list(config[key])
    for opt in _FLAGS:
        sel[opt] = sel[opt] or bool(config.get(opt, False))
    sel["safe"] = sel["safe"] or config.get("capture") == "safe"
    if not sel["print"] and config.get("print"):
        sel["print"] = config["print"]
    for opt in _ENV_INTS.values():
        if sel[opt] is None and config.get(opt) is not None:
            sel[opt] = config[opt]
    return sel


def profile_all(enable=True, *, cpu=False, c_calls=True, max_nodes=0):
    """Profile every call of the program the way cProfile counts them:
    Python functions, C functions (builtins and methods of C types, unless
    ``c_calls=False``) and each resumption of a generator or coroutine,
    into a calling-context tree per thread: a node per distinct call path
    with its calls, total and self time (and CPU time with ``cpu=True``).
    The tree lives in the run's log, updated in place, so it survives the
    process being killed. ``callscope top``, ``callscope tree``, the report
    and the exports (pstats with callers, collapsed stacks, speedscope) read
    it. ``max_nodes`` bounds each thread's tree (default 1M nodes, 72 MiB);
    past it new paths are counted by function only.
    ``profile_all(False)`` stops.

    Python 3.12+ uses PEP 669 sys.monitoring; 3.10 and 3.11 the C profile
    hook of every thread, as cProfile does."""
    if enable:
        _callscope._open_log()  # the run's times start here (before: not profiled)
        _callscope._profile_start(_OWN, cpu=cpu, c_calls=c_calls, max_nodes=max_nodes)
    else:
        _callscope._profile_stop()


def _from_environment():
    """Start the selection that ``callscope run -t/--module/--exclude``
    (or ``--all``) passes to every Python process of the run."""
    spec = os.environ.get("CALLSCOPE_TRACE")
    if spec:
        sel = _parse_env(spec)
        try:
            _apply(sel)
        except NotImplementedError as e:
            import warnings

            warnings.warn(f"callscope: {e}", RuntimeWarning, stacklevel=2)
    if os.environ.get("CALLSCOPE_LAUNCH_PID") != str(os.getpid()):
        # (the launcher of `callscope run` starts it just before the program)
        _start_profile_from_environment()


def _start_profile_from_environment():
    """``--all``, as ``callscope run`` passes it to every process."""
    mode = os.environ.get("CALLSCOPE_PROFILE_ALL")
    if mode in ("1", "cpu"):
        # last: what callscope itself does before the program is not profiled
        _callscope._profile_start(_OWN, cpu=mode == "cpu",
                                  c_calls=os.environ.get("CALLSCOPE_C_CALLS") != "0")
