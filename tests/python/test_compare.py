"""Comparing runs (`callscope compare`, callscope.compare, callscope.diff):
significant digits that captured values keep across repeated runs, checked
against answers computed here from the same random draws (CNH and general
methods); exact and degenerate samples; numpy arrays and the worst
element; misaligned calls; alignment by call number, call site and
argument; the two-run diff and its --fail-if gate; clear errors for input
that cannot be compared; what a comparison stores in run.db and how `top`
shows it; and the Python API agreeing with the command."""
import json
import math
import os
import random
import sqlite3
import statistics
import textwrap

import pytest

import callscope
from conftest import top_rows

np = pytest.importorskip("numpy")

F64 = 53 * math.log10(2)  # 15.9545...
F32 = 24 * math.log10(2)  # 7.2247...

# chi-square quantiles chi2_{0.025, dof} (textbook values, as
# scipy.stats.chi2.ppf(0.025, dof) gives them), for confidence 0.95
CHI2_0025 = {3: 0.2157952826238981, 5: 0.8312116134866628,
             7: 1.6898691806773554, 9: 2.7003894999803584}


# -- helpers ----------------------------------------------------------------

def expected_digits(values, method="cnh", confidence=0.95, probability=0.99,
                    max_digits=F64):
    """The digits of one number over the runs, computed here from the
    definitions (docs: CNH and general estimators)."""
    n = len(values)
    if any(v != v for v in values):
        return 0.0
    if all(v == values[0] for v in values):
        return max_digits
    mean = 0.0
    for v in values:
        mean += v
    mean /= n
    if mean == 0 or not math.isfinite(mean):
        return 0.0
    if method == "cnh":
        assert confidence == 0.95, "CHI2_0025 holds the 0.95 quantiles only"
        ss = sum((v - mean) ** 2 for v in values)
        sd = math.sqrt(ss / (n - 1))
        delta = (0.5 * math.log10((n - 1) / CHI2_0025[n - 1])
                 + math.log10(statistics.NormalDist().inv_cdf((probability + 1) / 2)))
        s = -math.log10(sd / abs(mean)) - delta
    else:
        s = -math.log10(max(abs(v - mean) for v in values) / abs(mean))
    return min(max(s, 0.0), max_digits)


def run_dir(root, name):
    """The one run directory called <stamp>-<name> under root."""
    found = [root / d for d in os.listdir(root) if d.endswith("-" + name)]
    assert len(found) == 1, (name, os.listdir(root))
    return str(found[0])


def record(cli, tmp_path, root, source, name, argvs, trace=("f",), capture=True):
    """Run `source` once per argv with `callscope run --name <name><i>`,
    recording the traced functions (with --args --result unless capture is
    false); the run directories, in order."""
    script = tmp_path / f"{name}_prog.py"
    script.write_text(textwrap.dedent(source))
    dirs = []
    for i, argv in enumerate(argvs):
        opts = ["--args", "--result"] if capture else []
        for pat in trace:
            opts += ["-t", pat]
        cli("run", "-q", "--name", f"{name}{i}", *opts, "--", script,
            *map(str, argv), check=0)
        dirs.append(run_dir(root, f"{name}{i}"))
    return dirs


def error_line(p):
    """The one clear error line of a failed command: no traceback."""
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines and lines[0].startswith("callscope: error: "), p.stderr
    return lines[0]


def rows_by_value(comparison, function):
    return {r.value: r for r in comparison.rows if r.function.endswith("." + function)}


DIGIT_KEYS = {"function", "value", "calls", "elements", "min", "median", "max",
              "worst_call", "worst_element", "unequal"}


# -- 1. known answer ----------------------------------------------------------

KNOWN = """
import random, sys
seed, k = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)

def f(x):
    u = rng.uniform(-1.0, 1.0)
    return x * (1 + u * 10.0 ** -k)

for x in (3.7, -120.5, 0.001):
    f(x)
"""
KNOWN_XS = (3.7, -120.5, 0.001)
NRUNS = 10


def known_values(k, call):
    """The result of call `call` (0-based) in each of the NRUNS runs, as the
    program computes it."""
    out = []
    for seed in range(NRUNS):
        rng = random.Random(seed)
        for i, x in enumerate(KNOWN_XS):
            u = rng.uniform(-1.0, 1.0)
            if i == call:
                out.append(x * (1 + u * 10.0 ** -k))
    return out


