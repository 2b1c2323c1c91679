"""Exports: every format opens in the tool that reads it, with row counts
that match the run; bad input gets a clear message."""
import csv
import json
import marshal
import pstats

import pytest

import callscope

PROGRAM = """
import callscope

@callscope.monitor(args=True, result=True)
def leaf(x):
    return x * 2

@callscope.monitor
def middle(n):
    return sum(leaf(i) for i in range(n))

@callscope.monitor
def rec(n):
    return 0 if n == 0 else rec(n - 1) + 1

@callscope.monitor
def bad(msg):
    raise ValueError(msg)

def weird():
    @callscope.monitor(name="<b>&amp;\\"odd\\"</b>")
    def inner():
        return 1
    return inner()

for k in range(3):
    middle(4)
rec(5)
weird()
try:
    bad('a "quoted", multi\\nline message')
except ValueError:
    pass
"""


@pytest.fixture
def run(run_py, root):
    run_py(PROGRAM)
    return callscope.load(root=root)


def n_calls(run):
    return run.sql("SELECT count(*) FROM calls")[0][0]


def test_chrome_trace_events(run, tmp_path, cli):
    out = tmp_path / "t.json"
    cli("export", run.path, "--format", "chrome", "-o", out, check=0)
    doc = json.loads(out.read_text())
    events = doc["traceEvents"]
    calls = [e for e in events if e["ph"] == "X"]
    assert len(calls) == n_calls(run) == 3 * 5 + 6 + 1 + 1
    for e in calls:
        assert isinstance(e["name"], str) and e["name"]
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0
        assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
    meta = {(e["name"], e["pid"], e["tid"]) for e in events if e["ph"] == "M"}
    assert any(m[0] == "process_name" for m in meta)
    assert any(m[0] == "thread_name" for m in meta)
    # every call sits inside its parent in time (ts in us, rounded to ns)
    leaf = [e for e in calls if e["name"].endswith("leaf")]
    assert leaf[0]["args"]["args"] == "((0,), {})" and leaf[0]["args"]["result"] == "0"
    err = [e for e in calls if e["name"].endswith("bad")][0]
    assert err["args"]["error"] == "ValueError"
    assert '"quoted"' in err["args"]["message"]
    assert any(e["name"] == '<b>&amp;"odd"</b>' for e in calls)


def test_speedscope_profiles_are_balanced(run, tmp_path):
    out = tmp_path / "s.json"
    assert run.export("speedscope", out) == n_calls(run)
    doc = json.loads(out.read_text())
    assert doc["$schema"].startswith("https://www.speedscope.app/")
    frames = doc["shared"]["frames"]
    assert {f["name"].split(".")[-1] for f in frames} >= {"leaf", "middle", "rec", "bad"}
    for prof in doc["profiles"]:
        assert prof["type"] == "evented" and prof["unit"] == "nanoseconds"
        stack, last = [], 0
        for ev in prof["events"]:
            assert ev["at"] >= last
            last = ev["at"]
            assert 0 <= ev["frame"] < len(frames)
            if ev["type"] == "O":
                stack.append(ev["frame"])
            else:
                assert stack.pop() == ev["frame"]
        assert stack == []
        assert prof["endValue"] >= last


def test_pstats_loads_with_the_run_counts(run, tmp_path, cli):
    out = tmp_path / "p.pstats"
    cli("export", run.path, "-F", "pstats", "-o", out, check=0)
    st = pstats.Stats(str(out))
    by_name = {k[2]: v for k, v in st.stats.items()}
    counts = dict(run.sql(
        "SELECT f.qualname, count(*) FROM calls c JOIN functions f ON f.id = c.function"
        " GROUP BY f.id"))
    for name, n in counts.items():
        cc, nc, tt, ct, callers = by_name[name]
        assert nc == n, name
        assert 0 <= tt <= ct + 1e-9 or name == "rec"
    # rec calls itself: 6 calls, 1 of them primitive; its caller is itself
    cc, nc, tt, ct, callers = by_name["rec"]
    assert (cc, nc) == (1, 6)
    assert any(k[2] == "rec" for k in callers)
    # leaf is called from the generator inside middle: its callers name middle's frame
    assert sum(v[1] for v in by_name["leaf"][4].values()) == 12
    st.sort_stats("cumulative").print_stats(0)  # the reading side works
    assert isinstance(marshal.loads(out.read_bytes()), dict)


def test_csv_and_jsonl_rows(run, tmp_path, cli):
    c, j = tmp_path / "c.csv", tmp_path / "c.jsonl"
    cli("export", run.path, "-F", "csv", "-o", c, check=0)
    cli("export", run.path, "-F", "jsonl", "-o", j, check=0)
    with open(c, newline="") as f:
        rows = list(csv.DictReader(f))
    objs = [json.loads(line) for line in j.read_text().splitlines()]
    assert len(rows) == len(objs) == n_calls(run)
    for col in ("id", "function", "time", "cpu", "memory", "pid", "ppid", "process_name",
                "parent_process_name", "broken", "error_type", "error_value", "traceback"):
        assert col in rows[0], col
    bad = [r for r in rows if r["function"].endswith("bad")][0]
    assert bad["broken"] == "True" and bad["error_type"] == "ValueError"
    assert bad["error_value"] == 'a "quoted", multi\nline message'
    assert "Traceback" in bad["traceback"]
    ok = [r for r in rows if r["function"].endswith("middle")][0]
    assert ok["broken"] == "False" and float(ok["time"]) > 0
    assert {o["id"] for o in objs} == {int(r["id"]) for r in rows}
    assert all(o["status"] in ("ok", "raised", "unfinished") for o in objs)


