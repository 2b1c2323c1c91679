"""Parquet export, through pyarrow (an optional dependency): the rows of
``callscope export --format jsonl``, typed. ``callscope export --format
parquet`` runs ``python -m callscope._export RUNDIR PATH``."""
import os
import sys
import tempfile

from . import _callscope

#: the columns and their Arrow types; times in ns, memory in bytes
_SCHEMA = [
    ("id", "int64"), ("parent", "int64"), ("function", "string"), ("file", "string"),
    ("line", "int64"), ("pid", "int64"), ("ppid", "int64"), ("host", "string"),
    ("rank", "int64"), ("process_name", "string"), ("parent_process_name", "string"),
    ("tid", "int64"), ("thread_name", "string"), ("start_wall_ns", "int64"),
    ("wall_ns", "int64"), ("self_ns", "int64"), ("cpu_ns", "int64"), ("rss_delta", "int64"),
    ("status", "string"), ("error_type", "string"), ("error_message", "string"),
    ("traceback", "string"), ("args", "string"), ("result", "string"),
]


def write_parquet(rundir, path):
    """Write the calls of the run in ``rundir`` to ``path`` as Parquet.
    Returns the number of rows."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise _callscope.CallscopeError(
            "Parquet export needs pyarrow: pip install pyarrow"
            " (or pip install 'callscope[parquet]')") from None
    import pyarrow.json as pj

    fd, tmp = tempfile.mkstemp(suffix=".jsonl")
    os.close(fd)
    schema = pa.schema([(n, getattr(pa, t)()) for n, t in _SCHEMA])
    try:
        _callscope._export(rundir, "jsonl", tmp)
        if os.path.getsize(tmp) == 0:
            table = schema.empty_table()
        else:
            # Arrow's own JSON reader: the rows never become Python objects
            table = pj.read_json(tmp, parse_options=pj.ParseOptions(explicit_schema=schema),
                                 read_options=pj.ReadOptions(block_size=1 << 24))
    finally:
        os.unlink(tmp)
    pq.write_table(table, path)
    return table.num_rows


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: python -m callscope._export RUNDIR PATH")
    try:
        write_parquet(argv[0], argv[1])
    except _callscope.CallscopeError as e:
        sys.exit(f"callscope: error: export: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
