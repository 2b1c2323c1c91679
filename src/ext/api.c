/* api.c -- the read side of the Python API: thin bindings from run
 * directories and run.db to the store and analysis stages (resolve and
 * sync a run, statistics, comparisons, exports). The C library does the
 * work; these convert its results to Python objects. */
#include "ext.h"
#include "cs_analysis.h"
#include "cs_store.h"

#include <string.h>

PyObject *
py_resolve(PyObject *mod, PyObject *args)
{
    const char *root, *spec = NULL;
    if (!PyArg_ParseTuple(args, "s|z:_resolve", &root, &spec))
        return NULL;
    char *out = NULL;
    int rc = cs_run_resolve(root, spec, &out);
    if (rc == CS_ENOENT) {
        if (spec == NULL || strcmp(spec, "latest") == 0)
            return PyErr_Format(PyExc_FileNotFoundError, "no runs in %s", root);
        return PyErr_Format(PyExc_FileNotFoundError, "run not found: %s", spec);
    }
    if (rc == CS_ENOTRUN)
        return PyErr_Format(((ext_state *)PyModule_GetState(mod))->error,
                            "%s: not a callscope run (no run.db, no logs)", spec ? spec : root);
    if (rc != CS_OK)
        return ext_raise_cs((ext_state *)PyModule_GetState(mod), rc, spec ? spec : root);
    PyObject *r = PyUnicode_DecodeFSDefault(out);
    cs__free(out);
    return r;
}

PyObject *
py_sync(PyObject *mod, PyObject *args)
{
    const char *dir;
    if (!PyArg_ParseTuple(args, "s:_sync", &dir))
        return NULL;
    cs_sync_result sr;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cs_run_sync(dir, &sr);
    if (rc == CS_OK)
        (void)cs_run_expand(dir); /* (a read-only run.db keeps its trees pending) */
    Py_END_ALLOW_THREADS
    if (rc != CS_OK)
        return ext_raise_cs((ext_state *)PyModule_GetState(mod), rc, dir);
    return Py_BuildValue("{s:i,s:i,s:i,s:K,s:s}", "running", sr.running, "ingested",
                         sr.ingested, "failed", sr.failed, "bad_records",
                         (unsigned long long)sr.bad_records, "message", sr.message);
}

PyObject *
py_stats(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"db", "filter", "sort", "limit", "pid", "launcher", NULL};
    const char *db, *filter = NULL, *sort = "total";
    Py_ssize_t limit = 0;
    long long pid = 0;
    int launcher = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|zsnLp:_stats", kwlist, &db, &filter, &sort,
                                     &limit, &pid, &launcher))
        return NULL;
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    cs_stats_query q = {.filter = filter, .limit = limit > 0 ? (size_t)limit : 0, .pid = pid,
                        .launcher = launcher};
    if (cs_sort_parse(sort, &q.sort) != CS_OK)
        return PyErr_Format(PyExc_ValueError, "unknown sort key '%s' (use one of: %s)", sort,
                            cs_sort_names());
    cs_store *s = NULL;
    int rc = cs_store_open(db, 0, &s);
    if (rc != CS_OK)
        return ext_raise_cs(st, rc, db);
    cs_fstat *v = NULL;
    size_t n = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = cs_stats(s, &q, &v, &n);
    Py_END_ALLOW_THREADS
    cs_store_close(s);
    if (rc != CS_OK)
        return ext_raise_cs(st, rc, db);
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++) {
        const cs_fstat *f = &v[i];
        int has = f->calls > f->unfinished;
        /* min and percentiles are None where only the --all tree counted
         * the function: it keeps totals per call path, not each call */
#define Q(v) (f->quantiles ? PyLong_FromUnsignedLongLong(v) : Py_NewRef(Py_None))
        PyObject *d = Py_BuildValue(
            "{s:s,s:s,s:s,s:L,s:K,s:K,s:K,s:K,s:K,s:K,s:N,s:K,s:N,s:N,s:d,s:N}", "function",
            f->name, "kind", f->kind, "file", f->file, "line", (long long)f->line, "calls",
            (unsigned long long)f->calls, "prim_calls", (unsigned long long)f->prim_calls,
            "errors", (unsigned long long)f->errors, "unfinished",
            (unsigned long long)f->unfinished, "total_ns", (unsigned long long)f->total_ns,
            "self_ns", (unsigned long long)f->self_ns, "min_ns", Q(has ? f->min_ns : 0),
            "max_ns", (unsigned long long)f->max_ns, "p50_ns", Q(f->p50_ns), "p95_ns",
            Q(f->p95_ns), "mean_ns", f->mean_ns, "cpu_ns",
            f->cpu_calls ? PyLong_FromUnsignedLongLong(f->cpu_ns) : Py_NewRef(Py_None));
#undef Q
        if (d == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, d);
    }
    cs_stats_free(v, n);
    return list;
}

