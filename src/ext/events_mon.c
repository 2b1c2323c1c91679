/* events_mon.c -- the event source on Python 3.12+: PEP 669 sys.monitoring,
 * one tool id for the package and one table of callbacks, which hand each
 * event to the sinks in force (engine.h).
 *
 * Which events are on follows the sinks: a selection (sink_log) needs
 * PY_START, PY_UNWIND and PY_THROW for all code and the rest only for the
 * code it selected (local events); --all (sink_tree) needs every call,
 * return, yield and resumption, and CALL for C functions; C_RETURN and
 * C_RAISE come with CALL. Code that no sink wants gets DISABLE at its
 * first start, return or yield and then runs at full speed; any change of
 * the sinks restarts the events, so code disabled before is looked at
 * again. */
#include "engine.h"

#if CS_HAVE_MONITORING

enum { EV_START, EV_RESUME, EV_THROW, EV_RETURN, EV_YIELD, EV_UNWIND, EV_CALL, EV_C_RETURN,
       EV_C_RAISE, N_EVENTS };

static inline ext_state *
state(PyObject *mod)
{
    return (ext_state *)PyModule_GetState(mod);
}

/* ---- the tree's side --------------------------------------------------------- */

/* The tree's info of code `co`, made at its first call; NULL if none. */
static inline fn_info *
tree_info(PyObject *co)
{
    fn_info *fi = tree_code_known(co);
    if (CS_UNLIKELY(fi == NULL)) {
        PyObject *exc = cs_exc_fetch();
        fi = tree_code_info(co, PyEval_GetGlobals());
        cs_exc_restore(exc);
    }
    return fi;
}

/* A call or resumption of `co` begins: 1 if the tree counts it, 0 if it
 * never will (callscope's own code), -1 if unknown (out of memory). */
static inline int
tree_begins(PyObject *co)
{
    fn_info *fi = tree_info(co);
    if (fi == NULL)
        return -1;
    if (tree_skipped(fi))
        return 0;
    tree_push(fi);
    return 1;
}

/* A call of `co` returns, yields or unwinds: as tree_begins. Code never
 * seen starting began before profiling: its later calls will count. */
static inline int
tree_ends(PyObject *co)
{
    fn_info *fi = tree_code_known(co);
    if (fi == NULL)
        return -1;
    if (tree_skipped(fi))
        return 0;
    tree_pop(fi);
    return 1;
}

/* ---- the selection's side ---------------------------------------------------- */

/* The entry of selected code `co` (borrowed), or NULL. */
static inline PyObject *
selected_entry(trace_state *ts, PyObject *co)
{
    PyObject *e = PyDict_GetItemWithError(ts->selected, co);
    if (e == NULL)
        PyErr_Clear();
    return e;
}

/* ---- the callbacks ------------------------------------------------------------- */

/* PY_START (code, offset) and PY_RESUME (code, offset). */
static PyObject *
ev_start(ext_state *st, PyObject *co, int resume)
{
    int want = 0;
    if (st->eng.log_on) {
        PyObject *exc = cs_exc_fetch();
        /* one lookup (a code object's hash is not cached): the entry, if any */
        PyObject *entry = selected_entry(st->trace, co);
        if (entry == NULL && !resume && policy_decide(st, co, PyEval_GetGlobals()))
            entry = selected_entry(st->trace, co);
        if (entry) {
            want = 1;
            if (!resume)
                log_call_begin(st, co, entry);
            else if (is_gen(co))
                log_gen_mark(st, co, CS_MARK_RESUME);
        }
        cs_exc_restore(exc);
    }
    if (st->eng.tree_on)
        want |= tree_begins(co) != 0; /* (unknown: keep the event) */
    return want ? Py_NewRef(Py_None) : Py_NewRef(st->eng.disable);
}

static PyObject *
cb_start(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    assert(nargs == 2);
    return ev_start(state(mod), args[0], 0);
}

