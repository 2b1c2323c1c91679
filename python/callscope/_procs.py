"""One run for a whole process tree.

A process that starts recording creates the run and exports its directory
in $CALLSCOPE_RUN_DIR, so children join it. This module makes sure that
also holds when children start before the parent records anything, and
that multiprocessing workers, which leave through os._exit, still close
their logs:

- before ``os.fork``, ``multiprocessing`` starting a process (fork, spawn
  or forkserver) and ``subprocess.Popen``, the run is settled and exported;
  a ``subprocess`` given its own ``env`` gets the run added to it, unless
  that env sets CALLSCOPE_RUN_DIR itself ("" starts a run of its own);
- in a multiprocessing worker, the log is closed by multiprocessing's exit
  finalizers;
- when a parent learns how a child ended (``Process.join``, ``Popen.wait``
  and friends), the exit code or signal goes into the run.

multiprocessing and subprocess are hooked when they are imported, so
importing callscope does not import them.
"""
import os
import sys

from . import _callscope

_LAST = -(2**31)  # finalizer priority: after every other finalizer


def _close_in_worker(*_):
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        util.Finalize(None, _callscope._finish, exitpriority=_LAST)


def _hook_multiprocessing(process):
    import functools  # (loaded already by what is being hooked)
    import multiprocessing.util as util  # needs only multiprocessing.process
    # Runs in every worker at start (fork, spawn, forkserver) after the
    # finalizer registry is cleared.
    util.register_after_fork(_callscope, _close_in_worker)
    if process.parent_process() is not None:
        _close_in_worker()  # callscope was imported inside a running worker
    start = process.BaseProcess.start

    @functools.wraps(start)
    def _start(self):
        _callscope._prepare_fork()
        return start(self)

    process.BaseProcess.start = _start
    join = process.BaseProcess.join

    @functools.wraps(join)
    def _join(self, timeout=None):
        join(self, timeout)
        code = self.exitcode
        if code is not None and not getattr(self, "_callscope_exit", False):
            self._callscope_exit = True
            _callscope._child_exit(self.pid, code)

    process.BaseProcess.join = _join


def _hook_subprocess(subprocess):
    import functools  # (loaded already by what is being hooked)

    init = subprocess.Popen.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        env = kwargs.get("env")
        if env is None or "CALLSCOPE_RUN_DIR" not in env:
            _callscope._prepare_fork()
            run = os.environ.get("CALLSCOPE_RUN_DIR")
            if run and env is not None:
                env = dict(env)
                env["CALLSCOPE_RUN_DIR"] = run
                kwargs["env"] = env
        # the child is in this process's run if it inherits the run's directory
        run = (env if env is not None else os.environ).get("CALLSCOPE_RUN_DIR")
        self._callscope_run = bool(run) and run == os.environ.get("CALLSCOPE_RUN_DIR")
        init(self, *args, **kwargs)

    subprocess.Popen.__init__ = __init__
    handle = getattr(subprocess.Popen, "_handle_exitstatus", None)
    if handle is not None:  # where every wait()/poll() learns the status

        @functools.wraps(handle)
        def _handle_exitstatus(self, *args, **kwargs):
            handle(self, *args, **kwargs)
            if (self.returncode is not None and getattr(self, "_callscope_run", False)
                    and not getattr(self, "_callscope_exit", False)):
                self._callscope_exit = True
                _callscope._child_exit(self.pid, self.returncode)

        subprocess.Popen._handle_exitstatus = _handle_exitstatus


class _HookLoader:
    """A module's own loader, then a hook on the loaded module."""

    def __init__(self, loader, hook):
        self._loader = loader
        self._hook = hook

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._hook(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _AfterImport:
    """A meta path entry that finds nothing itself: it hands the named
    modules to their usual finders and hooks them once loaded."""

    def __init__(self, hooks):
        self.hooks = hooks

    def find_spec(self, name, path, target=None):
        hook = self.hooks.get(name)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                del self.hooks[name]
                spec.loader = _HookLoader(spec.loader, hook)
                return spec
        return None


def install():
    def _on_fork():
        # A child forked before this process recorded anything still joins
        # its run.
        _callscope._prepare_fork()

    os.register_at_fork(before=_on_fork)
    hooks = {"multiprocessing.process": _hook_multiprocessing, "subprocess": _hook_subprocess}
    for name in list(hooks):
        module = sys.modules.get(name)
        if module is not None:
            hooks.pop(name)(module)
    if hooks:
        sys.meta_path.insert(0, _AfterImport(hooks))