PyObject *
py_stats_by(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"db", "by", "filter", "sort", "limit", NULL};
    const char *db, *byname, *filter = NULL, *sort = "total";
    Py_ssize_t limit = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ss|zsn:_stats_by", kwlist, &db, &byname, &filter,
                                     &sort, &limit))
        return NULL;
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    cs_group_by by;
    if (cs_group_parse(byname, &by) != CS_OK)
        return PyErr_Format(PyExc_ValueError, "by must be 'rank' or 'process', not '%s'", byname);
    cs_stats_query q = {.filter = filter, .limit = limit > 0 ? (size_t)limit : 0};
    if (cs_sort_parse(sort, &q.sort) != CS_OK)
        return PyErr_Format(PyExc_ValueError, "unknown sort key '%s' (use one of: %s)", sort,
                            cs_sort_names());
    cs_store *s = NULL;
    int rc = cs_store_open(db, 0, &s);
    if (rc != CS_OK)
        return ext_raise_cs(st, rc, db);
    cs_groups g;
    Py_BEGIN_ALLOW_THREADS
    rc = cs_stats_by(s, &q, by, &g);
    Py_END_ALLOW_THREADS
    cs_store_close(s);
    if (rc != CS_OK)
        return ext_raise_cs(st, rc, db);
    PyObject *list = PyList_New((Py_ssize_t)g.nf);
    for (size_t i = 0; list && i < g.nf; i++) {
        const cs_gstat *f = &g.f[i];
        PyObject *per = PyDict_New();
        for (size_t k = 0; per && k < g.n; k++) {
            PyObject *key = by == CS_BY_RANK ? (g.v[k].key >= 0 ? PyLong_FromLongLong(g.v[k].key)
                                                                : Py_NewRef(Py_None))
                                             : PyUnicode_FromString(g.v[k].label);
            PyObject *val = Py_BuildValue("{s:K,s:K}", "calls",
                                          (unsigned long long)f->group_calls[k], "total_ns",
                                          (unsigned long long)f->group_total[k]);
            if (key == NULL || val == NULL || PyDict_SetItem(per, key, val) < 0)
                Py_CLEAR(per);
            Py_XDECREF(key);
            Py_XDECREF(val);
        }
        PyObject *d = per ? Py_BuildValue(
                                "{s:s,s:K,s:n,s:n,s:d,s:d,s:d,s:d,s:d,s:d,s:d,s:N}", "function",
                                f->name, "calls", (unsigned long long)f->calls, "groups",
                                (Py_ssize_t)g.n, "present", (Py_ssize_t)f->present, "calls_min",
                                f->calls_min, "calls_mean", f->calls_mean, "calls_max",
                                f->calls_max, "total_min_ns", f->total_min, "total_mean_ns",
                                f->total_mean, "total_max_ns", f->total_max, "imbalance",
                                f->imbalance, "per_group", per)
                          : NULL;
        if (d == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, d);
    }
    cs_groups_free(&g);
    return list;
}