static PyObject *
cb_resume(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    assert(nargs == 2);
    return ev_start(state(mod), args[0], 1);
}

/* PY_THROW (code, offset, exception): a generator resumed by throw(). */
static PyObject *
cb_throw(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    assert(nargs == 3);
    ext_state *st = state(mod);
    PyObject *co = args[0];
    if (st->eng.log_on && is_gen(co) && selected_entry(st->trace, co)) {
        PyObject *exc = cs_exc_fetch();
        log_gen_mark(st, co, CS_MARK_RESUME);
        cs_exc_restore(exc);
    }
    if (st->eng.tree_on) {
        fn_info *fi = tree_code_known(co);
        if (fi && !tree_skipped(fi))
            tree_push(fi);
    }
    Py_RETURN_NONE;
}

/* PY_RETURN and PY_YIELD (code, offset, value), PY_UNWIND (code, offset,
 * exception): `how` is EV_RETURN, EV_YIELD or EV_UNWIND. */
static PyObject *
ev_end(ext_state *st, PyObject *co, PyObject *value, int how)
{
    int want = 0;
    if (st->eng.log_on && selected_entry(st->trace, co)) {
        want = 1;
        PyObject *exc = cs_exc_fetch();
        if (how == EV_YIELD) {
            if (is_gen(co))
                log_gen_mark(st, co, CS_MARK_SUSPEND);
        } else {
            log_call_end(st, co, how == EV_UNWIND ? value : NULL,
                         how == EV_RETURN ? value : NULL);
        }
        cs_exc_restore(exc);
    }
    if (st->eng.tree_on)
        want |= tree_ends(co) != 0; /* (unknown: keep the event) */
    /* PY_UNWIND cannot be disabled */
    return want || how == EV_UNWIND ? Py_NewRef(Py_None) : Py_NewRef(st->eng.disable);
}

static PyObject *
cb_return(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    assert(nargs == 3);
    return ev_end(state(mod), args[0], args[2], EV_RETURN);
}

static PyObject *
cb_yield(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    assert(nargs == 3);
    return ev_end(state(mod), args[0], args[2], EV_YIELD);
}

static PyObject *
cb_unwind(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    assert(nargs == 3);
    return ev_end(state(mod), args[0], args[2], EV_UNWIND);
}

/* CALL (code, offset, callable, arg0): a C function's call begins. */
static PyObject *
cb_call(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    assert(nargs == 4);
    ext_state *st = state(mod);
    PyObject *self = args[3] == st->eng.missing ? NULL : args[3];
    if (st->eng.tree_on && st->eng.tree_c) {
        /* (callscope's own Python code does not run while the program
         * does; its C functions are skipped by name) */
        fn_info *fi = tree_cfunc_of_call(args[2], self, 1);
        if (fi)
            tree_push(fi);
    }
    if (st->eng.log_on && st->eng.log_c && policy_c_method(args[2]) &&
        !(PyCode_Check(args[0]) && policy_own_code(st->trace, (PyCodeObject *)args[0])))
        log_c_begin(st->trace, args[2]);
    Py_RETURN_NONE;
}

/* C_RETURN and C_RAISE (code, offset, callable, arg0). */
static PyObject *
ev_c_end(PyObject *mod, PyObject *const *args, int raised)
{
    ext_state *st = state(mod);
    if (st->eng.tree_on && st->eng.tree_c) {
        fn_info *fi = tree_cfunc_of_call(args[2], args[3] == st->eng.missing ? NULL : args[3], 0);
        if (fi)
            tree_pop(fi);
    }
    if (st->eng.log_on && st->eng.log_c && policy_c_method(args[2]))
        log_c_end(st->trace, args[2], raised);
    Py_RETURN_NONE;
}

static PyObject *
cb_c_return(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    assert(nargs == 4);
    return ev_c_end(mod, args, 0);
}

static PyObject *
cb_c_raise(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    assert(nargs == 4);
    return ev_c_end(mod, args, 1);
}