@pytest.mark.parametrize("k", [4, 8])
def test_known_answer_both_methods(cli, tmp_path, root, k):
    name = f"known{k}r"
    record(cli, tmp_path, root, KNOWN, name, [(s, k) for s in range(NRUNS)])
    for method in ("cnh", "general"):
        c = callscope.compare(f"{name}*", method=method, root=root, store=False)
        assert len(c.runs) == NRUNS and c.method == method
        assert c.misaligned == [] and c.misaligned_total == 0
        rows = rows_by_value(c, "f")
        res = rows["result"]
        assert res.calls == 3 and res.elements == 1 and res.unequal == 0
        # within k +- 1/2 digit, per call and so for min and max
        assert k - 0.5 <= res.min <= res.max <= k + 0.5, (method, res)
        # and exactly what the definitions give for these draws
        want = [expected_digits(known_values(k, i), method) for i in range(3)]
        assert res.per_call == pytest.approx(want, abs=1e-6), method
        assert res.call_numbers == [1, 2, 3]
        assert res.min == pytest.approx(min(want), abs=1e-6)
        assert res.max == pytest.approx(max(want), abs=1e-6)
        assert res.median == pytest.approx(sorted(want)[1], abs=1e-6)
        assert res.worst_call == 1 + want.index(min(want))
        # the argument is the same in every run: every digit holds
        x = rows["x"]
        assert x.calls == 3
        for v in (x.min, x.median, x.max):
            assert v == pytest.approx(15.95, abs=0.01)
        # rows come fewest digits first
        mins = [r.min for r in c.rows]
        assert mins == sorted(mins)
    # general: what the runs show, and how many would be needed
    g = callscope.compare(f"{name}*", method="general", root=root, store=False)
    assert g.probability_shown == pytest.approx(0.05 ** (1 / NRUNS), abs=1e-9)
    assert g.runs_needed == math.ceil(math.log(0.05) / math.log(0.99))


def test_known_answer_cli_table_and_options(cli, tmp_path, root):
    name = "kcli"
    record(cli, tmp_path, root, KNOWN, name, [(s, 4) for s in range(NRUNS)])
    p = cli("compare", "--runs", f"{name}*", "--no-store", check=0)
    assert p.stdout.startswith(f"{NRUNS} runs, method cnh, confidence 0.95, probability 0.99")
    line = next(l for l in p.stdout.splitlines() if "__main__.f" in l and "result" in l)
    want = [expected_digits(known_values(4, i)) for i in range(3)]
    assert f"{min(want):.2f}" in line.split() and f"{max(want):.2f}" in line.split()
    # another confidence and probability change the CNH answer as defined
    p = cli("compare", "--runs", f"{name}*", "--no-store", "--json",
            "--confidence", "0.95", "--probability", "0.9", check=0)
    doc = json.loads(p.stdout)
    assert doc["probability"] == pytest.approx(0.9)
    row = next(r for r in doc["rows"] if r["value"] == "result")
    want = [expected_digits(known_values(4, i), probability=0.9) for i in range(3)]
    assert row["min"] == pytest.approx(min(want), abs=1e-4)


# -- 2. exact runs --------------------------------------------------------------

EXACT = """
import sys
import numpy as np
import callscope
seed = int(sys.argv[1])
cap = callscope.monitor(args=True, result=True)

@cap
def same(x):
    return (3.14159 * x, [1e-300, -2.5e300], 7, True, "text", 1 + 2j, float("inf"),
            np.arange(6, dtype=np.float64) / 3, {"k": -0.125})

@cap
def zeros(n):
    return [0.0] * n + [np.zeros(4)]

@cap
def around_zero():
    return 1e-9 if seed % 2 else -1e-9

@cap
def with_nan():
    return [2.0, float("nan")]

@cap
def f32():
    return np.linspace(0, 1, 7, dtype=np.float32) + np.float32(0.5)

@cap
def f32_noisy():
    return np.float32(1) + np.array([seed * 1e-3, 0], dtype=np.float32)

for i in range(3):
    same(i + 0.5)
zeros(3)
around_zero()
with_nan()
f32()
f32_noisy()
"""


@pytest.fixture
def exact_runs(run_py, root):
    """Four runs of a program using @callscope.monitor(args=True, result=True)
    (each recorded as a run named "prog")."""
    for seed in range(4):
        run_py(EXACT, str(seed))
    dirs = sorted(str(root / d) for d in os.listdir(root) if d != "latest")
    assert len(dirs) == 4
    return dirs


