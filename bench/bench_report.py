"""How long ``callscope report`` and ``callscope export`` take, and how big
their files are, for runs of 10^4, 10^6 and 10^7 calls; beside viztracer's
JSON dump of the same number of calls.

    python bench/bench_report.py [--sizes 10000,1000000,10000000] [--no-viztracer]

Each run is a program that makes N calls of three nested monitored
functions in two threads. viztracer traces the same program (without
callscope) with its default ring buffer raised to hold every call, and
its save() is timed.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

PROGRAM = textwrap.dedent("""
    import sys, threading
    import callscope

    n = int(sys.argv[1])

    @callscope.monitor
    def leaf(i):
        return i + 1

    @callscope.monitor
    def middle(i):
        return leaf(i) + leaf(i)

    @callscope.monitor
    def top(k):
        s = 0
        for i in range(k):
            s += middle(i)
        return s

    per = n // 5          # 1 top + k*(1 middle + 2 leaf): 3k + 1 calls a top
    def worker(m):
        for _ in range(m):
            top(20)
    tops = max(1, n // 61)
    t = threading.Thread(target=worker, args=(tops // 2,))
    t.start()
    worker(tops - tops // 2)
    t.join()
""")

VIZ = textwrap.dedent("""
    import sys, threading, time
    from viztracer import VizTracer

    n = int(sys.argv[1])
    out = sys.argv[2]

    def leaf(i):
        return i + 1

    def middle(i):
        return leaf(i) + leaf(i)

    def top(k):
        s = 0
        for i in range(k):
            s += middle(i)
        return s

    def worker(m):
        for _ in range(m):
            top(20)

    tracer = VizTracer(tracer_entries=max(1000000, 2 * n), verbose=0)
    tracer.start()
    tops = max(1, n // 61)
    t = threading.Thread(target=worker, args=(tops // 2,))
    t.start()
    worker(tops - tops // 2)
    t.join()
    tracer.stop()
    t0 = time.perf_counter()
    tracer.save(out)
    print(time.perf_counter() - t0)
""")

FORMATS = [("report", None), ("chrome", "trace.json"), ("speedscope", "speedscope.json"),
           ("pstats", "pstats"), ("csv", "csv"), ("jsonl", "jsonl"), ("parquet", "parquet")]


def human(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,1000000,10000000")
    ap.add_argument("--no-viztracer", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    cli = os.path.join(os.path.dirname(sys.executable), "callscope")
    have_viz = not args.no_viztracer
    if have_viz:
        try:
            import viztracer  # noqa: F401
        except ImportError:
            print("viztracer is not installed: its column is left out")
            have_viz = False
    tmp = tempfile.mkdtemp(prefix="cs-bench-report-")
    try:
        prog = os.path.join(tmp, "prog.py")
        with open(prog, "w") as f:
            f.write(PROGRAM)
        viz = os.path.join(tmp, "viz.py")
        with open(viz, "w") as f:
            f.write(VIZ)
        rows = []
        for n in sizes:
            env = dict(os.environ, CALLSCOPE_DIR=os.path.join(tmp, f"runs{n}"))
            env.pop("CALLSCOPE_RUN_DIR", None)
            t0 = time.perf_counter()
            subprocess.run([cli, "run", "-q", "--", prog, str(n)], env=env, check=True)
            record = time.perf_counter() - t0
            runs = env["CALLSCOPE_DIR"]
            calls = subprocess.run([cli, "info", "-d", runs], env=env, capture_output=True,
                                   text=True).stdout
            for fmt, ext in FORMATS:
                out = os.path.join(tmp, f"out{n}.{ext or 'html'}")
                cmd = ([cli, "report", "-d", runs, "-o", out] if fmt == "report"
                       else [cli, "export", "-d", runs, "-F", fmt, "-o", out])
                t0 = time.perf_counter()
                p = subprocess.run(cmd, env=env, capture_output=True, text=True)
                dt = time.perf_counter() - t0
                if p.returncode != 0:
                    rows.append((n, fmt, None, None, p.stderr.strip()[:80]))
                    continue
                rows.append((n, fmt, dt, os.path.getsize(out), ""))
                os.unlink(out)
            if have_viz:
                out = os.path.join(tmp, f"viz{n}.json")
                p = subprocess.run([sys.executable, viz, str(n), out], capture_output=True,
                                   text=True)
                if p.returncode == 0:
                    rows.append((n, "viztracer save()", float(p.stdout.strip().splitlines()[-1]),
                                 os.path.getsize(out), ""))
                    os.unlink(out)
                else:
                    rows.append((n, "viztracer save()", None, None, p.stderr.strip()[-80:]))
            print(f"recorded {n:,} calls in {record:.1f} s", file=sys.stderr)
            shutil.rmtree(runs, ignore_errors=True)
        print("| calls | output | seconds | size | note |")
        print("|---:|---|---:|---:|---|")
        for n, fmt, dt, size, note in rows:
            print(f"| {n:,} | {fmt} | {'-' if dt is None else f'{dt:.2f}'} |"
                  f" {'-' if size is None else human(size)} | {note} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
