"""The callscope command, run for real on real run directories."""
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

import callscope
from conftest import top_rows

APP = """
import sys, callscope

@callscope.monitor
def solve(n):
    return sum(inner(i) for i in range(n))

@callscope.monitor(cpu=True)
def inner(i):
    return i * i

@callscope.monitor
def bad():
    raise ValueError("nope")

print("args", sys.argv[1:])
solve(100)
try:
    bad()
except ValueError:
    pass
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


@pytest.fixture
def app(tmp_path):
    p = tmp_path / "app.py"
    p.write_text(APP)
    return p


def one_error_line(p):
    lines = p.stderr.strip().splitlines()
    assert len(lines) >= 1 and lines[0].startswith("callscope: error: "), p.stderr
    return lines[0]


def test_help_and_version(cli):
    p = cli("--help", check=0)
    for cmd in ("run", "top", "info", "clean"):
        assert cmd in p.stdout
    assert "usage: callscope top" in cli("top", "--help", check=0).stdout
    assert "usage: callscope run" in cli("help", "run", check=0).stdout
    assert re.match(r"callscope \d+\.\d+\.\d+", cli("--version", check=0).stdout)


def test_run_script_then_top_and_info(cli, app, root):
    p = cli("run", app, "3", "--flag", check=3)  # the script's exit status
    assert "args ['3', '--flag']" in p.stdout
    assert "calls in 1 process" in p.stderr
    dirs = [d for d in os.listdir(root) if d != "latest"]
    assert len(dirs) == 1 and dirs[0].endswith("-app")
    assert os.path.islink(root / "latest")
    top = cli("top", check=0).stdout
    rows = {r["function"]: r for r in top_rows(top)}
    assert (rows["__main__.solve"]["calls"], rows["__main__.solve"]["errors"]) == ("1", "0")
    assert rows["__main__.inner"]["calls"] == "100"
    assert rows["__main__.inner"]["cpu"] != "-"  # cpu measured
    assert (rows["__main__.bad"]["calls"], rows["__main__.bad"]["errors"]) == ("1", "1")
    assert "app.py:" in rows["__main__.solve"]["where"]
    assert rows["__main__.solve"]["share"].endswith("%")
    info = cli("info", check=0).stdout.splitlines()
    assert info[0].split()[:3] == ["run", "started", "duration"]
    assert "complete" in info[1] and "app.py 3 --flag" in info[1]
    fields = info[1].split()
    assert "102" in fields  # calls


def test_top_sort_limit_filter(cli, app):
    cli("run", app, check=0)
    out = cli("top", "--sort", "calls", "-n", "1", check=0).stdout
    assert [r["function"] for r in top_rows(out)] == ["__main__.inner"]
    out = cli("top", "--filter", "*.ba?", check=0).stdout
    assert [r["function"] for r in top_rows(out)] == ["__main__.bad"]
    out = cli("top", "--filter", "zzz", check=0).stdout
    assert "no functions match zzz" in out
    out = cli("top", "--sort", "name", check=0).stdout
    names = [r["function"] for r in top_rows(out)]
    assert names == sorted(names) and len(names) >= 3


def test_run_module(cli, tmp_path, root):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "main.py").write_text(
        "import sys, callscope\n@callscope.monitor\ndef go():\n    return 1\n"
        "go(); go()\nprint('mod', sys.argv)\n")
    p = cli("run", "-m", "pkg.main", "x", check=0, cwd=tmp_path)
    assert "mod ['pkg.main', 'x']" in p.stdout or "mod [" in p.stdout
    run = callscope.load(root=root)
    assert [f.calls for f in run.functions()] == [2]


def test_runs_are_never_overwritten(cli, app, root):
    cli("run", "--name", "same", app, check=0)
    cli("run", "--name", "same", app, check=0)
    dirs = sorted(d for d in os.listdir(root) if d != "latest")
    assert len(dirs) == 2 and len(set(dirs)) == 2
    assert os.readlink(root / "latest") == dirs[-1]


def test_dir_option_and_env(cli, app, tmp_path):
    other = tmp_path / "elsewhere"
    cli("run", "--dir", other, app, check=0)
    assert cli("top", "--dir", other, check=0).stdout.startswith("run ")
    assert "no runs in" in cli("info", "--dir", tmp_path / "none", check=0).stdout


def test_clean(cli, app, root):
    for _ in range(3):
        cli("run", app, check=0)
    # without --yes and without a terminal: refuse, delete nothing
    p = cli("clean", "--keep", "1", check=2, input="")
    assert "--yes" in one_error_line(p)
    assert len([d for d in os.listdir(root) if d != "latest"]) == 3
    p = cli("clean", "--keep", "1", "--dry-run", check=0)
    assert "would delete 2 run(s)" in p.stdout
    p = cli("clean", "--keep", "1", "--yes", check=0)
    assert "deleted 2 run(s)" in p.stdout
    left = [d for d in os.listdir(root) if d != "latest"]
    assert len(left) == 1 and os.readlink(root / "latest") == left[0]
    cli("clean", "--yes", check=0)
    assert os.listdir(root) == []


@pytest.mark.parametrize("args", [
    ["top", "--bogus"], ["info", "-x"], ["clean", "--keep"], ["clean", "--keep", "-3"],
    ["top", "--sort", "nope"], ["top", "--limit", "ten"], ["run"], ["frobnicate"],
    ["run", "does-not-exist.py"], ["top", "a", "b"],
])
def test_bad_usage_is_one_clear_line_exit_2(cli, args):
    p = cli(*args, check=2)
    one_error_line(p)


def test_missing_run(cli, app):
    p = cli("top", "no-such-run", check=1)
    assert "run not found: no-such-run" in one_error_line(p)
    p = cli("top", check=1)
    assert "no runs in" in one_error_line(p)
    cli("run", app, check=0)
    assert cli("top", "/definitely/not/here", check=1).returncode == 1


def test_damaged_run_db(cli, app, root):
    cli("run", app, check=0)
    run = callscope.load(root=root)
    with open(run.db_path, "r+b") as f:
        f.seek(0)
        f.write(b"this is not sqlite at all" * 4)
    p = cli("top", check=1)
    line = one_error_line(p)
    assert "run.db" in line and "not" in line
    p = cli("info", check=1)
    one_error_line(p)
    with pytest.raises(callscope.CallscopeError):
        callscope.load(root=root).stats()


def _killed_run(tmp_path, root, n=50):
    import subprocess
    import sys

    script = tmp_path / "killed.py"
    script.write_text(
        "import os, callscope\n@callscope.monitor\ndef f(i):\n    return i\n"
        f"for i in range({n}):\n    f(i)\nos.kill(os.getpid(), 9)\n")
    subprocess.run([sys.executable, str(script)], env=dict(os.environ, CALLSCOPE_DIR=str(root), CALLSCOPE_RUN_DIR=""))
    (rundir,) = [root / d for d in os.listdir(root) if d != "latest"]
    (log,) = [rundir / f for f in os.listdir(rundir) if f.endswith(".cslog")]
    return rundir, log


def test_truncated_log_keeps_valid_prefix(cli, root, tmp_path):
    rundir, log = _killed_run(tmp_path, root)
    data = log.read_bytes()
    last = max(i for i in range(4096, len(data), 8) if any(data[i:i + 8]))
    log.write_bytes(data[: last - 20 * 8 + 5])  # cut inside a record, 10 calls back
    p = cli("top", check=0)
    assert "__main__.f" in p.stdout
    n = int(next(r for r in top_rows(p.stdout) if r["function"] == "__main__.f")["calls"])
    assert 35 <= n < 50


def test_corrupted_log_is_reported_not_fatal(cli, root, tmp_path, app):
    rundir, log = _killed_run(tmp_path, root)
    data = bytearray(log.read_bytes())
    data[0:8] = b"GARBAGE!"  # the header no longer checks out
    log.write_bytes(bytes(data))
    p = cli("info", rundir, check=0)
    assert "warning" in p.stderr and "not a callscope log" in p.stderr
    assert os.path.exists(log)  # left in place, never deleted
    p = cli("top", rundir, check=0)
    assert "no calls recorded yet" in p.stdout or p.stdout.startswith("run ")


def test_sqlite_file_opens_in_sqlite3(cli, app, root):
    cli("run", app, check=0)
    run = callscope.load(root=root)
    con = sqlite3.connect(run.db_path)
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    assert {"runs", "processes", "threads", "functions", "calls", "errors",
            "call_view"} <= names
    (n,) = con.execute("SELECT count(*) FROM call_view WHERE status = 'raised'").fetchone()
    assert n == 1


def test_run_that_records_nothing_is_an_empty_run(cli, tmp_path, root):
    script = tmp_path / "quiet.py"
    script.write_text("print('hello')\n")
    p = cli("run", script, "a b", check=0)
    assert "hello" in p.stdout
    out = cli("top", check=0).stdout.splitlines()
    assert out[0].startswith("run ") and "no functions" in out[-1]
    info = cli("info", check=0).stdout.splitlines()
    assert len(info) == 2 and "empty" in info[1] and "quiet.py a b" in info[1]


def test_run_of_python_that_cannot_start(cli, app):
    p = cli("run", "--python", "/nonexistent/python3", app, check=127)
    assert "cannot start" in p.stderr


def test_top_pid_filter(cli, tmp_path, root):
    (tmp_path / "forky.py").write_text(
        "import os, callscope\n@callscope.monitor\ndef f():\n    return 1\n"
        "f()\npid = os.fork()\nif pid == 0:\n    f(); f()\n    os._exit(0)\n"
        "os.waitpid(pid, 0)\nprint(pid)\n")
    child = int(cli("run", "forky.py", check=0).stdout.split()[-1])
    out = cli("top", "--pid", child, check=0).stdout
    assert [(r["function"], r["calls"]) for r in top_rows(out)] == [("__main__.f", "2")]


def test_clean_drops_stale_job_links(cli, app, root):
    cli("run", app, check=0, env={"SLURM_JOB_ID": "777", "SLURM_PROCID": "0"})
    assert os.path.islink(root / ".job-slurm777")
    cli("clean", "--yes", check=0)
    assert not os.path.lexists(root / ".job-slurm777")
    assert os.listdir(root) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1])
def test_signals_reach_the_program(tmp_path, root, sig):
    """A signal sent to `callscope run` goes to the program; callscope waits
    for it, finishes the run, and exits as the program did (128 + N for a
    signal). The calls it finished are kept."""
    prog = tmp_path / "loop.py"
    prog.write_text(textwrap.dedent("""
        import callscope, time
        @callscope.monitor
        def step(i):
            return i
        for i in range(100):
            step(i)
        print("ready", flush=True)
        while True:
            time.sleep(0.01)
    """))
    env = dict(os.environ, CALLSCOPE_DIR=str(root), CALLSCOPE_RUN_DIR="")
    cli = os.path.join(os.path.dirname(sys.executable), "callscope")
    # the test is that the signal is not ignored: a suite started as a
    # background job or under nohup would hand SIGINT/SIGHUP down ignored
    p = subprocess.Popen([cli, "run", "-q", str(prog)], env=env, cwd=tmp_path,
                         stdout=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
    try:
        assert p.stdout.readline().strip() == "ready"
        os.kill(p.pid, sig)  # callscope's pid, not the program's
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 128 + sig
    run = callscope.load(root=root)
    assert run.info()["state"] != "running"
    assert len(run.calls("__main__.step")) == 100


def test_ignored_signals_stay_ignored(tmp_path, root):
    """Started ignoring SIGHUP (as under nohup), `callscope run` keeps it
    ignored, as the program it runs does: a hang-up ends neither."""
    prog = tmp_path / "wait.py"
    prog.write_text(textwrap.dedent("""
        import sys, time
        print("ready", flush=True)
        sys.stdin.readline()
        print("still here", flush=True)
    """))
    env = dict(os.environ, CALLSCOPE_DIR=str(root), CALLSCOPE_RUN_DIR="")
    cli = os.path.join(os.path.dirname(sys.executable), "callscope")
    p = subprocess.Popen([cli, "run", "-q", str(prog)], env=env, cwd=tmp_path,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    try:
        assert p.stdout.readline().strip() == "ready"
        os.kill(p.pid, signal.SIGHUP)
        time.sleep(0.3)
        assert p.poll() is None
        out, _ = p.communicate("go\n", timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0 and out.strip() == "still here"


def _modes(path):
    out = {}
    for d, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(d, name)
            if not os.path.islink(p):
                out[os.path.relpath(p, path)] = os.stat(p).st_mode & 0o777
    return out


@pytest.mark.parametrize("share", [None, "group"])
def test_runs_are_private_whatever_the_umask(tmp_path, root, share):
    """Runs hold arguments, results and messages: their directories are
    0700 and their files 0600 under a permissive umask, 0750 and 0640 with
    --share group."""
    prog = tmp_path / "p.py"
    prog.write_text("import callscope\n@callscope.monitor(args=True)\ndef f(x):\n    return x\n"
                    "f('secret')\n")
    cli = os.path.join(os.path.dirname(sys.executable), "callscope")
    args = [cli, "run", "-q"] + (["--share", share] if share else []) + [str(prog)]
    env = dict(os.environ, CALLSCOPE_DIR=str(root), CALLSCOPE_RUN_DIR="")
    env.pop("CALLSCOPE_SHARE", None)
    old = os.umask(0o002)
    try:
        subprocess.run(args, env=env, cwd=tmp_path, check=True)
    finally:
        os.umask(old)
    modes = _modes(root)
    assert any(name.endswith("run.db") for name in modes)
    dirs = {m for n, m in modes.items() if os.path.isdir(os.path.join(root, n))}
    files = {m for n, m in modes.items() if not os.path.isdir(os.path.join(root, n))}
    assert (dirs, files) == (({0o750}, {0o640}) if share else ({0o700}, {0o600})), modes
    p = subprocess.run([cli, "run", "--share", "world", str(prog)], env=env, cwd=tmp_path,
                       capture_output=True, text=True)
    assert p.returncode == 2 and "--share takes group or user" in p.stderr


def test_clean_deletes_only_what_callscope_made(cli, app, root):
    """A folder of the user's under the runs root, even with a file named
    run.db, is never a run; a run holding a file of the user's loses only
    callscope's files; a link is never followed."""
    cli("run", "-q", app, check=0)
    cli("run", "-q", app, check=0)
    runs = sorted(d for d in os.listdir(root) if d != "latest")
    mine = root / "00-notes"
    mine.mkdir()
    (mine / "run.db").write_text("my notes, not sqlite")
    (mine / "notes.txt").write_text("keep me")
    outside = root.parent / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me too")
    os.symlink(outside, root / "01-link")
    (root / runs[0] / "mine.txt").write_text("the user's")
    p = cli("clean", "--keep", "0", "--yes", check=0)
    assert "leaving" in p.stderr and "00-notes" in p.stderr
    assert (mine / "run.db").read_text() == "my notes, not sqlite"
    assert (mine / "notes.txt").exists() and (outside / "precious.txt").exists()
    assert os.path.islink(root / "01-link")
    # the run with a file of the user's: callscope's files gone, the user's kept
    assert sorted(os.listdir(root / runs[0])) == ["mine.txt"]
    assert "kept" in p.stderr
    assert not (root / runs[1]).exists()