@pytest.mark.parametrize("method", ["cnh", "general"])
def test_exact_runs(exact_runs, root, method):
    c = callscope.compare(exact_runs, method=method, root=root, store=False)
    assert c.misaligned_total == 0
    for r in c.rows:
        for v in (r.min, r.median, r.max, *r.per_call):
            assert v is not None and not math.isnan(v), r
    # identical in every run: all the digits of float64, never NaN or an error
    same = rows_by_value(c, "same")
    assert set(same) == {"x", "result"}
    for r in same.values():
        assert r.calls == 3 and r.unequal == 0
        assert r.min == pytest.approx(F64, abs=1e-6) and r.max == pytest.approx(F64, abs=1e-6)
    # every number: 3.14159*x, the list's 2, 7, True, 1+2j, inf, the array's 6, -0.125
    assert same["result"].elements == 1 + 2 + 1 + 1 + 1 + 1 + 6 + 1
    # zero mean and zero variance: identical, so all the digits
    z = c.digits("zeros")
    assert z.min == pytest.approx(F64, abs=1e-6) and z.elements == 7
    assert c.digits("zeros", "n").min == pytest.approx(F64, abs=1e-6)
    # differing around a zero mean: no digit
    a = c.digits("around_zero")
    assert a.min == 0 and a.max == 0
    # a NaN: no digit
    assert c.digits("with_nan").min == 0 and c.digits("with_nan").worst_element == 1
    # float32 arrays: all the digits of float32
    f = c.digits("f32")
    assert f.elements == 7
    assert f.min == pytest.approx(F32, abs=0.01) and f.max == pytest.approx(7.22, abs=0.01)
    # float32 that differ are capped at float32's digits and measured
    noisy = c.digits("f32_noisy")
    assert 0 < noisy.min < F32 and noisy.worst_element == 0
    mins = [r.min for r in c.rows]
    assert mins == sorted(mins)


def test_exact_runs_cli(cli, exact_runs):
    p = cli("compare", "--no-store", "--json", *exact_runs, check=0)
    doc = json.loads(p.stdout)  # never a NaN in the JSON either
    assert doc["kind"] == "stability" and len(doc["runs"]) == 4
    for r in doc["rows"]:
        assert set(r) == DIGIT_KEYS
        for key in ("min", "median", "max"):
            assert isinstance(r[key], (int, float)), r
    p = cli("compare", "--no-store", *exact_runs, check=0)
    for line in p.stdout.splitlines():
        assert not {"nan", "-nan", "inf"} & set(line.lower().split()), line


# -- 3. arrays ------------------------------------------------------------------

ARRAY = """
import sys
import numpy as np
seed, shape = int(sys.argv[1]), tuple(int(s) for s in sys.argv[2].split("x"))
rng = np.random.default_rng(seed)

def field(n):
    base = 1.0 + np.arange(n) / n
    eps = np.full(n, 1e-10)
    eps[17] = 1e-3
    return (base * (1 + rng.uniform(-1, 1, n) * eps)).reshape(shape)

field(50)
"""
ARRAY_RUNS = 8


def array_values(seed):
    rng = np.random.default_rng(seed)
    n = 50
    base = 1.0 + np.arange(n) / n
    eps = np.full(n, 1e-10)
    eps[17] = 1e-3
    return base * (1 + rng.uniform(-1, 1, n) * eps)


@pytest.mark.parametrize("shape", ["50", "5x10"])
def test_array_worst_element(cli, tmp_path, root, shape):
    name = f"arr{shape}r"
    record(cli, tmp_path, root, ARRAY, name, [(s, shape) for s in range(ARRAY_RUNS)],
           trace=("field",))
    samples = np.array([array_values(s) for s in range(ARRAY_RUNS)])
    for method, tol in (("cnh", 0.7), ("general", 0.5)):
        c = callscope.compare(f"{name}*", method=method, root=root, store=False)
        r = c.digits("field")
        assert r.calls == 1 and r.elements == 50
        assert r.worst_element == 17 and r.worst_call == 1
        assert r.min == pytest.approx(3, abs=tol), (method, r)
        want = [expected_digits(list(samples[:, e]), method) for e in range(50)]
        assert int(np.argmin(want)) == 17
        assert r.min == pytest.approx(want[17], abs=1e-6)
        # every other element keeps about ten digits
        assert min(w for e, w in enumerate(want) if e != 17) > 8
        assert c.digits("field", "n").min == pytest.approx(F64, abs=1e-6)
    p = cli("compare", "--runs", f"{name}*", "--no-store", check=0)
    line = next(l for l in p.stdout.splitlines() if "__main__.field" in l and "result" in l)
    assert line.split()[-1] == "17"  # the element column


# -- 4. misaligned calls --------------------------------------------------------

MISALIGNED = """
import sys

def g(i):
    return i * 1.5 + 0.25

for i in range(int(sys.argv[1])):
    g(i)
"""


