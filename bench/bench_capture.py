"""Argument and result capture: the per-call cost of
``@callscope.monitor(args=True, result=True)`` beside a plain function, the
seed's one-pickle-file-per-call decorator and viztracer with
log_func_args/log_func_retval, side by side in one run.

    python bench/bench_capture.py [--quick] [--python PATH] [--repeat N]
                                  [--cases ints,str,dict,array,array-new] [--json PATH]

Cases (the monitored function returns a small value, so the cost measured is
that of capturing the arguments):

    ints        f(1, 2)                        returns a + b
    str         f(s), s a 100-character str    returns len(s)
    dict        f(d), d a dict of 10 items     returns len(d)
                (str keys, int and float values)
    array       f(x), x a 1 MB float64 numpy array (131072 elements), the
                same array every call          returns len(x)
    array-new   as array, but one element changes before every call (in the
                plain loop too), so no two calls pass the same contents:
                callscope cannot store the value once for all calls

Configurations, each (case, configuration, repetition) in a fresh subprocess
of the interpreter given by --python (default: this one), so that peak RSS
(ru_maxrss) is separable:

    plain           the bare loop of calls
    callscope       @callscope.monitor (time only), for reference
    capture         @callscope.monitor(args=True, result=True); "store" is
                    callscope._callscope._finish() (ingest into run.db)
    pickle-files    the seed's approach: per call, os.makedirs(root/f/n) and
                    pickle.dump({'args': args, 'kwargs': kwargs}) into
                    root/f/n/input_descriptor.pkl (arguments only, no result)
    viztracer       the loop under VizTracer(log_func_args=True,
                    log_func_retval=True); "store" is tracer.save()

Each child times N calls with time.perf_counter_ns (N per case and
configuration, so that a run takes roughly 0.1-1 s); the repetitions of all
children are interleaved and the best is reported. overhead: best ns/call
minus the plain loop's best ns/call for the same case. disk B/call: bytes of
the files left after the run (callscope: the run directory, run.db plus any
logs, after _finish; pickle-files: the files written; viztracer: the saved
trace) divided by the calls recorded; alloc adds up the blocks allocated
(file system blocks, directories included). Every run directory lives in a
temporary directory that is removed as soon as the child has measured it.
The script installs nothing: a configuration whose module is missing, or
whose API this callscope does not have yet, is skipped with a note.
"""
import argparse
import functools
import itertools
import json
import os
import pickle
import platform
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

# ---- what is measured -------------------------------------------------------

CASES = [
    # name, label, calls for the capturing configurations
    ("ints", "f(1, 2)", 200_000),
    ("str", "100-char str", 200_000),
    ("dict", "dict of 10 items", 200_000),
    ("array", "1 MB float64 array", 300),
    ("array-new", "1 MB array, new contents per call", 300),
]
CASE_LABEL = {name: label for name, label, _ in CASES}
ARRAY_CASES = ("array", "array-new")

CONFIGS = [
    ("plain", "plain function"),
    ("callscope", "callscope.monitor (time only)"),
    ("capture", "callscope.monitor(args=True, result=True)"),
    ("pickle-files", "pickle file per call (seed)"),
    ("viztracer", "viztracer, args + retval"),
]
CONFIG_LABEL = dict(CONFIGS)


