"""One call model: what `--all` counts is what cProfile counts -- Python
functions, C functions and generator resumptions, primitive calls and
callers -- checked against cProfile itself on the same programs; the call
tree, its exports and its numbers add up; per-call numbers too."""
import json
import os
import pstats
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

import callscope

# The program of the issue that asked for this: a generator, a builtin fed
# by a generator expression, recursion and a sleep.
ISSUE_PROG = """
import time
def produce(n):
    for i in range(n): yield i
def consume(x): return sum(x for _ in range(2000))
def fib(n): return n if n < 2 else fib(n-1) + fib(n-2)
def main():
    for v in produce(200): consume(v)
    fib(20); time.sleep(0.05)
main()
"""


def _stats(path, home=None):
    """pstats' dict, with the addresses cProfile writes in some builtins'
    names ("<built-in method __new__ of type object at 0x...>") left out:
    they differ from one process to the next; and the directory `home`
    written as "HOME"."""
    def key(k):
        file = k[0].replace(home, "HOME") if home else k[0]
        return (file, k[1], re.sub(r" at 0x[0-9a-f]+", "", k[2]))
    return {key(k): (*v[:4], {key(c): x for c, x in v[4].items()})
            for k, v in pstats.Stats(str(path)).stats.items()}


def _compare(ours, theirs, keys):
    """Every key's (primitive calls, calls) and callers' (calls, primitive
    calls), restricted to callers among `keys`; a list of differences."""
    bad = []
    for k in sorted(keys, key=str):
        if k not in ours:
            bad.append(("missing", k, theirs[k][:2]))
            continue
        if ours[k][:2] != theirs[k][:2]:
            bad.append(("counts", k, ours[k][:2], theirs[k][:2]))
        mine = {c: v[:2] for c, v in ours[k][4].items() if c in keys}
        ref = {c: v[:2] for c, v in theirs[k][4].items() if c in keys}
        if mine != ref:
            bad.append(("callers", k, mine, ref))
    return bad


def test_issue_program_counts_as_cprofile(cli, tmp_path, root):
    prog = tmp_path / "prog.py"
    prog.write_text(ISSUE_PROG)
    cli("run", "-q", "--all", prog, check=0)
    cli("export", "-F", "pstats", "-o", tmp_path / "ours.pstats", check=0)
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(tmp_path / "cp.pstats"),
                    str(prog)], check=True, cwd=tmp_path,
                   env=dict(os.environ, CALLSCOPE_PROFILE_ALL="", CALLSCOPE_TRACE=""))
    ours, theirs = _stats(tmp_path / "ours.pstats"), _stats(tmp_path / "cp.pstats")
    mine = {k for k in theirs if k[0] == str(prog)}
    # builtins the program itself called (exec, which runs it, is cProfile's)
    builtins = {k for k in theirs if k[0] == "~" and theirs[k][4]
                and all(c in mine for c in theirs[k][4])}
    keys = mine | builtins
    names = {k[2] for k in keys}
    assert {"produce", "consume", "<genexpr>", "fib", "main",
            "<built-in method builtins.sum>", "<built-in method time.sleep>"} <= names
    assert _compare(ours, theirs, keys) == []
    # the numbers of the issue: 201 resumptions of produce, 21891/1 fib
    by = {k[2]: v for k, v in ours.items() if k in keys}
    assert by["produce"][:2] == (201, 201) and by["fib"][:2] == (1, 21891)
    assert by["<built-in method time.sleep>"][3] >= 0.05


REAL = """
import difflib, email, email.policy, json, re, textwrap, threading

MSG = ("From: a@example.com\\nTo: b@example.com\\nSubject: {n}\\n"
       "Content-Type: text/plain\\n\\n" + "line of text {n}\\n" * 20)

class Walker:
    def __init__(self, data):
        self.data = data
    def walk(self, node=None, depth=0):
        node = self.data if node is None else node
        if isinstance(node, dict):
            return sum(self.walk(v, depth + 1) for v in node.values())
        if isinstance(node, list):
            return sum(self.walk(v, depth + 1) for v in node)
        return 1

def work():
    msgs = [email.message_from_string(MSG.format(n=i), policy=email.policy.default)
            for i in range(30)]
    subjects = [m["subject"] for m in msgs]
    doc = json.loads(json.dumps({"s": subjects, "n": [[i, {"k": i}] for i in range(50)]}))
    words = re.findall(r"\\w+", " ".join(textwrap.wrap(" ".join(subjects) * 5, 40)))
    diff = list(difflib.unified_diff(words[:60], words[10:70]))
    return Walker(doc).walk() + len(diff)

def main():
    return work()
"""


