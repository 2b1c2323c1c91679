"""Profile everything, whole process: `callscope run --all` beside
`python -m cProfile` on real programs, exit included -- what a user waits
for. Both count the same calls (Python functions, C functions, generator
resumptions) and keep callers.

    python bench/bench_call_model.py [--repeat N] [--callgrind]

Programs: pyflakes over the standard library's email package, pygments
highlighting typing.py, and a pytest run of 300 small tests. Needs
pyflakes, pygments and pytest (make bench installs them).

Reported per program: the wall time of each mode (best of N), the overhead
over the plain run, and callscope's overhead as a share of cProfile's (the
target: at most 0.6 on 3.12+, below 1 on 3.10-3.11). With --callgrind,
instructions per profiled call, counted by valgrind on pygments (a number
a noisy machine cannot blur).
"""
import argparse
import os
import pstats
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time

STDLIB = sysconfig.get_paths()["stdlib"]


def programs(tmp):
    tests = os.path.join(tmp, "test_gen.py")
    with open(tests, "w") as f:
        f.write("import json, re\n")
        for i in range(300):
            f.write(f"def test_{i}():\n    assert json.loads(json.dumps({{'k': {i}}}))['k'] == {i}"
                    f" and re.match(r'\\d+', '{i}')\n")
    return {
        "pyflakes email": ["-m", "pyflakes", os.path.join(STDLIB, "email")],
        "pygments typing.py": ["-m", "pygments", "-l", "python", "-f", "html", "-o",
                               os.devnull, os.path.join(STDLIB, "typing.py")],
        "pytest 300 tests": ["-m", "pytest", "-q", "-p", "no:cacheprovider", tests],
    }


def timed(cmd, env, cwd):
    t = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def calls_in(pstats_path):
    return sum(v[1] for v in pstats.Stats(pstats_path).stats.values())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--callgrind", action="store_true")
    args = ap.parse_args()
    py = sys.executable
    cli = os.path.join(os.path.dirname(py), "callscope")
    tmp = tempfile.mkdtemp()
    env = dict(os.environ, CALLSCOPE_DIR=os.path.join(tmp, "runs"), CALLSCOPE_RUN_DIR="")
    env.pop("CALLSCOPE_TRACE", None)
    env.pop("CALLSCOPE_PROFILE_ALL", None)
    prof = os.path.join(tmp, "cp.pstats")
    modes = {
        "plain": lambda a: [py, *a],
        "cProfile": lambda a: [py, "-m", "cProfile", "-o", prof, *a],
        "callscope --all": lambda a: [cli, "run", "-q", "--all", *a],
        "callscope --all --no-c-calls": lambda a: [cli, "run", "-q", "--all", "--no-c-calls",
                                                   *a],
    }
    print(f"Python {sys.version.split()[0]}, best of {args.repeat}, whole process")
    for name, a in programs(tmp).items():
        best = {}
        for _ in range(args.repeat):
            for m, make in modes.items():
                shutil.rmtree(env["CALLSCOPE_DIR"], ignore_errors=True)
                t = timed(make(a), env, tmp)
                best[m] = min(best.get(m, t), t)
        n = calls_in(prof)
        base = best["plain"]
        cp = best["cProfile"] - base
        print(f"\n{name}: {n:,} calls (cProfile's count)")
        for m, t in best.items():
            over = t - base
            share = f"{over / cp:5.2f}x cProfile's overhead" if m != "plain" and cp > 0 else ""
            per = f"{over / n * 1e9:6.0f} ns/call" if m != "plain" else ""
            print(f"  {m:30s} {t:7.3f} s  {per:>14s}  {share}")
    if args.callgrind and shutil.which("valgrind"):
        callgrind(py, cli, env, tmp, programs(tmp)["pygments typing.py"])
    shutil.rmtree(tmp, ignore_errors=True)


def instructions(cmd, env, cwd, out):
    # one file per process (%p): callscope run is two processes
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p",
                    "--trace-children=yes", *cmd], env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    total = 0
    for f in os.listdir(os.path.dirname(out)):
        if f.startswith(os.path.basename(out)):
            with open(os.path.join(os.path.dirname(out), f)) as fh:
                for line in fh:
                    if line.startswith("summary:") or line.startswith("totals:"):
                        total += int(line.split()[1])
                        break
            os.unlink(os.path.join(os.path.dirname(out), f))
    return total


def callgrind(py, cli, env, tmp, a):
    prof = os.path.join(tmp, "cg.pstats")
    plain = instructions([py, *a], env, tmp, os.path.join(tmp, "cg.plain"))
    cp = instructions([py, "-m", "cProfile", "-o", prof, *a], env, tmp, os.path.join(tmp, "cg.cp"))
    cs = instructions([cli, "run", "-q", "--all", *a], env, tmp, os.path.join(tmp, "cg.cs"))
    n = calls_in(prof)
    print(f"\ncallgrind, pygments typing.py, {n:,} calls: instructions per call over plain:"
          f" cProfile {(cp - plain) / n:.0f}, callscope --all {(cs - plain) / n:.0f}"
          f" ({(cs - plain) / max(cp - plain, 1):.2f}x)")


if __name__ == "__main__":
    main()
