"""Real MPI jobs (Open MPI's mpirun) recorded as one run."""
import os
import shutil
import subprocess
import sys

import pytest

import callscope

MPIRUN = shutil.which("mpirun")
if MPIRUN is None and os.environ.get("CALLSCOPE_REQUIRE_MPI"):
    raise RuntimeError("mpirun is required (make test installs Open MPI)")
pytestmark = pytest.mark.skipif(MPIRUN is None, reason="Open MPI is not installed")

PROG = """
import os, sys, time, callscope
{imports}

@callscope.monitor
def work():
    time.sleep(0.02)

rank = {rank}
for _ in range(rank + 1):
    work()
"""


def mpirun(n, args, root, cwd):
    cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-n", str(n)]
    env = dict(os.environ, CALLSCOPE_DIR=str(root), CALLSCOPE_RUN_DIR="")
    for k in list(env):  # a clean launch: not nested in another job
        if k.startswith(("OMPI_", "PMIX_", "PMI_", "SLURM_")):
            del env[k]
    p = subprocess.run(cmd + args, cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, (p.stdout, p.stderr)
    return p


def check_ranks(run):
    (stat,) = run.stats(by="rank")
    per = stat["per_group"]
    assert {r: v["calls"] for r, v in per.items()} == {0: 1, 1: 2, 2: 3, 3: 4}
    assert stat["calls_min"] == 1 and stat["calls_max"] == 4 and stat["calls_mean"] == 2.5
    # time follows the calls: 20 ms each, so max/mean is 4/2.5
    assert stat["imbalance"] == pytest.approx(1.6, rel=0.1)
    assert stat["total_max_ns"] >= 80_000_000
    procs = run.processes()
    assert sorted(p.rank for p in procs) == [0, 1, 2, 3]
    assert all(p.size == 4 and p.state == "complete" for p in procs)


def test_mpirun_python_one_run(root, tmp_path):
    (tmp_path / "prog.py").write_text(
        PROG.format(imports="", rank='int(os.environ["OMPI_COMM_WORLD_RANK"])'))
    mpirun(4, [sys.executable, "prog.py"], root, tmp_path)
    runs = [d for d in os.listdir(root) if not d.startswith(".") and d != "latest"]
    assert len(runs) == 1  # the four ranks agreed on one run
    run = callscope.load(root=root)
    check_ranks(run)
    assert run.info()["state"] == "complete"


def test_mpirun_callscope_run_with_mpi4py(root, tmp_path):
    pytest.importorskip("mpi4py")
    (tmp_path / "prog.py").write_text(
        PROG.format(imports="from mpi4py import MPI", rank="MPI.COMM_WORLD.Get_rank()"))
    cli = os.path.join(os.path.dirname(sys.executable), "callscope")
    mpirun(4, [cli, "run", "-q", "prog.py"], root, tmp_path)
    runs = [d for d in os.listdir(root) if not d.startswith(".") and d != "latest"]
    assert len(runs) == 1
    run = callscope.load(root=root)
    check_ranks(run)
    p = subprocess.run([cli, "top", "--by", "rank", "--dir", str(root)], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    line = [l for l in out.splitlines() if l.startswith("__main__.work")][0].split()
    assert line[1:6] == ["4/4", "10", "1", "2.5", "4"]


def test_two_jobs_never_mix(root, tmp_path):
    (tmp_path / "prog.py").write_text(
        PROG.format(imports="", rank='int(os.environ["OMPI_COMM_WORLD_RANK"])'))
    mpirun(4, [sys.executable, "prog.py"], root, tmp_path)
    mpirun(4, [sys.executable, "prog.py"], root, tmp_path)
    runs = sorted(d for d in os.listdir(root) if not d.startswith(".") and d != "latest")
    assert len(runs) == 2
    for r in runs:
        check_ranks(callscope.load(r, root=root))


def test_killed_rank_and_damaged_log(root, tmp_path):
    (tmp_path / "prog.py").write_text(
        PROG.format(imports="", rank='int(os.environ["OMPI_COMM_WORLD_RANK"])')
        # rank 2 dies last: mpirun would kill ranks still running
        + "\nif rank == 2:\n    time.sleep(1)\n    os.kill(os.getpid(), 9)\n")
    cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-n", "4", sys.executable,
           "prog.py"]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMPI_", "PMIX_", "PMI_", "SLURM_"))}
    env.update(CALLSCOPE_DIR=str(root), CALLSCOPE_RUN_DIR="")
    subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, timeout=300)
    (rundir,) = [root / d for d in os.listdir(root) if not d.startswith(".") and d != "latest"]
    run = callscope.load(rundir)
    procs = {p.rank: p for p in run.processes()}
    assert sorted(procs) == [0, 1, 2, 3]
    assert procs[2].state == "killed" and procs[2].calls == 3  # its finished calls kept
    assert all(procs[r].state == "complete" for r in (0, 1, 3))
    # a rank log that cannot be read is reported by name; the rest stays
    bad = rundir / "othernode-4242-abc.cslog"
    bad.write_bytes(b"garbage" * 100)
    cli = os.path.join(os.path.dirname(sys.executable), "callscope")
    p = subprocess.run([cli, "info", str(rundir)], capture_output=True, text=True)
    assert p.returncode == 0 and bad.name in p.stderr
    with pytest.warns(RuntimeWarning, match=bad.name):
        run = callscope.load(rundir)
    assert len(run.processes()) == 4 and bad.exists()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 code objects have no qualname")
def test_mpirun_callscope_run_with_selection(root, tmp_path):
    # no decorator: the ranks select `step` by name, in one shared run
    (tmp_path / "prog.py").write_text(
        "import os\n"
        "def step(i):\n    return i\n"
        "rank = int(os.environ['OMPI_COMM_WORLD_RANK'])\n"
        "for i in range(10 * (rank + 1)):\n    step(i)\n")
    cli = os.path.join(os.path.dirname(sys.executable), "callscope")
    mpirun(3, [cli, "run", "-q", "-t", "__main__.step", "prog.py"], root, tmp_path)
    run = callscope.load(root=root)
    (stat,) = run.stats(by="rank")
    assert {r: v["calls"] for r, v in stat["per_group"].items()} == {0: 10, 1: 20, 2: 30}