def calls_for(case, config, base, quick):
    """N for one child: enough calls that the loop takes a measurable time,
    few enough that the files written stay small."""
    if config == "plain":
        n = 2_000_000  # ~50 ns a call, whatever the argument
    elif config == "callscope":
        n = 1_000_000
    elif config == "pickle-files" and case not in ARRAY_CASES:
        # A directory and a file created per call: ~30 us on tmpfs, up to
        # ~1 ms on a slow disk.
        n = base // 40
    else:
        n = base
    return max(n // 10 if quick else n, 10)


def make_case(case):
    """(f, warm, loop): the function, one call of it through a wrapper g,
    and the timed loop of n calls of g."""
    if case == "ints":
        def f(a, b):
            return a + b

        def warm(g):
            g(1, 2)

        def loop(g, n):
            for _ in range(n):
                g(1, 2)

        return f, warm, loop

    if case == "str":
        arg = ("callscope records the arguments of a call " * 3)[:100]
        assert len(arg) == 100
    elif case == "dict":
        arg = {f"key_{i}": (i * 1000 if i % 2 else i * 0.25) for i in range(10)}
    elif case in ARRAY_CASES:
        import numpy as np

        arg = np.random.default_rng(0).random(131072)
        assert arg.nbytes == 1 << 20 and arg.dtype == np.float64
    else:
        raise SystemExit(f"unknown case {case}")

    def f(x):
        return len(x)

    def warm(g):
        g(arg)

    if case == "array-new":
        m = len(arg)

        def loop(g, n, x=arg):
            for i in range(n):
                x[i % m] = i  # a value no earlier call has seen here
                g(x)
    else:
        def loop(g, n, x=arg):
            for _ in range(n):
                g(x)

    return f, warm, loop


def pickle_files(root):
    """The seed's capture: one directory and one pickle file per call,
    numbered per function from 1."""
    def decorate(fn):
        fname = fn.__name__
        counter = itertools.count(1)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            d = f"{root}/{fname}/{next(counter)}"
            os.makedirs(d)
            with open(f"{d}/input_descriptor.pkl", "wb") as fh:
                pickle.dump({"args": args, "kwargs": kwargs}, fh)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def tree_bytes(path):
    """(bytes of the files under path, bytes allocated to its files and
    directories)."""
    size = alloc = 0
    for top, dirs, files in os.walk(path):
        alloc += os.lstat(top).st_blocks * 512
        for name in files:
            st = os.lstat(os.path.join(top, name))
            size += st.st_size
            alloc += st.st_blocks * 512
    return size, alloc


def maxrss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def count_rows(db, table):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    except sqlite3.Error:
        return None
    finally:
        con.close()


# ---- child: one (case, configuration) -----------------------------------------


def child(config, case, n, work):
    f, warm, loop = make_case(case)
    out = {"config": config, "case": case, "calls": n, "store_ns": None,
           "disk_bytes": None, "alloc_bytes": None, "recorded": None}
    out["rss_start_kib"] = maxrss_kib()

    if config == "plain":
        warm(f)
        t0 = time.perf_counter_ns()
        loop(f, n)
        out["loop_ns"] = time.perf_counter_ns() - t0

    elif config in ("callscope", "capture"):
        import callscope
        from callscope import _callscope

        opts = {"args": True, "result": True} if config == "capture" else {}
        g = callscope.monitor(**opts)(f)
        warm(g)  # opens the log and the run; recorded, so counted below
        rundir = callscope.run_dir()
        if rundir is None:
            raise SystemExit("callscope did not open a run")
        t0 = time.perf_counter_ns()
        loop(g, n)
        out["loop_ns"] = time.perf_counter_ns() - t0
        t0 = time.perf_counter_ns()
        _callscope._finish()
        out["store_ns"] = time.perf_counter_ns() - t0
        out["recorded"] = n + 1
        out["disk_bytes"], out["alloc_bytes"] = tree_bytes(rundir)
        db = os.path.join(rundir, "run.db")
        out["db_bytes"] = sum(os.path.getsize(os.path.join(rundir, x))
                              for x in os.listdir(rundir) if x.startswith("run.db"))
        out["logs_left"] = sorted(x for x in os.listdir(rundir) if x.endswith(".cslog"))
        out["stored_calls"] = count_rows(db, "calls")
        if config == "capture":
            out["stored_args"] = count_rows(db, "args")
            out["stored_results"] = count_rows(db, "results")
            out["stored_blobs"] = count_rows(db, "blobs")

    elif config == "pickle-files":
        root = os.path.join(work, "call-monitor")
        os.makedirs(root)
        g = pickle_files(root)(f)
        warm(g)
        t0 = time.perf_counter_ns()
        loop(g, n)
        out["loop_ns"] = time.perf_counter_ns() - t0
        out["recorded"] = n + 1
        out["disk_bytes"], out["alloc_bytes"] = tree_bytes(root)

    elif config == "viztracer":
        from viztracer import VizTracer

        path = os.path.join(work, "trace.json")
        # Room for every entry: the loop, range() and n calls of f.
        tracer = VizTracer(log_func_args=True, log_func_retval=True,
                           tracer_entries=2 * n + 1000, verbose=0, file_info=False,
                           output_file=path)
        warm(f)
        t0 = time.perf_counter_ns()
        tracer.start()
        loop(f, n)
        tracer.stop()
        out["loop_ns"] = time.perf_counter_ns() - t0
        t0 = time.perf_counter_ns()
        tracer.save(path)
        out["store_ns"] = time.perf_counter_ns() - t0
        out["recorded"] = n
        out["disk_bytes"], out["alloc_bytes"] = tree_bytes(work)

    else:
        raise SystemExit(f"unknown configuration {config}")

    out["maxrss_kib"] = maxrss_kib()
    print(json.dumps(out), flush=True)
    # Nothing left to measure: skip the exit handlers (callscope's has run).
    os._exit(0)


# ---- parent -----------------------------------------------------------------

LEGEND = """\
ns/call: the loop's best time / calls; overhead: ns/call minus the plain function's ns/call;
store/call: callscope's _finish() (ingest into run.db) or viztracer's save(), per call,
fixed costs included (creating run.db: a few ms);
x pickle, x viztracer: this overhead as a multiple of that baseline's overhead (store excluded);
disk B/call: bytes of the files left / calls recorded; alloc: file system blocks, directories
included; peak RSS: ru_maxrss of the child, the largest of the repetitions."""

PROBE = r"""
import json, sys, platform
out = {"version": platform.python_version(), "executable": sys.executable}
try:
    import numpy
    out["numpy"] = numpy.__version__
except ImportError:
    out["numpy"] = None
try:
    import viztracer
    out["viztracer"] = viztracer.__version__
except ImportError:
    out["viztracer"] = None
try:
    import callscope
    out["callscope"] = callscope.__file__
    try:
        callscope.monitor(args=True, result=True)(lambda: 0)
        out["capture"] = None
    except Exception as e:
        out["capture"] = f"{type(e).__name__}: {e}"
except ImportError as e:
    out["callscope"] = None
    out["capture"] = f"callscope is not importable: {e}"
print(json.dumps(out))
"""


def child_env(work):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCOPE_")}
    env["CALLSCOPE_DIR"] = os.path.join(work, "runs")
    return env


def fs_type(path):
    """The file system type of path, from /proc/mounts (Linux), or "?"."""
    path, best, kind = os.path.realpath(path), "", "?"
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                parts = line.split()
                mnt = parts[1] if len(parts) > 2 else ""
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) \
                        and len(mnt) > len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


