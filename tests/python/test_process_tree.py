"""Whole process trees in one run: multiprocessing with every start method,
concurrent.futures, subprocess, and killed workers."""
import os

import pytest

import callscope

WORK = """
import os, time, callscope

@callscope.monitor
def task(x):
    time.sleep(0.0005)   # long enough for every worker to get tasks
    return x * 2

@callscope.monitor
def die_in(x):
    if x == 3:
        os.kill(os.getpid(), 9)
    return x
"""


@pytest.fixture
def work(tmp_path):
    (tmp_path / "work.py").write_text(WORK)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pool_every_start_method(run_py, root, work, method):
    p = run_py(f"""
        import multiprocessing as mp, sys, callscope
        sys.path.insert(0, ".")
        import work

        @callscope.monitor
        def main():
            with mp.get_context("{method}").Pool(4) as pool:
                return sum(pool.map(work.task, range(1000), chunksize=5))

        if __name__ == "__main__":
            print(main())
    """)
    assert p.stdout.strip() == str(2 * sum(range(1000)))
    run = callscope.load(root=root)
    per_pid = dict(run.sql("SELECT p.pid, count(*) FROM calls c JOIN threads t ON t.id = c.thread"
                           " JOIN processes p ON p.id = t.process JOIN functions f"
                           " ON f.id = c.function WHERE f.qualname = 'task' GROUP BY p.pid"))
    assert sum(per_pid.values()) == 1000
    assert len(per_pid) >= 2  # spread over the workers
    procs = run.processes()
    parent = [p for p in procs if p.name == "MainProcess"]
    assert len(parent) == 1
    assert [c.status for c in run.calls("*main")] == ["ok"]
    workers = [p for p in procs if p.pid in per_pid]
    assert all(p.ppid == parent[0].pid or method == "forkserver" for p in workers)


def test_process_pool_executor(run_py, root, work):
    run_py("""
        import concurrent.futures as cf, sys
        sys.path.insert(0, ".")
        import work
        if __name__ == "__main__":
            with cf.ProcessPoolExecutor(3) as ex:
                print(sum(ex.map(work.task, range(300))))
    """)
    run = callscope.load(root=root)
    assert len(run.calls("work.task")) == 300
    # executor workers leave normally: their logs are closed, not recovered
    workers = [p for p in run.processes() if p.calls]
    assert workers and all(p.state == "complete" for p in workers)
    assert run.info()["state"] == "complete"


def test_subprocess_python_child_with_parent_link(run_py, root, work, tmp_path):
    (tmp_path / "child.py").write_text(
        "import sys; sys.path.insert(0, '.'); import work\n"
        "for i in range(7): work.task(i)\n"
        "sys.exit(5)\n")
    p = run_py("""
        import os, subprocess, sys, callscope

        @callscope.monitor
        def parent():
            # an explicit env without the run still joins it
            env = {"PATH": os.environ["PATH"]}
            return subprocess.run([sys.executable, "child.py"], env=env).returncode

        print(parent(), os.getpid())
    """)
    code, parent_pid = map(int, p.stdout.split())
    assert code == 5
    run = callscope.load(root=root)
    procs = {p.pid: p for p in run.processes()}
    assert len(procs) == 2
    (child,) = [p for p in procs.values() if p.pid != parent_pid]
    assert child.ppid == parent_pid and child.calls == 7 and child.exit_code == 5
    assert len(run.calls("work.task")) == 7


def test_killed_worker_keeps_its_finished_calls(run_py, root, work):
    run_py("""
        import multiprocessing as mp, sys
        sys.path.insert(0, ".")
        import work
        if __name__ == "__main__":
            ps = [mp.get_context("spawn").Process(target=work.die_in, args=(i,))
                  for i in range(5)]
            for p in ps: p.start()
            for p in ps: p.join()
            print([p.exitcode for p in ps])
    """)
    run = callscope.load(root=root)
    procs = [p for p in run.processes() if p.name.startswith("SpawnProcess")]
    assert len(procs) == 5
    killed = [p for p in procs if p.state == "killed"]
    assert len(killed) == 1 and killed[0].signal == 9 and killed[0].exit_code is None
    assert all(p.exit_code == 0 for p in procs if p is not killed[0])
    statuses = sorted(c.status for c in run.calls("work.die_in"))
    assert statuses == ["ok"] * 4 + ["unfinished"]
    assert run.info()["state"] == "recovered"


def test_set_rank_by_hand(run_py, root):
    run_py("""
        import callscope
        callscope.set_rank(7)

        @callscope.monitor
        def f():
            return 1

        f()
        try:
            callscope.set_rank(8)
        except RuntimeError as e:
            print("late:", e)
    """)
    run = callscope.load(root=root)
    (p,) = run.processes()
    assert p.rank == 7


@pytest.mark.parametrize("env, rank, size", [
    ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "8"}, 3, 8),  # a launcher's
    ({"CALLSCOPE_RANK": "5"}, 5, None),                                   # set by hand
])
def test_rank_and_size_from_environment(run_py, root, env, rank, size):
    run_py("""
        import callscope

        @callscope.monitor
        def f():
            return 1

        f()
    """, env=env)
    (p,) = callscope.load(root=root).processes()
    assert (p.rank, p.size) == (rank, size)


def test_settled_run_left_empty_disappears(run_py, root):
    # a subprocess settles the run before anything is recorded; if the
    # program then records nothing, no empty run is left behind
    run_py("""
        import subprocess, callscope

        @callscope.monitor
        def never_called():
            pass

        subprocess.run(["true"])
    """)
    assert not root.exists() or [d for d in os.listdir(root) if not d.startswith(".")] == []


def test_latest_moves_when_the_run_records(run_py, root):
    run_py("""
        import subprocess, callscope

        @callscope.monitor
        def f():
            return 1

        subprocess.run(["true"])
        f()
    """)
    run = callscope.load(root=root)
    assert len(run.calls("*f")) == 1


def test_forkserver_workers_exit_codes(run_py, root, work):
    run_py("""
        import multiprocessing as mp, sys
        sys.path.insert(0, ".")
        import work
        if __name__ == "__main__":
            ps = [mp.get_context("forkserver").Process(target=work.task, args=(i,))
                  for i in range(3)]
            for p in ps: p.start()
            for p in ps: p.join()
    """)
    run = callscope.load(root=root)
    workers = [p for p in run.processes() if p.calls]
    assert len(workers) == 3
    # their OS parent is the fork server; the exit codes come from join()
    assert all(p.exit_code == 0 for p in workers)

