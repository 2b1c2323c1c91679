"""Selection by name on a real program callscope did not write: pygments
highlighting a large Python file, plain and with one rarely called function
selected (and with a hot one), side by side, each in a fresh process.
Beside them, the baseline: a sys.settrace tracer written the way the seed
tool writes one (a global trace function that matches on the name and
times the calls it selects).

    python bench/bench_select.py [--repeat N]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import sys, time, inspect, typing, os
mode = sys.argv[1]
import pygments, pygments.lexers, pygments.formatters
if mode.startswith("settrace:"):
    name, times, stack = mode.split(":", 1)[1].rsplit(".", 1)[-1], [], []
    def local(frame, event, arg):
        if event == "return":
            times.append(time.perf_counter() - stack.pop())
        return local
    def tracer(frame, event, arg):
        if event == "call" and frame.f_code.co_name == name:
            stack.append(time.perf_counter())
            return local
        return None
    sys.settrace(tracer)
elif mode != "plain":
    import callscope
    callscope.trace(mode)
src = inspect.getsource(typing) * 4
t = time.perf_counter()
lexer = pygments.lexers.get_lexer_by_name("python")
out = pygments.highlight(src, lexer, pygments.formatters.HtmlFormatter())
print(time.perf_counter() - t)
"""


def run(mode, root):
    env = dict(os.environ, CALLSCOPE_DIR=root, CALLSCOPE_RUN_DIR="")
    p = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, capture_output=True,
                       text=True, check=True)
    return float(p.stdout.split()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    try:
        import pygments  # noqa: F401
    except ImportError:
        sys.exit("bench_select: needs pygments (pip install pygments)")
    rare, hot = ("pygments.lexers.get_lexer_by_name",
                 "pygments.lexer.RegexLexer.get_tokens_unprocessed")
    modes = [("plain", "plain"),
             ("one rare function selected", rare),
             ("a hot function selected", hot),
             ("settrace (seed), rare function", "settrace:" + rare),
             ("settrace (seed), hot function", "settrace:" + hot)]
    with tempfile.TemporaryDirectory() as root:
        best = {}
        for _ in range(args.repeat):
            for label, mode in modes:
                t = run(mode, root)
                best[label] = min(best.get(label, t), t)
    base = best["plain"]
    print(f"pygments highlighting typing.py x4, Python {sys.version.split()[0]},"
          f" best of {args.repeat}")
    for label, _ in modes:
        print(f"  {label:<30} {best[label] * 1e3:8.1f} ms   {best[label] / base:5.2f}x")


if __name__ == "__main__":
    main()