def _profile_both(root, tmp_path, source):
    """Run `source`'s main() in two processes, once to warm up (lazy
    imports, caches) and once profiled: by callscope.profile_all() in one,
    by cProfile.Profile() in the other, each in a directory of its own
    holding the same files (what a program finds on disk can change what
    it does). Both pstats dicts, addresses left out of names, and the keys
    to compare (cProfile's, but its own and callscope's)."""
    out = {}
    for n, who in enumerate(("callscope", "cprofile")):
        home = tmp_path / f"p{n}"
        home.mkdir()
        (home / "realprog.py").write_text(textwrap.dedent(source))
        out[who] = tmp_path / f"{who}.pstats"
        (home / "runner.py").write_text(textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(home)!r})
            import cProfile, callscope  # both, in both: the same modules loaded
            import gc, realprog
            realprog.main()
            # no collection while profiling: its finalizers would run at
            # moments that depend on each profiler's own allocations
            gc.collect()
            gc.disable()
            if sys.argv[1] == "callscope":
                callscope.profile_all()
                realprog.main()
                callscope.profile_all(False)
                callscope._callscope._finish()
                callscope.load().export("pstats", {str(out[who])!r})
            else:
                p = cProfile.Profile()
                p.enable()
                realprog.main()
                p.disable()
                p.dump_stats({str(out[who])!r})
        """))
        env = dict(os.environ, CALLSCOPE_DIR=str(root), CALLSCOPE_RUN_DIR="",
                   CALLSCOPE_PROFILE_ALL="", CALLSCOPE_TRACE="")
        subprocess.run([sys.executable, str(home / "runner.py"), who], check=True, cwd=home,
                       env=env, timeout=600)
    ours = _stats(out["callscope"], str(tmp_path / "p0"))
    theirs = _stats(out["cprofile"], str(tmp_path / "p1"))
    keys = {k for k in theirs if "_lsprof" not in k[2] and "callscope" not in k[0]
            and "callscope" not in k[2]}
    return ours, theirs, keys


def test_real_work_counts_and_callers_as_cprofile(root, tmp_path):
    """Library code (email, json, re, difflib, textwrap): every function and
    builtin cProfile sees, with the same calls and callers."""
    ours, theirs, keys = _profile_both(root, tmp_path, REAL)
    assert len(keys) > 100  # a real amount of code
    assert any(k[0] == "~" for k in keys) and any("email" in k[0] for k in keys)
    assert _compare(ours, theirs, keys) == []


def test_tree_shows_the_path_to_the_sleep(cli, tmp_path):
    (tmp_path / "app.py").write_text(textwrap.dedent("""
        import time
        def work():
            time.sleep(0.2)
        def main():
            work()
        main()
    """))
    p = cli("run", "--all", "app.py", check=0)
    # the closing summary answers at once
    assert "time.sleep" in p.stderr and "share" in p.stderr
    out = cli("tree", check=0).stdout.splitlines()
    path = [l for l in out[:12] if "__main__.main" in l or "__main__.work" in l
            or "time.sleep" in l]
    assert [l.split("  ")[-1].split()[-1] if "time.sleep" in l else l for l in path]
    names = [next(w for w in l.split() if w.startswith(("__main__.", "time.")))
             for l in path]
    assert names == ["__main__.main", "__main__.work", "time.sleep"]
    sleep = next(l for l in out if "time.sleep" in l)
    share = float(sleep.split()[0].rstrip("%"))
    assert 50 < share <= 100
    # launcher frames are folded unless asked for
    assert not any("runpy" in l for l in out)
    assert any("runpy" in l for l in cli("tree", "--launcher", "--min-share", "0",
                                         "--depth", "0", check=0).stdout.splitlines())
    # bad options
    assert "--depth" in cli("tree", "--depth", "x", check=2).stderr
    assert "--min-share" in cli("tree", "--min-share", "200", check=2).stderr


def test_numbers_add_up(cli, tmp_path, root):
    """Self times add up to what the top-level calls took; no total is
    above the run's wall time; CPU <= wall on every path."""
    prog = tmp_path / "prog.py"
    prog.write_text(ISSUE_PROG)
    cli("run", "-q", "--all", "--cpu", prog, check=0)
    run = callscope.load(root=root)
    wall = run.info()["duration_ns"]
    stats = run.stats(launcher=True)
    assert stats and all(s["total_ns"] <= wall for s in stats)
    db = sqlite3.connect(os.path.join(run.path, "run.db"))
    top_total, = db.execute("SELECT sum(total_ns) FROM tree WHERE parent IS NULL").fetchone()
    all_self, = db.execute("SELECT sum(self_ns) FROM tree").fetchone()
    assert all_self == top_total and top_total <= wall
    assert db.execute("SELECT count(*) FROM tree WHERE cpu_ns > total_ns").fetchone() == (0,)
    cpu = {s["function"]: s["cpu_ns"] for s in stats}
    assert cpu["__main__.consume"] > 0 and cpu["time.sleep"] < 0.5 * 50e6  # sleeping is no CPU
    # fib: 21891 calls, one primitive; its total is its outermost call's
    fib = next(s for s in stats if s["function"] == "__main__.fib")
    assert (fib["calls"], fib["prim_calls"]) == (21891, 1)
    main = next(s for s in stats if s["function"] == "__main__.main")
    assert fib["total_ns"] < main["total_ns"]
    # top, stats() and the tree agree
    top = {r["function"]: r for r in __import__("conftest").top_rows(
        cli("top", "-n", "0", check=0).stdout)}
    assert top["__main__.fib"]["calls"] == "21891/1"
    assert set(top) == {s["function"] for s in run.stats()}


