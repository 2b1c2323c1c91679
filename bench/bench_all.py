"""Profile everything: callscope --all beside cProfile, yappi and viztracer
(whichever are installed) on the same loop, side by side in one process.

    python bench/bench_all.py
"""
import os
import sys
import tempfile
import time


def f(x):
    return x


def loop(n=1_000_000):
    for i in range(n):
        f(i)


def best(fn, k=5):
    times = []
    for _ in range(k):
        t = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t)
    return min(times) / 1_000_000  # ns per call


def main():
    os.environ.setdefault("CALLSCOPE_DIR", tempfile.mkdtemp())
    import callscope

    rows = [("plain loop", best(loop))]
    import cProfile

    pr = cProfile.Profile()

    def with_cprofile():
        pr.enable()
        loop()
        pr.disable()

    rows.append(("cProfile", best(with_cprofile)))
    try:
        import yappi

        def with_yappi():
            yappi.start()
            loop()
            yappi.stop()
            yappi.clear_stats()

        rows.append(("yappi", best(with_yappi)))
    except ImportError:
        pass
    try:
        from viztracer import VizTracer

        tracer = VizTracer(verbose=0, tracer_entries=3_000_000)

        def with_viztracer():
            tracer.start()
            loop()
            tracer.stop()
            tracer.clear()

        rows.append(("viztracer", best(with_viztracer)))
    except ImportError:
        pass

    def with_callscope():
        callscope.profile_all()
        loop()
        callscope.profile_all(False)

    rows.append(("callscope --all", best(with_callscope)))
    plain = rows[0][1]
    cp = dict(rows)["cProfile"] - plain
    print(f"profile everything: 1,000,000 calls, best of 5, Python {sys.version.split()[0]}")
    for name, ns in rows:
        over = ns - plain
        ratio = f"{over / cp:5.2f}x cProfile" if name != "plain loop" else ""
        print(f"  {name:<18} {ns:8.1f} ns/call  {over:+8.1f}  {ratio}")


if __name__ == "__main__":
    main()
