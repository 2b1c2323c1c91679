"""Many Python processes into one run, then the merge: P real Python
processes, started together, each make N calls of a monitored function
into the logs of one shared run directory. Then ``callscope info`` ingests
and merges every log into run.db, and ``callscope top`` reads the merged
run.

    python bench/bench_merge.py [--procs 64] [--calls 100000] [--repeat 3]

Two ways a process can end are measured:

- ``leave``: the process leaves through os._exit (as a killed worker or an
  MPI rank that is torn down does), so its log waits for the merge. This
  gives the figures asked of a merge: the writing time of the processes
  (wall, from the first start to the last exit) against the time of the
  merge that follows.
- ``exit``: a normal exit, where each process stores its own log in run.db
  at exit. The figure is the wall time of the whole job, against the same
  job unmonitored.

Prints best-of-R wall times, the merge's peak RSS, and run.db bytes per
call. bench/bench_merge.c does the same with writers in C (a floor: no
Python).
"""
import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time

PROGRAM = textwrap.dedent("""
    import os, sys
    MONITOR = sys.argv[1] != "plain"
    if MONITOR:
        import callscope
    def work(i):
        return i
    if MONITOR:
        work = callscope.monitor(work)
    for i in range(int(sys.argv[2])):
        work(i)
    if sys.argv[1] == "leave":
        os._exit(0)
""")


def launch(py, prog, mode, procs, calls, env):
    """Wall time of the processes, and the CPU time they used together."""
    t0 = time.perf_counter()
    ps = [subprocess.Popen([py, prog, mode, str(calls)], env=env) for _ in range(procs)]
    cpu = 0.0
    for p in ps:
        _, status, ru = os.wait4(p.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"a {mode} process failed: {status}")
        cpu += ru.ru_utime + ru.ru_stime
    return time.perf_counter() - t0, cpu


def timed(cmd):
    """Wall time, CPU time and peak RSS (KiB) of one command."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, default=64)
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    py = sys.executable
    cli = os.path.join(os.path.dirname(py), "callscope")
    tmp = tempfile.mkdtemp(prefix="cs-bench-merge-")
    total = args.procs * args.calls
    try:
        prog = os.path.join(tmp, "prog.py")
        with open(prog, "w") as f:
            f.write(PROGRAM)
        best = {}

        def keep(key, v):
            best[key] = min(best.get(key, v), v)

        for r in range(args.repeat):
            run = os.path.join(tmp, f"run-{r}")
            os.mkdir(run)
            env = dict(os.environ, CALLSCOPE_RUN_DIR=run)
            keep("plain", launch(py, prog, "plain", args.procs, args.calls, env)[0])
            wall, cpu = launch(py, prog, "leave", args.procs, args.calls, env)
            keep("write", wall)
            keep("write_cpu", cpu)
            merge, cpu, rss = timed([cli, "info", run])
            keep("merge", merge)
            keep("merge_cpu", cpu)
            best["rss"] = rss
            keep("top", timed([cli, "top", run])[0])
            size = os.path.getsize(os.path.join(run, "run.db"))
            shutil.rmtree(run)
            os.mkdir(run)
            keep("exit", launch(py, prog, "exit", args.procs, args.calls, env)[0])
            # the last process out left the run complete: no log, every call
            left = [f for f in os.listdir(run) if f.endswith(".cslog")]
            with sqlite3.connect(os.path.join(run, "run.db")) as db:
                n = db.execute("SELECT count(*) FROM calls").fetchone()[0]
            if left or n != total:
                raise SystemExit(f"incomplete run: {len(left)} logs left, {n} calls")
            shutil.rmtree(run)
        print(f"{args.procs} Python processes x {args.calls} monitored calls = "
              f"{total / 1e6:.1f}M calls (Python {sys.version.split()[0]}, best of "
              f"{args.repeat})")
        print(f"  the processes, unmonitored (wall)        {best['plain']:.2f} s")
        print(f"  the processes, writing their logs (wall)  {best['write']:.2f} s"
              f"  (CPU {best['write_cpu']:.2f} s)")
        print(f"  ingest and merge of {args.procs} logs          {best['merge']:.2f} s  "
              f"({total / best['merge'] / 1e6:.2f} M calls/s; "
              f"{best['merge'] / best['write']:.2f}x the writing time; CPU "
              f"{best['merge_cpu']:.2f} s, {best['merge_cpu'] / best['write_cpu']:.2f}x)")
        print(f"  peak RSS of the merge                     {best['rss'] / 1024:.0f} MiB")
        print(f"  run.db                                    {size / 2**20:.0f} MiB, "
              f"{size / total:.0f} bytes per call")
        print(f"  callscope top on the merged run           {best['top']:.2f} s")
        print(f"  whole job, each process storing its own log at exit "
              f"{best['exit']:.2f} s ({best['exit'] / best['plain']:.2f}x unmonitored)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