def test_per_call_recursion_and_cpu(cli, tmp_path, root):
    prog = tmp_path / "prog.py"
    prog.write_text(ISSUE_PROG)
    cli("run", "-q", "-t", "fib", "-t", "consume", "--cpu", prog, check=0)
    run = callscope.load(root=root)
    wall = run.info()["duration_ns"]
    fib = run.stats(filter="*.fib")[0]
    assert fib["calls"] == 21891 and fib["prim_calls"] == 1
    assert fib["total_ns"] <= wall  # nested calls are not summed again
    assert fib["min_ns"] <= fib["p50_ns"] <= fib["p95_ns"] <= fib["max_ns"]
    db = sqlite3.connect(os.path.join(run.path, "run.db"))
    n, over = db.execute("SELECT count(*), sum(cpu_ns > wall_ns) FROM calls"
                         " WHERE cpu_ns IS NOT NULL").fetchone()
    assert n == 21891 + 200 and over == 0
    assert db.execute("SELECT count(*) FROM calls WHERE recursive = 1").fetchone() == (21890,)
    # the main thread has Python's name, though threading was never imported
    assert [r[0] for r in db.execute("SELECT name FROM threads")] == ["MainThread"]


def test_thread_names_are_pythons(run_py, root):
    run_py("""
        import callscope
        from concurrent.futures import ThreadPoolExecutor
        @callscope.monitor
        def f(x):
            return x
        f(0)
        with ThreadPoolExecutor(2) as ex:
            list(ex.map(f, range(20)))
    """)
    run = callscope.load(root=root)
    db = sqlite3.connect(os.path.join(run.path, "run.db"))
    names = {r[0] for r in db.execute("SELECT name FROM threads")}
    assert "MainThread" in names
    assert names - {"MainThread"} and all(n.startswith("ThreadPoolExecutor-0_")
                                          for n in names - {"MainThread"})


def test_exports_of_the_tree(cli, tmp_path, root):
    prog = tmp_path / "prog.py"
    prog.write_text(ISSUE_PROG)
    cli("run", "-q", "--all", prog, check=0)
    out = tmp_path / "x.collapsed"
    cli("export", "-F", "collapsed", "-o", out, check=0)
    lines = out.read_text().splitlines()
    weights = {l.rsplit(" ", 1)[0]: int(l.rsplit(" ", 1)[1]) for l in lines}
    sleep = weights["__main__.<module>;__main__.main;time.sleep"]
    assert 50_000 <= sleep < 500_000  # microseconds
    assert all(w > 0 for w in weights.values())
    # speedscope and chrome of an --all run come from its tree, not empty
    cli("export", "-F", "speedscope", "-o", tmp_path / "s.json", check=0)
    doc = json.loads((tmp_path / "s.json").read_text())
    prof = doc["profiles"][0]
    assert prof["type"] == "sampled" and len(prof["samples"]) == len(prof["weights"]) > 5
    frames = [f["name"] for f in doc["shared"]["frames"]]
    assert "time.sleep" in frames and "__main__.fib" in frames
    cli("export", "-F", "chrome", "-o", tmp_path / "c.json", check=0)
    ev = json.loads((tmp_path / "c.json").read_text())["traceEvents"]
    assert any(e.get("name") == "time.sleep" and e["dur"] >= 50_000 for e in ev)
    # pstats with callers: print_callers has something to print
    cli("export", "-F", "pstats", "-o", tmp_path / "p.pstats", check=0)
    st = pstats.Stats(str(tmp_path / "p.pstats"))
    sleep_key = next(k for k in st.stats if "time.sleep" in k[2])
    assert sleep_key[:2] == ("~", 0)
    assert [c[2] for c in st.stats[sleep_key][4]] == ["main"]