PyObject *
py_index(PyObject *mod, PyObject *args)
{
    const char *db;
    if (!PyArg_ParseTuple(args, "s:_index", &db))
        return NULL;
    cs_store *s = NULL;
    int rc = cs_store_open(db, 0, &s);
    if (rc == CS_OK) {
        Py_BEGIN_ALLOW_THREADS
        rc = cs_store_index(s);
        Py_END_ALLOW_THREADS
    }
    cs_store_close(s);
    /* a read-only run is still readable, only slower to search */
    return PyBool_FromLong(rc == CS_OK);
}

PyObject *
py_summary(PyObject *mod, PyObject *args)
{
    const char *dir;
    if (!PyArg_ParseTuple(args, "s:_summary", &dir))
        return NULL;
    cs_run_summary s;
    int rc = cs_run_summarize(dir, &s);
    if (rc != CS_OK) {
        cs_run_summary_free(&s);
        return ext_raise_cs((ext_state *)PyModule_GetState(mod), rc, dir);
    }
    PyObject *r = Py_BuildValue(
        "{s:s,s:s,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:s}", "dir", s.dir, "command",
        s.command ? s.command : "", "start_wall_ns", (unsigned long long)s.start_wall_ns,
        "duration_ns", (unsigned long long)s.duration_ns, "processes",
        (unsigned long long)s.processes, "threads", (unsigned long long)s.threads, "calls",
        (unsigned long long)s.calls, "errors", (unsigned long long)s.errors, "functions",
        (unsigned long long)s.functions, "disk_bytes", (unsigned long long)s.disk_bytes,
        "state", cs_run_state_name(s.state));
    cs_run_summary_free(&s);
    return r;
}

PyObject *
py_list_runs(PyObject *mod, PyObject *args)
{
    const char *root;
    if (!PyArg_ParseTuple(args, "s:_list_runs", &root))
        return NULL;
    char **dirs = NULL;
    size_t n = 0;
    int rc = cs_run_list(root, &dirs, &n);
    if (rc != CS_OK)
        return ext_raise_cs((ext_state *)PyModule_GetState(mod), rc, root);
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++) {
        PyObject *p = PyUnicode_DecodeFSDefault(dirs[i]);
        if (p == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, p);
    }
    cs_run_list_free(dirs, n);
    return list;
}

/* A list of the doubles at v[0..n). */
static PyObject *
double_list(const double *v, const uint64_t *u, size_t n)
{
    PyObject *l = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; l && i < n; i++) {
        PyObject *x = v ? PyFloat_FromDouble(v[i]) : PyLong_FromUnsignedLongLong(u[i]);
        if (x == NULL) {
            Py_CLEAR(l);
            break;
        }
        PyList_SET_ITEM(l, (Py_ssize_t)i, x);
    }
    return l;
}

