"""Run a script or module for ``callscope run``: the C command starts
``python -m callscope._launch -- SCRIPT ARGS`` or ``... -m MODULE ARGS``
with $CALLSCOPE_RUN_DIR set to the new run."""
import os
import runpy
import sys

import callscope  # noqa: F401  (registers the exit handler that stores the run)


def _configure(start):
    """Merge [tool.callscope] (or callscope.toml) under the command line's
    selection, export the result for child processes, and apply it."""
    from callscope import _config, _trace

    path = None
    try:
        path, table = _config.find(start)
        config = _config.validate(path, table) if path else {}
        cli = _trace._parse_env(os.environ.get("CALLSCOPE_TRACE"))
        sel = _trace._merge_config(cli, config)
        if sel["patterns"] or sel["modules"]:
            os.environ["CALLSCOPE_TRACE"] = _trace._to_env(sel)
            _trace._apply(sel)
        else:
            os.environ.pop("CALLSCOPE_TRACE", None)
            opts = ("memory", "args", "result", "print")
            if os.environ.get("CALLSCOPE_PROFILE_ALL") not in ("1", "cpu"):
                opts += ("cpu",)  # --cpu applies to --all too
            if sel["excludes"] or any(sel[k] for k in opts):
                print("callscope: warning: run: --exclude, --cpu, --memory, --args, --result"
                      " and --print apply to a selection (-t or --module); nothing is selected",
                      file=sys.stderr)
    except NotImplementedError:
        pass  # reported below
    except (_config.ConfigError, ValueError, TypeError, RecursionError) as e:
        # one line and status 2, as for any bad usage
        where = f" ({path})" if path and path not in str(e) else ""
        print(f"callscope: error: run: {e}{where}", file=sys.stderr)
        run = os.environ.get("CALLSCOPE_RUN_DIR")
        if run:  # tell `callscope run` the program never ran: it drops the run
            try:
                open(os.path.join(run, ".launch-failed"), "w").close()
            except OSError:
                pass
        sys.exit(2)


def main(argv):
    os.environ.pop("CALLSCOPE_LAUNCH_PID", None)  # for this process only
    start = os.getcwd()
    if len(argv) >= 2 and argv[0] == "--":
        start = os.path.dirname(os.path.abspath(argv[1]))
    _configure(start)
    profiling = os.environ.get("CALLSCOPE_PROFILE_ALL") in ("1", "cpu")
    if profiling:
        callscope._callscope._open_log()  # the run's times start with the program
        try:
            # here, not at import: the launcher's own start-up is not profiled
            callscope._trace._start_profile_from_environment()
        except RuntimeError as e:
            sys.exit(f"callscope: error: run: --all could not start: {e}")
        if not callscope._callscope._profile_active():
            sys.exit("callscope: error: run: --all could not start")
    if os.environ.get("CALLSCOPE_TRACE") and not callscope._callscope._trace_active():
        sys.exit("callscope: error: run: the selection (-t/--module) could not start")
    if len(argv) >= 2 and argv[0] == "-m":
        sys.argv = [argv[1]] + argv[2:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif len(argv) >= 2 and argv[0] == "--":
        script = argv[1]
        sys.argv = argv[1:]
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        runpy.run_path(script, run_name="__main__")
    else:
        sys.exit("usage: python -m callscope._launch (-- SCRIPT | -m MODULE) [ARGS...]")


if __name__ == "__main__":
    main(sys.argv[1:])
