"""How fast ``callscope compare`` measures significant digits: R runs of a
program that makes N captured calls, each returning a float64 array of E
elements perturbed by a relative 1e-10, then one comparison of all runs.

    python bench/bench_compare.py [--runs 10] [--calls 100000] [--elements 100]

Prints the time to record the runs, the time of ``callscope compare``
(the digits of 2 values per call: the argument and the result), with and
without storing the results, the size of the runs, and the peak RSS of the
comparison.
"""
import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

PROGRAM = textwrap.dedent("""
    import sys
    import numpy as np
    import callscope

    seed, calls, elements = map(int, sys.argv[1:4])
    rng = np.random.default_rng(seed)
    base = np.linspace(1.0, 2.0, elements)

    @callscope.monitor(args=True, result=True)
    def step(i, x):
        return x * (1.0 + rng.uniform(-1e-10, 1e-10, x.size))

    for i in range(calls):
        step(i, base)
""")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--elements", type=int, default=100)
    args = ap.parse_args()
    bindir = os.path.dirname(sys.executable)
    cli = os.path.join(bindir, "callscope")
    tmp = tempfile.mkdtemp(prefix="cs-bench-compare-")
    try:
        prog = os.path.join(tmp, "prog.py")
        with open(prog, "w") as f:
            f.write(PROGRAM)
        env = dict(os.environ, CALLSCOPE_DIR=os.path.join(tmp, "runs"))
        env.pop("CALLSCOPE_RUN_DIR", None)
        t0 = time.perf_counter()
        for r in range(args.runs):
            subprocess.run([cli, "run", "-q", "--name", "stab", "--", prog, str(r),
                            str(args.calls), str(args.elements)], env=env, check=True)
        record = time.perf_counter() - t0
        runs = os.path.join(tmp, "runs")
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(runs)
                   for f in fs)
        record_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        results = {}
        rss = 0.0
        for label, extra in (("compare, results stored", []),
                             ("compare, --no-store", ["--no-store"])):
            best = None
            for _ in range(2):
                t0 = time.perf_counter()
                p = subprocess.Popen([cli, "compare", "-d", runs, "--runs", "stab*", "--limit",
                                      "5", *extra], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
                out, err = p.communicate()
                dt = time.perf_counter() - t0
                # the compare's own peak RSS, from wait4
                if p.returncode != 0:
                    sys.exit(f"compare failed: {err}")
                best = dt if best is None else min(best, dt)
            results[label] = (best, out)
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        values = args.runs * args.calls * 2 * args.elements
        print(f"{args.runs} runs x {args.calls:,} captured calls, float64 arrays of"
              f" {args.elements} elements (argument and result)")
        print(f"| step | seconds | per call of one run | numbers per second |")
        print(f"|---|---:|---:|---:|")
        print(f"| record the runs | {record:.2f} | {record / args.runs / args.calls * 1e6:.2f} us"
              f" | - |")
        for label, (dt, _) in results.items():
            print(f"| {label} | {dt:.2f} | {dt / args.calls * 1e6:.2f} us | {values / dt:,.0f} |")
        print(f"\nruns on disk: {size / 2**20:.1f} MiB ({size / args.runs / args.calls:.0f} B per"
              f" call); peak RSS of a recording run: {record_rss:.1f} MiB")
        if rss > record_rss:
            print(f"peak RSS of compare: {rss:.1f} MiB")
        else:
            print(f"peak RSS of compare: at most {record_rss:.1f} MiB (below a recording run's)")
        print("\n" + results["compare, --no-store"][1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