PyObject *
py_compare(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"dirs",  "method", "confidence", "probability", "align",
                             "align_arg", "filter", "store", NULL};
    PyObject *dirs;
    const char *method = "cnh", *align = "number", *align_arg = NULL, *filter = NULL;
    double confidence = 0.95, probability = 0.99;
    int store = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|sddszzp:_compare", kwlist, &dirs, &method,
                                     &confidence, &probability, &align, &align_arg, &filter,
                                     &store))
        return NULL;
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    cs_compare_opts o = {.confidence = confidence, .probability = probability,
                         .align_arg = align_arg, .filter = filter, .store = store};
    o.method = strcmp(method, "cnh") == 0 ? CS_DIGITS_CNH
               : strcmp(method, "general") == 0 ? CS_DIGITS_GENERAL : 0;
    if (o.method == 0) {
        PyErr_Format(PyExc_ValueError, "method must be 'cnh' or 'general', not '%s'", method);
        return NULL;
    }
    if (strcmp(align, "number") == 0)
        o.align = CS_ALIGN_NUMBER;
    else if (strcmp(align, "callsite") == 0)
        o.align = CS_ALIGN_CALLSITE;
    else if (strcmp(align, "arg") == 0)
        o.align = CS_ALIGN_ARG;
    else {
        PyErr_Format(PyExc_ValueError, "align must be 'number', 'callsite' or 'arg:NAME'");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(dirs, "dirs must be a sequence of run directories");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    const char **v = PyMem_Calloc((size_t)(n ? n : 1), sizeof *v);
    for (Py_ssize_t i = 0; v && i < n; i++) {
        v[i] = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(seq, i));
        if (v[i] == NULL) {
            PyMem_Free(v);
            Py_DECREF(seq);
            return NULL;
        }
    }
    if (v == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    cs_compare_result r;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cs_compare(v, (size_t)n, &o, &r);
    Py_END_ALLOW_THREADS
    PyMem_Free(v);
    Py_DECREF(seq);
    if (rc != CS_OK) {
        PyErr_SetString(st->error, cs_compare_last_error());
        return NULL;
    }
    PyObject *rows = PyList_New((Py_ssize_t)r.nrows), *mis = PyList_New((Py_ssize_t)r.nmis);
    for (size_t i = 0; rows && i < r.nrows; i++) {
        const cs_digit_row *x = &r.rows[i];
        PyObject *pc = double_list(x->per_call, NULL, x->calls);
        PyObject *cn = double_list(NULL, x->call_no, x->calls);
        PyObject *d = pc && cn ? Py_BuildValue(
                                     "{s:s,s:s,s:K,s:K,s:d,s:d,s:d,s:K,s:K,s:K,s:O,s:O}",
                                     "function", x->function, "value", x->value, "calls",
                                     (unsigned long long)x->calls, "elements",
                                     (unsigned long long)x->elements, "min", x->min, "median",
                                     x->median, "max", x->max, "worst_call",
                                     (unsigned long long)x->worst_call, "worst_element",
                                     (unsigned long long)x->worst_element, "unequal",
                                     (unsigned long long)x->unequal, "per_call", pc, "call_numbers",
                                     cn)
                               : NULL;
        Py_XDECREF(pc);
        Py_XDECREF(cn);
        if (d == NULL) {
            Py_CLEAR(rows);
            break;
        }
        PyList_SET_ITEM(rows, (Py_ssize_t)i, d);
    }
    for (size_t i = 0; mis && i < r.nmis; i++) {
        PyObject *d = Py_BuildValue("(ss)", r.mis[i].function, r.mis[i].what);
        if (d == NULL) {
            Py_CLEAR(mis);
            break;
        }
        PyList_SET_ITEM(mis, (Py_ssize_t)i, d);
    }
    PyObject *res = rows && mis ? Py_BuildValue(
                                      "{s:O,s:O,s:n,s:L,s:d,s:n,s:K}", "rows", rows,
                                      "misaligned", mis, "misaligned_total",
                                      (Py_ssize_t)r.mis_total, "comparison",
                                      (long long)r.comparison, "probability_shown",
                                      r.digits.general_probability, "runs_needed",
                                      (Py_ssize_t)r.digits.general_runs_needed,
                                      "values_compared",
                                      (unsigned long long)r.values_compared)
                                : NULL;
    Py_XDECREF(rows);
    Py_XDECREF(mis);
    cs_compare_free(&r);
    return res;
}