/* The callbacks, by the name of their sys.monitoring.events member (the
 * event numbers are read from there, not assumed), in EV_* order. */
static const struct {
    const char *event;
    PyMethodDef def;
} callbacks[N_EVENTS] = {
    {"PY_START", {"_cs_py_start", (PyCFunction)(void (*)(void))cb_start, METH_FASTCALL, NULL}},
    {"PY_RESUME", {"_cs_py_resume", (PyCFunction)(void (*)(void))cb_resume, METH_FASTCALL, NULL}},
    {"PY_THROW", {"_cs_py_throw", (PyCFunction)(void (*)(void))cb_throw, METH_FASTCALL, NULL}},
    {"PY_RETURN", {"_cs_py_return", (PyCFunction)(void (*)(void))cb_return, METH_FASTCALL, NULL}},
    {"PY_YIELD", {"_cs_py_yield", (PyCFunction)(void (*)(void))cb_yield, METH_FASTCALL, NULL}},
    {"PY_UNWIND", {"_cs_py_unwind", (PyCFunction)(void (*)(void))cb_unwind, METH_FASTCALL, NULL}},
    {"CALL", {"_cs_call", (PyCFunction)(void (*)(void))cb_call, METH_FASTCALL, NULL}},
    {"C_RETURN", {"_cs_c_return", (PyCFunction)(void (*)(void))cb_c_return, METH_FASTCALL, NULL}},
    {"C_RAISE", {"_cs_c_raise", (PyCFunction)(void (*)(void))cb_c_raise, METH_FASTCALL, NULL}},
};

/* ---- the tool ------------------------------------------------------------------ */

/* A free tool id, among those no standard tool claims: 0 debugger, 1
 * coverage, 2 profiler and 5 optimizer stay free. */
static int
claim_tool(PyObject *mon)
{
    static const int candidates[] = {4, 3};
    for (size_t i = 0; i < 2; i++) {
        PyObject *r = PyObject_CallMethod(mon, "get_tool", "i", candidates[i]);
        if (r == NULL)
            return -1;
        int is_free = r == Py_None;
        Py_DECREF(r);
        if (!is_free)
            continue;
        r = PyObject_CallMethod(mon, "use_tool_id", "is", candidates[i], "callscope");
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return candidates[i];
    }
    PyErr_SetString(PyExc_RuntimeError,
                    "callscope: sys.monitoring tool ids 3 and 4 are both in use");
    return -1;
}

/* Give the tool id back: no event, no callback. Never fails. */
static void
release(engine_state *e)
{
    if (e->mon == NULL)
        return;
    PyObject *exc = cs_exc_fetch();
    PyObject *r = PyObject_CallMethod(e->mon, "set_events", "ii", e->tool, 0);
    Py_XDECREF(r);
    /* free_tool_id unregisters the callbacks and clears local events
     * (clear_tool_id where it exists, 3.14+, also does) */
    r = PyObject_HasAttrString(e->mon, "clear_tool_id")
            ? PyObject_CallMethod(e->mon, "clear_tool_id", "i", e->tool)
            : NULL;
    Py_XDECREF(r);
    for (int i = 0; i < N_EVENTS; i++) {
        r = PyObject_CallMethod(e->mon, "register_callback", "iiO", e->tool, e->bits[i], Py_None);
        Py_XDECREF(r);
    }
    r = PyObject_CallMethod(e->mon, "free_tool_id", "i", e->tool);
    Py_XDECREF(r);
    PyErr_Clear();
    cs_exc_restore(exc);
    Py_CLEAR(e->mon);
    Py_CLEAR(e->disable);
    Py_CLEAR(e->missing);
    Py_CLEAR(e->callbacks);
}