def test_misaligned_calls(cli, tmp_path, root):
    # run 1: 3 calls; run 2: one extra; run 3: one missing
    dirs = record(cli, tmp_path, root, MISALIGNED, "misal", [(3,), (4,), (2,)],
                  trace=("g",))
    c = callscope.compare("misal*", root=root, store=False)
    assert c.runs == dirs
    assert c.misaligned_total == 2 == len(c.misaligned)
    whats = {what for fn, what in c.misaligned if fn == "__main__.g"}
    assert len(whats) == 2
    missing = next(w for w in whats if "missing" in w)
    assert "call 3" in missing and "run 3" in missing and dirs[2] in missing
    extra = next(w for w in whats if "extra" in w)
    assert "run 2" in extra and dirs[1] in extra and "call 4" in extra
    # the calls made in every run are still compared
    for value in ("result", "i"):
        r = c.digits("g", value)
        assert r.calls == 2 and r.call_numbers == [1, 2]
        assert r.min == pytest.approx(F64, abs=1e-6)

    p = cli("compare", "--runs", "misal*", "--no-store", check=0)
    out = p.stdout
    assert "misaligned: 2" in out
    tail = out[out.index("misaligned:"):]
    assert "call 3: missing in run 3" in tail
    assert "extra call(s) in run 2" in tail and "call 4" in tail
    doc = json.loads(cli("compare", "--runs", "misal*", "--no-store", "--json",
                         check=0).stdout)
    assert doc["misaligned_total"] == 2
    assert {m["what"] for m in doc["misaligned"]} == whats


# -- 5. alignment ---------------------------------------------------------------

SHUFFLED = """
import random, sys
steps = list(range(6))
random.Random(int(sys.argv[1])).shuffle(steps)

def f(step, scale=1.0):
    return scale / (step + 1) + step * 3.25

for s in steps:
    if s % 2:
        f(s)          # positionally ...
    else:
        f(step=s)     # ... or by keyword: the same argument
"""


def test_align_by_argument(cli, tmp_path, root):
    record(cli, tmp_path, root, SHUFFLED, "shuf", [(s,) for s in range(4)])
    by_arg = callscope.compare("shuf*", align="arg:step", root=root, store=False)
    assert by_arg.misaligned_total == 0
    for value in ("result", "step"):
        r = by_arg.digits("f", value)
        assert r.calls == 6 and r.unequal == 0
        assert r.min == pytest.approx(F64, abs=1e-6)
    by_number = callscope.compare("shuf*", align="number", root=root, store=False)
    res = by_number.digits("f", "result")
    assert res.calls == 6 and res.min < 2
    step = by_number.digits("f", "step")
    assert step.min == 0 and step.unequal > 0  # ints compared for equality
    # the command agrees
    p = cli("compare", "--runs", "shuf*", "--align", "arg:step", "--no-store", "--json", check=0)
    rows = {r["value"]: r for r in json.loads(p.stdout)["rows"]}
    assert rows["result"]["min"] == pytest.approx(F64, abs=1e-4)
    p = cli("compare", "--runs", "shuf*", "--align", "number", "--no-store", check=0)
    assert "ints differ" in p.stdout


def test_align_by_missing_argument_does_not_pair_silently(cli, tmp_path, root):
    """Calls without the argument named by --align arg:NAME (here: a typo)
    get "a key of their own: unpaired" (compare.c) -- they must not be
    paired by call number as if nothing were wrong."""
    record(cli, tmp_path, root, SHUFFLED, "typo", [(s,) for s in range(3)])
    try:
        c = callscope.compare("typo*", align="arg:stepp", root=root, store=False)
    except (callscope.CallscopeError, ValueError):
        return  # refusing is fine too
    assert c.misaligned_total > 0, c.rows


CALLSITE = """
import sys

def f(x):
    return x * 0.1

def caller_a():
    return f(1.0)

def caller_b():
    return f(2.0)

if int(sys.argv[1]) % 2:
    caller_a(); caller_b()
else:
    caller_b(); caller_a()
"""


def test_align_by_callsite(cli, tmp_path, root):
    record(cli, tmp_path, root, CALLSITE, "csite", [(s,) for s in range(3)],
           trace=("f", "caller_a", "caller_b"))
    c = callscope.compare("csite*", align="callsite", filter="*.f", root=root, store=False)
    assert {r.function for r in c.rows} == {"__main__.f"}
    assert c.misaligned_total == 0
    for value in ("x", "result"):
        r = c.digits("f", value)
        assert r.calls == 2 and r.min == pytest.approx(F64, abs=1e-6)
    n = callscope.compare("csite*", align="number", filter="*.f", root=root, store=False)
    assert n.digits("f", "x").min < 2
    p = cli("compare", "--runs", "csite*", "--align", "callsite", "-f", "*.f", "--no-store",
            check=0)
    assert "caller_a" not in p.stdout
    line = next(l for l in p.stdout.splitlines() if l.startswith("__main__.f") and " x " in l)
    assert "15.95" in line