def test_no_c_calls(cli, tmp_path, root):
    prog = tmp_path / "prog.py"
    prog.write_text(ISSUE_PROG)
    cli("run", "-q", "--all", "--no-c-calls", prog, check=0)
    kinds = {s["kind"] for s in callscope.load(root=root).stats(launcher=True)}
    assert kinds == {"function"}


def test_node_limit_keeps_counts(run_py, root):
    """Past max_nodes new paths are kept by function only: memory is bounded
    by the limit plus one node per function, counts stay exact, and the
    rows past the limit say so (flag 8)."""
    run_py("""
        import sys, callscope
        sys.setrecursionlimit(10_000)
        def ping(n):
            return pong(n - 1) if n else 0
        def pong(n):
            return ping(n - 1) if n else 0
        callscope.profile_all(c_calls=False, max_nodes=100)
        for _ in range(3):
            ping(4000)  # a path 4000 calls deep
        callscope.profile_all(False)
    """)
    run = callscope.load(root=root)
    stats = {s["function"]: s for s in run.stats(launcher=True)}
    assert stats["__main__.ping"]["calls"] == 3 * 2001
    assert stats["__main__.pong"]["calls"] == 3 * 2000
    assert stats["__main__.ping"]["prim_calls"] == 3
    db = sqlite3.connect(os.path.join(run.path, "run.db"))
    nodes, = db.execute("SELECT count(*) FROM tree").fetchone()
    funcs, = db.execute("SELECT count(*) FROM functions").fetchone()
    # the limit, the head of truncated paths, and past it two nodes a
    # function at most (its recursive calls and the others)
    assert nodes <= 100 + 1 + 2 * funcs
    per = db.execute("SELECT count(*) FROM tree t JOIN function_names n ON n.id = t.function"
                     " WHERE t.flags & 8 AND n.name = '__main__.ping'").fetchone()[0]
    assert 1 <= per <= 2
    # self times past the limit are kept too: ping's and pong's add up to
    # about the time of the three outermost calls
    ping, pong = stats["__main__.ping"], stats["__main__.pong"]
    assert ping["self_ns"] + pong["self_ns"] <= ping["total_ns"] * 1.01


