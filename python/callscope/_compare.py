"""Comparing runs from Python: ``callscope.compare`` (significant digits
kept across repeated runs) and ``callscope.diff`` (what changed between
two runs). The work is the C engine's, the numbers those of
``callscope compare``."""
import fnmatch
import os
from typing import List, NamedTuple, Optional, Tuple

from . import _callscope


class Digits(NamedTuple):
    """One function and one of its values (a parameter, or "result"):
    the significant digits of each aligned call (its worst number), and
    their min, median and max over the calls."""

    function: str
    value: str
    calls: int
    elements: int  #: numbers in the value (of the worst call)
    min: float
    median: float
    max: float
    worst_call: int  #: the call (its number in the first run) with the fewest digits
    worst_element: int  #: index of its worst number, in traversal order (arrays: flat)
    unequal: int  #: calls whose ints or bools differ across the runs
    per_call: List[float]  #: digits of each aligned call, in call order
    call_numbers: List[int]  #: and each call's number in the first run


class Comparison(NamedTuple):
    """What ``compare`` found: rows fewest digits first, and the calls or
    values that could not be paired across the runs."""

    runs: List[str]
    method: str
    confidence: float
    probability: float
    rows: List[Digits]
    misaligned: List[Tuple[str, str]]  #: (function, what); the first 200
    misaligned_total: int
    probability_shown: float  #: general method: what the runs show, with the confidence
    runs_needed: int  #: general method: runs needed for the probability asked
    comparison: int  #: its id in the first run's run.db (0 when not stored)
    values_compared: int  #: values (of one call, across all runs) compared

    def digits(self, function, value="result"):
        """The row of ``function`` (a full or dotted-tail name) and ``value``."""
        for r in self.rows:
            if (r.function == function or r.function.endswith("." + function)) and \
                    r.value == value:
                return r
        raise KeyError(f"no digits for {function} {value}")


class Change(NamedTuple):
    """One function, from run A to run B. Pairs are (A, B)."""

    function: str
    in_a: bool
    in_b: bool
    calls: Tuple[int, int]
    errors: Tuple[int, int]
    total_ns: Tuple[int, int]
    self_ns: Tuple[int, int]
    mean_ns: Tuple[float, float]
    p95_ns: Tuple[int, int]
    new_errors: Optional[str]  #: error types of B that A does not have
    results_compared: int
    results_changed: int
    first_changed: int  #: number of the first call whose result changed (0: none)
    digits: object  #: fewest digits two results share; "all" if all equal; None if none
    failing: bool  #: meets a fail_if condition


def _resolve(run, root):
    return _callscope._resolve(root, os.fspath(run))


def _runs(runs, root):
    root = os.fspath(root) if root is not None else _callscope.default_root()
    if isinstance(runs, str) and any(ch in runs for ch in "*?["):
        found = []
        for d in _callscope._list_runs(root):
            base = os.path.basename(d)
            parts = base.split("-", 3)  # <date>-<time>-<ms>-<name>, as the command reads it
            name = parts[3] if len(parts) == 4 and parts[3] else base
            if fnmatch.fnmatchcase(base, runs) or fnmatch.fnmatchcase(name, runs):
                found.append(d)
        if len(found) < 2:
            raise _callscope.CallscopeError(
                f"{runs!r}: {len(found)} run(s) match under {root}; at least 2 are needed")
        runs = found
    elif isinstance(runs, (str, os.PathLike)):
        raise TypeError("compare() needs several runs: a list, or a glob such as 'stab*'")
    dirs = [_resolve(r, root) for r in runs]
    for d in dirs:
        _callscope._sync(d)
    return dirs


def compare(runs, *, method="cnh", confidence=0.95, probability=0.99, align="number",
            filter=None, store=True, root=None):
    """How many significant digits every captured value keeps across the
    ``runs`` (a list of run names or paths, or a glob of run names such as
    ``"stab*"``): per function and value, fewest first.

    ``method`` is ``"cnh"`` (Centered Normal Hypothesis) or ``"general"``;
    ``align`` pairs calls by ``"number"`` (the n-th call), ``"callsite"``
    (the n-th call from the same caller) or ``"arg:NAME"``. With ``store``
    the results go into each run's run.db, where ``callscope top`` shows
    them. See docs/compare.md for the formulas."""
    dirs = _runs(runs, root)
    kind, _, arg = align.partition(":")
    if kind not in ("number", "callsite", "arg") or (kind == "arg") != bool(arg):
        raise ValueError(f"align must be 'number', 'callsite' or 'arg:NAME', not {align!r}")
    r = _callscope._compare(dirs, method, float(confidence), float(probability), kind,
                            arg or None, filter, bool(store))
    return Comparison(runs=dirs, method=method, confidence=confidence,
                      probability=probability, rows=[Digits(**x) for x in r["rows"]],
                      misaligned=r["misaligned"], misaligned_total=r["misaligned_total"],
                      probability_shown=r["probability_shown"], runs_needed=r["runs_needed"],
                      comparison=r["comparison"], values_compared=r["values_compared"])


def diff(a, b, *, filter=None, fail_if=(), root=None):
    """What changed from run ``a`` to run ``b``, per function, largest
    change first: a list of :class:`Change`. ``fail_if`` conditions (as
    ``callscope compare --fail-if``, e.g. ``"time>+10%"``) mark the rows
    that meet them as ``failing``."""
    root = os.fspath(root) if root is not None else _callscope.default_root()
    da, db = _resolve(a, root), _resolve(b, root)
    _callscope._sync(da)
    _callscope._sync(db)
    if isinstance(fail_if, str):
        fail_if = [fail_if]
    rows = _callscope._diff(da, db, filter, list(fail_if))
    return [Change(**x) for x in rows]