# -- 6. the two-run diff and the CI gate -----------------------------------------

SLOW = """
import sys, time

def slow():
    time.sleep(0.02 if "--b" in sys.argv else 0.01)
    return 1.0

slow()
"""

RISKY = """
import sys

def risky(i):
    if "--b" in sys.argv and i == 2:
        raise KeyError(i)
    return i * 2.0

for i in range(4):
    try:
        risky(i)
    except KeyError:
        pass
"""

CHANGE_KEYS = {"function", "in_a", "in_b", "calls", "errors", "total_ns", "self_ns",
               "mean_ns", "p95_ns", "new_errors", "results_compared", "results_changed",
               "first_changed", "digits", "failing"}


def test_gate_on_time(cli, tmp_path, root):
    a, b = record(cli, tmp_path, root, SLOW, "slow", [(), ("--b",)], trace=("slow",))
    p = cli("compare", a, b, "--fail-if", "time>+50%", check=1)
    assert p.stdout.startswith(f"A {a}\nB {b}\n")
    failed = p.stdout[p.stdout.index("FAILED"):]
    assert "__main__.slow: time>+50%" in failed
    p = cli("compare", a, b, "--fail-if", "time>+500%", check=0)
    assert "FAILED" not in p.stdout and "__main__.slow" in p.stdout
    # an absolute change, in ms
    cli("compare", a, b, "--fail-if", "mean>+5ms", check=1)
    cli("compare", a, b, "--fail-if", "mean>+1s", check=0)
    # JSON: the documented keys, and the failing row marked
    p = cli("compare", a, b, "--json", "--fail-if", "time>+50%", check=1)
    doc = json.loads(p.stdout)
    assert doc["kind"] == "diff" and doc["a"] == a and doc["b"] == b and doc["failing"] == 1
    (row,) = doc["rows"]
    assert set(row) == CHANGE_KEYS
    assert row["function"] == "__main__.slow" and row["failing"] is True
    assert row["in_a"] and row["in_b"] and row["calls"] == [1, 1]
    assert row["total_ns"][1] > row["total_ns"][0] >= 10_000_000
    assert row["digits"] == "all" and row["results_compared"] == 1
    # callscope.diff marks the same rows
    (ch,) = callscope.diff(a, b, fail_if=["time>+50%"], root=root)
    assert ch.function == "__main__.slow" and ch.failing is True
    assert ch.total_ns == tuple(row["total_ns"]) and ch.digits == "all"
    (ch,) = callscope.diff(a, b, fail_if=["time>+500%"], root=root)
    assert ch.failing is False
    (ch,) = callscope.diff(a, b, root=root)
    assert ch.failing is False
    with pytest.raises(ValueError, match="bogus"):
        callscope.diff(a, b, fail_if=["bogus>1"], root=root)


def test_gate_on_new_errors(cli, tmp_path, root):
    a, b = record(cli, tmp_path, root, RISKY, "risky", [(), ("--b",)], trace=("risky",))
    p = cli("compare", a, b, check=0)
    line = next(l for l in p.stdout.splitlines() if l.startswith("__main__.risky"))
    assert "0>1" in line and "new errors: KeyError" in line
    p = cli("compare", a, b, "--fail-if", "errors>0", check=1)
    failed = p.stdout[p.stdout.index("FAILED"):]
    assert "__main__.risky: errors>0" in failed
    cli("compare", a, a, "--fail-if", "errors>0", check=0)  # A has none
    doc = json.loads(cli("compare", a, b, "--json", "--fail-if", "errors>0", check=1).stdout)
    (row,) = doc["rows"]
    assert row["errors"] == [0, 1] and row["new_errors"] == "KeyError" and row["failing"]
    (ch,) = callscope.diff(a, b, fail_if="errors>0", root=root)
    assert ch.failing and ch.new_errors == "KeyError" and ch.errors == (0, 1)
    (ch,) = callscope.diff(b, a, fail_if=["errors>0"], root=root)
    assert not ch.failing and ch.new_errors is None


CHANGED = """
import sys
b = "--b" in sys.argv

def f(i):
    if i == 0 or (b and i == 1):
        raise ValueError(i)   # no result for these calls
    return float(i) + (0.5 if b and i == 3 else 0.0)

for i in range(5):
    try:
        f(i)
    except ValueError:
        pass
"""


