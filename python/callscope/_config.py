"""``[tool.callscope]`` in pyproject.toml, or callscope.toml beside the
program: the selection ``callscope run`` applies when its command line
does not say otherwise.

    [tool.callscope]            # in callscope.toml: no table header needed
    trace = ["mypkg.solver.*", "numpy.linalg.solve"]
    module = ["mypkg"]
    exclude = ["mypkg.vendor.*"]
    cpu = true
    memory = false
    args = true                 # capture arguments and results of selected calls
    result = true
    redact = ["password", "*token*"]
    max_arg_length = 200
    max_bytes = 4194304

Precedence: command-line flags, then this file, then the defaults. Each
key is taken from the first that gives it.
"""
import os

KEYS = {"trace": list, "module": list, "exclude": list, "cpu": bool, "memory": bool,
        "args": bool, "result": bool, "redact": list, "max_arg_length": int, "max_bytes": int,
        "print": "print", "c_functions": bool, "capture": "capture"}
_INT_LIMITS = {"max_arg_length": 2**31 - 1, "max_bytes": 2**29}


class ConfigError(ValueError):
    """A configuration file that cannot be used, with the file and key."""


def _toml_load(path):
    try:
        import tomllib as toml
    except ModuleNotFoundError:  # Python 3.10
        import tomli as toml
    try:
        with open(path, "rb") as f:
            return toml.load(f)
    except toml.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read: {e}") from None


def find(start):
    """The configuration that applies to a program in directory `start`:
    (path, table) from the nearest callscope.toml, or pyproject.toml with a
    [tool.callscope] table, in `start` or its parents; (None, {}) if none."""
    d = os.path.abspath(start)
    while True:
        own = os.path.join(d, "callscope.toml")
        if os.path.isfile(own):
            data = _toml_load(own)
            return own, data.get("tool", {}).get("callscope", data)
        project = os.path.join(d, "pyproject.toml")
        if os.path.isfile(project):
            table = _toml_load(project).get("tool", {}).get("callscope")
            if table is not None:
                return project, table
        parent = os.path.dirname(d)
        if parent == d:
            return None, {}
        d = parent


def validate(path, table):
    """The table's settings as {key: value}, or ConfigError naming the key."""
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.callscope] must be a table")
    out = {}
    for key, value in table.items():
        kind = KEYS.get(key)
        if kind is None:
            raise ConfigError(f"{path}: [tool.callscope]: unknown key '{key}'"
                              f" (known: {', '.join(KEYS)})")
        if kind is list:
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: [tool.callscope]: '{key}' must be a string or"
                                  " a list of strings")
        elif kind == "print":
            if value not in (True, False, "json", "text"):
                raise ConfigError(f"{path}: [tool.callscope]: 'print' must be true, false,"
                                  ' "text" or "json"')
        elif kind == "capture":
            if value not in ("full", "safe"):
                raise ConfigError(f"{path}: [tool.callscope]: 'capture' must be \"full\" or"
                                  ' "safe"')
        elif kind is int:
            limit = _INT_LIMITS[key]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
                raise ConfigError(f"{path}: [tool.callscope]: '{key}' must be an integer"
                                  f" from 1 to {limit}")
        elif not isinstance(value, bool):
            raise ConfigError(f"{path}: [tool.callscope]: '{key}' must be true or false")
        out[key] = value
    return out
