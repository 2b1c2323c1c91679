"""Captured arguments and results, read back: ``Run.get``, ``get_args``,
``get_result``, ``replay``, ``export_args``; the handler registry; and the
markers for values that were only partly kept.

The bytes are decoded by the C extension (``_callscope._decode``). What
needs a policy or a library goes through ``_Context``: blobs, numpy,
pickles (trusted runs only), and registered handlers.
"""
import importlib
import os
import pickle
import sqlite3
import sys

from . import _callscope
from ._callscope import CallscopeError


# -- markers -----------------------------------------------------------------
class Truncated:
    """A value cut to the bounds (``max_arg_length``, ``max_bytes``):
    ``value`` is the kept part, ``length`` the original length (characters,
    bytes or items)."""

    __slots__ = ("value", "length")

    def __init__(self, value, length):
        self.value, self.length = value, length

    def __repr__(self):
        return f"Truncated({self.value!r}, length={self.length})"

    def __eq__(self, other):
        return (isinstance(other, Truncated) and self.length == other.length
                and _equal(self.value, other.value))

    def __hash__(self):  # a cut set member or dict key must still load
        return hash((Truncated, self.length, repr(self.value)))


class ReprOnly:
    """A value that could be neither encoded nor pickled: only its repr was
    kept. ``type`` is its type's qualified name."""

    __slots__ = ("type", "text")

    def __init__(self, type, text):
        self.type, self.text = type, text

    def __repr__(self):
        return f"ReprOnly({self.type}: {self.text})"


class Failed:
    """A value that could not be captured; ``message`` says why."""

    __slots__ = ("message",)

    def __init__(self, message):
        self.message = message

    def __repr__(self):
        return f"Failed({self.message!r})"


class _RedactedType:
    """A value hidden by a redact= pattern: it was never written."""

    __slots__ = ()

    def __repr__(self):
        return "Redacted"

    def __reduce__(self):
        return "Redacted"


Redacted = _RedactedType()


class Identity:
    """An object recorded by identity (``self`` of a method): its type's
    qualified name and its id() in the recorded process."""

    __slots__ = ("type", "id")

    def __init__(self, type, id):
        self.type, self.id = type, id

    def __repr__(self):
        return f"<{self.type} object at {self.id:#x}>"


_MARKERS = (Truncated, ReprOnly, Failed, _RedactedType, Identity)


# -- handlers ------------------------------------------------------------------
def register(type_, save, load, *, name=None):
    """Capture values of ``type_`` (and its subclasses) with your own code.

    ``save(obj) -> bytes`` is called when a value is captured; ``load(data)
    -> obj`` when it is read back, with the same bytes. ``name`` identifies
    the handler in recorded runs (default: the type's ``module.qualname``);
    register the same name before loading. A handler takes precedence over
    callscope's own encodings. A ``save`` that raises does not disturb the
    monitored call: the value is recorded as :class:`Failed`."""
    if not isinstance(type_, type):
        raise TypeError(f"register() needs a type, not {type(type_).__name__}")
    if not callable(save) or not callable(load):
        raise TypeError("register(): save and load must be callables")
    if name is None:
        name = f"{type_.__module__}.{type_.__qualname__}"
    if not isinstance(name, str) or not name:
        raise TypeError("register(): name must be a non-empty str")
    _callscope._register(type_, name, save, load)


def unregister(type_):
    """Forget the handler of ``type_``; True if there was one."""
    return _callscope._unregister(type_)


def handlers():
    """The registered handlers: ``{type: (save, load)}``."""
    return {t: (h[1], h[2]) for t, h in _callscope._handlers().items()}


def _handler_by_name(name):
    for entry in _callscope._handlers().values():
        if entry[0] == name:
            return entry
    return None


