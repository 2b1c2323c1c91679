/* trace.c -- recording functions selected by name, in code nobody
 * decorated: the standard library, other people's packages
 * (callscope.trace, callscope run -t/--module). It only starts and stops:
 * policy.c decides which code is selected, sink_log.c records its calls,
 * and the event sources (events_mon.c, events_eval.c) follow the switch.
 * See engine.h. */
#include "engine.h"

#include <string.h>

PyObject *trace_stop(PyObject *mod, PyObject *unused);

/* The start both backends share: a validated selection replaces the one
 * in force. The trace state, or NULL with an error set. */
static trace_state *
new_selection(PyObject *mod, PyObject *args, PyObject *kw)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    uint32_t opts = 0;
    const char *own = NULL;
    cap_conf *cap = NULL;
    int cfuncs = 0;
    cs_select *sel = policy_parse(args, kw, &opts, &own, &cap, &cfuncs);
    if (sel == NULL)
        return NULL;
    PyObject *r = trace_stop(mod, NULL);
    if (r == NULL) {
        cs_select_free(sel);
        cap_conf_free(cap);
        return NULL;
    }
    Py_DECREF(r);
    trace_state *ts = st->trace;
    if (ts == NULL) {
        ts = cs__calloc(1, sizeof *ts);
        if (ts == NULL) {
            cs_select_free(sel);
            cap_conf_free(cap);
            PyErr_NoMemory();
            return NULL;
        }
        st->trace = ts;
    }
    ts->sel = sel;
    ts->opts = opts;
    ts->cap = cap;
    ts->st = st;
    ts->cfuncs = cfuncs;
    ts->own_prefix = own ? cs__strdup(own) : NULL;
    ts->selected = PyDict_New();
    ts->cdecided = PyDict_New();
    ts->gens = PyDict_New();
    ts->gen_refs = PyDict_New();
#if CS_HAVE_MONITORING
    ts->on_gone = PyCFunction_NewEx(&log_gone_def, mod, NULL);
#else
    ts->on_gone = Py_NewRef(Py_None); /* the evaluation hook sees every end */
#endif
    if (!ts->selected || !ts->gens || !ts->cdecided || !ts->gen_refs || !ts->on_gone ||
        (own && !ts->own_prefix)) {
        r = trace_stop(mod, NULL);
        Py_XDECREF(r);
        PyErr_NoMemory();
        return NULL;
    }
    rec_in_use = 1; /* a fork or spawn now settles the run first */
    return ts;
}

/* Drop the selection's state (stop, and module clear). */
static void
forget_selection(trace_state *ts)
{
    cs_select_free(ts->sel);
    ts->sel = NULL;
    cs__free(ts->own_prefix);
    ts->own_prefix = NULL;
    cap_conf_free(ts->cap);
    ts->cap = NULL;
    Py_CLEAR(ts->selected);
    Py_CLEAR(ts->cdecided);
    Py_CLEAR(ts->gens);
    Py_CLEAR(ts->gen_refs);
    Py_CLEAR(ts->on_gone);
}

PyObject *
trace_start(PyObject *mod, PyObject *args, PyObject *kw)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    trace_state *ts = new_selection(mod, args, kw);
    if (ts == NULL)
        return NULL;
    st->eng.log_on = 1;
    st->eng.log_c = ts->cfuncs;
    if (events_update(mod) < 0) {
        PyObject *exc = cs_exc_fetch();
        PyObject *r = trace_stop(mod, NULL);
        Py_XDECREF(r);
        cs_exc_restore(exc);
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *
trace_stop(PyObject *mod, PyObject *unused)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    trace_state *ts = st->trace;
    if (ts == NULL)
        Py_RETURN_NONE;
    PyObject *exc = cs_exc_fetch(); /* stopping must work while failing */
    if (st->eng.log_on) {
        events_unwatch(st, ts->selected);
        st->eng.log_on = st->eng.log_c = 0;
        if (events_update(mod) < 0)
            PyErr_WriteUnraisable(NULL);
    }
    forget_selection(ts);
    cs_exc_restore(exc);
    Py_RETURN_NONE;
}

PyObject *
trace_active(PyObject *mod, PyObject *unused)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    return PyBool_FromLong(st->eng.log_on);
}

void
trace_free(ext_state *st)
{
    events_free(st); /* the hooks go with the module */
    if (st->trace == NULL)
        return;
    forget_selection(st->trace);
    cs__free(st->trace);
    st->trace = NULL;
}
