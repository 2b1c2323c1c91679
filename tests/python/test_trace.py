"""Selecting functions by name (callscope.trace, callscope run -t): every
call matched exactly, through recursion, exceptions, generators,
coroutines, threads and sys.exit; compared with counts the programs keep
themselves."""
import os
import subprocess
import sys

import pytest

import callscope

# 3.12+: sys.monitoring; 3.10 and 3.11: the frame-evaluation hook
needs_monitoring = pytest.mark.skipif(sys.version_info < (3, 11),
                                      reason="3.10 code objects have no qualname")


def test_bad_patterns_name_the_key(root):
    with pytest.raises(ValueError, match="trace: .*empty"):
        callscope.trace("")
    with pytest.raises(ValueError, match="module: "):
        callscope.trace(module="pkg.*")
    with pytest.raises(ValueError, match="exclude: .*unclosed"):
        callscope.trace("x", exclude="a[b")
    with pytest.raises(TypeError, match="module: expected a string"):
        callscope.trace(module=3)
    assert not callscope._callscope._trace_active()


PROGRAM = """
import asyncio, json, sys, threading, callscope
counts = {}
def count(name):
    counts[name] = counts.get(name, 0) + 1

def fact(n):
    count("fact")
    return 1 if n <= 1 else n * fact(n - 1)

def boom(n):
    count("boom")
    if n == 0:
        raise KeyError("deep")
    return boom(n - 1)

def safe():
    count("safe")
    try:
        boom(3)
    except KeyError:
        return "caught"

def gen(n):
    count("gen")
    for i in range(n):
        got = yield i
        if got == "stop":
            return

async def leaf(x):
    count("leaf")
    await asyncio.sleep(0.001)
    return x

async def main_async():
    count("main_async")
    return sum(await asyncio.gather(*(leaf(i) for i in range(10))))

def worker(k):
    count("worker")
    for _ in range(k):
        fact(3)

def early_thread_body(ev):
    ev.wait()
    worker(2)

ev = threading.Event()
early = threading.Thread(target=early_thread_body, args=(ev,))
early.start()                                # started before tracing begins

callscope.trace("fact", "boom", "safe", "gen", "leaf", "main_async", "worker",
                "json.decoder.JSONDecoder.raw_decode", "json.loads")
fact(20)
safe()
try:
    boom(2)
except KeyError:
    pass
g = gen(5); next(g); g.send(None); g.close()          # closed early
g = gen(5); next(g)
try:
    g.throw(ValueError("into gen"))
except ValueError:
    pass
list(gen(3))
g = gen(5); next(g)
try:
    g.send("stop")
except StopIteration:
    pass
asyncio.run(main_async())
for i in range(50):
    json.loads('{"k": [1, 2, 3]}')
ev.set(); early.join()
late = threading.Thread(target=worker, args=(3,))   # started after
late.start(); late.join()
print(repr(counts))

def exits():
    count("exits")
    sys.exit(3)
callscope.trace("exits")
exits()
"""


