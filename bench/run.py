"""callscope's overhead benchmark.

    python bench/run.py [--floors BUILD_DIR] [--calls N] [--repeats R]

Runs, side by side in one invocation, a loop of N calls (default 1,000,000)
to ``def f(x): return x`` in each of these variants, each in a fresh
subprocess of the same interpreter:

    plain       the bare loop
    forward     _floors.Forward: a C vectorcall wrapper that only forwards
    timed       _floors.Timed: Forward plus two clock_gettime(CLOCK_MONOTONIC)
                reads stored into a preallocated ring (the floor for any C
                decorator that times calls)
    cs-time     @callscope.monitor
    cs-cpu      @callscope.monitor(cpu=True)
    cs-mem      @callscope.monitor(memory=True)
    cProfile    the whole loop under cProfile.Profile().enable()/disable()
    yappi       the whole loop under yappi (wall clock)
    py-deco     a pure-Python decorator: time.perf_counter() before and after,
                one json.dumps line per call written to a file

Each child times the variant and the plain loop interleaved, best of R
repeats each, with time.perf_counter_ns; the overhead is the variant's best
minus the plain loop's best in the same process. Then it measures
callscope's log bytes and run.db bytes per call, ingest throughput (at exit
and when recovering a SIGKILLed process's log), and peak RSS for a 1M- and a
10M-call recording.

The floors come from the _floors extension (meson -Dbench=true), found in
BUILD_DIR; without --floors they are skipped. Every run directory lives in a
temporary directory. Results are printed and written as JSON (default
BUILD_DIR/results.json).
"""
import argparse
import json
import os
import platform
import resource
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# ---- the measured code --------------------------------------------------


def f(x):
    return x


def loop(g, n):
    for i in range(n):
        g(i)


def make_py_decorator(log):
    """A timing decorator the way one writes it by hand: perf_counter around
    the call, one JSON line per call."""
    import functools

    perf_counter = time.perf_counter
    dumps = json.dumps
    write = log.write

    def decorate(fn):
        name = f"{fn.__module__}.{fn.__qualname__}"

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            t0 = perf_counter()
            status = "ok"
            try:
                return fn(*args, **kwargs)
            except BaseException:
                status = "raised"
                raise
            finally:
                t1 = perf_counter()
                write(dumps({"function": name, "start": t0, "duration": t1 - t0,
                             "status": status}) + "\n")

        return wrapper

    return decorate


def time_ns(fn):
    t0 = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - t0


def minflt_stime():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_minflt, ru.ru_stime


# ---- child: one timing variant ------------------------------------------


