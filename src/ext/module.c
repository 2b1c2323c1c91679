/* module.c -- the _callscope extension module: its state, types and
 * method table, the process-level switches (open, finish, fork, rank),
 * and the registry of value handlers. The read-side bindings are in
 * api.c, the call engine behind engine.h. */
#include "ext.h"
#include "cs_analysis.h"
#include "cs_store.h"

#include <string.h>

PyObject *
ext_raise_cs(ext_state *st, int rc, const char *what)
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
#ifdef Py_mod_gil
    /* the engine's per-thread state assumes one thread runs Python at a
     * time: free-threaded builds keep the GIL on for this module */
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
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
