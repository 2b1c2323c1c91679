/* module.c -- the _callscope extension module: types, and the thin
 * bindings to the store and analysis stages that the Python API uses. */
#include "ext.h"
#include "cs_analysis.h"
#include "cs_store.h"

#include <string.h>

static PyObject *
raise_cs(ext_state *st, int rc, const char *what)
{
    PyObject *type = rc == CS_ENOENT ? PyExc_FileNotFoundError : st->error;
    const char *detail = (rc == CS_ENOTDB || rc == CS_EDB || rc == CS_EVERSION ||
                          rc == CS_ENOTRUN)
                             ? cs_store_last_error()
                             : cs_strerror(rc);
    PyErr_Format(type, "%s: %s", what, detail);
    return NULL;
}

static PyObject *
py_finish(PyObject *mod, PyObject *unused)
{
    PyObject *r = profile_stop(mod, NULL); /* its aggregates go in first */
    Py_XDECREF(r);
    PyErr_Clear();
    rec_finish(0);
    Py_RETURN_NONE;
}

static PyObject *
py_reset(PyObject *mod, PyObject *unused)
{
    rec_reset();
    Py_RETURN_NONE;
}

static PyObject *
py_prepare_fork(PyObject *mod, PyObject *unused)
{
    rec_prepare_fork();
    Py_RETURN_NONE;
}

static PyObject *
py_child_exit(PyObject *mod, PyObject *args)
{
    long long pid, code;
    if (!PyArg_ParseTuple(args, "LL:_child_exit", &pid, &code))
        return NULL;
    rec_child_exit((uint64_t)pid, code);
    Py_RETURN_NONE;
}

static PyObject *
py_set_rank(PyObject *mod, PyObject *arg)
{
    long long rank = PyLong_AsLongLong(arg);
    if (rank == -1 && PyErr_Occurred())
        return NULL;
    if (rank < 0)
        return PyErr_Format(PyExc_ValueError, "set_rank(): the rank must be >= 0, not %lld",
                            rank);
    if (cs_log_is_open())
        return PyErr_Format(PyExc_RuntimeError,
                            "set_rank() must be called before the first recorded call of this"
                            " process");
    rec_manual_rank = rank;
    Py_RETURN_NONE;
}

static PyObject *
py_open_log(PyObject *mod, PyObject *unused)
{
    /* the run's clock starts now, not at the first record */
    rec_tstate();
    PyErr_Clear();
    Py_RETURN_NONE;
}

static PyObject *
py_run_dir(PyObject *mod, PyObject *unused)
{
    const char *d = cs_log_rundir();
    if (d == NULL)
        Py_RETURN_NONE;
    return PyUnicode_DecodeFSDefault(d);
}

static PyObject *
py_default_root(PyObject *mod, PyObject *unused)
{
    return PyUnicode_DecodeFSDefault(cs_run_root_default());
}

static PyObject *
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
        return raise_cs((ext_state *)PyModule_GetState(mod), rc, spec ? spec : root);
    PyObject *r = PyUnicode_DecodeFSDefault(out);
    cs__free(out);
    return r;
}

static PyObject *
py_sync(PyObject *mod, PyObject *args)
{
    const char *dir;
    if (!PyArg_ParseTuple(args, "s:_sync", &dir))
        return NULL;
    cs_sync_result sr;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cs_run_sync(dir, &sr);
    Py_END_ALLOW_THREADS
    if (rc != CS_OK)
        return raise_cs((ext_state *)PyModule_GetState(mod), rc, dir);
    return Py_BuildValue("{s:i,s:i,s:i,s:K,s:s}", "running", sr.running, "ingested",
                         sr.ingested, "failed", sr.failed, "bad_records",
                         (unsigned long long)sr.bad_records, "message", sr.message);
}

static PyObject *
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
        return raise_cs(st, rc, db);
    cs_fstat *v = NULL;
    size_t n = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = cs_stats(s, &q, &v, &n);
    Py_END_ALLOW_THREADS
    cs_store_close(s);
    if (rc != CS_OK)
        return raise_cs(st, rc, db);
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

