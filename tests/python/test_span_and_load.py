"""Spans, and reading runs back with callscope.load()."""
import sys
import threading
import time

import pytest

import callscope


def test_span_context_manager_and_manual(root, finish):
    with callscope.span("assemble") as s:
        assert s.state == "running"
        time.sleep(0.01)
    assert s.state == "stopped"
    m = callscope.span("step")
    m.start()
    time.sleep(0.01)
    m.pause()
    time.sleep(0.05)  # not counted
    m.resume()
    time.sleep(0.01)
    m.stop()
    run = finish()
    (a,) = run.calls("assemble")
    assert a.status == "ok" and a.wall >= 10_000_000
    (st,) = run.calls("step")
    assert 20_000_000 <= st.wall < 50_000_000
    assert st.end - st.start >= 70_000_000
    kinds = {f.name: f.kind for f in run.functions()}
    assert kinds == {"assemble": "span", "step": "span"}


def test_span_default_name_is_enclosing_function(root, finish):
    def compute_things():
        with callscope.span():
            pass

    compute_things()
    run = finish()
    (f,) = run.functions()
    if sys.version_info >= (3, 11):  # code objects know their qualname
        assert f.name.endswith(
            "test_span_default_name_is_enclosing_function.<locals>.compute_things")
    else:
        assert f.name.endswith(".compute_things")
    assert f.kind == "span"


def test_span_records_exception_and_reraises(root, finish):
    with pytest.raises(KeyError):
        with callscope.span("risky"):
            raise KeyError("k")
    (c,) = finish().calls("risky")
    assert c.status == "raised" and c.error_type == "KeyError"


def test_span_wrong_state_errors(root):
    s = callscope.span("x")
    with pytest.raises(RuntimeError, match="cannot stop a span that is idle"):
        s.stop()
    s.start()
    with pytest.raises(RuntimeError, match="already|cannot start"):
        s.start()
    with pytest.raises(RuntimeError, match="cannot resume a span that is running"):
        s.resume()
    s.stop()
    with pytest.raises(ValueError):
        callscope.span("")
    with pytest.raises(TypeError):
        callscope.span(5)


def test_span_restart_and_decorator(root, finish):
    s = callscope.span("loop")
    for _ in range(3):
        s.start()
        s.stop()

    @callscope.span("decorated")
    def f(x):
        return x * 2

    assert f(4) == 8
    run = finish()
    assert len(run.calls("loop")) == 3
    assert len(run.calls("decorated")) == 1


def test_span_dropped_while_running_ends(root, finish):
    def body():
        s = callscope.span("dropped")
        s.start()

    body()
    (c,) = finish().calls("dropped")
    assert c.status == "ok"


def test_span_stopped_in_another_thread(root, finish):
    s = callscope.span("handoff")
    s.start()
    t = threading.Thread(target=s.stop)
    t.start()
    t.join()
    (c,) = finish().calls("handoff")
    assert c.status == "ok" and c.wall > 0


def test_span_nests_under_function(root, finish):
    @callscope.monitor
    def outer():
        with callscope.span("inner-region"):
            time.sleep(0.002)

    outer()
    run = finish()
    (o,) = run.calls("*outer")
    (i,) = run.calls("inner-region")
    assert i.parent == o.id
    assert o.self < o.wall


def test_load_stats_and_repr(root, finish):
    @callscope.monitor
    def a(x):
        return b(x) + 1

    @callscope.monitor
    def b(x):
        time.sleep(0.001)
        return x

    for i in range(20):
        a(i)
    run = finish()
    stats = {s["function"].rsplit(".", 1)[-1]: s for s in run.stats()}
    assert stats["a"]["calls"] == 20 and stats["b"]["calls"] == 20
    assert stats["a"]["total_ns"] >= stats["b"]["total_ns"]
    assert stats["a"]["self_ns"] < stats["b"]["self_ns"]
    for s in stats.values():
        assert s["min_ns"] <= s["p50_ns"] <= s["p95_ns"] <= s["max_ns"]
    assert len(run.stats(sort="calls", limit=1)) == 1
    assert [s["function"] for s in run.stats(filter="*.b")][0].endswith(".b")
    with pytest.raises(ValueError, match="unknown sort key"):
        run.stats(sort="bogus")
    text = repr(run)
    assert "2 functions, 40 calls, 0 errors, complete" in text
    assert "20 calls" in text
    info = run.info()
    assert info["processes"] == 1 and info["threads"] == 1 and info["calls"] == 40
    # load by name, by directory, by run.db path
    import os

    name = os.path.basename(run.path)
    assert callscope.load(name, root=root).path == run.path
    assert callscope.load(run.path).path == run.path
    assert callscope.load(run.db_path).path == run.path
    with pytest.raises(FileNotFoundError, match="run not found"):
        callscope.load("nope", root=root)
    with pytest.raises(ValueError, match="status"):
        run.calls(status="weird")


def test_load_with_no_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no runs in"):
        callscope.load(root=tmp_path / "empty")


def test_stop_returns_what_it_measured(finish):
    """stop() returns the span's time running in seconds, pauses left out,
    the same as the recorded wall time; `elapsed` reads it, also after a
    `with` block."""
    import time as _time

    s = callscope.span("measured")
    s.start()
    _time.sleep(0.05)
    s.pause()
    _time.sleep(0.1)  # not counted
    s.resume()
    _time.sleep(0.05)
    took = s.stop()
    assert isinstance(took, float) and 0.09 <= took < 0.15
    assert s.elapsed == took
    with callscope.span("block") as b:
        _time.sleep(0.02)
    assert 0.015 <= b.elapsed < 0.1
    run = finish()
    (c,) = run.calls("measured")
    assert abs(c.wall / 1e9 - took) < 0.002


def test_one_name_resolution(run_py, root):
    """calls(), get() and stats() resolve a name the same way: the full
    name, or a bare or dotted tail when it names one function; an
    ambiguous bare name is an error that lists the candidates."""
    run_py("""
        import callscope
        class A:
            @callscope.monitor(args=True)
            def step(self, x):
                return x
        class B:
            @callscope.monitor
            def step(self):
                return 0
        @callscope.monitor(args=True)
        def solve(n):
            return n
        solve(1); solve(2); A().step(3); B().step()
    """)
    run = callscope.load(root=root)
    assert len(run.calls("solve")) == len(run.calls("__main__.solve")) == 2
    assert run.get("solve", 2) == ([2], {})
    assert len(run.calls("A.step")) == 1
    with pytest.raises(callscope.CallscopeError, match="ambiguous.*A.step.*B.step"):
        run.calls("step")
    assert run.calls("nothing_like_it") == []
    assert len(run.calls("__main__.*.step")) == 2
