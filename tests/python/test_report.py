"""The HTML report, opened in a real headless Chromium: every view drawn
with real data, the table sorts, no console errors, no network, and
special characters escaped. Bad input gives a valid report or a clear
message."""
import json
import os
import re
import shutil
import subprocess

import pytest

import callscope

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CALLSCOPE_REQUIRE_BROWSER"),
    reason="chromium is not installed (make test installs it)")

PROGRAM = """
import threading, callscope

@callscope.monitor(memory=True, cpu=True)
def alloc(n):
    return bytearray(n)

@callscope.monitor(args=True, result=True)
def leaf(x):
    return x * 2

@callscope.monitor
def work(n):
    s = sum(leaf(i) for i in range(n))
    alloc(200000)
    return s

@callscope.monitor(name="<script>alert('x')</script> & \\"q\\"")
def weird():
    raise ValueError("bad <b>bold</b> & 'quoted'")

def thread():
    for _ in range(10):
        work(20)

t = threading.Thread(target=thread, name="worker <1>")
t.start()
for _ in range(20):
    work(10)
    try:
        weird()
    except ValueError:
        pass
t.join()
"""

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update",
         "--disable-default-apps", "--disable-sync", "--mute-audio"]


def chromium(*args, timeout=120):
    assert CHROMIUM, "chromium is needed (make test installs it)"
    return subprocess.run([CHROMIUM, *FLAGS, *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def report(run_py, cli, root, tmp_path):
    run_py(PROGRAM)
    out = tmp_path / "report.html"
    p = cli("report", "--title", "Run <1> & co", "--subtitle", "nightly 'build'",
            "--tag", "v1.2", "--tag", "<x>", "-o", out, check=0)
    assert p.stdout.strip() == str(out)
    return out


def test_report_is_self_contained_and_escaped(report):
    html = report.read_text()
    # nothing from elsewhere: no URL in src/href, a policy that forbids it
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", html)
    assert "default-src 'none'" in html
    # the names come back escaped, never as markup
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;" in html
    assert "Run &lt;1&gt; &amp; co" in html and "&lt;x&gt;" in html
    assert "bad &lt;b&gt;bold&lt;/b&gt;" in html
    assert html.count("<script>") == 1  # ours, at the end
    for view in ("times", "timeline", "memory", "top10", "histograms", "flame", "functions",
                 "tree", "errors", "processes", "meta"):
        assert f'id="{view}"' in html, view


@needs_browser
def test_report_in_headless_chromium(report, tmp_path):
    url = report.as_uri() + "#selftest"
    p = chromium("--dump-dom", "--enable-logging=stderr", "--v=0", url)
    assert p.returncode == 0, p.stderr[-2000:]
    m = re.search(r'data-selftest="([^"]*)"', p.stdout)
    assert m, "the page's script did not run"
    state = json.loads(m.group(1).replace("&quot;", '"'))
    # each of the six views drew elements with data (the flame graph too)
    assert all(n > 0 for n in state["views"]), state
    # the table sorted by calls, largest first, with the real counts
    calls = [int(x) for x in state["sorted"]]
    assert calls == sorted(calls, reverse=True) and calls[0] == 10 * 20 + 20 * 10
    # no console errors, no blocked or failed requests
    errors = [line for line in p.stderr.splitlines()
              if ("CONSOLE" in line and ("Uncaught" in line or "Error" in line))
              or "Refused to" in line or "net::ERR" in line]
    assert errors == [], errors
    # a screenshot of the page
    shot = tmp_path / "report.png"
    p = chromium(f"--screenshot={shot}", "--window-size=1400,2600", "--hide-scrollbars",
                 report.as_uri())
    assert shot.exists() and shot.stat().st_size > 20_000, p.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_views_hold_real_data(report):
    html = report.read_text()
    timeline = html[html.index('id="timeline"'):html.index("</svg>", html.index('id="timeline"'))]
    assert timeline.count("<rect") >= 3
    assert "worker &lt;1&gt;" in timeline and "MainThread" in timeline
    memory = html[html.index('id="memory"'):html.index("</svg>", html.index('id="memory"'))]
    assert "alloc" in memory and "per call" in memory
    top = html[html.index('id="top10"'):html.index("</svg>", html.index('id="top10"'))]
    assert top.count("<rect") == 4  # work, leaf, alloc, weird
    assert "400 calls" in top  # leaf: 10*20 + 20*10
    assert html.count('class="hist"') == 4
    assert "ValueError" in html[html.index('id="errors"'):]
    import sys
    meta = html[html.index('id="meta"'):html.index("</dl>")]
    assert "<dt>Python</dt>" in meta and sys.version.split()[0] in meta
    assert "<dt>duration</dt>" in meta and "<dt>hosts</dt>" in meta


def test_window_and_function_filter(run_py, cli, root, tmp_path):
    run_py(PROGRAM)
    out = tmp_path / "r.html"
    cli("report", "-f", "*leaf", "-o", out, check=0)
    html = out.read_text()
    table = html[html.index('id="functions"'):html.index("</table>", html.index('id="functions"'))]
    assert "__main__.leaf" in table and "__main__.work" not in table
    cli("report", "--start", "1000", "-o", out, check=0)
    assert "0 in the report" in out.read_text()
    p = cli("report", "--start", "2", "--end", "1", check=2)
    assert "--end" in p.stderr
    p = cli("report", "--start", "soon", check=2)
    assert "'soon'" in p.stderr


def test_empty_run_one_call_and_missing(run_py, cli, root, tmp_path):
    out = tmp_path / "r.html"
    run_py("import callscope\n@callscope.monitor\ndef once():\n    return 1\nonce()\n")
    cli("report", "-o", out, check=0)
    html = out.read_text()
    assert "once" in html and "</html>" in html
    empty = tmp_path / "empty"
    (empty / "run").mkdir(parents=True)
    run_dir = callscope.load(root=root).path
    # a run with no calls: a valid page that says so
    con = __import__("sqlite3").connect(os.path.join(run_dir, "run.db"))
    con.execute("DELETE FROM calls")
    con.commit()
    con.close()
    cli("report", run_dir, "-o", out, check=0)
    html = out.read_text()
    assert "No calls." in html and "</html>" in html
    p = cli("report", "no-such-run", check=1)
    assert "not found" in p.stderr


def test_report_of_a_run_still_in_progress(cli, root, tmp_path):
    """A process still running holds its log: the report says so clearly,
    and once it ends the same command gives the report."""
    import sys
    import time
    prog = tmp_path / "slow.py"
    prog.write_text(
        "import sys, time, callscope\n"
        "@callscope.monitor\n"
        "def step():\n"
        "    return 1\n"
        "step()\n"
        "callscope._callscope._open_log()\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n")
    env = dict(os.environ, CALLSCOPE_DIR=str(root))
    env.pop("CALLSCOPE_RUN_DIR", None)
    p = subprocess.Popen([sys.executable, str(prog)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert p.stdout.readline().strip() == "ready"
        out = tmp_path / "r.html"
        q = cli("report", "-o", out)
        # its calls are in its log, not yet in run.db: said so, and nothing written
        assert q.returncode == 1 and "no calls recorded yet" in q.stderr
        assert not out.exists()
        assert "still running" in q.stderr
    finally:
        p.communicate("\n", timeout=60)
    cli("report", "-o", tmp_path / "r2.html", check=0)
    assert "__main__.step" in (tmp_path / "r2.html").read_text()


def test_report_of_a_profile_all_run(cli, root, tmp_path):
    (tmp_path / "prog.py").write_text(
        "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\nfib(15)\n")
    cli("run", "-q", "--all", "--", "prog.py", check=0)
    out = tmp_path / "r.html"
    cli("report", "-o", out, check=0)
    html = out.read_text()
    table = html[html.index('id="functions"'):html.index("</table>", html.index('id="functions"'))]
    row = table[table.index("__main__.fib"):]
    assert 'data-v="1973"' in row[:200]  # fib(15) makes 1973 calls
    # the charts draw the profiled functions too, without the launcher's
    # frames (runpy, importlib, callscope), as top shows them
    top = html[html.index('id="top10"'):html.index("</svg>", html.index('id="top10"'))]
    assert "__main__.fib" in top and "runpy." not in top
    # the flame graph: the module, fib under it, fib under fib ...
    flame = html[html.index('id="flame"'):html.index("</svg>", html.index('id="flame"'))]
    assert 10 <= flame.count("__main__.fib (") <= 15  # fib(15): a path per depth (wide enough)
    assert "__main__.&lt;module&gt; (" in flame and "runpy" not in flame
    # with --launcher they are back
    cli("report", "--launcher", "-o", tmp_path / "l.html", check=0)
    html = (tmp_path / "l.html").read_text()
    assert "runpy." in html[html.index('id="top10"'):html.index("</svg>",
                                                              html.index('id="top10"'))]