static PyObject *
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
        return raise_cs(st, rc, db);
    cs_groups g;
    Py_BEGIN_ALLOW_THREADS
    rc = cs_stats_by(s, &q, by, &g);
    Py_END_ALLOW_THREADS
    cs_store_close(s);
    if (rc != CS_OK)
        return raise_cs(st, rc, db);
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

static PyObject *
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

static PyObject *
py_summary(PyObject *mod, PyObject *args)
{
    const char *dir;
    if (!PyArg_ParseTuple(args, "s:_summary", &dir))
        return NULL;
    cs_run_summary s;
    int rc = cs_run_summarize(dir, &s);
    if (rc != CS_OK) {
        cs_run_summary_free(&s);
        return raise_cs((ext_state *)PyModule_GetState(mod), rc, dir);
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

static PyObject *
py_list_runs(PyObject *mod, PyObject *args)
{
    const char *root;
    if (!PyArg_ParseTuple(args, "s:_list_runs", &root))
        return NULL;
    char **dirs = NULL;
    size_t n = 0;
    int rc = cs_run_list(root, &dirs, &n);
    if (rc != CS_OK)
        return raise_cs((ext_state *)PyModule_GetState(mod), rc, root);
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

/* Handlers for types that need their own save and load. */
static PyObject *
py_register(PyObject *mod, PyObject *args)
{
    PyObject *tp, *name, *save, *load;
    if (!PyArg_ParseTuple(args, "O!UOO:_register", &PyType_Type, &tp, &name, &save, &load))
        return NULL;
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    PyObject *h = PyTuple_Pack(3, name, save, load);
    if (h == NULL || PyDict_SetItem(st->handlers, tp, h) < 0) {
        Py_XDECREF(h);
        return NULL;
    }
    Py_DECREF(h);
    PyDict_Clear(st->handler_cache);
    Py_RETURN_NONE;
}

static PyObject *
py_unregister(PyObject *mod, PyObject *tp)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    if (PyDict_DelItem(st->handlers, tp) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError))
            return NULL;
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    PyDict_Clear(st->handler_cache);
    Py_RETURN_TRUE;
}

static PyObject *
py_hostname(PyObject *mod, PyObject *unused)
{
    char host[64]; /* as long as the log records it */
    cs_hostname(host, sizeof host);
    return PyUnicode_DecodeFSDefault(host);
}

static PyObject *
py_handlers(PyObject *mod, PyObject *unused)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    return PyDict_Copy(st->handlers);
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

static PyObject *
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

static PyObject *
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

static PyObject *
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

static PyMethodDef module_methods[] = {
    {"_export", py_export, METH_VARARGS, NULL},
    {"_compare", (PyCFunction)(void (*)(void))py_compare, METH_VARARGS | METH_KEYWORDS, NULL},
    {"_diff", py_diff, METH_VARARGS, NULL},
    {"_register", py_register, METH_VARARGS, NULL},
    {"_unregister", py_unregister, METH_O, NULL},
    {"_handlers", py_handlers, METH_NOARGS, NULL},
    {"_hostname", py_hostname, METH_NOARGS, "This host's name, as runs record it."},
    {"_decode", ext_decode, METH_VARARGS, NULL},
    {"_finish", py_finish, METH_NOARGS, "Close this process's log and store it in run.db."},
    {"_reset", py_reset, METH_NOARGS, "Finish, and forget all recording state (tests)."},
    {"_prepare_fork", py_prepare_fork, METH_NOARGS, "Settle the run before os.fork()."},
    {"_child_exit", py_child_exit, METH_VARARGS, "Record how a child process ended."},
    {"_open_log", py_open_log, METH_NOARGS, "Open this process's log now."},
    {"set_rank", py_set_rank, METH_O,
     "set_rank(rank)\n--\n\nTag this process with an MPI rank or worker number, for a program\n"
     "without a launcher that sets one. Call it before the first recorded call."},
    {"run_dir", py_run_dir, METH_NOARGS, "The directory of the run being recorded, or None."},
    {"default_root", py_default_root, METH_NOARGS, "$CALLSCOPE_DIR or 'callscope-runs'."},
    {"_resolve", py_resolve, METH_VARARGS, NULL},
    {"_sync", py_sync, METH_VARARGS, NULL},
    {"_stats", (PyCFunction)(void (*)(void))py_stats, METH_VARARGS | METH_KEYWORDS, NULL},
    {"_summary", py_summary, METH_VARARGS, NULL},
    {"_index", py_index, METH_VARARGS, NULL},
    {"_trace_start", (PyCFunction)(void (*)(void))trace_start, METH_VARARGS | METH_KEYWORDS, NULL},
    {"_trace_stop", trace_stop, METH_NOARGS, NULL},
    {"_trace_active", trace_active, METH_NOARGS, NULL},
    {"_profile_start", (PyCFunction)(void (*)(void))profile_start, METH_VARARGS | METH_KEYWORDS,
     NULL},
    {"_profile_stop", profile_stop, METH_NOARGS, NULL},
    {"_profile_active", profile_active, METH_NOARGS, NULL},
    {"_stats_by", (PyCFunction)(void (*)(void))py_stats_by, METH_VARARGS | METH_KEYWORDS, NULL},
    {"_list_runs", py_list_runs, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static int
module_exec(PyObject *mod)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    st->monitor_type = (PyTypeObject *)PyType_FromModuleAndSpec(mod, &monitor_spec, NULL);
    st->span_type = (PyTypeObject *)PyType_FromModuleAndSpec(mod, &span_spec, NULL);
    st->gencall_type = (PyTypeObject *)PyType_FromModuleAndSpec(mod, &gencall_spec, NULL);
    st->span_ids = PyDict_New();
    st->monitored = PySet_New(NULL);
    st->handlers = PyDict_New();
    st->handler_cache = PyDict_New();
    st->error = PyErr_NewExceptionWithDoc("callscope.CallscopeError",
                                          "A run or database could not be read.", NULL, NULL);
    if (!st->monitor_type || !st->span_type || !st->gencall_type || !st->span_ids || !st->error ||
        !st->monitored || !st->handlers || !st->handler_cache)
        return -1;
    if (PyModule_AddObjectRef(mod, "Monitor", (PyObject *)st->monitor_type) < 0 ||
        PyModule_AddObjectRef(mod, "span", (PyObject *)st->span_type) < 0 ||
        PyModule_AddObjectRef(mod, "GeneratorCall", (PyObject *)st->gencall_type) < 0 ||
        PyModule_AddObjectRef(mod, "CallscopeError", st->error) < 0)
        return -1;
    if (PyModule_AddIntConstant(mod, "LOG_VERSION", CS_LOG_VERSION) < 0 ||
        PyModule_AddIntConstant(mod, "SCHEMA_VERSION", CS_SCHEMA_VERSION) < 0)
        return -1;
    rec_init();
    return 0;
}

static int
module_traverse(PyObject *mod, visitproc visit, void *arg)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    Py_VISIT(st->monitor_type);
    Py_VISIT(st->span_type);
    Py_VISIT(st->gencall_type);
    Py_VISIT(st->format_exception);
    Py_VISIT(st->span_ids);
    Py_VISIT(st->error);
    Py_VISIT(st->monitored);
    Py_VISIT(st->handlers);
    Py_VISIT(st->handler_cache);
    Py_VISIT(st->pickle_dumps);
    return 0;
}

static int
module_clear(PyObject *mod)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    trace_free(st);
    Py_CLEAR(st->monitor_type);
    Py_CLEAR(st->span_type);
    Py_CLEAR(st->gencall_type);
    Py_CLEAR(st->format_exception);
    Py_CLEAR(st->span_ids);
    Py_CLEAR(st->error);
    Py_CLEAR(st->monitored);
    Py_CLEAR(st->handlers);
    Py_CLEAR(st->handler_cache);
    Py_CLEAR(st->pickle_dumps);
    return 0;
}

static void
module_free(void *mod)
{
    module_clear((PyObject *)mod);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "callscope._callscope",
    .m_doc = "The C engine of callscope.",
    .m_size = sizeof(ext_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__callscope(void);

PyMODINIT_FUNC
PyInit__callscope(void)
{
    return PyModuleDef_Init(&module_def);
}