def test_parquet_reads_back(run, tmp_path, cli):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "c.parquet"
    cli("export", run.path, "-F", "parquet", "-o", out, check=0)
    t = pq.read_table(out)
    assert t.num_rows == n_calls(run)
    assert {"function", "wall_ns", "status", "args", "result"} <= set(t.column_names)
    assert run.export("parquet", tmp_path / "d.parquet") == n_calls(run)


def test_to_pandas(run):
    pd = pytest.importorskip("pandas")
    df = run.to_pandas()
    assert isinstance(df, pd.DataFrame) and len(df) == n_calls(run)


def test_empty_run_and_stdout(cli, tmp_path, root, run_py):
    run_py("import callscope\ncallscope.span('x')\n")  # records nothing: no run at all
    p = cli("export", "-F", "jsonl", "-o", "-")
    assert p.returncode in (0, 1)
    assert p.returncode == 1 and "no runs" in p.stderr
    # a run that recorded nothing (callscope run describes it first): an
    # export with nothing in it says so and fails, and leaves no file
    (tmp_path / "idle.py").write_text("x = 1\n")
    cli("run", "-q", "--", "idle.py", check=0)
    p = cli("export", "-F", "jsonl", "-o", "-", check=1)
    assert p.stdout == "" and "nothing to write as jsonl" in p.stderr
    for fmt in ("csv", "chrome", "speedscope", "pstats", "collapsed"):
        out = tmp_path / f"empty.{fmt}"
        p = cli("export", "-F", fmt, "-o", out, check=1)
        assert "nothing to write" in p.stderr and not out.exists()


def test_export_to_stdout(run, cli):
    p = cli("export", run.path, "-F", "jsonl", "-o", "-", check=0)
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(rows) == n_calls(run) and p.stderr == ""


def test_bad_usage(run, cli, tmp_path):
    p = cli("export", run.path, check=2)
    assert "--format" in p.stderr
    p = cli("export", run.path, "-F", "svg", check=2)
    assert "unknown format 'svg'" in p.stderr
    p = cli("export", run.path, "-F", "csv", "-o", tmp_path / "no" / "such" / "dir.csv",
            check=1)
    assert "cannot write" in p.stderr
    with pytest.raises(ValueError, match="unknown format"):
        run.export("svg", tmp_path / "x")


def test_pstats_counts_as_cprofile_does(run_py, root, tmp_path):
    """Indirect recursion (a -> b -> a): the same primitive calls and
    cumulative times as cProfile, counted on one program."""
    out = tmp_path / "cp.pstats"
    run_py(f"""
        import cProfile, pstats, callscope
        def a(n):
            return b(n) if n else 0
        def b(n):
            return a(n - 1) + 1
        callscope.trace("a", "b")
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(3):
            a(4)
        prof.disable()
        prof.dump_stats({str(out)!r})
    """)
    run = callscope.load(root=root)
    mine = tmp_path / "mine.pstats"
    run.export("pstats", mine)
    theirs = {k[2]: v[:2] for k, v in pstats.Stats(str(out)).stats.items() if k[2] in "ab"}
    ours = {k[2]: v[:2] for k, v in pstats.Stats(str(mine)).stats.items()}
    assert ours == theirs == {"a": (3, 15), "b": (3, 12)}
    # a caller's entry is (nc, cc, tt, ct), in that order, as cProfile writes it
    def callers(path, name):
        stats = pstats.Stats(str(path)).stats
        return {k[2]: v[:2] for k, v in stats[next(k for k in stats if k[2] == name)][4].items()
                if k[2] in "ab"}
    assert callers(mine, "b") == callers(out, "b") == {"a": (12, 3)}
    assert callers(mine, "a") == callers(out, "a") == {"b": (12, 3)}


def test_exports_stay_valid_utf8_whatever_was_captured(run_py, cli, root, tmp_path):
    """A captured string with a lone surrogate ("bad \\udcff") keeps csv,
    jsonl and chrome valid UTF-8 (and JSON): the bad part reads U+FFFD."""
    run_py("""
        import callscope
        @callscope.monitor(args=True, result=True)
        def f(s):
            return s
        f("bad \\udcff end")
        f("fine é €")
    """)
    for fmt in ("csv", "jsonl", "chrome"):
        out = tmp_path / f"e.{fmt}"
        cli("export", "-F", fmt, "-o", out, check=0)
        text = out.read_bytes().decode("utf-8")  # strict: raises if invalid
        assert "fine é €" in text
        assert "\\ufffd" in text or "\ufffd" in text
        if fmt == "jsonl":
            rows = [json.loads(line) for line in text.splitlines()]
            assert any("\ufffd" in (r.get("args") or "") for r in rows)
        elif fmt == "chrome":
            json.loads(text)