def test_diff_pairs_results_by_call(cli, tmp_path, root):
    """Call 1 raises in both runs and call 2 only in B; of the calls that
    return in both (3, 4, 5) only call 4's result changed."""
    a, b = record(cli, tmp_path, root, CHANGED, "chgr", [(), ("--b",)], trace=("f",))
    (ch,) = callscope.diff(a, b, root=root)
    assert ch.errors == (1, 2) and ch.new_errors is None
    assert ch.results_changed == 1, ch
    assert ch.first_changed == 4, ch
    p = cli("compare", a, b, check=0)
    assert "1 of 3 changed (first: call 4," in p.stdout
    cli("compare", a, b, "--fail-if", "changed>1", check=0)


# -- 7. what cannot be compared -----------------------------------------------------

PLAIN = """
def h(i):
    return i * 0.5

for i in range(3):
    h(i)
"""

OTHER = """
def zz(i):
    return i * 0.5

for i in range(3):
    zz(i)
"""


def test_runs_without_captured_values(cli, tmp_path, root):
    dirs = record(cli, tmp_path, root, PLAIN, "nocap", [(), ()], trace=("h",), capture=False)
    for args in (["--runs", "nocap*"], ["--stability", *dirs], [*dirs, dirs[0]]):
        p = cli("compare", *args)
        assert p.returncode in (1, 2), (args, p.stdout, p.stderr)
        line = error_line(p)
        assert "no captured values" in line and "--args" in line
    with pytest.raises(callscope.CallscopeError, match="captured values"):
        callscope.compare("nocap*", root=root)


def test_runs_of_different_programs(cli, tmp_path, root):
    (a,) = record(cli, tmp_path, root, PLAIN, "proga", [()], trace=("h",))
    (b,) = record(cli, tmp_path, root, OTHER, "progb", [()], trace=("zz",))
    p = cli("compare", "--stability", a, b)
    assert p.returncode in (1, 2)
    assert "in common" in error_line(p)
    with pytest.raises(callscope.CallscopeError, match="in common"):
        callscope.compare([a, b], root=root)
    # a filter that matches nothing says so too
    dirs = record(cli, tmp_path, root, PLAIN, "filt", [(), ()], trace=("h",))
    p = cli("compare", "--stability", "-f", "nothing_here", *dirs)
    assert p.returncode in (1, 2) and "in common" in error_line(p)


def test_corrupted_run_db(cli, tmp_path, root):
    dirs = record(cli, tmp_path, root, KNOWN, "corrupt", [(s, 4) for s in range(3)])
    with open(os.path.join(dirs[1], "run.db"), "r+b") as fh:
        fh.write(os.urandom(64) + b"garbage, not a database" * 200)
    for args in (["--runs", "corrupt*"], [dirs[0], dirs[1]], ["--stability", dirs[0], dirs[1]],
                 [dirs[1], dirs[0], "--fail-if", "time>+10%"]):
        p = cli("compare", *args, check=1)
        line = error_line(p)
        assert "run.db" in line, line
    with pytest.raises(callscope.CallscopeError):
        callscope.compare("corrupt*", root=root)
    with pytest.raises(callscope.CallscopeError):
        callscope.diff(dirs[0], dirs[1], root=root)


@pytest.mark.parametrize("args, named", [
    (["--runs", "few0"], "--runs"),
    (["--runs", "none-such*"], "--runs"),
    (["few0"], "two runs"),
    (["--method", "bayes", "--runs", "few*"], "--method"),
    (["--confidence", "1.5", "--runs", "few*"], "--confidence"),
    (["--confidence", "abc", "--runs", "few*"], "--confidence"),
    (["--probability", "0", "--runs", "few*"], "--probability"),
    (["--align", "bogus", "--runs", "few*"], "--align"),
    (["--align", "arg:", "--runs", "few*"], "--align"),
    (["--fail-if", "bogus>1", "--runs", "few*"], "--fail-if"),
    (["--fail-if", "time", "--runs", "few*"], "--fail-if"),
    (["--fail-if", "time>+5q", "--runs", "few*"], "--fail-if"),
    (["--fail-if", "time>+10%", "--runs", "few*"], "--fail-if"),  # no times in stability
    (["--limit", "many", "--runs", "few*"], "--limit"),
    (["--no-such-option"], "--no-such-option"),
])
def test_bad_usage_exit_2(cli, tmp_path, root, args, named):
    record(cli, tmp_path, root, PLAIN, "few", [(), ()], trace=("h",))
    p = cli("compare", *args, check=2)
    assert named in error_line(p)