# -- decoding --------------------------------------------------------------------
class _Context:
    """What ``_callscope._decode`` calls for the values it cannot build alone."""

    def __init__(self, run, con, trusted):
        self._run, self._con, self._trusted = run, con, trusted

    def blob(self, id, size):
        row = self._con.execute("SELECT size, data FROM blobs WHERE id = ?", (id,)).fetchone()
        if row is None or row[0] != size or row[1] is None:
            raise CallscopeError(
                "a large value is missing from run.db (its process ended while writing it)")
        return bytes(row[1])

    def array(self, dtype, shape, order, data):
        try:
            import numpy as np
        except ImportError:
            raise CallscopeError("this value is a numpy array: install numpy to load it") from None
        a = np.frombuffer(data, dtype=np.dtype(dtype))
        if order == "S":  # a numpy scalar: numpy.float64(...), not an array
            return a.reshape(())[()]
        return a.reshape(shape, order=order).copy(order=order)

    def unpickle(self, data, type_name):
        self._run._check_trust(self._trusted)
        try:
            return pickle.loads(data)
        except Exception as e:
            raise CallscopeError(f"a pickled {type_name} could not be loaded: "
                                 f"{type(e).__name__}: {e}") from None

    def handler(self, name, data):
        h = _handler_by_name(name)
        if h is None:
            raise CallscopeError(
                f"this value was saved by the handler {name!r}: register it with"
                f" callscope.register(..., name={name!r}) before loading")
        try:
            return h[2](data)
        except Exception as e:
            raise CallscopeError(f"the load function of handler {name!r} raised"
                                 f" {type(e).__name__}: {e}") from None

    def repr_only(self, type_name, text):
        return ReprOnly(type_name, text)

    def identity(self, type_name, id):
        return Identity(type_name, id)

    def truncated(self, value, length):
        return Truncated(value, length)

    def failed(self, message):
        return Failed(message)

    def redacted(self):
        return Redacted


def _equal(a, b):
    """Equality for replay: numpy arrays element-wise (NaN equal to NaN),
    floats with NaN equal to NaN, containers item by item."""
    if type(a).__name__ == "ndarray" or type(b).__name__ == "ndarray":
        try:
            import numpy as np

            a, b = np.asarray(a), np.asarray(b)
            if a.shape != b.shape or a.dtype != b.dtype:
                return False
            try:
                return bool(np.array_equal(a, b, equal_nan=True))
            except TypeError:
                return bool(np.array_equal(a, b))
        except Exception:
            return False
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if type(a) is not type(b):
        try:
            return bool(a == b)
        except Exception:
            return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:
        return False


class Args:
    """The arguments of a recorded call by parameter name, in signature
    order, with defaults filled in: ``a.tol``, ``a["tol"]``, ``a.keys()``."""

    __slots__ = ("_values",)

    def __init__(self, values):
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no argument {name!r}; the arguments are"
                                 f" {list(self._values)}") from None

    def __setattr__(self, name, value):
        raise AttributeError("Args is read-only")

    def __getitem__(self, name):
        return self._values[name]

    def __contains__(self, name):
        return name in self._values

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)

    def keys(self):
        return self._values.keys()

    def values(self):
        return self._values.values()

    def items(self):
        return self._values.items()

    def to_dict(self):
        return dict(self._values)

    def __eq__(self, other):
        return isinstance(other, Args) and _equal(self._values, other._values)

    __hash__ = None

    def __repr__(self):
        inner = ", ".join(f"{k}={_short(v)}" for k, v in self._values.items())
        return f"Args({inner})"


def _short(v, n=80):
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


class Replay:
    """The outcome of ``Run.replay``: the new ``result`` (or the ``error``
    it raised), the ``recorded`` result, and whether they ``matches``
    (None when the recorded result cannot be compared)."""

    __slots__ = ("function", "call", "result", "error", "recorded", "recorded_error", "matches")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))

    def __repr__(self):
        outcome = (f"raised {type(self.error).__name__}: {self.error}" if self.error is not None
                   else _short(self.result))
        verdict = {True: "matches", False: "DIFFERS from", None: "cannot be compared with"}
        return (f"<replay of {self.function} call {self.call}: {outcome};"
                f" {verdict[self.matches]} the recording>")


# parameter kinds in a signature record
_POSONLY, _POS, _VARPOS, _KWONLY, _VARKW = range(5)