@pytest.mark.parametrize("target", ["../../x", "/tmp", "evil-link"])
def test_job_link_never_leads_out_of_the_root(cli, app, root, tmp_path, target):
    """The link by which a job's processes find their run names a run in
    the root; one that names a path, or a link out of the root, is refused
    and nothing is written outside."""
    root.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    if target == "evil-link":
        os.symlink(outside, root / "evil-link")
    os.symlink(target, root / ".job-slurm4242")
    before = sorted(os.listdir(outside))
    p = cli("run", "-q", app, env={"SLURM_JOB_ID": "4242"}, check=1)
    assert ".job-" in p.stderr and "remove it" in p.stderr
    assert sorted(os.listdir(outside)) == before
    assert not (tmp_path / "x").exists()


def test_errors_name_the_real_cause(cli, app, tmp_path):
    """A file where the runs root should be, a root in a read-only place,
    a name too long: one line that says so."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    p = cli("run", "-q", app, env={"CALLSCOPE_DIR": str(afile)}, check=1)
    assert "not a directory" in p.stderr
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.geteuid() != 0:  # root writes anywhere
            p = cli("run", "-q", app, env={"CALLSCOPE_DIR": str(ro / "runs")}, check=1)
            assert "permission denied" in p.stderr
    finally:
        ro.chmod(0o700)
    long = tmp_path / ("n" * 300)
    p = cli("run", "-q", app, env={"CALLSCOPE_DIR": str(long)}, check=1)
    assert "file name too long" in p.stderr


DEEP = """
import sys
sys.setrecursionlimit(100000)
{deco}
def f(n):
    return 0 if n == 0 else 1 + f(n - 1)