@needs_monitoring
def test_calls_matched_exactly(run_py, root):
    p = run_py(PROGRAM, check=False)
    assert p.returncode == 3, p.stderr
    counts = eval(p.stdout.strip().splitlines()[-1])
    counts["exits"] = 1
    run = callscope.load(root=root)
    recorded = dict(run.sql(
        "SELECT f.qualname, count(*) FROM calls c JOIN functions f ON f.id = c.function"
        " GROUP BY f.qualname"))
    for name, n in counts.items():
        assert recorded.get(name) == n, (name, recorded.get(name), n)
    assert recorded["JSONDecoder.raw_decode"] == 50 and recorded["loads"] == 50
    # every raw_decode's parent is a json.loads call (decode is not selected)
    bad = run.sql("""SELECT count(*) FROM calls c JOIN functions f ON f.id = c.function
                     LEFT JOIN calls p ON p.id = c.parent LEFT JOIN functions pf
                     ON pf.id = p.function WHERE f.qualname = 'JSONDecoder.raw_decode'
                     AND (pf.qualname IS NOT 'loads' OR pf.module IS NOT 'json')""")
    assert bad == [(0,)]
    # exceptions: raised through, caught, and the sys.exit
    statuses = dict(run.sql(
        "SELECT f.qualname || ':' || c.status, count(*) FROM calls c JOIN functions f"
        " ON f.id = c.function WHERE f.qualname IN ('boom', 'safe', 'exits', 'gen')"
        " GROUP BY 1"))
    assert statuses["boom:raised"] == 7 and "boom:ok" not in statuses
    assert statuses["safe:ok"] == 1
    assert statuses["exits:raised"] == 1
    assert statuses["gen:ok"] == 3 and statuses["gen:raised"] == 1
    errors = {e[2] for e in run.errors()}
    assert {"KeyError", "ValueError", "SystemExit"} <= errors
    # recursion: 20 fact calls of the main thread nest 19 deep
    depth = run.sql("""WITH RECURSIVE chain(id, d) AS (
                         SELECT c.id, 0 FROM calls c JOIN functions f ON f.id = c.function
                         WHERE f.qualname = 'fact' AND c.parent IS NULL
                         UNION ALL SELECT c.id, d + 1 FROM calls c JOIN chain ON c.parent = chain.id)
                       SELECT max(d) FROM chain""")
    assert depth == [(19,)]
    # coroutines: gathered leaves overlap, each is one call of >= 1 ms
    leaves = run.calls("*leaf")
    assert len(leaves) == 10 and all(c.wall >= 1_000_000 for c in leaves)
    assert all(c.self < c.wall for c in leaves)
    # metadata once per function
    (f,) = [f for f in run.functions() if f.qualname == "fact"]
    assert f.module == "__main__" and f.file.endswith("prog.py") and f.line > 0
    assert f.args == "n" and f.locals == ""
    (rd,) = [f for f in run.functions() if f.qualname == "JSONDecoder.raw_decode"]
    assert rd.args == "self,s,idx" and rd.locals == "obj,end,err"


@needs_monitoring
def test_module_include_exclude_and_late_imports(run_py, root, tmp_path):
    pkg = tmp_path / "mypkg"
    (pkg / "vendor").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core.py").write_text("def f():\n    return 1\nclass C:\n    def m(self):\n"
                                 "        return f()\n")
    (pkg / "vendor" / "__init__.py").write_text("")
    (pkg / "vendor" / "lib.py").write_text("def g():\n    return 2\n")
    run_py("""
        import sys, callscope
        sys.path.insert(0, ".")
        callscope.trace(module="mypkg", exclude="mypkg.vendor.*")
        import mypkg.core, mypkg.vendor.lib          # imported after tracing began
        for _ in range(4):
            mypkg.core.C().m()
            mypkg.vendor.lib.g()
        class Late:                                  # a class made later
            def h(self):
                return mypkg.core.f()
        Late().h()
    """)
    run = callscope.load(root=root)
    names = {f.name: f.calls for f in run.functions()}
    assert names == {"mypkg.core.f": 5, "mypkg.core.C.m": 4}


@needs_monitoring
def test_tracing_block_and_untrace(root, finish):
    import json

    with callscope.tracing("json.loads"):
        for _ in range(3):
            json.loads("1")
    json.loads("2")  # after the block: not recorded
    callscope.trace("json.dumps")
    json.dumps(1)
    callscope.untrace()
    json.dumps(2)
    run = finish()
    assert {f.name: f.calls for f in run.functions()} == {"json.loads": 3, "json.dumps": 1}


@needs_monitoring
def test_cli_trace_reaches_child_processes(cli, tmp_path, root):
    (tmp_path / "app.py").write_text(
        "import json, subprocess, sys\n"
        "for _ in range(5): json.loads('[1]')\n"
        "subprocess.run([sys.executable, '-c', \"import json; json.loads('2'); json.loads('3')\"])\n")
    cli("run", "-t", "json.loads", "--cpu", "app.py", check=0)
    run = callscope.load(root=root)
    calls = run.calls("json.loads")
    assert len(calls) == 7 and len({c.pid for c in calls}) == 2
    assert all(c.cpu is not None for c in calls)


