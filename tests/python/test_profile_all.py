"""Profile everything (callscope run --all): aggregate counts equal
cProfile's for every function, and times are consistent."""
import os
import pstats
import subprocess
import sys


import callscope


PROG = """
import threading

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def gen(n):
    for i in range(n):
        yield i

def fails(k):
    if k % 3 == 0:
        raise ValueError(k)
    return k

class Box:
    def __init__(self, v):
        self.v = v
    def area(self):
        return self.v * self.v

def work():
    fib(12)
    sum(gen(25))
    for k in range(30):
        try:
            fails(k)
        except ValueError:
            pass
    return sum(Box(i).area() for i in range(40))

def main():
    t = threading.Thread(target=work)
    t.start()
    work()
    t.join()

main()
"""


def test_counts_equal_cprofile(cli, tmp_path, root):
    prog = tmp_path / "prog.py"
    prog.write_text(PROG)
    cli("run", "--all", prog, check=0)
    run = callscope.load(root=root)
    ours = {(os.path.basename(f.file), f.line, f.qualname.rsplit(".", 1)[-1]): f.calls
            for f in run.functions() if f.file.endswith("prog.py")}
    out = tmp_path / "prof.out"
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), str(prog)], check=True,
                   cwd=tmp_path, env=dict(os.environ, CALLSCOPE_TRACE="",
                                          CALLSCOPE_PROFILE_ALL=""))
    theirs = {}
    for (file, line, name), v in pstats.Stats(str(out)).stats.items():
        if file.endswith("prog.py"):
            theirs[(os.path.basename(file), line, name)] = v[1]  # all calls, recursive too
    assert ours and theirs
    if sys.version_info < (3, 12):
        # before 3.12 cProfile sees the main thread only: work() ran there
        # and in one more thread, so everything below it counts twice here
        in_work = {"work", "fib", "gen", "<genexpr>", "fails", "__init__", "area"}
        theirs = {k: n * (2 if k[2] in in_work else 1) for k, n in theirs.items()}
    # since 3.12 cProfile sees every thread too (sys.monitoring)
    assert {k: ours.get(k) for k in theirs} == theirs


def test_times_are_consistent(cli, tmp_path, root):
    prog = tmp_path / "prog.py"
    prog.write_text(PROG)
    cli("run", "--all", prog, check=0)
    run = callscope.load(root=root)
    stats = {s["function"]: s for s in run.stats(filter="__main__.*")}
    assert stats["__main__.fib"]["calls"] == 2 * 465
    for s in stats.values():
        assert s["self_ns"] <= s["total_ns"] + 1_000  # self <= total (clock grain)
        # the tree keeps totals per path, not each call: no percentiles
        assert s["min_ns"] is s["p50_ns"] is s["p95_ns"] is None
        assert s["mean_ns"] <= s["max_ns"] and s["prim_calls"] <= s["calls"]
    # the main thread's self times add up to no more than its wall time
    main = stats["__main__.main"]
    module = stats["__main__.<module>"]
    total_self = sum(s["self_ns"] for s in stats.values())
    assert total_self <= module["total_ns"] + main["total_ns"] * 2
    assert run.info()["calls"] > 2 * 465
    # `callscope top` shows them
    out = cli("top", "-f", "__main__.fib", check=0).stdout
    assert "__main__.fib" in out and str(2 * 465) in out


def test_profile_all_in_process(root, finish):
    def f(n):
        return n + 1

    callscope.profile_all()
    for i in range(100):
        f(i)
    callscope.profile_all(False)
    for i in range(10):
        f(i)  # not counted: profiling stopped
    run = finish()
    # (3.10 code objects carry no qualname: the name is module.f there)
    (s,) = [s for s in run.stats() if s["function"].endswith(".f")]
    assert s["calls"] == 100


def test_fork_child_counts_its_own_calls(run_py, root):
    run_py("""
        import os, time, callscope
        def f():
            return 1
        @callscope.monitor
        def decorated():
            return 2
        callscope.profile_all()
        for _ in range(100):
            f()
        decorated()
        pid = os.fork()
        if pid == 0:
            for _ in range(10):
                f()
            callscope._callscope._finish()
            os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(0.2)
    """)
    run = callscope.load(root=root)
    (s,) = run.stats(filter="__main__.f")
    assert s["calls"] == 110  # not the parent's 100 counted again by the child
    (d,) = run.stats(filter="*decorated")
    assert d["calls"] == 1  # recorded by its decorator, not counted twice
    assert run.info()["duration_ns"] >= 200_000_000  # times start with profiling