def test_bad_arguments_in_python(cli, tmp_path, root):
    record(cli, tmp_path, root, PLAIN, "pyb", [(), ()], trace=("h",))
    with pytest.raises(ValueError, match="method"):
        callscope.compare("pyb*", method="bayes", root=root)
    with pytest.raises(ValueError, match="align"):
        callscope.compare("pyb*", align="arg:", root=root)
    with pytest.raises((ValueError, callscope.CallscopeError), match="confidence"):
        callscope.compare("pyb*", confidence=1.5, root=root)
    with pytest.raises(callscope.CallscopeError, match="at least 2"):
        callscope.compare("pyb0*", root=root)
    with pytest.raises(TypeError):
        callscope.compare("pyb0", root=root)  # one run, not a pattern
    with pytest.raises(callscope.CallscopeError, match="at least 2"):
        callscope.compare("zzz*", root=root)


# -- 8. storage and top ----------------------------------------------------------

def table_counts(run):
    with sqlite3.connect(os.path.join(run, "run.db")) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("comparisons", "digits", "digits_calls")}


def test_stored_comparison_and_top(cli, tmp_path, root):
    dirs = record(cli, tmp_path, root, KNOWN, "store", [(s, 4) for s in range(4)])
    head = cli("top", dirs[0], check=0).stdout.splitlines()[1]
    assert "digits" not in head.split()
    # --no-store leaves every run.db as it was
    doc = json.loads(cli("compare", "--runs", "store*", "--no-store", "--json", check=0).stdout)
    assert doc["comparison"] == 0
    for d in dirs:
        assert table_counts(d) == {"comparisons": 0, "digits": 0, "digits_calls": 0}
    c = callscope.compare("store*", root=root, store=False)
    assert c.comparison == 0
    for d in dirs:
        assert table_counts(d)["comparisons"] == 0
    # stored: a comparison in every run, per-call digits in the first
    doc = json.loads(cli("compare", "--runs", "store*", "--json", check=0).stdout)
    assert doc["comparison"] >= 1
    nrows, ncalls = len(doc["rows"]), sum(r["calls"] for r in doc["rows"])
    assert nrows == 2  # f: result and x
    first = table_counts(dirs[0])
    assert first == {"comparisons": 1, "digits": nrows, "digits_calls": ncalls}
    for d in dirs[1:]:
        assert table_counts(d) == {"comparisons": 1, "digits": nrows, "digits_calls": 0}
    with sqlite3.connect(os.path.join(dirs[0], "run.db")) as db:
        kind, method, runs, align = db.execute(
            "SELECT kind, method, runs, align FROM comparisons").fetchone()
        assert (kind, method, align) == ("stability", "cnh", "number")
        assert json.loads(runs) == dirs
        stored = {(fn, v): (mn, md, mx) for fn, v, mn, md, mx in db.execute(
            "SELECT function, value, min, median, max FROM digits WHERE comparison = ?",
            (doc["comparison"],))}
        per_call = db.execute(
            "SELECT call, digits FROM digits_calls WHERE function = '__main__.f'"
            " AND value = 'result' ORDER BY call").fetchall()
    for r in doc["rows"]:
        got = stored[(r["function"], r["value"])]
        assert got == pytest.approx((r["min"], r["median"], r["max"]), rel=1e-5)
    want = [expected_digits([known_values(4, i)[s] for s in range(4)]) for i in range(3)]
    assert [c for c, _ in per_call] == [1, 2, 3]
    assert [d for _, d in per_call] == pytest.approx(want, abs=1e-6)
    # top shows the digits of the latest comparison, for every run in it
    res = next(r for r in doc["rows"] if r["value"] == "result")
    for d in dirs:
        out = cli("top", d, check=0).stdout
        row = next(r for r in top_rows(out) if r["function"] == "__main__.f")
        assert row["digits"] == f"{res['min']:.2f}"
    # a later comparison (general) is the one top shows
    c = callscope.compare("store*", method="general", root=root)
    assert c.comparison == 2
    row = next(r for r in top_rows(cli("top", dirs[0], check=0).stdout)
               if r["function"] == "__main__.f")
    assert row["digits"] == f"{c.digits('f').min:.2f}"
    assert table_counts(dirs[1])["comparisons"] == 2


# -- 9. the Python API and the command agree --------------------------------------