def test_cli_trace_bad_pattern(cli, tmp_path):
    (tmp_path / "app.py").write_text("pass\n")
    p = cli("run", "-t", "a b", "app.py", check=2)
    assert "--trace" in p.stderr and "spaces" in p.stderr
    p = cli("run", "--module", "x.*", "app.py", check=2)
    assert "--module" in p.stderr


@needs_monitoring
def test_pyproject_configuration_and_precedence(cli, tmp_path, root):
    (tmp_path / "app.py").write_text(
        "import json\nfor _ in range(3): json.loads('1'); json.dumps(2)\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.callscope]\ntrace = ["json.loads"]\ncpu = true\n')
    cli("run", "app.py", check=0)
    run = callscope.load(root=root)
    assert {f.name: f.calls for f in run.functions()} == {"json.loads": 3}
    assert all(c.cpu is not None for c in run.calls("json.loads"))
    # the command line wins over the file for the keys it gives
    cli("run", "-t", "json.dumps", "app.py", check=0)
    run = callscope.load(root=root)
    assert {f.name: f.calls for f in run.functions()} == {"json.dumps": 3}


@needs_monitoring
def test_callscope_toml_beside_the_program(cli, tmp_path, root):
    sub = tmp_path / "prog"
    sub.mkdir()
    (sub / "app.py").write_text("import json\njson.loads('1')\n")
    (sub / "callscope.toml").write_text('trace = "json.loads"\nexclude = []\n')
    cli("run", sub / "app.py", check=0)
    assert [f.name for f in callscope.load(root=root).functions()] == ["json.loads"]


def test_bad_configuration_names_the_key(cli, tmp_path, root):
    """Bad configuration is bad usage: one line naming the file and key,
    status 2 (it was 1 before issue 16 asked for 2)."""
    (tmp_path / "app.py").write_text("pass\n")
    (tmp_path / "callscope.toml").write_text('traec = ["x"]\n')
    p = cli("run", "app.py", check=2)
    assert "unknown key 'traec'" in p.stderr and "callscope.toml" in p.stderr
    (tmp_path / "callscope.toml").write_text('cpu = "yes"\n')
    p = cli("run", "app.py", check=2)
    assert "'cpu' must be true or false" in p.stderr
    (tmp_path / "callscope.toml").write_text('trace = ["a b"]\n')
    p = cli("run", "app.py", check=2)
    assert "trace:" in p.stderr and "spaces" in p.stderr
    (tmp_path / "callscope.toml").write_text('trace = [\n')
    p = cli("run", "app.py", check=2)
    assert "not valid TOML" in p.stderr
    # nested 5000 levels deep: one line, no traceback
    (tmp_path / "callscope.toml").write_text("trace = " + "[" * 5000 + "]" * 5000 + "\n")
    p = cli("run", "app.py", check=2)
    assert "nested too deeply" in p.stderr and "Traceback" not in p.stderr
    errors = [l for l in p.stderr.splitlines() if l.startswith("callscope: error")]
    assert len(errors) == 1
    # and nothing is left behind: no run, no `latest`
    assert not os.path.exists(root) or os.listdir(root) == []


@needs_monitoring
def test_generator_cpu_decorated_once_and_launcher_not_selected(cli, tmp_path, root):
    (tmp_path / "app.py").write_text(
        "import callscope\n"
        "def gen(n):\n    for i in range(n):\n        yield sum(range(10000))\n"
        "@callscope.monitor\ndef both():\n    return 1\n"
        "def main():\n    list(gen(3)); both()\n"
        "main()\n")
    cli("run", "-t", "gen", "-t", "both", "-t", "main", "--cpu", "app.py", check=0)
    run = callscope.load(root=root)
    names = {f.name: f.calls for f in run.functions()}
    # `main` is the program's, not the launcher's; `both` is recorded once
    assert names == {"__main__.gen": 1, "__main__.both": 1, "__main__.main": 1}
    (g,) = run.calls("*gen")
    assert g.status == "ok" and g.cpu is not None and g.cpu > 0
    (m,) = run.calls("*main")
    assert m.status == "ok" and m.parent is None


def test_options_without_a_selection_warn(cli, tmp_path):
    (tmp_path / "app.py").write_text("print('ran')\n")
    p = cli("run", "--cpu", "app.py", check=0)
    assert "ran" in p.stdout and "nothing is selected" in p.stderr


# -- C functions -----------------------------------------------------------------

def test_c_functions_selected_by_name(run_py, root):
    """Builtins, extension functions and methods of built-in types, with
    exact counts, errors, calls in a thread started later, and Python
    callbacks nested inside them."""
    run_py("""
        import math, threading, callscope
        calls = {"sorted": 0, "sqrt": 0, "join": 0, "key": 0}
        def key(x):
            calls["key"] += 1
            return -x
        callscope.trace("sorted", "math.sqrt", "str.join", "key", c_functions=True)
        for i in range(5):
            sorted([3, 1, 2], key=key); calls["sorted"] += 1
        for i in range(4):
            math.sqrt(i); calls["sqrt"] += 1
        "-".join(["a", "b"]); calls["join"] += 1
        try:
            sorted([1, "a"])
        except TypeError:
            calls["sorted"] += 1
        def worker():
            for i in range(3):
                math.sqrt(i)
        t = threading.Thread(target=worker)
        t.start(); t.join()
        calls["sqrt"] += 3
        callscope.untrace()
        sorted([2, 1])  # not recorded
        callscope._callscope._finish()
        run = callscope.load()
        got = {fn.qualname.split(".")[-1]: fn.calls for fn in run.functions()}
        assert got == calls, (got, calls)
        errs = run.calls("builtins.sorted", status="raised")
        assert len(errs) == 1
        # key's calls are children of the sorted calls
        parents = {c.id for c in run.calls("builtins.sorted")}
        assert all(c.parent in parents for c in run.calls("key"))
        assert len({c.thread for c in run.calls("math.sqrt")}) == 2
        print("ok")
    """)


def test_cli_c_functions(cli, tmp_path, root):
    (tmp_path / "prog.py").write_text("import math\nfor i in range(3):\n    math.sqrt(i)\n")
    cli("run", "-q", "--c-functions", "-t", "math.sqrt", "--", "prog.py", check=0)
    run = callscope.load(root=root)
    assert [(f.name, f.calls) for f in run.functions()] == [("math.sqrt", 3)]


@pytest.mark.skipif(sys.version_info >= (3, 12),
                    reason="3.12+ selects C functions through sys.monitoring, beside cProfile")
def test_c_functions_and_another_profiler(root):
    """3.10 and 3.11 need the one profile hook of each thread: with
    cProfile running, selecting C functions is refused, clearly."""
    import cProfile
    prof = cProfile.Profile()
    prof.enable()
    try:
        with pytest.raises(RuntimeError, match="another profiler"):
            callscope.trace("sorted", c_functions=True)
    finally:
        prof.disable()
    assert not callscope._callscope._trace_active()


def test_bad_configuration_leaves_the_runs_as_they_were(cli, tmp_path, root):
    (tmp_path / "app.py").write_text("pass\n")
    cli("run", "-q", "app.py", check=0)
    before = sorted(os.listdir(root))
    latest = os.readlink(root / "latest")
    (tmp_path / "callscope.toml").write_text('traec = ["x"]\n')
    cli("run", "-q", "app.py", check=2)
    assert sorted(os.listdir(root)) == before
    assert os.readlink(root / "latest") == latest


def test_a_pattern_that_matched_nothing_is_reported(cli, tmp_path, root):
    (tmp_path / "app.py").write_text("def step():\n    return 1\nstep()\n")
    p = cli("run", "-q", "-t", "no_such_function", "-t", "step", "--module", "nowhere",
            "app.py", check=0)
    assert "-t no_such_function matched no function" in p.stderr
    assert "--module nowhere matched no function" in p.stderr
    assert "-t step matched" not in p.stderr