/* Claim the tool id and register the callback table. */
static int
acquire(PyObject *mod, engine_state *e)
{
    PyObject *sys = PyImport_ImportModule("sys");
    e->mon = sys ? PyObject_GetAttrString(sys, "monitoring") : NULL;
    Py_XDECREF(sys);
    if (e->mon == NULL)
        return -1;
    PyObject *events = PyObject_GetAttrString(e->mon, "events");
    e->disable = PyObject_GetAttrString(e->mon, "DISABLE");
    e->missing = PyObject_GetAttrString(e->mon, "MISSING");
    e->callbacks = PyList_New(0);
    int ok = events && e->disable && e->missing && e->callbacks;
    for (int i = 0; ok && i < N_EVENTS; i++) {
        PyObject *v = PyObject_GetAttrString(events, callbacks[i].event);
        e->bits[i] = v ? (int)PyLong_AsLong(v) : -1;
        Py_XDECREF(v);
        ok = e->bits[i] > 0;
    }
    Py_XDECREF(events);
    if (!ok || (e->tool = claim_tool(e->mon)) < 0) {
        PyObject *exc = cs_exc_fetch();
        Py_CLEAR(e->mon);
        Py_CLEAR(e->disable);
        Py_CLEAR(e->missing);
        Py_CLEAR(e->callbacks);
        cs_exc_restore(exc);
        return -1;
    }
    for (int i = 0; i < N_EVENTS; i++) {
        PyObject *fn = PyCFunction_NewEx((PyMethodDef *)&callbacks[i].def, mod, NULL);
        PyObject *r = fn ? PyObject_CallMethod(e->mon, "register_callback", "iiO", e->tool,
                                               e->bits[i], fn)
                         : NULL;
        int bad = r == NULL || PyList_Append(e->callbacks, fn) < 0;
        Py_XDECREF(r);
        Py_XDECREF(fn);
        if (bad) {
            PyObject *exc = cs_exc_fetch();
            release(e);
            cs_exc_restore(exc);
            return -1;
        }
    }
    return 0;
}

int
events_update(PyObject *mod)
{
    ext_state *st = state(mod);
    engine_state *e = &st->eng;
    if (!e->log_on && !e->tree_on) {
        release(e);
        return 0;
    }
    if (e->mon == NULL && acquire(mod, e) < 0)
        return -1;
    int global = 0;
    if (e->log_on)
        global |= e->bits[EV_START] | e->bits[EV_UNWIND] | e->bits[EV_THROW] |
                  (e->log_c ? e->bits[EV_CALL] : 0);
    if (e->tree_on)
        global |= e->bits[EV_START] | e->bits[EV_RESUME] | e->bits[EV_THROW] |
                  e->bits[EV_RETURN] | e->bits[EV_YIELD] | e->bits[EV_UNWIND] |
                  (e->tree_c ? e->bits[EV_CALL] : 0);
    PyObject *r = PyObject_CallMethod(e->mon, "set_events", "ii", e->tool, global);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    /* code disabled while other sinks were on is looked at again */
    r = PyObject_CallMethod(e->mon, "restart_events", NULL);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

int
events_watch(ext_state *st, PyObject *co)
{
    engine_state *e = &st->eng;
    if (e->mon == NULL)
        return 0;
    PyObject *r = PyObject_CallMethod(e->mon, "set_local_events", "iOi", e->tool, co,
                                      e->bits[EV_RETURN] | e->bits[EV_YIELD] |
                                          e->bits[EV_RESUME]);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

void
events_unwatch(ext_state *st, PyObject *codes)
{
    engine_state *e = &st->eng;
    if (e->mon == NULL || codes == NULL)
        return;
    PyObject *code, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(codes, &pos, &code, &value)) {
        PyObject *r = PyObject_CallMethod(e->mon, "set_local_events", "iOi", e->tool, code, 0);
        Py_XDECREF(r);
    }
    PyErr_Clear();
}

void
events_free(ext_state *st)
{
    if (st->trace)
        events_unwatch(st, st->trace->selected);
    st->eng.log_on = st->eng.tree_on = 0;
    release(&st->eng);
}

#endif