def _bind(sig, args, kwargs):
    """[(name, kind, value)] in signature order; parameters not passed take
    their recorded default, as the seed's Args does."""
    out, kw, i = [], dict(kwargs), 0
    for p in sig:
        name, kind = p[0], p[1]
        if kind in (_POSONLY, _POS) and i < len(args):
            out.append((name, kind, args[i]))
            i += 1
        elif kind == _VARPOS:
            out.append((name, kind, tuple(args[i:])))
            i = len(args)
        elif kind == _VARKW:
            out.append((name, kind, kw))
            kw = {}
        elif kind != _POSONLY and name in kw:
            out.append((name, kind, kw.pop(name)))
        elif len(p) > 2:
            out.append((name, kind, p[2]))
    # arguments the signature does not explain: keep them by position/name
    for j in range(i, len(args)):
        out.append((f"arg{j}", _POS, args[j]))
    for k, v in kw.items():
        out.append((k, _KWONLY, v))
    return out


def _unbind(bound):
    """(args, kwargs) that bind to ``bound`` again."""
    args, kwargs, positional = [], {}, True
    for name, kind, value in bound:
        if kind in (_POSONLY, _POS) and positional:
            args.append(value)
        elif kind == _VARPOS:
            args.extend(value)
        elif kind == _VARKW:
            kwargs.update(value)
        else:
            kwargs[name] = value
    return args, kwargs


