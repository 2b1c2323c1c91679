"""Capturing arguments and results (issue 4): what monitor(args=True,
result=True, ...) stores, and what Run.get / get_args / get_result /
replay / export_args give back -- exact round trips of the fast-path
types and numpy arrays, handlers, pickle and repr fallbacks and their
markers, truncation, redaction and sanitizing (checked on the bytes of
every file of the run), sharing of identical large values, trust, damaged
records, and calls selected by name through the real command."""
import ast
import asyncio
import collections
import datetime
import decimal
import enum
import fractions
import math
import os
import pathlib
import textwrap
import pickle
import sqlite3
import struct
import sys
import threading
import uuid

import pytest

import callscope

# -- helpers ----------------------------------------------------------------

def monitor_at_import(**options):
    """callscope.monitor(**options) for functions decorated when this file is
    imported: if the options are refused, each test that calls the function
    fails with the error, rather than the whole file failing to collect."""

    def decorate(func):
        try:
            return callscope.monitor(**options)(func)
        except Exception as e:  # noqa: BLE001 -- re-raised on every call
            error = e

            def refused(*args, **kwargs):
                raise error

            refused.__name__, refused.__qualname__ = func.__name__, func.__qualname__
            refused.__wrapped__ = func
            return refused

    return decorate


def same(a, b):
    """Equal and of the same type, all the way down; floats compared by
    bits (so -0.0 != 0.0) except that nan equals nan."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        ka, kb = list(a), list(b)
        return (len(ka) == len(kb) and all(same(x, y) for x, y in zip(ka, kb))
                and all(same(a[k], b[k]) for k in ka))
    if isinstance(a, (set, frozenset)):
        return a == b and sorted(type(x).__name__ for x in a) == sorted(
            type(x).__name__ for x in b)
    return a == b


def is_redacted(v):
    R = callscope.Redacted
    return v is R or (isinstance(R, type) and isinstance(v, R))


def got(run, name, n):
    """run.get as a plain (args, kwargs) tuple."""
    args, kwargs = run.get(name, n)
    return args, kwargs


def record_echo(finish, *values, **options):
    """Call an identity function once per value, recording args and result."""
    options.setdefault("args", True)
    options.setdefault("result", True)

    @callscope.monitor(name="cap.echo", **options)
    def echo(x):
        return x

    for v in values:
        assert echo(v) is v
    return finish()


def run_files(directory):
    """(path, bytes) of every regular file below directory."""
    out = []
    for d, _, files in os.walk(directory):
        for f in files:
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as fh:
                    out.append((p, fh.read()))
    return out


def db_size(run):
    """run.db with whatever SQLite keeps beside it."""
    return sum(os.path.getsize(run.db_path + s) for s in ("", "-wal", "-journal")
               if os.path.exists(run.db_path + s))


# -- 1. fast-path types -----------------------------------------------------

FAST_VALUES = [
    pytest.param(None, id="None"),
    pytest.param(True, id="True"),
    pytest.param(False, id="False"),
    pytest.param(0, id="zero"),
    pytest.param(-1, id="minus-one"),
    pytest.param(2**63 - 1, id="int64-max"),
    pytest.param(-2**63, id="int64-min"),
    pytest.param(2**64, id="2**64"),
    pytest.param(2**200, id="2**200"),
    pytest.param(-2**70, id="-2**70"),
    pytest.param(1.5, id="float"),
    pytest.param(5e-324, id="float-denormal"),
    pytest.param(1.7976931348623157e308, id="float-max"),
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("inf"), id="inf"),
    pytest.param(float("-inf"), id="-inf"),
    pytest.param(-0.0, id="-0.0"),
    pytest.param(1 + 2j, id="complex"),
    pytest.param(complex(-0.0, float("inf")), id="complex-special"),
    pytest.param("", id="str-empty"),
    pytest.param("plain ascii", id="str-ascii"),
    pytest.param("héllo wörld ✓ 🐍 中文", id="str-unicode"),
    pytest.param("a\x00b", id="str-nul"),
    pytest.param("\ud83d", id="str-lone-surrogate"),
    pytest.param(b"", id="bytes-empty"),
    pytest.param(b"\x00\xff" * 20, id="bytes"),
    pytest.param((), id="tuple-empty"),
    pytest.param((1,), id="tuple-1"),
    pytest.param([], id="list-empty"),
    pytest.param({}, id="dict-empty"),
    pytest.param(set(), id="set-empty"),
    pytest.param(frozenset(), id="frozenset-empty"),
    pytest.param([True, 1, False, 0, 1.0, None], id="bool-vs-int"),
    pytest.param((1, [2, (3, {"k": [4.5, b"x"]})], {5, 6}), id="nested"),
    pytest.param({1: "a", (1, 2): [3], None: b"x", 2.5: True, "s": {"t": ()}},
                 id="dict-mixed-keys"),
    pytest.param({"b": 1, "a": 2, "c": 3}, id="dict-order"),
    pytest.param({frozenset({1, 2}), ("a", 1), "s", 3}, id="set-nested"),
    pytest.param(frozenset({frozenset({1}), (2, 3)}), id="frozenset-nested"),
    pytest.param([float("nan"), -0.0, [float("-inf")]], id="nested-floats"),
    pytest.param([[[[[[[[[[1]]]]]]]]]], id="deep-10"),
    pytest.param(list(range(1000)), id="list-1000"),
]


@pytest.mark.parametrize("value", FAST_VALUES)
def test_fast_path_round_trip(root, finish, value):
    run = record_echo(finish, value)
    args, kwargs = run.get("cap.echo", 1)
    assert isinstance(args, list) and isinstance(kwargs, dict)
    assert len(args) == 1 and kwargs == {}
    assert same(args[0], value), (args[0], value)
    assert same(run.get_args("cap.echo", 1).x, value)
    assert same(run.get_result("cap.echo", 1), value)


def test_fast_path_keyword_arguments_as_passed(root, finish):
    @callscope.monitor(args=True, name="cap.kw")
    def kw(a, b=None, *rest, c=None, **more):
        return 1

    kw(1, b=(2,), c={"x": [3]}, extra=-0.0)
    kw(*[1, 2, 3], **{"c": 4})
    run = finish()
    args, kwargs = run.get("cap.kw", 1)
    assert same(args, [1])
    assert same(kwargs, {"b": (2,), "c": {"x": [3]}, "extra": -0.0})
    args, kwargs = run.get("cap.kw", 2)
    assert same(args, [1, 2, 3]) and same(kwargs, {"c": 4})


def test_arguments_are_a_snapshot_taken_at_the_call(root, finish):
    @callscope.monitor(args=True, result=True, name="cap.mutate")
    def mutate(lst, d):
        lst.append(99)
        d["added"] = True
        return lst

    lst, d = [1, 2], {"k": 1}
    out = mutate(lst, d)
    assert out is lst  # the caller's objects, untouched by the recording
    out.append(100)
    run = finish()
    assert got(run, "cap.mutate", 1) == ([[1, 2], {"k": 1}], {})
    assert run.get_result("cap.mutate", 1) == [1, 2, 99]


# -- 2. numpy arrays --------------------------------------------------------

@pytest.fixture
def np():
    return pytest.importorskip("numpy")


def _arrays(np):
    base = np.arange(24, dtype=np.float64).reshape(4, 6) / 7
    return {
        "1d": np.linspace(-1, 1, 7),
        "2d": base,
        "strided": np.arange(20.0)[::2],
        "transposed": base.T,
        "fortran": np.asfortranarray(base),
        "sliced-2d": base[1:, ::3],
        "0d": np.array(3.25),
        "empty-0x3": np.empty((0, 3)),
        "nan-inf": np.array([np.nan, np.inf, -np.inf, -0.0]),
    }


@pytest.mark.parametrize("kind", ["1d", "2d", "strided", "transposed", "fortran",
                                  "sliced-2d", "0d", "empty-0x3", "nan-inf"])
def test_numpy_shapes_and_layouts(root, finish, np, kind):
    a = _arrays(np)[kind]
    run = record_echo(finish, a)
    (got,), _ = run.get("cap.echo", 1)
    assert type(got) is np.ndarray
    assert got.dtype == a.dtype and got.shape == a.shape
    assert np.array_equal(got, a, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(a))
    assert got.flags.c_contiguous or got.flags.f_contiguous
    res = run.get_result("cap.echo", 1)
    assert res.dtype == a.dtype and res.shape == a.shape
    assert np.array_equal(res, a, equal_nan=True)


@pytest.mark.parametrize("dtype", ["float64", "float32", "int8", "complex128", "bool",
                                   "uint64", ">i4", "<U5", "datetime64[ns]",
                                   "i4,f8"])
def test_numpy_dtypes(root, finish, np, dtype):
    if dtype == "<U5":
        a = np.array(["ab", "héllo", "", "xyz"], dtype=dtype)
    elif dtype == "datetime64[ns]":
        a = np.array(["2024-01-02T03:04:05.123456789", "NaT"], dtype=dtype)
    elif dtype == "i4,f8":
        a = np.array([(1, 2.5), (-3, np.inf)], dtype=dtype)
    elif dtype == "bool":
        a = np.array([[True, False, True], [False, False, True]])
    elif dtype == "complex128":
        a = np.array([1 + 2j, -0.5j, np.inf])
    else:
        a = (np.arange(-6, 6) * 11).astype(dtype).reshape(3, 4)
    run = record_echo(finish, a)
    (got,), _ = run.get("cap.echo", 1)
    assert type(got) is np.ndarray
    assert got.dtype == a.dtype and got.shape == a.shape
    if a.dtype.kind == "M":
        assert np.array_equal(np.isnat(got), np.isnat(a))
        assert got[0] == a[0]
    else:
        assert np.array_equal(got, a)


def test_numpy_object_array_is_pickled(root, finish, np):
    a = np.array([1, "a", None, (2, 3)], dtype=object)
    run = record_echo(finish, a)
    (got,), _ = run.get("cap.echo", 1)
    assert type(got) is np.ndarray and got.dtype == object
    assert got.tolist() == a.tolist()


def test_numpy_export_args_and_replay(root, finish, np, tmp_path):
    @callscope.monitor(args=True, result=True, name="cap.solve")
    def solve(A, tol=1e-6):
        return A * 2

    A = np.arange(12.0).reshape(3, 4)[:, ::2]
    solve(A, tol=1e-3)
    run = finish()
    out = tmp_path / "export"
    out.mkdir()
    run.export_args("cap.solve", 1, out)
    assert np.array_equal(np.load(out / "arg_A.npy"), A)
    assert np.load(out / "arg_A.npy").dtype == A.dtype
    with open(out / "arg_tol.pkl", "rb") as fh:
        assert pickle.load(fh) == 1e-3
    # arrays are compared with array_equal, not ==
    r = run.replay("cap.solve", 1, func=solve.__wrapped__)
    assert r.matches is True and r.error is None
    assert np.array_equal(r.result, A * 2) and np.array_equal(r.recorded, A * 2)
    r = run.replay("cap.solve", 1, func=lambda A, tol=0: A * 3)
    assert r.matches is False


# -- 3. handlers ------------------------------------------------------------

class Blob:
    """Not picklable (holds a lock), so only a handler can store it by value."""

    def __init__(self, payload):
        self.payload = payload
        self.lock = threading.Lock()


class SubBlob(Blob):
    pass


@pytest.fixture
def unregister_blob():
    yield
    for t in (Blob, SubBlob):
        try:
            callscope.unregister(t)
        except Exception:
            pass


def test_handler_round_trip_and_subclass(root, finish, unregister_blob):
    saved, loaded = [], []

    def save(obj):
        saved.append(obj)
        return obj.payload.encode()

    def load(data):
        loaded.append(bytes(data))
        return Blob(bytes(data).decode())

    callscope.register(Blob, save=save, load=load)
    assert callscope.handlers()[Blob] == (save, load)
    a, b = Blob("first ✓"), SubBlob("second")
    run = record_echo(finish, a, b, result=False)
    assert any(o is a for o in saved) and any(o is b for o in saved)
    (got,), _ = run.get("cap.echo", 1)
    assert isinstance(got, Blob) and got.payload == "first ✓"
    (got,), _ = run.get("cap.echo", 2)
    assert isinstance(got, Blob) and got.payload == "second"
    assert {b"first \xe2\x9c\x93", b"second"} <= set(loaded)
    callscope.unregister(Blob)
    assert Blob not in callscope.handlers()


class Tagged:
    """Picklable; a handler still takes precedence over pickle."""

    def __init__(self, v, how="made"):
        self.v, self.how = v, how


def test_handler_takes_precedence_over_pickle(root, finish):
    callscope.register(Tagged, save=lambda o: str(o.v).encode(),
                       load=lambda b: Tagged(int(bytes(b)), how="handler"))
    try:
        run = record_echo(finish, Tagged(5), result=False)
        (x,), _ = run.get("cap.echo", 1)
        assert isinstance(x, Tagged) and x.v == 5 and x.how == "handler"
    finally:
        callscope.unregister(Tagged)
    assert Tagged not in callscope.handlers()


def test_handler_unregistered_type_falls_back(root, finish):
    assert Blob not in callscope.handlers()
    run = record_echo(finish, Blob("x"), max_arg_length=1000)
    (got,), _ = run.get("cap.echo", 1)
    assert isinstance(got, callscope.ReprOnly)


@pytest.mark.parametrize("how", ["raises", "returns-str"])
def test_handler_failure_gives_failed_marker(root, finish, unregister_blob, how):
    def save(obj):
        if how == "raises":
            raise RuntimeError("save exploded")
        return "not bytes"

    callscope.register(Blob, save=save, load=lambda data: Blob("never"))

    @callscope.monitor(args=True, result=True, name="cap.h")
    def h(x, n):
        return n + 1

    assert h(Blob("x"), 41) == 42  # the call runs and returns normally
    run = finish()
    (c,) = run.calls("cap.h")
    assert c.status == "ok"
    args, _ = run.get("cap.h", 1)
    assert isinstance(args[0], callscope.Failed)
    assert isinstance(args[0].message, str) and args[0].message
    if how == "raises":
        assert "save exploded" in args[0].message or "RuntimeError" in args[0].message
    assert args[1] == 41  # the other argument is unaffected
    assert run.get_result("cap.h", 1) == 42


def test_register_rejects_non_types(unregister_blob):
    with pytest.raises((TypeError, ValueError)):
        callscope.register("Blob", save=lambda o: b"", load=lambda b: None)
    with pytest.raises((TypeError, ValueError)):
        callscope.register(Blob, save=5, load=lambda b: None)


# -- 4. pickle fallback and repr-only values ---------------------------------

Pair = collections.namedtuple("Pair", "x y")


class Color(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    HIGH = 3


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)

    def __hash__(self):
        return hash((self.x, self.y))

    @monitor_at_import(args=True, result=True, name="cap.Point.norm1")
    def norm1(self):
        return abs(self.x) + abs(self.y)

    @monitor_at_import(args=True, result=True, capture_self=True, name="cap.Point.scaled")
    def scaled(self, k):
        return Point(self.x * k, self.y * k)


PICKLED_VALUES = [
    pytest.param(fractions.Fraction(1, 3), id="Fraction"),
    pytest.param(decimal.Decimal("-1.10"), id="Decimal"),
    pytest.param(datetime.datetime(2024, 2, 29, 12, 30, tzinfo=datetime.timezone.utc),
                 id="datetime"),
    pytest.param(datetime.date(1999, 12, 31), id="date"),
    pytest.param(datetime.timedelta(days=-1, microseconds=5), id="timedelta"),
    pytest.param(uuid.UUID(int=12345), id="UUID"),
    pytest.param(pathlib.PurePosixPath("/a/b"), id="PurePosixPath"),
    pytest.param(bytearray(b"\x00ab"), id="bytearray"),
    pytest.param(range(3, 9, 2), id="range"),
    # subclasses of fast-path types keep their type
    pytest.param(Pair(1, [2]), id="namedtuple"),
    pytest.param(collections.OrderedDict([("b", 1), ("a", 2)]), id="OrderedDict"),
    pytest.param(collections.Counter("abca"), id="Counter"),
    pytest.param(Level.HIGH, id="IntEnum"),
    pytest.param(Color.RED, id="Enum"),
    pytest.param(Point(1, -2), id="module-class"),
    pytest.param([Point(0, 0), fractions.Fraction(2, 7)], id="list-of-pickled"),
]


@pytest.mark.parametrize("value", PICKLED_VALUES)
def test_pickle_fallback_round_trip(root, finish, value):
    run = record_echo(finish, value)
    (got,), _ = run.get("cap.echo", 1)
    assert type(got) is type(value) and got == value
    if isinstance(value, list):
        assert [type(v) for v in got] == [type(v) for v in value]
    res = run.get_result("cap.echo", 1)
    assert type(res) is type(value) and res == value


class _BadReduce:
    def __reduce__(self):
        raise RuntimeError("no pickling for you")

    def __repr__(self):
        return "<_BadReduce instance>"


def _unpicklables():
    class Local:
        def __repr__(self):
            return "<Local thing>"

    return {
        "lock": threading.Lock(),
        "lambda": lambda: 1,
        "local-class": Local(),
        "reduce-raises": _BadReduce(),
        "generator": (i for i in range(3)),
    }


@pytest.mark.parametrize("kind", ["lock", "lambda", "local-class", "reduce-raises",
                                  "generator"])
def test_unpicklable_is_repr_only_and_replay_refuses(root, finish, kind):
    obj = _unpicklables()[kind]

    @callscope.monitor(args=True, result=True, max_arg_length=1000, name="cap.u")
    def u(x, n=1):
        return n

    assert u(obj, n=2) == 2
    run = finish()
    args, kwargs = run.get("cap.u", 1)
    r = args[0]
    assert isinstance(r, callscope.ReprOnly)
    assert r.text == repr(obj)
    assert type(obj).__name__ in r.type
    assert kwargs == {"n": 2}
    with pytest.raises(callscope.CallscopeError, match="repr"):
        run.replay("cap.u", 1, func=u.__wrapped__)
    # replacing the repr-only argument leaves nothing that needs it
    out = run.replay("cap.u", 1, func=u.__wrapped__, x=None)
    assert out.result == 2 and out.matches is True


# -- 5. repr safety ----------------------------------------------------------

class _Hostile:
    """Neither repr nor pickle works."""

    def __repr__(self):
        raise ValueError("repr exploded")

    def __reduce__(self):
        raise TypeError("cannot pickle _Hostile")


class _HugeRepr:
    """10 MB repr, not picklable."""

    def __repr__(self):
        return "y" * 10_000_000

    def __reduce__(self):
        raise TypeError("cannot pickle _HugeRepr")


def test_repr_and_pickle_both_fail(root, finish):
    @callscope.monitor(args=True, result=True, name="cap.r")
    def r(x, n):
        return n * 2

    assert r(_Hostile(), 21) == 42
    run = finish()
    (c,) = run.calls("cap.r")
    assert c.status == "ok"
    args, _ = run.get("cap.r", 1)
    assert isinstance(args[0], (callscope.ReprOnly, callscope.Failed))
    assert args[1] == 21
    assert run.get_result("cap.r", 1) == 42


def test_huge_repr_is_truncated(root, finish):
    @callscope.monitor(args=True, result=True, max_arg_length=100, name="cap.r")
    def r(x):
        return "fine"

    assert r(_HugeRepr()) == "fine"
    run = finish()
    (got,), _ = run.get("cap.r", 1)
    # Truncated(ReprOnly) or ReprOnly(text=Truncated): either way marked,
    # with the original length
    t = got
    if isinstance(got, callscope.ReprOnly):
        t = got.text
    assert isinstance(t, callscope.Truncated), got
    assert t.length == 10_000_000
    partial = t.value.text if isinstance(t.value, callscope.ReprOnly) else t.value
    assert isinstance(partial, str) and 0 < len(partial) <= 100 and set(partial) == {"y"}
    assert db_size(run) < 1_000_000


def test_hostile_structures_in_a_subprocess(run_py, root):
    """Cycles and very deep nesting: the call returns, the process does
    not crash, and the value loads back as something."""
    p = run_py("""
        import sys, callscope
        @callscope.monitor(args=True, result=True, name="cap.h")
        def h(x):
            return 1
        a = []; a.append(a)
        d = {}; d["self"] = d
        deep = cur = []
        for _ in range(100_000):
            nxt = []; cur.append(nxt); cur = nxt
        t = ([],); t[0].append(t)
        for v in (a, d, deep, t):
            assert h(v) == 1
        print("returned", flush=True)
        callscope._callscope._finish()
        run = callscope.load()
        for i in (1, 2, 3, 4):
            (x,), kw = run.get("cap.h", i)
            if i == 1 and type(x) is list:
                assert x[0] is x
            if i == 2 and type(x) is dict:
                assert x["self"] is x
            print("loaded", i, type(x).__name__, flush=True)
    """, timeout=120)
    lines = p.stdout.splitlines()
    assert "returned" in lines
    assert [l.split()[:2] for l in lines if l.startswith("loaded")] == [
        ["loaded", str(i)] for i in (1, 2, 3, 4)]


# -- 6. truncation ------------------------------------------------------------

@pytest.mark.parametrize("text", ["x" * 1000, "é" * 1000, "🐍" * 101, "a" * 101])
def test_long_string_truncated(root, finish, text):
    run = record_echo(finish, text, max_arg_length=100, result=False)
    (got,), _ = run.get("cap.echo", 1)
    assert isinstance(got, callscope.Truncated)
    assert got.value == text[:100]
    assert got.length == len(text)


def test_string_at_the_limit_is_kept(root, finish):
    run = record_echo(finish, "z" * 100, ["q" * 1000], max_arg_length=100, result=False)
    (got,), _ = run.get("cap.echo", 1)
    assert got == "z" * 100 and type(got) is str
    # a long string inside a container is marked too
    (got,), _ = run.get("cap.echo", 2)
    inner = got if isinstance(got, callscope.Truncated) else got[0]
    assert isinstance(inner, callscope.Truncated) and inner.length == 1000


def test_max_bytes(root, finish):
    big = os.urandom(100_000)
    small = os.urandom(500)
    lst = list(range(100_000))
    run = record_echo(finish, big, small, lst, max_bytes=1000, result=False)
    (got,), _ = run.get("cap.echo", 1)
    assert isinstance(got, callscope.Truncated)
    assert got.length == len(big)
    assert isinstance(got.value, bytes) and len(got.value) <= 1000
    assert big.startswith(got.value)
    (got,), _ = run.get("cap.echo", 2)
    assert got == small and type(got) is bytes
    (got,), _ = run.get("cap.echo", 3)
    assert isinstance(got, callscope.Truncated)
    assert db_size(run) < 1_000_000


# -- 7. redaction and sanitizing ----------------------------------------------

SECRET = "hunter2-s3cr3t"
MASK = "[MASKED]"
REDACTED_SECRETS = ["pw-XYZZY-positional", "pw-PLUGH-keyword", "tk-FROTZ-token",
                    "pw-GNUSTO-dict", "tk-REZROV-nested", "pw-BLORB-varkw"]


def _mask(s):
    return s.replace(SECRET, MASK)


class _SecretRepr:
    def __repr__(self):
        return f"<creds {SECRET}>"

    def __reduce__(self):
        raise TypeError("not picklable")


def test_redact_and_sanitize_never_write_secrets(root, finish):
    opts = dict(args=True, result=True, redact=["password", "*token*"], sanitize=_mask,
                max_arg_length=100)

    @callscope.monitor(name="cap.login", **opts)
    def login(user, password, api_token=None, config=None):
        return f"welcome {user} {SECRET}"

    @callscope.monitor(name="cap.opts", **opts)
    def options(**kw):
        return len(kw)

    @callscope.monitor(name="cap.fail", **opts)
    def fail(x):
        raise PermissionError("denied: hunter2-s3cr3t")

    @callscope.monitor(name="cap.note", **opts)
    def note(text, items, keyed, creds, long):
        return 0

    login("bob", "pw-XYZZY-positional", "tk-FROTZ-token",
          {"user": "bob", "password": "pw-GNUSTO-dict",
           "auth": [{"refresh_token": "tk-REZROV-nested"}]})
    login("alice", password="pw-PLUGH-keyword", config={"visible-canary-7": 1})
    assert options(password="pw-BLORB-varkw", level=3) == 2
    with pytest.raises(PermissionError) as info:
        fail(1)
    assert SECRET in str(info.value)  # the caller sees the real exception
    # in a str, a nested str, a dict key, a repr, and across the truncation point
    note(f"my {SECRET}!", [SECRET], {SECRET: 1}, _SecretRepr(), "x" * 90 + SECRET + "y" * 50)
    run = finish()

    args, kwargs = run.get("cap.login", 1)
    assert args[0] == "bob" and is_redacted(args[1]) and is_redacted(args[2])
    cfg = args[3]
    assert cfg["user"] == "bob" and is_redacted(cfg["password"])
    assert is_redacted(cfg["auth"][0]["refresh_token"])
    a = run.get_args("cap.login", 1)
    assert is_redacted(a.password) and is_redacted(a.api_token)
    args, kwargs = run.get("cap.login", 2)
    assert args == ["alice"] and is_redacted(kwargs["password"])
    assert kwargs["config"] == {"visible-canary-7": 1}
    assert run.get_result("cap.login", 1) == f"welcome bob {MASK}"
    _, kwargs = run.get("cap.opts", 1)
    assert is_redacted(kwargs["password"]) and kwargs["level"] == 3

    ((_, _, typ, msg, tb),) = run.errors("cap.fail")
    assert typ == "PermissionError"
    assert msg == f"denied: {MASK}" and MASK in tb and "hunter2" not in tb

    (text, items, keyed, creds, long), _ = run.get("cap.note", 1)
    assert text == f"my {MASK}!"
    assert items == [MASK] and list(keyed) == [MASK]
    assert isinstance(creds, callscope.ReprOnly) and creds.text == f"<creds {MASK}>"
    assert isinstance(long, callscope.Truncated)
    assert long.length in (154, 154 - len(SECRET) + len(MASK))  # before or after masking
    assert "hunter2" not in long.value and long.value.startswith("x" * 90)

    files = run_files(root)
    assert any(data.startswith(b"SQLite format 3") for _, data in files)
    assert any(b"visible-canary-7" in data for _, data in files)  # the scan sees values
    for path, data in files:
        assert b"hunter2" not in data, path
        for s in REDACTED_SECRETS:
            assert s.encode() not in data, (path, s)


def test_sanitize_that_raises_fails_closed(root, finish):
    def bad(s):
        raise RuntimeError("sanitizer broke")

    @callscope.monitor(args=True, result=True, sanitize=bad, name="cap.s")
    def s(text):
        return 7

    assert s(f"top {SECRET}") == 7  # the call is not disturbed
    run = finish()
    (c,) = run.calls("cap.s")
    assert c.status == "ok"
    for path, data in run_files(root):
        assert b"hunter2" not in data, path


# -- 8. numbering and errors of get -------------------------------------------

def test_numbering_follows_call_order(root, finish):
    @callscope.monitor(args=True, result=True, name="cap.n")
    def n(x):
        return x * 10

    n(1)
    n(2)
    t = threading.Thread(target=n, args=(3,))
    t.start()
    t.join()
    n(x=4)
    run = finish()
    assert [got(run, "cap.n", i) for i in (1, 2, 3)] == [([1], {}), ([2], {}), ([3], {})]
    assert got(run, "cap.n", 4) == ([], {"x": 4})
    assert [run.get_result("cap.n", i) for i in (1, 2, 3, 4)] == [10, 20, 30, 40]
    for bad in (0, 5, 10**6):
        with pytest.raises(callscope.CallscopeError):
            run.get("cap.n", bad)
        with pytest.raises(callscope.CallscopeError):
            run.get_result("cap.n", bad)
        with pytest.raises(callscope.CallscopeError):
            run.get_args("cap.n", bad)
    with pytest.raises(callscope.CallscopeError):
        run.get("cap.nope", 1)
    with pytest.raises(callscope.CallscopeError):
        run.get_args("cap.nope", 1)
    with pytest.raises(callscope.CallscopeError):
        run.replay("cap.nope", 1)


# -- 9. Args ------------------------------------------------------------------

def test_get_args_fills_defaults_in_signature_order(root, finish):
    @callscope.monitor(args=True, name="cap.f")
    def f(x, y=2, *, z=3):
        return x

    f(1)
    f(1, 5, z=7)
    f(y=8, x=9)
    run = finish()
    a = run.get_args("cap.f", 1)
    assert isinstance(a, callscope.Args)
    assert (a.x, a.y, a.z) == (1, 2, 3)
    assert list(a.keys()) == ["x", "y", "z"]
    assert a["y"] == 2 and a["z"] == 3
    assert "x" in repr(a)
    assert got(run, "cap.f", 1) == ([1], {})  # get: as passed, no defaults
    b = run.get_args("cap.f", 2)
    assert (b.x, b.y, b.z) == (1, 5, 7)
    c = run.get_args("cap.f", 3)
    assert (c.x, c.y, c.z) == (9, 8, 3) and list(c.keys()) == ["x", "y", "z"]


# -- 10. generators, coroutines, errors ----------------------------------------

def test_generator_and_coroutine_results(root, finish):
    @callscope.monitor(args=True, result=True, name="cap.gen")
    def gen(n):
        for i in range(n):
            yield i
        return f"done {n}"

    @callscope.monitor(args=True, result=True, name="cap.badgen")
    def badgen():
        yield 1
        raise KeyError("gen broke")

    @callscope.monitor(args=True, result=True, name="cap.co")
    async def co(x):
        await asyncio.sleep(0)
        return {"doubled": x * 2}

    @callscope.monitor(args=True, result=True, name="cap.badco")
    async def badco():
        await asyncio.sleep(0)
        raise LookupError("co broke")

    assert list(gen(3)) == [0, 1, 2]
    with pytest.raises(KeyError):
        list(badgen())

    async def main():
        r = await co(21)
        with pytest.raises(LookupError):
            await badco()
        return r

    assert asyncio.run(main()) == {"doubled": 42}
    run = finish()
    assert run.get_result("cap.gen", 1) == "done 3"
    assert got(run, "cap.gen", 1) == ([3], {})
    assert run.get_result("cap.co", 1) == {"doubled": 42}
    assert got(run, "cap.co", 1) == ([21], {})
    with pytest.raises(callscope.CallscopeError, match="KeyError"):
        run.get_result("cap.badgen", 1)
    with pytest.raises(callscope.CallscopeError, match="LookupError"):
        run.get_result("cap.badco", 1)


def test_get_result_of_raised_call_and_uncaptured_result(root, finish):
    @callscope.monitor(args=True, result=True, name="cap.boom")
    def boom(x):
        raise ValueError("bad value")

    @callscope.monitor(args=True, name="cap.noresult")
    def noresult(x):
        return x

    with pytest.raises(ValueError):
        boom(5)
    assert noresult(6) == 6
    run = finish()
    assert got(run, "cap.boom", 1) == ([5], {})  # its arguments are still there
    with pytest.raises(callscope.CallscopeError, match="ValueError"):
        run.get_result("cap.boom", 1)
    assert got(run, "cap.noresult", 1) == ([6], {})
    with pytest.raises(callscope.CallscopeError):
        run.get_result("cap.noresult", 1)


# -- 11. methods and self ----------------------------------------------------

class Shape:
    def __init__(self):
        self.lock = threading.Lock()  # not picklable either

    @monitor_at_import(args=True, result=True, name="cap.Shape.area")
    def area(self, x):
        return x * x

    @classmethod
    @monitor_at_import(args=True, name="cap.Shape.make")
    def make(cls, n):
        return n

    @monitor_at_import(args=True, capture_self=True, name="cap.Shape.kept")
    def kept(self):
        return 0


def test_self_is_an_identity(root, finish):
    s1, s2 = Shape(), Shape()
    assert s1.area(2) == 4 and s1.area(3) == 9 and s2.area(4) == 16
    assert Shape.make(5) == 5
    run = finish()
    ids = []
    for i, x in ((1, 2), (2, 3), (3, 4)):
        args, kwargs = run.get("cap.Shape.area", i)
        assert isinstance(args[0], callscope.Identity)
        assert "Shape" in args[0].type
        assert args[1:] == [x] and kwargs == {}
        ids.append(args[0].id)
    assert ids[0] == ids[1] != ids[2]  # same object, same identity
    a = run.get_args("cap.Shape.area", 1)
    assert isinstance(a.self, callscope.Identity) and a.x == 2
    assert list(a.keys()) == ["self", "x"]
    args, _ = run.get("cap.Shape.make", 1)
    assert isinstance(args[0], callscope.Identity) and args[1:] == [5]


def test_capture_self_stores_by_value(root, finish):
    p = Point(3, -4)
    assert p.scaled(2) == Point(6, -8)
    assert p.norm1() == 7  # capture_self not set: an identity
    Shape().kept()  # capture_self but not picklable
    run = finish()
    args, _ = run.get("cap.Point.scaled", 1)
    assert type(args[0]) is Point and args[0] == p and args[1] == 2
    assert run.get_result("cap.Point.scaled", 1) == Point(6, -8)
    args, _ = run.get("cap.Point.norm1", 1)
    assert isinstance(args[0], callscope.Identity) and "Point" in args[0].type
    args, _ = run.get("cap.Shape.kept", 1)
    assert isinstance(args[0], (callscope.ReprOnly, callscope.Identity))


# -- 12. sharing identical large values ---------------------------------------

@pytest.mark.parametrize("kind", ["bytes-same-object", "bytes-equal-copies",
                                  "numpy-equal-copies"])
def test_identical_large_values_stored_once(root, finish, kind):
    payload = os.urandom(1 << 20)
    if kind == "numpy-equal-copies":
        np = pytest.importorskip("numpy")
        base = np.frombuffer(payload, dtype=np.float64).copy()
        make = base.copy
    elif kind == "bytes-equal-copies":
        def make():
            return bytes(bytearray(payload))
    else:
        def make():
            return payload

    @callscope.monitor(args=True, name="cap.big")
    def big(x):
        return None

    for _ in range(200):
        big(make())
    run = finish()
    assert len(run.calls("cap.big")) == 200
    assert db_size(run) < 10 * 2**20
    assert run.sql("SELECT count(*) FROM blobs") == [(1,)]
    assert run.sql("SELECT count(*) FROM blobs WHERE size >= ?", (1 << 20,)) == [(1,)]
    (got,), _ = run.get("cap.big", 200)
    if kind == "numpy-equal-copies":
        assert np.array_equal(got, base, equal_nan=True) and got.dtype == base.dtype
    else:
        assert got == payload


# -- 13. replay ----------------------------------------------------------------

@monitor_at_import(args=True, result=True)
def _pure_add(a, b=10):
    return a + b


def test_replay(root, finish):
    assert _pure_add(2) == 12
    assert _pure_add(3, 4) == 7
    run = finish()
    name = f"{__name__}._pure_add"
    r = run.replay(name, 1)  # imports module.qualname
    assert isinstance(r, callscope.Replay)
    assert r.result == 12 and r.recorded == 12 and r.matches is True and r.error is None
    r = run.replay(name, 2)
    assert r.result == 7 and r.matches is True
    # behaviour changed
    r = run.replay(name, 2, func=lambda a, b=10: a * b)
    assert r.result == 12 and r.recorded == 7 and r.matches is False
    # overrides by name, for positional and defaulted arguments
    r = run.replay(name, 2, b=100)
    assert r.result == 103 and r.recorded == 7 and r.matches is False
    r = run.replay(name, 1, a=-10)
    assert r.result == 0 and r.matches is False
    r = run.replay(name, 1, func=_pure_add.__wrapped__, a=2)
    assert r.result == 12 and r.matches is True


def test_replay_that_raises(root, finish):
    @callscope.monitor(args=True, result=True, name="cap.p")
    def p(x):
        return x + 1

    p(1)
    run = finish()

    def broken(x):
        raise ZeroDivisionError("now broken")

    r = run.replay("cap.p", 1, func=broken)
    assert isinstance(r.error, ZeroDivisionError)
    assert r.matches is False and r.recorded == 2


# -- 14. trust -----------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="needs root to give the run to another user")
def test_pickled_values_need_trust_when_not_ours(run_py, root):
    run_py("""
        import fractions, callscope
        @callscope.monitor(args=True, result=True, name="cap.t")
        def t(x, n):
            return x * n
        @callscope.monitor(args=True, result=True, name="cap.plain")
        def plain(n):
            return [n, "s"]
        t(fractions.Fraction(1, 3), 2)
        plain(5)
    """)
    run = callscope.load(root=root)  # ours, from this host: trusted
    assert got(run, "cap.t", 1) == ([fractions.Fraction(1, 3), 2], {})
    for d, dirs, files in os.walk(run.path):
        os.chown(d, 12345, -1)
        for f in files:
            os.chown(os.path.join(d, f), 12345, -1, follow_symlinks=False)
    try:
        run = callscope.load(root=root)
        with pytest.raises(callscope.CallscopeError, match=r"trusted=True"):
            run.get("cap.t", 1)
        with pytest.raises(callscope.CallscopeError, match=r"trusted=True"):
            run.get_args("cap.t", 1)
        with pytest.raises(callscope.CallscopeError, match=r"trusted=True"):
            run.get_result("cap.t", 1)
        # values that need no pickle still load
        assert got(run, "cap.plain", 1) == ([5], {})
        assert run.get_result("cap.plain", 1) == [5, "s"]
        run = callscope.load(root=root, trusted=True)
        assert got(run, "cap.t", 1) == ([fractions.Fraction(1, 3), 2], {})
        assert run.get_result("cap.t", 1) == fractions.Fraction(2, 3)
    finally:
        for d, dirs, files in os.walk(run.path):
            os.chown(d, 0, -1)
            for f in files:
                os.chown(os.path.join(d, f), 0, -1, follow_symlinks=False)


# -- 15. bad options -------------------------------------------------------------

@pytest.mark.parametrize("opts, word", [
    (dict(max_bytes=-1), "max_bytes"),
    (dict(max_bytes="big"), "max_bytes"),
    (dict(max_arg_length=0), "max_arg_length"),
    (dict(max_arg_length=-5), "max_arg_length"),
    (dict(redact=5), "redact"),
    (dict(redact=["ok", 5]), "redact"),
    (dict(sanitize="x"), "sanitize"),
])
def test_bad_options_raise_at_decoration(root, opts, word):
    def f(x):
        return x

    for decorate in (lambda: callscope.monitor(**opts)(f), lambda: callscope.monitor(f, **opts)):
        with pytest.raises((TypeError, ValueError), match=word) as info:
            decorate()
        assert "unexpected keyword" not in str(info.value)  # known, but refused
    # the same options with good values are accepted
    good = {"max_bytes": 10, "max_arg_length": 1, "redact": ["p*"], "sanitize": str.upper}
    callscope.monitor(**{k: good[k] for k in opts})(f)


# -- 16. calls selected by name, through the command -----------------------------

MOD = '''
def f(a, b=2, *rest, k=1, **kw):
    return [a, b, list(rest), k, sorted(kw.items())]

def login(user, password, note=""):
    return user
'''

PROG = '''
import mod
out = [
    mod.f(1),
    mod.f(1, 3),
    mod.f(1, 2, 3, 4),
    mod.f(1, k=5),
    mod.f(a=7),
    mod.f(1, 2, 3, k=4, z=5, y=(6,)),
    mod.f(*[8, 9], **{"q": "r"}),
]
mod.login("bob", "pw-CLI-secret-9", note="n" * 50)
print(repr(out))
'''


def _local_f():
    ns = {}
    exec(MOD, ns)
    return ns["f"]


def _check_selected_calls(run, stdout):
    expected = ast.literal_eval(stdout.strip().splitlines()[-1])
    f = _local_f()
    assert len(run.calls("mod.f")) == len(expected)
    for i, want in enumerate(expected, 1):
        args, kwargs = run.get("mod.f", i)
        assert isinstance(args, list) and isinstance(kwargs, dict)
        assert f(*args, **kwargs) == want, (i, args, kwargs)
        assert run.get_result("mod.f", i) == want
        a = run.get_args("mod.f", i)
        assert (a.a, a.b, a.k) == (want[0], want[1], want[3])
    with pytest.raises(callscope.CallscopeError):
        run.get("mod.f", len(expected) + 1)


def test_cli_args_result_for_calls_selected_by_name(cli, tmp_path, root):
    (tmp_path / "mod.py").write_text(MOD)
    (tmp_path / "prog.py").write_text(PROG)
    p = cli("run", "--args", "--result", "-t", "mod.f", "--", "prog.py", check=0)
    _check_selected_calls(callscope.load(root=root), p.stdout)


def test_pyproject_args_result(cli, tmp_path, root):
    (tmp_path / "mod.py").write_text(MOD)
    (tmp_path / "prog.py").write_text(PROG)
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.callscope]\nargs = true\nresult = true\n')
    p = cli("run", "-t", "mod.f", "prog.py", check=0)
    _check_selected_calls(callscope.load(root=root), p.stdout)


def test_cli_redact_and_max_arg_length(cli, tmp_path, root):
    (tmp_path / "mod.py").write_text(MOD)
    (tmp_path / "prog.py").write_text(PROG)
    cli("run", "--args", "--redact", "pass*", "--max-arg-length", "10",
        "-t", "mod.login", "prog.py", check=0)
    run = callscope.load(root=root)
    a = run.get_args("mod.login", 1)
    assert a.user == "bob" and is_redacted(a.password)
    assert isinstance(a.note, callscope.Truncated) and a.note.length == 50
    assert a.note.value == "n" * 10
    for path, data in run_files(root):
        assert b"pw-CLI-secret-9" not in data, path


def test_pyproject_bad_capture_keys(cli, tmp_path):
    (tmp_path / "app.py").write_text("pass\n")
    # bad configuration is bad usage: status 2 (it was 1 before issue 16)
    (tmp_path / "callscope.toml").write_text('args = "yes"\n')
    p = cli("run", "app.py", check=2)
    assert "'args' must be true or false" in p.stderr
    (tmp_path / "callscope.toml").write_text("max_bytes = -3\n")
    p = cli("run", "app.py", check=2)
    assert "max_bytes" in p.stderr and "unknown key" not in p.stderr
    (tmp_path / "callscope.toml").write_text('args = true\nresult = true\nredact = ["pw"]\n'
                                             "max_arg_length = 50\nmax_bytes = 1000\n")
    cli("run", "app.py", check=0)


# -- 17. damaged records ----------------------------------------------------------

@pytest.mark.parametrize("damage", ["args-garbage", "args-empty", "results-garbage",
                                    "blob-garbage", "blob-truncated"])
def test_damaged_value_raises_callscope_error(root, finish, damage):
    big = damage.startswith("blob")

    @callscope.monitor(args=True, result=True, name="cap.d")
    def d(x):
        return len(x)

    first = os.urandom(1 << 20) if big else [1, "two", 3.0]
    second = os.urandom(1 << 20) if big else [4, "five"]
    d(first)
    d(second)
    run = finish()
    con = sqlite3.connect(run.db_path)
    try:
        if damage == "args-garbage":
            cur = con.execute("UPDATE args SET data = x'ff00'"
                              " WHERE call = (SELECT min(call) FROM args)")
        elif damage == "args-empty":
            cur = con.execute("UPDATE args SET data = x''"
                              " WHERE call = (SELECT min(call) FROM args)")
        elif damage == "results-garbage":
            cur = con.execute("UPDATE results SET data = x'ff00'"
                              " WHERE call = (SELECT min(call) FROM results)")
        else:
            # the blob holding `first`: found by content, else the one stored first
            rows = con.execute("SELECT id, data FROM blobs ORDER BY rowid").fetchall()
            assert len(rows) == 2
            hits = [i for i, data in rows if first in bytes(data)]
            bid = hits[0] if hits else rows[0][0]
            new = "x'ff00'" if damage == "blob-garbage" else "substr(data, 1, length(data) - 7)"
            cur = con.execute(f"UPDATE blobs SET data = {new} WHERE id = ?", (bid,))
        assert cur.rowcount >= 1
        con.commit()
    finally:
        con.close()
    run = callscope.load(run.path)
    if damage.startswith("results"):
        with pytest.raises(callscope.CallscopeError):
            run.get_result("cap.d", 1)
        assert got(run, "cap.d", 1) == ([first], {})
        assert run.get_result("cap.d", 2) == len(second)
    else:
        with pytest.raises(callscope.CallscopeError):
            run.get("cap.d", 1)
        with pytest.raises(callscope.CallscopeError):
            run.get_args("cap.d", 1)
        assert got(run, "cap.d", 2) == ([second], {})
        assert run.get_result("cap.d", 1) == len(first)


# -- trust: a crafted pickle from elsewhere ------------------------------------

def test_crafted_pickle_from_another_host_is_refused(run_py, root, tmp_path):
    """A pickle that runs a command when loaded, recorded on another host:
    loading refuses it by default, and the command never runs."""
    marker = tmp_path / "pwned"
    run_py(f"""
        import os, callscope
        class Evil:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))
        @callscope.monitor(args=True, name="cap.evil")
        def take(x):
            return 1
        take(Evil())
    """, env={"CALLSCOPE_HOSTNAME": "elsewhere.example"})
    assert not marker.exists()
    run = callscope.load(root=root)
    assert [p.host for p in run.processes()] == ["elsewhere.example"]
    with pytest.raises(callscope.CallscopeError, match=r"elsewhere\.example.*trusted=True"):
        run.get("cap.evil", 1)
    with pytest.raises(callscope.CallscopeError, match=r"trusted=True"):
        run.replay("cap.evil", 1, func=lambda x: 1)
    assert not marker.exists()
    # the preview in run.db names the type without loading anything
    assert run.sql("SELECT text FROM args") == [("((<__main__.Evil>,), {})",)]
    # trusted=True is the user's explicit choice: then the pickle loads
    callscope.load(root=root, trusted=True).get("cap.evil", 1)
    assert marker.exists()


# -- numbering across processes ------------------------------------------------

def test_numbering_across_processes(run_py, root):
    run_py("""
        import os, time, callscope
        @callscope.monitor(args=True, result=True, name="cap.p")
        def p(x):
            return x
        p(1)
        time.sleep(0.01)
        pid = os.fork()
        if pid == 0:
            p(2)
            os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(0.01)
        p(3)
    """)
    run = callscope.load(root=root)
    assert len(run.processes()) == 2
    assert [run.get("cap.p", i) for i in (1, 2, 3)] == [([1], {}), ([2], {}), ([3], {})]
    pids = [c.pid for c in run.calls("cap.p")]
    assert pids[0] == pids[2] != pids[1]


def test_cli_captures_arguments_held_in_closure_cells(cli, tmp_path, root):
    """An argument that an inner function captures lives in a cell; its
    value is recorded all the same (3.10 moves it there before the first
    instruction), for plain functions and generators."""
    (tmp_path / "cells.py").write_text(
        "def f(x, y=3, *a, k=1, **kw):\n"
        "    g = lambda: x + y + k\n"
        "    return g()\n"
        "def gen(n):\n"
        "    for i in range(n):\n"
        "        yield (lambda: n)()\n"
        "    return 'done'\n")
    (tmp_path / "prog.py").write_text(
        "import cells\ncells.f(1)\ncells.f(2, 5, 6, k=2, z=9)\nprint(list(cells.gen(2)))\n")
    cli("run", "-q", "--args", "--result", "-t", "cells.f", "-t", "cells.gen", "--",
        "prog.py", check=0)
    run = callscope.load(root=root)
    assert run.get("cells.f", 1) == ([1, 3], {"k": 1})
    assert run.get("cells.f", 2) == ([2, 5, 6], {"k": 2, "z": 9})
    assert run.get_result("cells.f", 2) == 9
    assert run.get("cells.gen", 1) == ([2], {})
    assert run.get_result("cells.gen", 1) == "done"


def test_cut_set_members_and_dict_keys_still_load(root, finish):
    run = record_echo(finish, {"abcdefghij"}, {"abcdefghij": 1}, max_arg_length=5)
    (s,), _ = run.get("cap.echo", 1)
    (d,), _ = run.get("cap.echo", 2)
    assert s == {callscope.Truncated("abcde", 10)}
    assert d == {callscope.Truncated("abcde", 10): 1}


def test_sanitize_leaves_parameter_names_alone(root, finish):
    @callscope.monitor(args=True, sanitize=str.upper, name="cap.names")
    def f(a, key="k"):
        return a

    f("x", key="value")
    run = finish()
    assert run.get("cap.names", 1) == (["X"], {"key": "VALUE"})
    assert list(run.get_args("cap.names", 1).keys()) == ["a", "key"]


def test_replay_runs_generators_and_coroutines_to_their_end(root, finish):
    import asyncio

    @callscope.monitor(args=True, result=True, name="cap.rgen")
    def gen(n):
        yield from range(n)
        return n * 10

    @callscope.monitor(args=True, result=True, name="cap.rcoro")
    async def coro(n):
        await asyncio.sleep(0)
        return n + 1

    assert list(gen(3)) == [0, 1, 2]
    assert asyncio.run(coro(4)) == 5
    run = finish()
    r = run.replay("cap.rgen", 1, func=gen.__wrapped__)
    assert (r.result, r.recorded, r.matches) == (30, 30, True)
    r = run.replay("cap.rcoro", 1, func=coro.__wrapped__)
    assert (r.result, r.recorded, r.matches) == (5, 5, True)


def test_replay_of_another_scripts_function_asks_for_func(run_py, root):
    run_py("""
        import callscope
        @callscope.monitor(args=True, result=True)
        def work(x):
            return x * 2
        work(21)
    """)
    run = callscope.load(root=root)
    with pytest.raises(callscope.CallscopeError, match=r"belongs to the script .*prog\.py.*func="):
        run.replay("work", 1)
    assert run.replay("work", 1, func=lambda x: x * 2).matches is True


# -- hostile code while capturing, and bound methods ---------------------------

def test_a_list_emptied_while_it_is_captured(run_py, root):
    """Code that runs during capture (here the sanitizer) empties the list
    being captured: the call still runs and returns, nothing crashes."""
    p = run_py("""
        import callscope
        lst = [f"item {i}" for i in range(100)]
        def clean(s):
            lst.clear()
            return s
        @callscope.monitor(args=True, sanitize=clean, name="cap.mut")
        def take(x):
            return len(x)
        assert take(lst) == 0
        print("returned")
    """)
    assert "returned" in p.stdout
    (got_list,), _ = callscope.load(root=root).get("cap.mut", 1)
    assert isinstance(got_list, callscope.Truncated) and got_list.length == 100


def test_bound_method_parameters_keep_their_names(root, finish):
    class Account:
        def login(self, user, password, token="t"):
            return user

    acct = Account()
    m = callscope.monitor(acct.login, args=True, redact=["password", "token"],
                          name="cap.bound")
    assert m("alice", "hunter2-bound", token="sk-bound") == "alice"
    run = finish()
    assert run.get("cap.bound", 1) == (["alice", callscope.Redacted],
                                       {"token": callscope.Redacted})
    assert list(run.get_args("cap.bound", 1).keys()) == ["user", "password", "token"]
    for d, _, files in os.walk(run.path):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                assert b"hunter2-bound" not in fh.read()


def test_handler_registered_again_inside_save(root, finish):
    class Box:
        def __init__(self, v):
            self.v = v

    n = [0]

    def save(b):
        n[0] += 1
        callscope.register(Box, save=save, load=lambda d: Box(d.decode()), name="box")
        return str(b.v).encode()

    callscope.register(Box, save=save, load=lambda d: Box(d.decode()), name="box")
    try:
        run = record_echo(finish, Box("a"), Box("b"), result=False)
        assert [run.get("cap.echo", i)[0][0].v for i in (1, 2)] == ["a", "b"]
    finally:
        callscope.unregister(Box)


def test_strings_that_fit_are_kept_whole(root, finish):
    run = record_echo(finish, "a" * 500, b"x" * 100_000, max_bytes=1000, result=False)
    assert run.get("cap.echo", 1)[0] == ["a" * 500]
    (cut,), _ = run.get("cap.echo", 2)
    assert isinstance(cut, callscope.Truncated) and cut.length == 100_000
    assert len(cut.value) <= 1000


def test_previews_never_split_a_character(root, finish):
    run = record_echo(finish, "é" * 300)
    texts = run.sql("SELECT a.text, r.text FROM args a JOIN results r ON r.call = a.call")
    a, r = texts[0]
    assert a.endswith("...,), {})") or "..." in a
    assert r.startswith("'éé") and r.endswith("...")


# -- print: one line per finished call ------------------------------------------

def test_print_streams_each_finished_call(run_py, root):
    p = run_py("""
        import callscope
        @callscope.monitor(print=True, result=True, redact=["password"])
        def login(user, password):
            return user.upper()
        @callscope.monitor(print="json")
        def bad(x):
            raise KeyError(x)
        login("ann", password="hunter2-print")
        try:
            bad(3)
        except KeyError:
            pass
    """)
    lines = p.stderr.strip().splitlines()
    assert lines[0].startswith("callscope: __main__.login('ann', password=<redacted>)")
    assert "-> 'ANN'" in lines[0]
    assert "hunter2-print" not in p.stderr
    import json
    doc = json.loads(lines[1])
    assert doc["function"] == "__main__.bad" and doc["status"] == "raised"
    assert doc["error"] == "KeyError" and doc["wall_ns"] > 0


def test_print_option_is_checked(root):
    with pytest.raises(ValueError, match="print"):
        callscope.monitor(print="xml")(len)


def test_cli_print_for_calls_selected_by_name(cli, tmp_path, root):
    (tmp_path / "pm.py").write_text("def f(a, b=2):\n    return a * b\n")
    (tmp_path / "prog.py").write_text("import pm\npm.f(3)\npm.f(4, b=5)\n")
    p = cli("run", "-q", "--print", "-t", "pm.f", "--", "prog.py", check=0)
    lines = [l for l in p.stderr.splitlines() if l.startswith("callscope: pm.f")]
    assert len(lines) == 2 and "(3, 2)" in lines[0] and "(4, 5)" in lines[1]
    p = cli("run", "-q", "--print=json", "--result", "-t", "pm.f", "--", "prog.py", check=0)
    import json
    docs = [json.loads(l) for l in p.stderr.splitlines() if l.startswith("{")]
    assert [d["result"] for d in docs] == ["6", "20"]


def test_trace_captures_from_python(root, finish):
    """callscope.trace(..., args=, result=, redact=, sanitize=): values of
    calls selected by name, from inside a program."""
    ns = {}
    exec(compile("def login(user, password, note=''):\n    return note.upper()\n",
                 "cap_trace_mod.py", "exec"), ns)
    login = ns["login"]
    import re
    with callscope.tracing("login", args=True, result=True, redact=["password"],
                           sanitize=lambda s: re.sub("hunter2", "*******", s, flags=re.I)):
        login("ann", "pw-secret-trace", note="hunter2 here")
    run = finish()
    assert run.get("login", 1) == (["ann", callscope.Redacted, "******* here"], {})
    assert run.get_result("login", 1) == "******* HERE"


def test_pyproject_print_and_c_functions(cli, tmp_path, root):
    (tmp_path / "prog.py").write_text("import math\nfor i in range(3):\n    math.sqrt(i)\n")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.callscope]\ntrace = ["math.sqrt"]\nc_functions = true\nprint = "json"\n')
    p = cli("run", "-q", "prog.py", check=0)
    import json
    lines = [json.loads(l) for l in p.stderr.splitlines() if l.startswith("{")]
    assert [d["function"] for d in lines] == ["math.sqrt"] * 3
    assert [(f.name, f.calls) for f in callscope.load(root=root).functions()] == \
        [("math.sqrt", 3)]


# -- capture="safe": the program's own code never runs to keep a value -------------

def test_capture_safe_never_calls_user_code(finish, root, tmp_path, cli):
    """A __repr__ that would hang, a __reduce__ that raises, a registered
    handler: capture="safe" calls none of them, and keeps such a value as
    its type and id; built-in values are kept whole as ever."""
    import time as _time

    class Slow:
        def __repr__(self):  # pragma: no cover - must never run
            _time.sleep(60)
            return "slow"

        def __reduce__(self):  # pragma: no cover - must never run
            raise RuntimeError("never")

    @callscope.monitor(args=True, result=True, capture="safe")
    def f(x, n, data):
        return x

    t0 = _time.perf_counter()
    f(Slow(), 3, {"k": [1, 2.5, "s"]})
    assert _time.perf_counter() - t0 < 5
    run = finish()
    args = run.get_args("f", 1)
    assert args["n"] == 3 and args["data"] == {"k": [1, 2.5, "s"]}
    assert isinstance(args["x"], callscope.Identity)
    assert "Slow" in repr(args["x"])
    with pytest.raises(callscope.CallscopeError):
        run.replay("f", 1)  # an identity cannot be called with
    # and the options are checked
    with pytest.raises(ValueError, match="capture"):
        callscope.monitor(capture="all")(lambda: 0)
    with pytest.raises(ValueError, match="capture"):
        callscope.trace("x", capture="some")


def test_capture_safe_from_the_command_line(cli, tmp_path, root):
    (tmp_path / "app.py").write_text(textwrap.dedent("""
        class Big:
            def __repr__(self):
                raise SystemExit("repr ran")
        def step(obj, k):
            return k
        step(Big(), 7)
    """))
    cli("run", "-q", "--capture", "safe", "-t", "step", "--args", "app.py", check=0)
    run = callscope.load(root=root)
    a = run.get_args("step", 1)
    assert a["k"] == 7 and isinstance(a["obj"], callscope.Identity)
    (tmp_path / "callscope.toml").write_text('capture = "sometimes"\n')
    p = cli("run", "app.py", check=2)
    assert "'capture' must be" in p.stderr
    p = cli("run", "--capture", "never", "app.py", check=2)
    assert "--capture takes full or safe" in p.stderr
