"""Real threads, real processes: exact counts, kill -9 recovery, fork,
multiprocessing."""
import os
import signal
import subprocess
import sys
import time

import callscope


def test_threads_exact_counts(run_py, root):
    run_py("""
        import threading, callscope

        @callscope.monitor
        def leaf(i):
            return i

        @callscope.monitor
        def work(n):
            for i in range(n):
                leaf(i)

        def body():
            for _ in range(50):
                work(999)          # 50 * (1 + 999) = 50,000 calls per thread

        ts = [threading.Thread(target=body, name=f"w{i}") for i in range(8)]
        for t in ts: t.start()
        for t in ts: t.join()
    """)
    run = callscope.load(root=root)
    rows = run.sql("SELECT t.name, count(*) FROM calls c JOIN threads t ON t.id = c.thread"
                   " GROUP BY t.id ORDER BY t.name")
    assert rows == [(f"w{i}", 50_000) for i in range(8)]
    assert run.sql("SELECT count(*), count(DISTINCT id) FROM calls") == [(400_000, 400_000)]
    # every leaf's parent is a work call of the same thread
    bad = run.sql("""SELECT count(*) FROM calls c JOIN functions f ON f.id = c.function
                     LEFT JOIN calls p ON p.id = c.parent
                     LEFT JOIN functions pf ON pf.id = p.function
                     WHERE f.qualname = 'leaf' AND
                           (pf.qualname IS NOT 'work' OR p.thread != c.thread)""")
    assert bad == [(0,)]
    assert run.sql("SELECT count(*) FROM calls WHERE parent IS NULL") == [(400,)]
    assert run.info()["state"] == "complete"


def test_kill_9_recovers_every_returned_call(root, tmp_path):
    side = tmp_path / "count.txt"
    script = tmp_path / "victim.py"
    script.write_text(f"""
import os, callscope

@callscope.monitor
def step(i):
    if i == 300:
        os.kill(os.getpid(), 9)      # dies inside the call
    return i

n = 0
for i in range(10**6):
    step(i)
    n += 1
    with open({str(side)!r}, "w") as f:
        f.write(str(n))
""")
    env = dict(os.environ, CALLSCOPE_DIR=str(root), CALLSCOPE_RUN_DIR="")
    p = subprocess.run([sys.executable, str(script)], env=env, timeout=120)
    assert p.returncode == -signal.SIGKILL
    returned = int(side.read_text())
    assert returned == 300
    run = callscope.load(root=root)  # recovers the log of the dead process
    calls = run.calls("*step")
    ok = [c for c in calls if c.status == "ok"]
    unfinished = [c for c in calls if c.status == "unfinished"]
    assert len(ok) == returned
    assert len(unfinished) == 1 and unfinished[0].end is None
    assert run.info()["state"] == "recovered"
    assert not [f for f in os.listdir(run.path) if f.endswith(".cslog")]


def test_kill_9_from_outside_mid_loop(root, tmp_path):
    side = tmp_path / "count.txt"
    script = tmp_path / "loop.py"
    # the count is replaced atomically, so the kill never leaves it half written
    script.write_text(f"""
import callscope, os, time

@callscope.monitor
def step(i):
    time.sleep(0.0005)
    return i

n = 0
while True:
    step(n)
    n += 1
    with open({str(side)!r} + ".tmp", "w") as f:
        f.write(str(n))
    os.replace({str(side)!r} + ".tmp", {str(side)!r})
""")
    env = dict(os.environ, CALLSCOPE_DIR=str(root), CALLSCOPE_RUN_DIR="")
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        if side.exists() and side.read_text() and int(side.read_text() or 0) > 200:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    returned = int(side.read_text())
    run = callscope.load(root=root)
    ok = run.calls("*step", status="ok")
    unfinished = run.calls("*step", status="unfinished")
    # the side file is written after the call returns: at most one more
    # call returned than it counts
    assert returned <= len(ok) <= returned + 1
    assert len(unfinished) <= 1
    assert len(ok) + len(unfinished) >= returned


def test_fork_child_calls_in_same_run(run_py, root):
    p = run_py("""
        import os, callscope

        @callscope.monitor
        def f(tag):
            return tag

        for _ in range(5):
            f("parent-before")
        pid = os.fork()
        if pid == 0:
            for _ in range(7):
                f("child")
            os._exit(0)          # no atexit: the parent's exit recovers it
        os.waitpid(pid, 0)
        for _ in range(3):
            f("parent-after")
        print(os.getpid(), pid)
    """)
    parent, child = map(int, p.stdout.split())
    run = callscope.load(root=root)
    per_pid = dict(run.sql("SELECT p.pid, count(*) FROM calls c JOIN threads t"
                           " ON t.id = c.thread JOIN processes p ON p.id = t.process"
                           " GROUP BY p.pid"))
    assert per_pid == {parent: 8, child: 7}
    kids = [c for c in run.calls("*f") if c.pid == child]
    assert all(c.ppid == parent for c in kids)
    assert run.sql("SELECT count(*) FROM processes") == [(2,)]