def child_time(kind, n, repeats, workdir):
    """Time `kind` and the plain loop, interleaved; print JSON."""
    run_variant = None
    info = {}
    if kind == "plain":
        run_variant = lambda: loop(f, n)  # noqa: E731
    elif kind in ("forward", "timed"):
        import _floors

        g = _floors.Forward(f) if kind == "forward" else _floors.Timed(f, 1 << 16)
        g(0)
        run_variant = lambda: loop(g, n)  # noqa: E731
    elif kind.startswith("cs-"):
        import callscope

        opts = {"cs-time": {}, "cs-cpu": {"cpu": True}, "cs-mem": {"memory": True}}[kind]
        g = callscope.monitor(**opts)(f) if opts else callscope.monitor(f)
        g(0)  # opens the log, writes the FUNC record
        if callscope.run_dir() is None:
            raise SystemExit("callscope did not open a log")
        run_variant = lambda: loop(g, n)  # noqa: E731
    elif kind == "cProfile":
        import cProfile

        def run_variant():
            p = cProfile.Profile()
            p.enable()
            loop(f, n)
            p.disable()
    elif kind == "yappi":
        import yappi

        yappi.set_clock_type("wall")

        def run_variant():
            yappi.clear_stats()
            yappi.start()
            loop(f, n)
            yappi.stop()
    elif kind == "py-deco":
        log = open(os.path.join(workdir, "calls.jsonl"), "w")
        g = make_py_decorator(log)(f)
        g(0)
        run_variant = lambda: loop(g, n)  # noqa: E731
    else:
        raise SystemExit(f"unknown variant {kind}")

    base, var, faults, stime = [], [], [], []
    loop(f, n // 10)  # warm up
    for _ in range(repeats):
        base.append(time_ns(lambda: loop(f, n)))
        m0, s0 = minflt_stime()
        var.append(time_ns(run_variant))
        m1, s1 = minflt_stime()
        faults.append(m1 - m0)
        stime.append(s1 - s0)
    if kind == "py-deco":
        log.flush()
        info["log_bytes_per_call"] = os.path.getsize(log.name) / (n * repeats + 1)
    out = {"kind": kind, "calls": n, "repeats": repeats,
           "base_ns": base, "variant_ns": var,
           "base_best": min(base) / n, "variant_best": min(var) / n,
           "minflt_per_call": min(faults) / n, "sys_ns_per_call": sum(stime) * 1e9 / (n * repeats),
           "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, **info}
    print(json.dumps(out), flush=True)
    # Skip callscope's ingest of R*N calls at exit: not what is measured here
    # (the storage child measures it).
    sys.stdout.flush()
    os._exit(0)


# ---- child: storage, ingest --------------------------------------------


KIND_NAMES = {1: "ENTER", 2: "EXIT", 3: "TIME", 4: "ENTERX", 5: "MARK", 6: "CPU",
              7: "MEM", 8: "VAR", 9: "END"}
SIXTEEN = {3, 4, 5, 7, 8}  # 16-byte records; the rest are 8 bytes


def log_written_bytes(path):
    """Bytes of the log that hold records: for every chunk, its header plus
    its records up to the first unwritten (kind 0) slot. Layout (see
    docs/log-format.md): a 4096-byte file header (chunk size: u32 at offset
    16), chunks with 32-byte headers, records of 8 or 16 bytes whose kind is
    the low 4 bits of the first word; a VAR record's body (length in bits
    20..43 of the first word) follows it, padded to 8 bytes."""
    counts = {}
    total = 0
    with open(path, "rb") as fh:
        head = fh.read(4096)
        if head[:8] != b"CSLOG\x00\x01\n":
            raise SystemExit(f"{path}: not a callscope log")
        (chunk,) = struct.unpack_from("<I", head, 16)
        while True:
            c = fh.read(chunk)
            if len(c) < 32:
                break
            (magic,) = struct.unpack_from("<I", c, 0)
            if magic != 0x4B435343:
                continue  # reserved, not yet handed out
            off = 32
            while off + 8 <= len(c):
                (w0,) = struct.unpack_from("<Q", c, off)
                kind = w0 & 0xF
                if kind == 0:
                    break
                name = KIND_NAMES.get(kind, str(kind))
                counts[name] = counts.get(name, 0) + 1
                off += 16 if kind in SIXTEEN else 8
                if kind == 8:
                    ln = (w0 >> 20) & 0xFFFFFF
                    off += (ln + 7) & ~7
            total += off
    return total, counts


def find_log(rundir):
    logs = [os.path.join(rundir, x) for x in os.listdir(rundir) if x.endswith(".cslog")]
    if len(logs) != 1:
        raise SystemExit(f"expected one log in {rundir}, found {logs}")
    return logs[0]


def count_calls(db):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT count(*) FROM calls").fetchone()[0]
    finally:
        con.close()


def db_bytes(rundir):
    return sum(os.path.getsize(os.path.join(rundir, x)) for x in os.listdir(rundir)
               if x.startswith("run.db"))


def child_storage(n):
    """Record n calls, measure the log, then time the ingest at exit."""
    import callscope
    from callscope import _callscope

    rundir = os.environ["CALLSCOPE_RUN_DIR"]
    g = callscope.monitor(f)
    g(0)
    path = find_log(rundir)
    w0, _ = log_written_bytes(path)
    loop(g, n)
    w1, counts = log_written_bytes(path)
    st = os.stat(path)
    t0 = time.perf_counter_ns()
    _callscope._finish()
    ingest_ns = time.perf_counter_ns() - t0
    stored = count_calls(os.path.join(rundir, "run.db"))
    out = {"calls": n + 1, "log_bytes_per_call": (w1 - w0) / n,
           "log_records": {str(k): v for k, v in sorted(counts.items())},
           "log_file_size": st.st_size, "log_file_allocated": st.st_blocks * 512,
           "log_left_after_ingest": any(x.endswith(".cslog") for x in os.listdir(rundir)),
           "ingest_ns": ingest_ns, "ingest_calls_per_s": (n + 1) / (ingest_ns / 1e9),
           "db_bytes": db_bytes(rundir), "db_bytes_per_call": db_bytes(rundir) / (n + 1),
           "stored_calls": stored}
    print(json.dumps(out), flush=True)


def child_crash(n):
    """Record n calls, then die by SIGKILL, leaving the log to recover."""
    import callscope

    g = callscope.monitor(f)
    loop(g, n)
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def child_rss(n, mode):
    """Peak RSS after recording n calls, and after ingesting them."""
    ru = lambda: resource.getrusage(resource.RUSAGE_SELF)  # noqa: E731
    out = {"calls": n, "mode": mode, "rss_start_kib": ru().ru_maxrss}
    if mode == "plain":
        t0 = time.perf_counter_ns()
        loop(f, n)
        out["loop_ns"] = time.perf_counter_ns() - t0
        out["rss_recorded_kib"] = ru().ru_maxrss
    else:
        import callscope
        from callscope import _callscope

        g = callscope.monitor(f)
        g(0)
        out["rss_start_kib"] = ru().ru_maxrss
        t0 = time.perf_counter_ns()
        loop(g, n)
        out["loop_ns"] = time.perf_counter_ns() - t0
        out["rss_recorded_kib"] = ru().ru_maxrss
        if mode == "ingest":
            t0 = time.perf_counter_ns()
            _callscope._finish()
            out["ingest_ns"] = time.perf_counter_ns() - t0
            out["rss_ingested_kib"] = ru().ru_maxrss
            rundir = os.environ["CALLSCOPE_RUN_DIR"]
            out["db_bytes"] = db_bytes(rundir)
            out["stored_calls"] = count_calls(os.path.join(rundir, "run.db"))
    print(json.dumps(out), flush=True)
    if mode != "ingest":
        os._exit(0)


# ---- parent ---------------------------------------------------------------

VARIANTS = [
    ("plain", "plain loop", None),
    ("forward", "Forward floor (C, forward only)", "floors"),
    ("timed", "Timed floor (C, 2x clock_gettime)", "floors"),
    ("cs-time", "callscope.monitor", None),
    ("cs-cpu", "callscope.monitor(cpu=True)", None),
    ("cs-mem", "callscope.monitor(memory=True)", None),
    ("cProfile", "cProfile (whole loop)", None),
    ("yappi", "yappi (wall clock)", "yappi"),
    ("py-deco", "pure-Python decorator + JSON line", None),
]


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="callscope-bench-")
        self.env = dict(os.environ)
        self.env.pop("CALLSCOPE_RUN_DIR", None)
        self.env["CALLSCOPE_DIR"] = os.path.join(self.tmp, "runs")
        path = []
        if args.floors:
            path.insert(0, os.path.abspath(args.floors))
        if self.env.get("PYTHONPATH"):
            path.append(self.env["PYTHONPATH"])
        self.env["PYTHONPATH"] = os.pathsep.join(path)
        self.n = 0

    def child(self, argv, rundir=True, check=True):
        """Run this script as a child with `argv`; return its parsed JSON."""
        self.n += 1
        env = dict(self.env)
        work = os.path.join(self.tmp, f"c{self.n}")
        os.makedirs(work)
        if rundir:
            env["CALLSCOPE_RUN_DIR"] = os.path.join(work, "run")
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--work", work, *argv],
                           env=env, cwd=work, capture_output=True, text=True)
        if check and p.returncode != 0:
            raise RuntimeError(f"child {argv} failed ({p.returncode}):\n{p.stderr}")
        if p.stderr.strip():
            print(f"  [{' '.join(argv)}] stderr: {p.stderr.strip()}", file=sys.stderr)
        lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
        return (json.loads(lines[-1]) if lines else None), work, p

    def cleanup(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def have_module(name, env):
    return subprocess.run([sys.executable, "-c", f"import {name}"], env=env,
                          capture_output=True).returncode == 0


def callscope_cli():
    for cand in (os.path.join(os.path.dirname(sys.executable), "callscope"),
                 shutil.which("callscope")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def progress(msg):
    if sys.stderr.isatty():
        print(f"  ... {msg}", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--floors", metavar="BUILD_DIR",
                    help="meson build directory that holds the _floors extension")
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rss-calls", type=int, default=10_000_000,
                    help="the long recording for the peak-RSS check (vs --calls)")
    ap.add_argument("--json", metavar="PATH", help="where to write the results "
                    "(default: BUILD_DIR/results.json, or none without --floors)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child == "time":
        return child_time(args.mode, args.calls, args.repeats, args.work)
    if args.child == "storage":
        return child_storage(args.calls)
    if args.child == "crash":
        return child_crash(args.calls)
    if args.child == "rss":
        return child_rss(args.calls, args.mode)

    t_start = time.perf_counter()
    b = Bench(args)
    notes = []
    try:
        return report(b, args, notes, t_start)
    finally:
        b.cleanup()


def report(b, args, notes, t_start):
    n, reps = args.calls, args.repeats
    have = {"floors": False, "yappi": have_module("yappi", b.env)}
    if args.floors:
        have["floors"] = have_module("_floors", b.env)
        if not have["floors"]:
            notes.append(f"_floors not importable from {args.floors}: floors skipped")
    else:
        notes.append("no --floors BUILD_DIR: Forward/Timed floors skipped "
                     "(`make bench` builds them)")
    if not have["yappi"]:
        notes.append("yappi is not installed: skipped (pip install yappi)")

    print(f"callscope overhead benchmark: {n:,} calls of `def f(x): return x`, "
          f"best of {reps}; Python {platform.python_version()} ({sys.executable}), "
          f"{platform.machine()}, {os.cpu_count()} CPUs")
    print()

    # ---- per-call time
    results = {}
    for kind, label, need in VARIANTS:
        if need and not have[need]:
            continue
        progress(label)
        r, _, _ = b.child(["--child", "time", "--mode", kind, "--calls", str(n),
                           "--repeats", str(reps)])
        r["label"] = label
        r["overhead"] = r["variant_best"] - r["base_best"]
        v = sorted(r["variant_ns"])
        r["spread"] = (v[len(v) // 2] - v[0]) / v[0]
        results[kind] = r

    timed_ov = results["timed"]["overhead"] if "timed" in results else None
    w = 36
    print(f"{'variant':<{w}} {'ns/call':>8} {'overhead':>9} {'x Timed':>8} {'spread':>7} "
          f"{'kernel':>7} {'faults/1k':>9}")
    print("-" * (w + 54))
    for kind, label, _ in VARIANTS:
        r = results.get(kind)
        if r is None:
            print(f"{label:<{w}} {'skipped':>8}")
            continue
        ov = r["overhead"]
        ratio = f"{ov / timed_ov:8.2f}" if timed_ov and kind != "plain" else f"{'':8}"
        print(f"{label:<{w}} {r['variant_best']:8.1f} {ov:+9.1f} {ratio} "
              f"{r['spread'] * 100:6.1f}% {r['sys_ns_per_call']:7.1f} "
              f"{r['minflt_per_call'] * 1000:9.2f}")
    print(f"overhead: the variant's best ns/call minus the plain loop's best, timed interleaved\n"
          f"in the same process (for the plain loop itself: the noise); spread: (median - best)"
          f" / best\nof the variant's repeats; kernel: system CPU ns/call (mean of the repeats, "
          f"tick-grained);\nfaults/1k: minor page faults per 1,000 calls (least of the repeats).")

    # ---- ratios
    ratios = {}
    cs = results["cs-time"]["overhead"]
    print()
    print("ratios of overhead:")
    if timed_ov:
        ratios["callscope/timed_floor"] = cs / timed_ov
        ratios["callscope_above_timed_floor_ns"] = cs - timed_ov
        ratios["py_decorator/timed_floor"] = results["py-deco"]["overhead"] / timed_ov
        ok = "met" if ratios["callscope/timed_floor"] <= 1.3 else "NOT met"
        print(f"  {'callscope.monitor / Timed floor':<42} {ratios['callscope/timed_floor']:7.2f}"
              f"   target <= 1.3 {ok} ({cs - timed_ov:+.1f} ns/call above the floor)")
        print(f"  {'pure-Python decorator / Timed floor':<42} "
              f"{ratios['py_decorator/timed_floor']:7.2f}")
    for k, label in (("cProfile", "cProfile"), ("yappi", "yappi"),
                     ("py-deco", "pure-Python decorator")):
        if k in results and cs > 0:
            ratios[f"{k}/callscope"] = results[k]["overhead"] / cs
            print(f"  {label + ' / callscope.monitor':<42} {ratios[f'{k}/callscope']:7.2f}")
    print(f"  (the pure-Python decorator writes "
          f"{results['py-deco']['log_bytes_per_call']:.0f} bytes of JSON per call)")

    # ---- storage and ingest
    print()
    progress("storage and ingest")
    st, _, _ = b.child(["--child", "storage", "--calls", str(n)])
    print(f"callscope storage, {st['calls']:,} calls of monitor(f), time only:")
    print(f"  {'log bytes per call':<30} {st['log_bytes_per_call']:8.2f}   "
          f"(records by kind {st['log_records']}; file {st['log_file_size'] / 2**20:.1f} "
          f"MiB reserved)")
    print(f"  {'run.db bytes per call':<30} {st['db_bytes_per_call']:8.2f}   "
          f"({st['db_bytes'] / 2**20:.1f} MiB; {st['stored_calls']:,} calls stored)")
    print(f"  {'ingest at exit (_finish)':<30} {st['ingest_calls_per_s'] / 1e6:8.2f}   "
          f"M calls/s ({st['ingest_ns'] / 1e9:.2f} s)")
    if st["stored_calls"] != st["calls"]:
        notes.append(f"run.db holds {st['stored_calls']} calls, expected {st['calls']}")
    if st["log_left_after_ingest"]:
        notes.append("the log file was not deleted after a successful ingest")

    recovery = None
    cli = callscope_cli()
    if cli:
        progress("recovery after SIGKILL")
        _, work, p = b.child(["--child", "crash", "--calls", str(n)], check=False)
        root = os.path.join(work, "root")
        os.makedirs(root)
        os.rename(os.path.join(work, "run"), os.path.join(root, "crashed"))
        t0 = time.perf_counter_ns()
        q = subprocess.run([cli, "info", "--dir", root], capture_output=True, text=True,
                           env=b.env)
        dt = time.perf_counter_ns() - t0
        rdb = os.path.join(root, "crashed", "run.db")
        stored = count_calls(rdb) if os.path.exists(rdb) else 0
        recovery = {"child_returncode": p.returncode, "info_returncode": q.returncode,
                    "ns": dt, "calls_per_s": n / (dt / 1e9), "stored_calls": stored,
                    "info_stdout": q.stdout.strip(), "info_stderr": q.stderr.strip()}
        print(f"  {'recovery after SIGKILL':<30} {recovery['calls_per_s'] / 1e6:8.2f}   "
              f"M calls/s (`callscope info`: {dt / 1e9:.2f} s; {stored:,} of {n:,} calls "
              f"recovered)")
        if p.returncode != -signal.SIGKILL:
            notes.append(f"crash child ended with {p.returncode}, not SIGKILL")
        if q.returncode != 0 or stored != n:
            notes.append(f"recovery: callscope info rc={q.returncode}, stored {stored} of {n}"
                         f" calls; stderr: {q.stderr.strip()[:300]}")
    else:
        notes.append("the callscope command was not found next to the interpreter: "
                     "recovery skipped")

    # ---- peak RSS
    print()
    rss = {}
    for calls, mode in ((n, "plain"), (args.rss_calls, "plain"),
                        (n, "ingest"), (args.rss_calls, "ingest")):
        progress(f"peak RSS, {mode}, {calls:,} calls")
        r, _, _ = b.child(["--child", "rss", "--mode", mode, "--calls", str(calls)])
        rss[f"{mode}-{calls}"] = r
    print(f"peak RSS (ru_maxrss, MiB)              {'start':>7} {'recorded':>9} {'ingested':>9}"
          f"   ingest")
    for r in rss.values():
        label = ("plain loop" if r["mode"] == "plain" else "callscope.monitor") + \
            f", {r['calls']:,} calls"
        ing = r.get("rss_ingested_kib")
        thr = (f"{r['calls'] / (r['ingest_ns'] / 1e9) / 1e6:5.2f} M calls/s"
               if "ingest_ns" in r else "")
        print(f"  {label:<36} {r['rss_start_kib'] / 1024:7.1f} "
              f"{r['rss_recorded_kib'] / 1024:9.1f} "
              f"{'-' if ing is None else f'{ing / 1024:.1f}':>9}   {thr}")
        if r.get("stored_calls") is not None and r["stored_calls"] != r["calls"] + 1:
            notes.append(f"RSS run of {r['calls']} calls: run.db holds {r['stored_calls']}")
    small, big = rss[f"ingest-{n}"], rss[f"ingest-{args.rss_calls}"]
    growth = {"recording_mib": (big["rss_recorded_kib"] - small["rss_recorded_kib"]) / 1024,
              "ingest_mib": (big["rss_ingested_kib"] - small["rss_ingested_kib"]) / 1024}
    print(f"  callscope, {n:,} -> {args.rss_calls:,} calls: peak RSS "
          f"{growth['recording_mib']:+.1f} MiB recording, {growth['ingest_mib']:+.1f} MiB "
          f"with ingest")

    elapsed = time.perf_counter() - t_start
    if notes:
        print()
        for x in notes:
            print(f"note: {x}")
    out = {"python": platform.python_version(), "executable": sys.executable,
           "machine": platform.machine(), "cpus": os.cpu_count(), "calls": n,
           "repeats": reps, "variants": results, "ratios": ratios, "storage": st,
           "recovery": recovery, "rss": rss, "rss_growth": growth, "notes": notes,
           "elapsed_s": elapsed}
    path = args.json or (os.path.join(args.floors, "results.json") if args.floors else None)
    print()
    if path:
        with open(path, "w") as fh:
            json.dump(out, fh, indent=1)
        print(f"results written to {path}; ", end="")
    print(f"total {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