print(f({n}))
"""


@pytest.mark.parametrize("mode", ["-t", "--all", "decorator"])
def test_deep_recursion_is_a_recursion_error_never_a_crash(tmp_path, root, mode):
    """Under the limit set by sys.setrecursionlimit(100000), 60,000 levels
    either finish or end in a clean RecursionError, never in a signal. Where
    the interpreter adds no C stack per Python call (3.11 with the profile
    hook, 3.12 and later), -t and --all finish. The decorator adds a C frame
    per level, as functools.lru_cache does, so it may stop sooner."""
    n = 60000
    prog = tmp_path / "deep.py"
    prog.write_text(DEEP.format(n=n, deco="import callscope\n@callscope.monitor"
                                if mode == "decorator" else ""))
    env = dict(os.environ, CALLSCOPE_DIR=str(root), CALLSCOPE_RUN_DIR="")
    cli = os.path.join(os.path.dirname(sys.executable), "callscope")
    args = {"-t": ["-t", "f"], "--all": ["--all"], "decorator": []}[mode]
    p = subprocess.run([cli, "run", "-q", *args, str(prog)], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode in (0, 1), (p.returncode, p.stderr[-2000:])
    if p.returncode == 1:
        assert p.stderr.rstrip().splitlines()[-1].startswith("RecursionError"), p.stderr[-2000:]
    must_finish = mode != "decorator" and (
        sys.version_info >= (3, 12) or (sys.version_info >= (3, 11) and mode == "--all"))
    if must_finish:
        assert p.returncode == 0 and p.stdout.strip() == str(n), p.stderr[-2000:]
    run = callscope.load(root=root)
    assert run.info()["state"] != "running"
