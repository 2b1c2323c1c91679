/* profile.c -- `--all` (callscope run --all, callscope.profile_all()):
 * every call of the program, Python functions, C functions and generator
 * resumptions, counted as cProfile counts them into the calling-context
 * tree of sink_tree.c. It only starts and stops: the event sources
 * (events_mon.c, events_eval.c) follow the switch. See engine.h. */
#include "engine.h"

PyObject *
profile_start(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"own", "cpu", "c_calls", "max_nodes", NULL};
    const char *own = NULL;
    int cpu = 0, c_calls = 1;
    unsigned long long max_nodes = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|zppK:_profile_start", kwlist, &own, &cpu,
                                     &c_calls, &max_nodes))
        return NULL;
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    if (st->eng.tree_on)
        Py_RETURN_NONE;
    if (tree_begin(st->monitored, own, cpu, max_nodes) < 0)
        return NULL;
    st->eng.tree_on = 1;
    st->eng.tree_c = c_calls;
    if (events_update(mod) < 0) {
        PyObject *exc = cs_exc_fetch();
        st->eng.tree_on = st->eng.tree_c = 0;
        if (events_update(mod) < 0)
            PyErr_Clear();
        tree_end();
        cs_exc_restore(exc);
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *
profile_stop(PyObject *mod, PyObject *unused)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    if (!st->eng.tree_on)
        Py_RETURN_NONE;
    PyObject *exc = cs_exc_fetch(); /* stopping must work while failing */
    st->eng.tree_on = st->eng.tree_c = 0;
    if (events_update(mod) < 0)
        PyErr_WriteUnraisable(NULL);
    tree_end();
    cs_exc_restore(exc);
    Py_RETURN_NONE;
}

PyObject *
profile_active(PyObject *mod, PyObject *unused)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    return PyBool_FromLong(st->eng.tree_on);
}