def progress(msg):
    if sys.stderr.isatty():
        print(f"  ... {msg}", file=sys.stderr, flush=True)


def run_child(python, tmp, config, case, n, rep):
    work = os.path.join(tmp, f"{case}-{config}-{rep}")
    os.makedirs(work)
    try:
        p = subprocess.run([python, os.path.abspath(__file__), "--child", config,
                            "--case", case, "--calls", str(n), "--work", work],
                           env=child_env(work), cwd=work, capture_output=True, text=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = "\n    ".join((p.stderr.strip() or p.stdout.strip()).splitlines()[-6:])
        return None, f"{case}/{config} failed (exit {p.returncode}):\n    {tail}"
    return json.loads(lines[-1]), None


def fmt(x, spec, missing="-"):
    return missing if x is None else format(x, spec)


def summarize(reps):
    """Best of the repetitions: time and store are the least, sizes do not
    vary, peak RSS is the largest (the conservative one)."""
    best = min(reps, key=lambda r: r["loop_ns"])
    r = dict(best)
    r["ns"] = best["loop_ns"] / best["calls"]
    stores = [x["store_ns"] for x in reps if x["store_ns"] is not None]
    r["store"] = min(stores) / best["recorded"] if stores else None
    r["disk"] = None if best["disk_bytes"] is None else best["disk_bytes"] / best["recorded"]
    r["alloc"] = None if best["alloc_bytes"] is None else best["alloc_bytes"] / best["recorded"]
    r["rss_mib"] = max(x["maxrss_kib"] for x in reps) / 1024
    r["repeats"] = len(reps)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the calls")
    ap.add_argument("--python", metavar="PATH", default=sys.executable,
                    help="interpreter for the measured children (default: this one)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions, best reported")
    ap.add_argument("--cases", default=",".join(c for c, _, _ in CASES),
                    help="comma-separated subset of: " + ", ".join(c for c, _, _ in CASES))
    ap.add_argument("--tmpdir", metavar="DIR", help="where the run directories, pickle "
                    "files and traces are written (default: the system's temporary "
                    "directory); its file system sets the cost of pickle-files")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--calls", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.case, args.calls, args.work)

    t_start = time.perf_counter()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASE_LABEL]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}")
    base_calls = {c: n for c, _, n in CASES}

    p = subprocess.run([args.python, "-c", PROBE], capture_output=True, text=True,
                       env=child_env(tempfile.gettempdir()))
    if p.returncode != 0:
        sys.exit(f"bench_capture: cannot run {args.python}:\n{p.stderr}")
    probe = json.loads(p.stdout.splitlines()[-1])

    notes = []
    configs = [c for c, _ in CONFIGS]
    if probe["callscope"] is None:
        configs.remove("callscope")
        configs.remove("capture")
        notes.append(probe["capture"] + ": callscope skipped")
    elif probe["capture"] is not None:
        configs.remove("capture")
        notes.append("this callscope has no capture yet (monitor(args=True, result=True) "
                     f"raised {probe['capture']}): the capture configuration is skipped")
    if probe["viztracer"] is None:
        configs.remove("viztracer")
        notes.append("viztracer is not installed for this interpreter: its column is "
                     "skipped (pip install viztracer)")
    if probe["numpy"] is None and any(c in ARRAY_CASES for c in cases):
        cases = [c for c in cases if c not in ARRAY_CASES]
        notes.append("numpy is not installed for this interpreter: the 1 MB array cases "
                     "are skipped (pip install numpy)")

    files_dir = args.tmpdir or tempfile.gettempdir()
    plan = [(case, config, calls_for(case, config, base_calls[case], args.quick))
            for case in cases for config in configs]
    runs = {(case, config): [] for case, config, _ in plan}
    failed = set()
    with tempfile.TemporaryDirectory(prefix="callscope-bench-capture-",
                                     dir=args.tmpdir) as tmp:
        # Repetitions interleaved: a slow moment of the machine lands on one
        # repetition of every configuration, not on all of one.
        for rep in range(args.repeat):
            for case, config, n in plan:
                if (case, config) in failed:
                    continue
                progress(f"repetition {rep + 1}/{args.repeat}: {case}, {config}, {n:,} calls")
                r, err = run_child(args.python, tmp, config, case, n, rep)
                if err:
                    failed.add((case, config))
                    notes.append(err)
                    continue
                runs[(case, config)].append(r)

    res = {k: summarize(v) for k, v in runs.items() if v}
    for (case, config), r in res.items():
        plain = res.get((case, "plain"))
        r["overhead"] = r["ns"] - plain["ns"] if plain and config != "plain" else None
        r["rss_over_plain"] = r["rss_mib"] - plain["rss_mib"] if plain else None
        if r.get("logs_left"):
            notes.append(f"{case}/{config}: logs left in the run after _finish: "
                         f"{', '.join(r['logs_left'])}")
        if config in ("callscope", "capture") and r.get("stored_calls") != r["recorded"]:
            notes.append(f"{case}/{config}: run.db holds {r.get('stored_calls')} calls, "
                         f"expected {r['recorded']}")
        if config == "capture":
            for what in ("args", "results"):
                got = r.get(f"stored_{what}")
                if got is None:
                    notes.append(f"{case}/capture: run.db has no table {what}: were the "
                                 f"{what} captured?")
                elif got != r["recorded"]:
                    notes.append(f"{case}/capture: run.db table {what} holds {got} rows, "
                                 f"expected {r['recorded']} (one per call)")

    print(f"argument and result capture, per call: best of {args.repeat}"
          f"{' (--quick)' if args.quick else ''}; Python {probe['version']} "
          f"({probe['executable']}), {platform.machine()}, {os.cpu_count()} CPUs; "
          f"numpy {probe['numpy'] or '-'}, viztracer {probe['viztracer'] or '-'}; "
          f"files in {files_dir} ({fs_type(files_dir)})")
    print()
    head = ["case", "configuration", "calls", "ns/call", "overhead", "store/call",
            "x pickle", "x viztracer", "disk B/call", "alloc B/call", "peak RSS MiB",
            "RSS over plain"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|")
    for case in cases:
        pk = res.get((case, "pickle-files"), {}).get("overhead")
        vz = res.get((case, "viztracer"), {}).get("overhead")
        for config in configs:
            r = res.get((case, config))
            if r is None:
                print(f"| {CASE_LABEL[case]} | {CONFIG_LABEL[config]} | failed |"
                      + " |" * (len(head) - 3))
                continue
            ov = r["overhead"]
            x_pk = ov / pk if ov is not None and pk and pk > 0 else None
            x_vz = ov / vz if ov is not None and vz and vz > 0 else None
            x_pk, x_vz = (None if x is None else float(f"{x:.3g}") for x in (x_pk, x_vz))
            cells = [CASE_LABEL[case], CONFIG_LABEL[config], f"{r['calls']:,}",
                     fmt(r["ns"], ",.1f"), fmt(ov, "+,.1f"), fmt(r["store"], ",.1f"),
                     fmt(x_pk, "g"), fmt(x_vz, "g"), fmt(r["disk"], ",.1f"),
                     fmt(r["alloc"], ",.0f"), fmt(r["rss_mib"], ".1f"),
                     fmt(r["rss_over_plain"] if config != "plain" else None, "+.1f")]
            print("| " + " | ".join(cells) + " |")
    print()
    print(LEGEND)

    # All-in: what a call costs once its record is stored.
    lines = []
    for case in cases:
        cap, pk, vz = (res.get((case, c)) for c in ("capture", "pickle-files", "viztracer"))
        if not cap or cap["overhead"] is None:
            continue
        total = cap["overhead"] + (cap["store"] or 0)
        parts = [f"{CASE_LABEL[case]}: capture {total:,.1f} ns/call"]
        if pk and pk["overhead"]:
            parts.append(f"{total / pk['overhead']:.3f}x pickle-files")
        if vz and vz["overhead"] is not None:
            vtotal = vz["overhead"] + (vz["store"] or 0)
            parts.append(f"{total / vtotal:.3f}x viztracer ({vtotal:,.1f} with save)")
        lines.append("  " + ", ".join(parts))
    if lines:
        print()
        print("all-in (overhead + store), per call:")
        print("\n".join(lines))

    if notes:
        print()
        for x in notes:
            print(f"note: {x}")
    elapsed = time.perf_counter() - t_start
    if args.json:
        out = {"python": probe, "machine": platform.machine(), "cpus": os.cpu_count(),
               "quick": args.quick, "repeats": args.repeat, "notes": notes,
               "results": [dict(r, reps=runs[k]) for k, r in res.items()],
               "elapsed_s": elapsed}
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
        print(f"\nresults written to {args.json}")
    print(f"\ntotal {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
