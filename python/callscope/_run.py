"""Reading a recorded run: ``callscope.load()`` and the ``Run`` object.

Statistics come from the C analysis stage (the same numbers as
``callscope top``); rows come straight from run.db through sqlite3.
"""
import os
import sqlite3
import warnings
from typing import NamedTuple, Optional

from . import _callscope
from ._values import _ValuesMixin


class Function(NamedTuple):
    """A recorded function or span."""

    id: int
    name: str  #: module.qualname, or the name given with name=
    kind: str  #: "function" or "span"
    module: str
    qualname: str
    file: str
    line: int
    calls: int
    args: Optional[str]  #: argument names, comma-separated
    locals: Optional[str]  #: the other local variable names


class Process(NamedTuple):
    """A process of the run. Times are wall-clock ns since the Unix epoch."""

    pid: int
    ppid: int
    host: str
    rank: Optional[int]  #: MPI rank (or set by hand), else None
    size: Optional[int]  #: MPI world size, else None
    name: str  #: multiprocessing's name (MainProcess, ForkPoolWorker-1, ...) or the program's
    command: str
    start_wall: int
    end_wall: int
    state: str  #: "complete", or "killed" (it ended without closing its log)
    exit_code: Optional[int]  #: as its parent saw it, when the parent recorded it
    signal: Optional[int]  #: the signal that killed it, when its parent saw that
    calls: int


class Call(NamedTuple):
    """One recorded call. Times are nanoseconds: ``start``/``end`` on the
    process's monotonic clock, ``start_wall`` since the Unix epoch."""

    id: int
    parent: Optional[int]
    function: str
    start: int
    end: Optional[int]  #: None when unfinished
    wall: Optional[int]
    self: Optional[int]
    cpu: Optional[int]  #: with cpu=True
    rss_delta: Optional[int]  #: with memory=True
    peak_rss: Optional[int]  #: with memory=True
    status: str  #: "ok", "raised" or "unfinished"
    thread: int  #: OS thread id
    thread_name: str
    pid: int
    ppid: int
    host: str
    rank: Optional[int]
    start_wall: int
    error_type: Optional[str]
    error_message: Optional[str]


_NAME = "CASE WHEN f.module = '' THEN f.qualname ELSE f.module || '.' || f.qualname END"

_CALLS_SQL = f"""
SELECT c.id, c.parent, {_NAME}, c.start_ns, c.end_ns, c.wall_ns, c.self_ns, c.cpu_ns,
       c.rss_delta, c.peak_rss, c.status, t.tid, t.name, p.pid, p.ppid, p.host, p.rank,
       p.start_wall_ns + (c.start_ns - p.start_mono_ns), e.type, e.message
FROM calls c JOIN functions f ON f.id = c.function
JOIN threads t ON t.id = c.thread JOIN processes p ON p.id = t.process
LEFT JOIN errors e ON e.call = c.id
"""


def _match_sql(name):
    """A WHERE clause for a function name: exact, or a glob with * ? [."""
    if any(ch in name for ch in "*?["):
        return f"{_NAME} GLOB ?", name
    return f"{_NAME} = ?", name