class _ValuesMixin:
    """The value methods of ``Run``."""

    # -- finding a call ------------------------------------------------------
    def _function_ids(self, name):
        if not isinstance(name, str) or not name:
            raise TypeError("the function must be named by a non-empty str")
        rows = self.sql(
            "SELECT id, CASE WHEN module = '' THEN qualname ELSE module || '.' || qualname END,"
            " qualname FROM functions")
        for test in (lambda full, q: full == name, lambda full, q: q == name,
                     lambda full, q: full.endswith("." + name)):
            hits = [(i, full) for i, full, q in rows if test(full, q)]
            if hits:
                names = sorted({full for _, full in hits})
                if len(names) > 1:
                    raise CallscopeError(f"{name!r} is ambiguous in this run: it names "
                                         + ", ".join(names) + "; use the full name")
                return [i for i, _ in hits], names[0]
        raise CallscopeError(f"no function {name!r} in run {os.path.basename(self.path)}")

    def _call_row(self, name, n):
        """(call id, full name, status, args blob, result blob, error type,
        error message, function id) of the n-th call of ``name``."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"the call number must be an int, not {type(n).__name__}")
        ids, full = self._function_ids(name)
        marks = ",".join("?" * len(ids))
        total = self.sql(f"SELECT count(*) FROM calls WHERE function IN ({marks})", ids)[0][0]
        if n < 1 or n > total:
            raise CallscopeError(f"{full} has {total} recorded call(s): call number {n} is out"
                                 f" of range (calls are numbered from 1)")
        rows = self.sql(
            "SELECT c.id, c.status, a.data, r.data, e.type, e.message, c.function"
            " FROM calls c JOIN threads t ON t.id = c.thread"
            " JOIN processes p ON p.id = t.process"
            " LEFT JOIN args a ON a.call = c.id LEFT JOIN results r ON r.call = c.id"
            " LEFT JOIN errors e ON e.call = c.id"
            f" WHERE c.function IN ({marks})"
            " ORDER BY p.start_wall_ns + (c.start_ns - p.start_mono_ns), c.id"
            " LIMIT 1 OFFSET ?", (*ids, n - 1))
        cid, status, a, r, et, em, fid = rows[0]
        return cid, full, status, a, r, et, em, fid

    def _decode(self, data, trusted, what):
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            return _callscope._decode(data, _Context(self, con, trusted))
        except CallscopeError as e:
            raise CallscopeError(f"{what}: {e}") from None
        finally:
            con.close()

    def _check_trust(self, trusted):
        """Pickles run code when loaded: only from runs this user made on
        this host, unless the caller says the run is trusted."""
        trusted = trusted or getattr(self, "trusted", False)
        if trusted:
            return
        st = os.stat(self.path)
        if st.st_uid != os.getuid():
            raise CallscopeError(
                f"refusing to unpickle a value of run {self.path}: it belongs to another user"
                f" (uid {st.st_uid}); loading a pickle runs code. Pass trusted=True if you"
                " trust it")
        host = _callscope._hostname()
        hosts = {h for (h,) in self.sql("SELECT DISTINCT host FROM processes")}
        if hosts - {host}:
            raise CallscopeError(
                f"refusing to unpickle a value of run {self.path}: it was recorded on "
                + ", ".join(sorted(hosts - {host}))
                + "; loading a pickle runs code. Pass trusted=True if you trust it")

    # -- the questions ---------------------------------------------------------
    def get(self, name, n, *, trusted=False):
        """``(args, kwargs)`` of the n-th call of function ``name`` (numbered
        from 1, in order of start, across threads and processes), as it was
        called: ``name(*args, **kwargs)`` repeats the call."""
        cid, full, status, a, *_ = self._call_row(name, n)
        if a is None:
            raise CallscopeError(f"call {n} of {full} has no captured arguments: record with"
                                 " @monitor(args=True) or callscope run --args")
        value = self._decode(a, trusted, f"the arguments of call {n} of {full}")
        if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict)):
            raise CallscopeError(f"the arguments of call {n} of {full}: damaged value record")
        return list(value[0]), value[1]

    def _signature(self, fid, trusted):
        row = self.sql("SELECT signature FROM functions WHERE id = ?", (fid,))
        if not row or row[0][0] is None:
            return None
        try:
            return self._decode(row[0][0], trusted, "the recorded signature")
        except CallscopeError as e:
            if "trusted=True" in str(e):
                raise  # its defaults are pickled: the same rule applies
            return None  # damaged: names from the call alone

    def get_args(self, name, n, *, trusted=False):
        """The arguments of the n-th call of ``name`` by parameter name, as
        :class:`Args`, with the defaults of parameters not passed."""
        args, kwargs = self.get(name, n, trusted=trusted)
        fid = self._call_row(name, n)[7]
        sig = self._signature(fid, trusted) or ()
        return Args((k, v) for k, _, v in _bind(sig, args, kwargs))

    def get_result(self, name, n, *, trusted=False):
        """The value the n-th call of ``name`` returned (for a generator or
        coroutine: the value it returned at its end). Raises CallscopeError
        when the call raised, did not finish, or its result was not captured."""
        cid, full, status, a, r, et, em, fid = self._call_row(name, n)
        if status == "raised":
            raise CallscopeError(f"call {n} of {full} raised {et}: {em}")
        if status == "unfinished":
            raise CallscopeError(f"call {n} of {full} never returned (unfinished)")
        if r is None:
            raise CallscopeError(f"call {n} of {full} has no captured result: record with"
                                 " @monitor(result=True) or callscope run --result")
        return self._decode(r, trusted, f"the result of call {n} of {full}")

    def replay(self, name, n, func=None, *, trusted=False, **overrides):
        """Call the function again with the recorded inputs of its n-th call
        and compare with the recorded result.

        ``func`` is what to call (default: ``module.qualname`` imported, the
        undecorated function). ``overrides`` replace arguments by parameter
        name, e.g. ``self=obj`` for a method, whose ``self`` is recorded by
        identity only. An argument recorded only as a repr, truncated,
        redacted or by identity is refused with a clear error."""
        cid, full, status, a, r, et, em, fid = self._call_row(name, n)
        args, kwargs = self.get(name, n, trusted=trusted)
        sig = self._signature(fid, trusted) or ()
        bound = _bind(sig, args, kwargs)
        names = {b[0] for b in bound}
        for k in overrides:
            if k not in names and not any(p[1] == _VARKW for p in sig):
                raise CallscopeError(f"replay: {full} has no parameter {k!r}")
        bound = [(k, kind, overrides.pop(k) if k in overrides else v) for k, kind, v in bound]
        bound += [(k, _KWONLY, v) for k, v in overrides.items()]
        for k, kind, v in bound:
            bad = _unreplayable(v)
            if bad:
                raise CallscopeError(f"replay: argument {k!r} of call {n} of {full} {bad};"
                                     f" pass {k}=... to replay it")
        if func is None:
            func = _import_function(full, self, fid)
        call_args, call_kwargs = _unbind(bound)
        result = error = None
        try:
            result = _run_to_end(func(*call_args, **call_kwargs))
        except Exception as e:
            error = e
        recorded = recorded_error = None
        matches = None
        if status == "raised":
            recorded_error = (et, em)
            if error is not None:
                tname = type(error).__qualname__
                mod = type(error).__module__
                full_t = tname if mod == "builtins" else f"{mod}.{tname}"
                matches = full_t == et and str(error) == em
            else:
                matches = False
        elif r is not None:
            recorded = self._decode(r, trusted, f"the result of call {n} of {full}")
            if error is not None:
                matches = False
            elif not _has_marker(recorded):
                matches = _equal(result, recorded)
        return Replay(function=full, call=n, result=result, error=error, recorded=recorded,
                      recorded_error=recorded_error, matches=matches)

    def export_args(self, name, n, directory, *, trusted=False):
        """Write the arguments of the n-th call of ``name`` into ``directory``
        as files, the way the seed tools laid them out: ``arg_<name>.npy``
        for numpy arrays, ``arg_<name>.pkl`` (a pickle) for anything else.
        Returns the paths written."""
        a = self.get_args(name, n, trusted=trusted)
        os.makedirs(directory, exist_ok=True)
        paths = []
        for k, v in a.items():
            if type(v).__name__ == "ndarray":
                import numpy as np

                p = os.path.join(directory, f"arg_{k}.npy")
                np.save(p, v)
            else:
                p = os.path.join(directory, f"arg_{k}.pkl")
                with open(p, "wb") as f:
                    pickle.dump(v, f)
            paths.append(p)
        return paths


def _run_to_end(result):
    """The value a call returns, as the recording has it: a generator's or
    coroutine's own return value, once it ran to its end."""
    import inspect

    if inspect.isgenerator(result):
        try:
            while True:
                next(result)
        except StopIteration as stop:
            return stop.value
    if inspect.iscoroutine(result):
        import asyncio

        return asyncio.run(result)
    return result


