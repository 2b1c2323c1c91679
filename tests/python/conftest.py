"""Fixtures: every test records into its own temporary run root, with the
engine reset before and after, and helpers that run real processes."""
import os
import subprocess
import sys
import textwrap

import pytest

import callscope
from callscope import _callscope


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A fresh CALLSCOPE_DIR; the engine starts and ends with no open log."""
    r = tmp_path / "runs"
    monkeypatch.setenv("CALLSCOPE_DIR", str(r))
    monkeypatch.delenv("CALLSCOPE_RUN_DIR", raising=False)
    _callscope._reset()
    yield r
    _callscope._reset()
    # a run this process created exported itself for its children
    os.environ.pop("CALLSCOPE_RUN_DIR", None)


@pytest.fixture
def finish(root):
    """Close this process's log, store it, and load the run."""

    def _finish():
        _callscope._finish()
        return callscope.load(root=root)

    return _finish


def _env(root, extra=None):
    env = dict(os.environ)
    env["CALLSCOPE_DIR"] = str(root)
    env["CALLSCOPE_RUN_DIR"] = ""  # a run of its own, not this process's
    if extra:
        env.update(extra)
    return env


@pytest.fixture
def run_py(root, tmp_path):
    """Run a Python program (source text) in a real subprocess."""

    def _run(source, *args, check=True, env=None, timeout=300):
        script = tmp_path / "prog.py"
        script.write_text(textwrap.dedent(source))
        p = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path,
                           env=_env(root, env), capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"exit {p.returncode}\nstdout:{p.stdout}\nstderr:{p.stderr}")
        return p

    return _run


def cli_path():
    exe = os.path.join(os.path.dirname(sys.executable), "callscope")
    assert os.access(exe, os.X_OK), "the callscope command must be installed beside python"
    return exe


@pytest.fixture
def cli(root, tmp_path):
    """Run the real callscope command."""

    def _cli(*args, check=None, env=None, input=None, cwd=None):
        p = subprocess.run([cli_path(), *map(str, args)], cwd=cwd or tmp_path,
                           env=_env(root, env), capture_output=True, text=True,
                           input=input, timeout=300)
        if check is not None:
            assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
        return p

    return _cli


TOP_COLUMNS = ["share", "total", "self", "calls", "errors", "mean", "p50", "p95", "max", "cpu"]


def top_rows(stdout):
    """The rows of `callscope top`'s table, in order, as dicts of its
    columns (strings), with `function` and `where` (file:line, or "")."""
    lines = stdout.splitlines()
    head = lines[1].split()
    assert head[:len(TOP_COLUMNS)] == TOP_COLUMNS, head
    cols = TOP_COLUMNS + (["digits"] if "digits" in head else [])
    rows = []
    for line in lines[2:]:
        if line.startswith("("):
            continue
        parts = line.split()
        row = dict(zip(cols, parts))
        rest = parts[len(cols):]
        row["function"] = rest[0]
        row["where"] = rest[1] if len(rest) > 1 else ""
        rows.append(row)
    return rows