class Run(_ValuesMixin):
    """A recorded run: its directory and its run.db."""

    def __init__(self, path, sync=None, trusted=False):
        self.path = os.fspath(path)
        self.trusted = trusted  #: pickled values load even from another user or host
        self.db_path = os.path.join(self.path, "run.db")
        self.sync = sync or {}
        self._indexed = False

    # -- raw access -------------------------------------------------------
    def sql(self, query, params=()):
        """Run a read-only SQL query on run.db and return its rows."""
        if not os.path.exists(self.db_path):
            return []
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            return con.execute(query, params).fetchall()
        except sqlite3.DatabaseError as e:
            raise _callscope.CallscopeError(f"{self.db_path}: {e}") from None
        finally:
            con.close()

    # -- questions ---------------------------------------------------------
    def functions(self):
        """Every recorded function and span, with its number of calls."""
        rows = self.sql(
            f"SELECT f.id, {_NAME}, f.kind, f.module, f.qualname, f.file, f.line,"
            " (SELECT count(*) FROM calls c WHERE c.function = f.id)"
            " + IFNULL((SELECT sum(pr.calls) FROM profile pr WHERE pr.function = f.id), 0),"
            " f.args, f.locals"
            " FROM functions f ORDER BY 2"
        )
        return [Function(*r) for r in rows]

    def calls(self, name=None, *, status=None, limit=None):
        """The calls of ``name``, in order of their start (wall clock, so
        calls of different processes interleave correctly). ``name`` is
        resolved as everywhere (``get()``, ``stats()``): a full name, or a
        bare or dotted tail ("step", "Solver.step") when it names one
        function; an ambiguous one raises CallscopeError listing the
        candidates. A glob (with * ? [) matches full names.

        ``status`` keeps only "ok", "raised" or "unfinished" calls."""
        where, params = [], []
        if name is not None:
            if not self._indexed and os.path.exists(self.db_path):
                self._indexed = _callscope._index(self.db_path)
            if any(ch in name for ch in "*?["):
                clause, p = _match_sql(name)
                where.append(clause)
                params.append(p)
            else:
                try:
                    ids, _ = self._function_ids(name)
                except _callscope.CallscopeError as e:
                    if "ambiguous" in str(e):
                        raise
                    return []  # no such function: no calls
                where.append(f"c.function IN ({','.join('?' * len(ids))})")
                params.extend(ids)
        if status is not None:
            if status not in ("ok", "raised", "unfinished"):
                raise ValueError(f"status must be 'ok', 'raised' or 'unfinished', not {status!r}")
            where.append("c.status = ?")
            params.append(status)
        q = (_CALLS_SQL + (" WHERE " + " AND ".join(where) if where else "")
             + " ORDER BY p.start_wall_ns + (c.start_ns - p.start_mono_ns), c.id")
        if limit is not None:
            q += f" LIMIT {int(limit)}"
        return [Call(*r) for r in self.sql(q, params)]

    def processes(self):
        """Every process of the run, in start order, with how it ended."""
        # A child's end is stored by whoever waited for it: its parent, or
        # the process that started it through a fork server. The parent's
        # record wins when both exist.
        exact = "FROM exits x WHERE x.host = p.host AND x.pid = p.pid AND x.ppid = p.ppid"
        other = "FROM exits x WHERE x.host = p.host AND x.pid = p.pid"
        exit_of = (f"(CASE WHEN EXISTS(SELECT 1 {exact}) THEN (SELECT x.{{0}} {exact})"
                   f" ELSE (SELECT x.{{0}} {other} LIMIT 1) END)")
        rows = self.sql(
            "SELECT p.pid, p.ppid, p.host, p.rank, p.size, p.name, p.command, p.start_wall_ns,"
            " p.start_wall_ns + (p.end_mono_ns - p.start_mono_ns), p.state, "
            + exit_of.format("exit_code") + ", " + exit_of.format("signal") + ","
            " (SELECT count(*) FROM calls c JOIN threads t ON t.id = c.thread"
            " WHERE t.process = p.id)"
            " FROM processes p ORDER BY p.start_wall_ns, p.id"
        )
        return [Process(*r) for r in rows]

    def errors(self, name=None):
        """(call id, function, type, message, traceback) of every raised call.

        An exception that propagates through several monitored calls has
        its traceback formatted once, where it was first recorded; the
        outer calls share that text."""
        q = (
            f"SELECT c.id, {_NAME}, e.type, e.message, COALESCE(e.traceback, o.traceback)"
            " FROM errors e JOIN calls c ON c.id = e.call JOIN functions f ON f.id = c.function"
            " LEFT JOIN errors o ON o.call = e.origin"
        )
        params = []
        if name is not None:
            clause, p = _match_sql(name)
            q += " WHERE " + clause
            params.append(p)
        return self.sql(q + " ORDER BY c.id", params)

    def stats(self, filter=None, sort="total", limit=0, pid=0, by=None, launcher=False):
        """Per function: calls, primitive calls (``prim_calls``: those made
        while no other call of the function was open on the thread), errors,
        total (of the primitive calls, as cProfile counts it), self, min,
        mean, p50, p95, max and CPU time, in ns -- the numbers of
        ``callscope top``. Launcher frames (runpy, the import system's
        bootstrap, callscope's own code) are left out unless ``launcher``.
        Functions counted only by the ``--all`` tree have no min or
        percentiles (None).

        With ``by="rank"`` or ``by="process"``: per function, the calls and
        time of each rank (or process) in ``per_group``, their min, mean and
        max over all ranks of the run, and the imbalance (max / mean time)
        -- the numbers of ``callscope top --by``."""
        if not os.path.exists(self.db_path):
            return []
        if by is not None:
            if pid:
                raise ValueError("pid= and by= do not combine")
            return _callscope._stats_by(self.db_path, by, filter, sort, limit)
        return _callscope._stats(self.db_path, filter, sort, limit, pid, launcher)

    def info(self):
        """One row of ``callscope info`` as a dict."""
        return _callscope._summary(self.path)

    def to_pandas(self, name=None):
        """The calls as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise _callscope.CallscopeError(
                "to_pandas() needs pandas: pip install pandas") from None
        return pd.DataFrame(self.calls(name), columns=Call._fields)

    def export(self, format, path):
        """Write the run to ``path`` as ``format``: "chrome" (Perfetto,
        chrome://tracing), "speedscope", "pstats" (pstats.Stats, snakeviz),
        "csv", "jsonl", or "parquet" (needs pyarrow). Returns the number of
        calls (pstats: functions) written; the same as ``callscope export``."""
        path = os.fspath(path)
        if format == "parquet":
            from ._export import write_parquet

            return write_parquet(self.path, path)
        return _callscope._export(self.path, format, path)

    def __repr__(self):
        info = self.info()
        lines = [
            f"<callscope run {os.path.basename(self.path)}: {info['functions']} functions,"
            f" {info['calls']} calls, {info['errors']} errors, {info['state']}>"
        ]
        rows = self.sql(
            f"SELECT {_NAME}, count(*), sum(c.status = 'raised'), sum(c.status = 'unfinished')"
            " FROM calls c JOIN functions f ON f.id = c.function GROUP BY f.id ORDER BY 2 DESC"
        )
        width = max((len(r[0]) for r in rows), default=0)
        for name, n, err, unf in rows[:50]:
            extra = "".join(
                [f", {err} raised" if err else "", f", {unf} unfinished" if unf else ""]
            )
            lines.append(f"  {name:<{width}}  {n} calls{extra}")
        if len(rows) > 50:
            lines.append(f"  ... {len(rows) - 50} more")
        return "\n".join(lines)


def load(run="latest", *, root=None, trusted=False):
    """Open a recorded run: "latest", a run name under the root, or a path
    to a run directory (or its run.db). Processes of the run that died are
    recovered first: their finished calls are stored, open ones marked
    unfinished.

    Captured values that were pickled are loaded only from runs that this
    user recorded on this host, since loading a pickle runs code; pass
    ``trusted=True`` to load them from any run."""
    root = os.fspath(root) if root is not None else _callscope.default_root()
    path = _callscope._resolve(root, os.fspath(run) if run is not None else None)
    sync = _callscope._sync(path)
    if sync["failed"]:
        warnings.warn(
            f"callscope: {sync['failed']} log(s) of {path} could not be read: {sync['message']}",
            RuntimeWarning,
            stacklevel=2,
        )
    return Run(path, sync, trusted=trusted)