def test_fork_inside_a_monitored_call(run_py, root):
    p = run_py("""
        import os, callscope

        @callscope.monitor
        def spawn():
            pid = os.fork()
            if pid == 0:
                leaf()
                return 0
            os.waitpid(pid, 0)
            return pid

        @callscope.monitor
        def leaf():
            return 1

        r = spawn()
        if r == 0:
            os._exit(0)
        print(os.getpid(), r)
    """)
    parent, child = map(int, p.stdout.split())
    run = callscope.load(root=root)
    rows = run.sql("SELECT p.pid, f.qualname, c.status FROM calls c JOIN threads t"
                   " ON t.id = c.thread JOIN processes p ON p.id = t.process JOIN functions f"
                   " ON f.id = c.function ORDER BY p.pid = ? DESC, f.qualname", (parent,))
    # the parent's spawn is recorded once; the child records only its own leaf
    assert rows == [(parent, "spawn", "ok"), (child, "leaf", "ok")]


def test_multiprocessing_pool_sends_monitored_function(run_py, root, tmp_path):
    (tmp_path / "work_mod.py").write_text(
        "import callscope\n\n@callscope.monitor\ndef square(x):\n    return x * x\n")
    p = run_py("""
        import multiprocessing as mp, sys
        sys.path.insert(0, ".")
        import work_mod
        if __name__ == "__main__":
            with mp.get_context("fork").Pool(2) as pool:
                print(sum(pool.map(work_mod.square, range(20))))
    """)
    assert p.stdout.strip() == str(sum(x * x for x in range(20)))
    run = callscope.load(root=root)
    assert run.sql("SELECT count(*) FROM calls") == [(20,)]


def test_unfinished_call_in_daemon_thread_at_exit(run_py, root):
    run_py("""
        import threading, time, callscope

        @callscope.monitor
        def forever():
            while True:
                time.sleep(0.01)

        @callscope.monitor
        def quick():
            return 1

        threading.Thread(target=forever, daemon=True).start()
        quick()
        time.sleep(0.05)
    """)
    run = callscope.load(root=root)
    assert [c.status for c in run.calls("*forever")] == ["unfinished"]
    assert [c.status for c in run.calls("*quick")] == ["ok"]


def test_multiprocessing_workers_close_their_logs(run_py, root, tmp_path):
    (tmp_path / "work_mod2.py").write_text(
        "import callscope\n\n@callscope.monitor\ndef cube(x):\n    return x ** 3\n")
    run_py("""
        import multiprocessing as mp, sys
        sys.path.insert(0, ".")
        import work_mod2
        if __name__ == "__main__":
            ps = [mp.get_context("fork").Process(target=work_mod2.cube, args=(i,))
                  for i in range(3)]
            for p in ps: p.start()
            for p in ps: p.join()
    """)
    run = callscope.load(root=root)
    assert run.sql("SELECT count(*) FROM calls") == [(3,)]
    # the three workers (the parent recorded no call: it is not a process
    # of the run, but it stored how its children ended)
    procs = run.processes()
    assert len(procs) == 3 and all(p.state == "complete" for p in procs)
    workers = [p for p in procs if p.calls == 1]
    assert len(workers) == 3
    assert all(p.exit_code == 0 and p.signal is None for p in workers)
    assert all(p.name.startswith("ForkProcess-") for p in workers)
    assert run.info()["state"] == "complete"


def test_generator_raising_in_another_thread(root, finish):
    import threading

    import pytest

    @callscope.monitor
    def gen():
        yield 1
        raise OSError("late")

    g = gen()
    next(g)
    errors = []

    def advance():
        try:
            next(g)
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=advance)
    t.start()
    t.join()
    assert len(errors) == 1
    run = finish()
    (c,) = run.calls("*gen")
    assert c.status == "raised" and c.error_type == "OSError"
    ((_, _, typ, msg, tb),) = run.errors()
    assert typ == "OSError" and msg == "late" and "raise OSError" in tb


def test_processes_ending_together_leave_a_complete_run(tmp_path):
    """Twelve processes end at the same moment. None waits for another to
    store its log: one merges while the others hand theirs over, and the
    last one out leaves run.db complete, with no log left and no read
    needed to finish the job."""
    import sqlite3
    rundir = tmp_path / "shared"
    rundir.mkdir()
    prog = tmp_path / "p.py"
    prog.write_text(
        "import callscope, sys, time\n"
        "@callscope.monitor\n"
        "def work(i):\n    return i\n"
        "for i in range(20000):\n    work(i)\n"
        "time.sleep(max(0.0, float(sys.argv[1]) - time.time()))\n")
    env = dict(os.environ, CALLSCOPE_RUN_DIR=str(rundir))
    at = time.time() + 1.5  # a common moment to end at, once all have started
    ps = [subprocess.Popen([sys.executable, str(prog), str(at)], env=env,
                           stderr=subprocess.PIPE) for _ in range(12)]
    for p in ps:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0 and b"warning" not in err, err
    assert sorted(f for f in os.listdir(rundir) if f.endswith(".cslog")) == []
    db = sqlite3.connect(rundir / "run.db")
    try:
        assert db.execute("SELECT count(*) FROM calls").fetchone() == (12 * 20000,)
        assert db.execute("SELECT count(*), count(DISTINCT pid) FROM processes"
                          " WHERE state = 'complete'").fetchone() == (12, 12)
        assert db.execute("SELECT value FROM meta WHERE key = 'python'").fetchone()
    finally:
        db.close()