def _has_marker(v, depth=0):
    """True if ``v`` holds a marker: it cannot be compared then."""
    if isinstance(v, _MARKERS):
        return True
    if depth > 32:
        return False
    if isinstance(v, (list, tuple, set, frozenset)):
        return any(_has_marker(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return any(_has_marker(x, depth + 1) for x in v.values())
    return False


def _unreplayable(v):
    """Why ``v`` cannot be passed to a replay, or None."""
    if isinstance(v, ReprOnly):
        return f"was recorded only as a repr ({_short(v.text, 60)})"
    if isinstance(v, Identity):
        return f"was recorded by identity only ({v.type})"
    if isinstance(v, Truncated):
        return "was truncated when recorded"
    if isinstance(v, Failed):
        return f"was not captured ({v.message})"
    if v is Redacted:
        return "was redacted"
    if isinstance(v, (list, tuple, set, frozenset)):
        for x in v:
            bad = _unreplayable(x)
            if bad:
                return bad
    if isinstance(v, dict):
        for x in v.values():
            bad = _unreplayable(x)
            if bad:
                return bad
    return None


def _import_function(full, run, fid):
    module, qualname, file = run.sql(
        "SELECT module, qualname, file FROM functions WHERE id = ?", (fid,))[0]
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise CallscopeError(f"replay: {full} is defined inside a function; pass func=")
    mod = sys.modules.get(module)
    if module == "__main__" and mod is not None:
        here = getattr(mod, "__file__", None)
        if not here or not file or os.path.realpath(here) != os.path.realpath(file):
            mod = None  # another program's __main__
    if mod is None:
        if module == "__main__" or not module:
            raise CallscopeError(f"replay: {full} belongs to the script {file or '?'}; pass"
                                 " func=")
        try:
            mod = importlib.import_module(module)
        except Exception as e:
            raise CallscopeError(f"replay: cannot import {module}: {type(e).__name__}: {e};"
                                 " pass func=") from None
    obj = mod
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise CallscopeError(f"replay: {full} is not found in module {module}; pass func=")
    if isinstance(obj, _callscope.Monitor):
        obj = obj.__wrapped__  # the undecorated function: replays are not recorded
    return obj