PyObject *
py_diff(PyObject *mod, PyObject *args)
{
    const char *a, *b, *filter = NULL;
    PyObject *gates = NULL;
    if (!PyArg_ParseTuple(args, "ss|zO:_diff", &a, &b, &filter, &gates))
        return NULL;
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    cs_gate g[16];
    Py_ssize_t ng = 0;
    if (gates && gates != Py_None) {
        PyObject *seq = PySequence_Fast(gates, "fail_if must be a list of conditions");
        if (seq == NULL)
            return NULL;
        ng = PySequence_Fast_GET_SIZE(seq);
        if (ng > 16) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "fail_if: at most 16 conditions");
            return NULL;
        }
        for (Py_ssize_t i = 0; i < ng; i++) {
            const char *t = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(seq, i));
            char why[128];
            if (t == NULL || cs_gate_parse(t, &g[i], why) != CS_OK) {
                if (t)
                    PyErr_Format(PyExc_ValueError, "fail_if %s", why);
                Py_DECREF(seq);
                return NULL;
            }
        }
        /* the texts live in the list's strings while it is alive */
        Py_DECREF(seq);
    }
    cs_diff_result r;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cs_diff(a, b, filter, &r);
    Py_END_ALLOW_THREADS
    if (rc != CS_OK) {
        PyErr_SetString(st->error, cs_compare_last_error());
        return NULL;
    }
    PyObject *rows = PyList_New((Py_ssize_t)r.n);
    for (size_t i = 0; rows && i < r.n; i++) {
        const cs_diff_row *x = &r.rows[i];
        int fails = 0;
        for (Py_ssize_t k = 0; k < ng && !fails; k++)
            fails = cs_gate_fails(&g[k], x);
        PyObject *digits = x->digits == -1 ? Py_NewRef(Py_None)
                           : x->digits == -2 ? PyUnicode_FromString("all")
                                             : PyFloat_FromDouble(x->digits);
        PyObject *d = digits ? Py_BuildValue(
                                   "{s:s,s:O,s:O,s:(KK),s:(KK),s:(KK),s:(KK),s:(dd),s:(KK),"
                                   "s:z,s:K,s:K,s:K,s:O,s:O}",
                                   "function", x->function, "in_a", x->in_a ? Py_True : Py_False,
                                   "in_b", x->in_b ? Py_True : Py_False, "calls",
                                   (unsigned long long)x->calls[0],
                                   (unsigned long long)x->calls[1], "errors",
                                   (unsigned long long)x->errors[0],
                                   (unsigned long long)x->errors[1], "total_ns",
                                   (unsigned long long)x->total[0],
                                   (unsigned long long)x->total[1], "self_ns",
                                   (unsigned long long)x->self[0],
                                   (unsigned long long)x->self[1], "mean_ns", x->mean[0],
                                   x->mean[1], "p95_ns", (unsigned long long)x->p95[0],
                                   (unsigned long long)x->p95[1], "new_errors", x->new_errors,
                                   "results_compared", (unsigned long long)x->results_compared,
                                   "results_changed", (unsigned long long)x->results_changed,
                                   "first_changed", (unsigned long long)x->first_changed,
                                   "digits", digits, "failing", fails ? Py_True : Py_False)
                             : NULL;
        Py_XDECREF(digits);
        if (d == NULL) {
            Py_CLEAR(rows);
            break;
        }
        PyList_SET_ITEM(rows, (Py_ssize_t)i, d);
    }
    cs_diff_free(&r);
    return rows;
}

PyObject *
py_export(PyObject *mod, PyObject *args)
{
    const char *dir, *format, *path;
    if (!PyArg_ParseTuple(args, "sss:_export", &dir, &format, &path))
        return NULL;
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    cs_export_format fmt;
    if (cs_export_parse(format, &fmt) != CS_OK) {
        PyErr_Format(PyExc_ValueError, "unknown format '%s' (%s, parquet)", format,
                     cs_export_names());
        return NULL;
    }
    char *dbp = cs__path_join(dir, "run.db");
    cs_store *s = NULL;
    int rc = dbp ? cs_store_open(dbp, 0, &s) : CS_ENOMEM;
    cs__free(dbp);
    if (rc != CS_OK) {
        PyErr_SetString(st->error, rc == CS_ENOENT ? "no calls recorded yet" : cs_store_last_error());
        return NULL;
    }
    FILE *f = fopen(path, fmt == CS_EXPORT_PSTATS ? "wb" : "w");
    if (f == NULL) {
        cs_store_close(s);
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, path);
    }
    uint64_t rows = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = cs_export(s, fmt, f, &rows);
    Py_END_ALLOW_THREADS
    int werr = ferror(f);
    if (fclose(f) != 0)
        werr = 1;
    cs_store_close(s);
    if (rc != CS_OK || werr) {
        PyErr_Format(st->error, "export to %s failed: %s", path,
                     rc != CS_OK ? cs_export_last_error() : "write error (disk full?)");
        return NULL;
    }
    return PyLong_FromUnsignedLongLong((unsigned long long)rows);
}