def test_kill9_keeps_the_tree(tmp_path, root):
    """The tree lives in the log, updated in place: a process killed with
    SIGKILL leaves every call that finished, and its open calls."""
    prog = tmp_path / "prog.py"
    prog.write_text(textwrap.dedent("""
        import sys, time
        def step(i):
            return i * 2
        def loop():
            n = 0
            while True:
                for i in range(1000):
                    step(i)
                n += 1000
                if n == 50_000:
                    print("ready", flush=True)
        loop()
    """))
    env = dict(os.environ, CALLSCOPE_DIR=str(root), CALLSCOPE_RUN_DIR="")
    cli = os.path.join(os.path.dirname(sys.executable), "callscope")
    p = subprocess.Popen([cli, "run", "-q", "--all", "--no-c-calls", str(prog)], env=env,
                         stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                         start_new_session=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        os.killpg(p.pid, signal.SIGKILL)  # the program and callscope run
    finally:
        p.wait(timeout=60)
    run = callscope.load(root=root)
    step = run.stats(filter="__main__.step")[0]
    assert step["calls"] >= 50_000
    loop = run.stats(filter="__main__.loop")[0]
    assert loop["calls"] == 1 and loop["total_ns"] > 0  # open when killed, kept
    assert run.info()["state"] != "complete"


def test_a_call_open_when_profiling_starts(run_py, root):
    """The call that starts profiling ends inside it: its end is ignored,
    and its later calls are counted, with their callees under them (its
    return event must not be switched off for good)."""
    run_py("""
        import callscope
        def inner():
            return 1
        def outer(start):
            if start:
                callscope.profile_all(c_calls=False)
            return inner()
        outer(True)
        for _ in range(5):
            outer(False)
        callscope.profile_all(False)
    """)
    run = callscope.load(root=root)
    db = sqlite3.connect(os.path.join(run.path, "run.db"))
    rows = db.execute(
        "SELECT n.name, IFNULL(pn.name, ''), t.calls FROM tree t"
        " JOIN function_names n ON n.id = t.function LEFT JOIN tree p ON p.id = t.parent"
        " LEFT JOIN function_names pn ON pn.id = p.function"
        " WHERE n.name LIKE '__main__.%'").fetchall()
    assert sorted(rows) == [("__main__.inner", "", 1), ("__main__.inner", "__main__.outer", 5),
                            ("__main__.outer", "", 5)]


def test_all_and_a_selection_together(cli, tmp_path, root):
    """--all with -t: one sys.monitoring tool feeds both sinks; the selected
    function's calls are recorded one by one and counted once."""
    prog = tmp_path / "prog.py"
    prog.write_text(ISSUE_PROG)
    cli("run", "-q", "--all", "-t", "fib", prog, check=0)
    run = callscope.load(root=root)
    assert len(run.calls("__main__.fib")) == 21891
    fib = run.stats(filter="*.fib")[0]
    assert (fib["calls"], fib["prim_calls"]) == (21891, 1)
    consume = run.stats(filter="*.consume")[0]
    assert consume["calls"] == 200 and consume["p50_ns"] is None  # from the tree
    cli("export", "-F", "pstats", "-o", tmp_path / "p.pstats", check=0)
    st = _stats(tmp_path / "p.pstats")
    by = {k[2]: v for k, v in st.items() if k[0] == str(prog)}
    assert by["fib"][:2] == (1, 21891) and by["consume"][:2] == (200, 200)


REAL_PROGRAMS = {
    # a pytest session of 200 small tests
    "pytest": """
        import os, pytest
        # a fixed place: pytest's work depends on the path (cProfile's own
        # counts differ from run to run with a random temporary directory)
        TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen")
        os.makedirs(TESTS, exist_ok=True)
        with open(os.path.join(TESTS, "test_gen.py"), "w") as f:
            f.write("import json\\n")
            for i in range(200):
                f.write(f"def test_{i}():\\n    assert json.loads(json.dumps([{i}])) == [{i}]\\n")
        def main():
            pytest.main(["-q", "-p", "no:cacheprovider", os.path.join(TESTS, "test_gen.py")])
    """,
    # pyflakes checking the standard library's email package
    "pyflakes": """
        import os, email, pyflakes.api
        from pyflakes import reporter
        class Quiet(reporter.Reporter):
            def __init__(self):
                pass
            def unexpectedError(self, *a):
                pass
            def syntaxError(self, *a):
                pass
            def flake(self, *a):
                pass
        def main():
            pyflakes.api.checkRecursive([os.path.dirname(email.__file__)], Quiet())
    """,
    # pygments highlighting typing.py
    "pygments": """
        import typing
        from pygments import highlight
        from pygments.lexers import PythonLexer
        from pygments.formatters import HtmlFormatter
        SRC = open(typing.__file__).read()
        def main():
            highlight(SRC, PythonLexer(), HtmlFormatter())
    """,
}


@pytest.mark.parametrize("name", sorted(REAL_PROGRAMS))
def test_real_programs_count_as_cprofile(root, tmp_path, name):
    """Real programs, profiled in-process by both after a warm-up run:
    every function and builtin cProfile sees, with the same calls,
    primitive calls and callers."""
    pytest.importorskip(name)
    ours, theirs, keys = _profile_both(root, tmp_path, REAL_PROGRAMS[name])
    assert sum(theirs[k][1] for k in keys) > 50_000  # a real amount of work
    # Code objects that share a pstats key (file, line, name) -- code
    # compiled from strings (namedtuple's, dataclasses'), or a comprehension
    # nested in another on one line -- are summed by callscope; cProfile's
    # pstats keeps one of them (a dict assignment in snapshot_stats).
    shared = {k for k in keys if k[0].startswith("<string>")
              or (k[2].startswith("<") and k in ours.get(k, (0, 0, 0, 0, {}))[4])}
    keys -= shared
    assert _compare(ours, theirs, keys) == []