def test_python_api_matches_cli(cli, tmp_path, root):
    record(cli, tmp_path, root, KNOWN, "stab", [(s, 8) for s in range(5)])
    for method in ("cnh", "general"):
        py = callscope.compare("stab*", method=method, root=root)
        doc = json.loads(cli("compare", "--runs", "stab*", "--method", method, "--json",
                             check=0).stdout)
        assert doc["runs"] == py.runs and len(py.runs) == 5
        assert doc["method"] == py.method == method
        assert doc["misaligned_total"] == py.misaligned_total
        assert [(m["function"], m["what"]) for m in doc["misaligned"]] == \
            [tuple(m) for m in py.misaligned]
        assert len(doc["rows"]) == len(py.rows) > 0
        for j, p in zip(doc["rows"], py.rows):
            assert set(j) == DIGIT_KEYS
            for key in DIGIT_KEYS - {"min", "median", "max"}:
                assert j[key] == getattr(p, key), key
            for key in ("min", "median", "max"):
                # the command prints %.10g: the same double, so the same text
                assert j[key] == float(f"{getattr(p, key):.10g}"), (key, j, p)
                assert round(j[key], 3) == round(getattr(p, key), 3)
        if method == "general":
            assert doc["probability_shown"] == pytest.approx(py.probability_shown, rel=1e-5)
            assert doc["runs_needed"] == py.runs_needed


# -- layouts, numpy scalars, mixed types, results missing in some runs -------

def test_array_layout_and_numpy_scalars_and_mixed_numbers(cli, tmp_path, root):
    pytest.importorskip("numpy")
    dirs = record(cli, tmp_path, root, """
        import sys
        import numpy as np
        i = int(sys.argv[1])
        def f(a):
            return a
        def g(x):
            return np.float64(x) * (1 + (1e-6 if i else -1e-6))
        def h(x):
            return x
        base = np.arange(12.0).reshape(3, 4) + 1
        # the same values, stored C-ordered in one run, Fortran-ordered in the other
        f(base if i == 0 else np.asfortranarray(base))
        g(2.0)
        h(3 if i == 0 else 3.0)   # an int in one run, a float in the other
    """, "lay", [[0], [1]], trace=("f", "g", "h"))
    c = callscope.compare(dirs, method="general", root=root, store=False)
    f = rows_by_value(c, "f")
    assert f["result"].min == pytest.approx(15.95, abs=0.01)
    assert f["result"].elements == 12
    g = rows_by_value(c, "g")["result"]
    assert g.min == pytest.approx(6, abs=0.05)  # numpy.float64 results are numbers
    h = rows_by_value(c, "h")
    assert h["result"].min == pytest.approx(15.95, abs=0.01) and h["result"].unequal == 0
    run = callscope.load(dirs[0])
    r = run.get_result("g", 1)
    import numpy as np
    assert type(r) is np.float64 and r == np.float64(2.0) * (1 - 1e-6)
    assert run.sql("SELECT text FROM results r JOIN calls c ON c.id = r.call JOIN functions fn"
                   " ON fn.id = c.function WHERE fn.qualname = 'g'")[0][0].startswith("1.99999")


def test_result_missing_in_some_runs_is_reported(cli, tmp_path, root):
    dirs = record(cli, tmp_path, root, """
        import sys
        i = int(sys.argv[1])
        def f(x):
            if i == 1 and x == 2:
                raise ValueError(x)
            return x * 1.5
        for x in range(4):
            try:
                f(x)
            except ValueError:
                pass
    """, "miss", [[0], [1], [0]])
    c = callscope.compare(dirs, root=root, store=False)
    assert any("call 3: no result in run 2" in what for _, what in c.misaligned)
    r = rows_by_value(c, "f")["result"]
    assert r.calls == 3  # the other calls are still compared
    assert r.min == pytest.approx(15.95, abs=0.01)


@pytest.mark.parametrize("expr", ["digits<+10", "digits<10%", "changed>+1", "changed>5%"])
def test_gates_on_digits_and_changed_take_plain_numbers(cli, expr):
    p = cli("compare", "a", "b", "--fail-if", expr, check=2)
    assert "takes a plain number" in error_line(p)


def test_report_shows_the_stability_view(cli, tmp_path, root):
    dirs = record(cli, tmp_path, root, KNOWN, "rep", [(s, 4) for s in range(4)])
    out = tmp_path / "before.html"
    cli("report", dirs[0], "-o", out, check=0)
    assert 'id="stability-view"' not in out.read_text()
    cli("compare", "--runs", "rep*", check=0)
    cli("report", dirs[0], "-o", out, check=0)
    html = out.read_text()
    view = html[html.index('id="stability-view"'):]
    table = view[view.index('<table id="stability">'):view.index("</table>")]
    assert "__main__.f" in table and "result" in table
    # a plot of digits per call, one point per call
    poly = view[view.index("<polyline"):]
    points = poly[poly.index('points="') + 8:poly.index('"', poly.index('points="') + 8)]
    assert len(points.split()) == 3
