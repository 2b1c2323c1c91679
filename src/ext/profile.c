/* profile.c -- the events of `--all` (callscope run --all,
 * callscope.profile_all()): every call of the program, Python functions,
 * C functions and generator resumptions, counted as cProfile counts them,
 * into the calling-context tree of sink_tree.c.
 *
 * Python 3.12+: PEP 669 sys.monitoring, the events cProfile uses: PY_START,
 * PY_RESUME and PY_THROW begin a call, PY_RETURN, PY_YIELD and PY_UNWIND end
 * it; CALL of a C function begins one, C_RETURN and C_RAISE end it.
 * Code that is never in the tree (callscope's own) gets DISABLE once.
 * Python 3.10 and 3.11: the C profile hook of every thread, as cProfile
 * (the events are the same; the hook is per thread, so another profiler
 * holding it is refused). */
#include "ext.h"

#include <string.h>

/* The one state struct of the --all events. */
static struct {
    int on;
    int c_calls; /* C functions too (cProfile's builtins=True) */
#if CS_HAVE_MONITORING
    int tool;
    PyObject *mon, *disable, *missing;
#endif
} P
#if CS_HAVE_MONITORING
    = {.tool = -1}
#endif
;

/* The PyMethodDef behind a called C function, as cProfile keys it: a
 * builtin function or method, or a method descriptor called with its self
 * (bound, it is the same PyMethodDef). NULL for anything else. */
static inline PyMethodDef *
called_cfunc(PyObject *callable, int has_self)
{
    /* most calls are of Python functions and bound methods: exact type
     * tests first, before the subtype walk of PyCFunction_Check */
    PyTypeObject *tp = Py_TYPE(callable);
    if (tp == &PyFunction_Type || tp == &PyMethod_Type)
        return NULL;
    if (tp == &PyCFunction_Type || tp == &PyCMethod_Type)
        return ((PyCFunctionObject *)callable)->m_ml;
    if (PyCFunction_Check(callable))
        return ((PyCFunctionObject *)callable)->m_ml;
    if (has_self && Py_IS_TYPE(callable, &PyMethodDescr_Type))
        return ((PyMethodDescrObject *)callable)->d_method;
    return NULL;
}

/* The info of called C function `callable` (self `self`, may be NULL). */
static fn_info *
cfunc_info(PyObject *callable, PyObject *self, PyMethodDef *ml)
{
    fn_info *fi = tree_cfunc_lookup(ml);
    if (CS_LIKELY(fi != NULL))
        return fi;
    if (PyCFunction_Check(callable))
        return tree_cfunc_info(callable);
    /* first sight of a method descriptor: bound, it names itself */
    PyObject *exc = cs_exc_fetch();
    PyObject *bound = Py_TYPE(callable)->tp_descr_get(callable, self, (PyObject *)Py_TYPE(self));
    if (bound && PyCFunction_Check(bound))
        fi = tree_cfunc_info(bound);
    Py_XDECREF(bound);
    PyErr_Clear();
    cs_exc_restore(exc);
    return fi;
}

#if CS_HAVE_MONITORING

static PyObject *
on_start(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    assert(nargs == 2);
    if (!P.on)
        Py_RETURN_NONE;
    fn_info *fi = tree_code_known(args[0]);
    if (CS_UNLIKELY(fi == NULL)) {
        PyObject *exc = cs_exc_fetch();
        fi = tree_code_info(args[0], PyEval_GetGlobals());
        cs_exc_restore(exc);
        if (fi == NULL)
            Py_RETURN_NONE;
    }
    if (tree_skipped(fi))
        return Py_NewRef(P.disable);
    tree_push(fi);
    Py_RETURN_NONE;
}

static PyObject *
on_throw(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    assert(nargs == 3);
    if (P.on) {
        fn_info *fi = tree_code_known(args[0]);
        if (fi)
            tree_push(fi);
    }
    Py_RETURN_NONE;
}

/* PY_RETURN, PY_YIELD (disable-able) and PY_UNWIND (not). */
static PyObject *
end_py(PyObject *code, int can_disable)
{
    if (!P.on)
        Py_RETURN_NONE;
    fn_info *fi = tree_code_known(code);
    if (fi == NULL)
        Py_RETURN_NONE;
    if (tree_skipped(fi))
        return can_disable ? Py_NewRef(P.disable) : Py_NewRef(Py_None);
    tree_pop(fi);
    Py_RETURN_NONE;
}

static PyObject *
on_return(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    assert(nargs == 3);
    return end_py(args[0], 1);
}

static PyObject *
on_unwind(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    assert(nargs == 3);
    return end_py(args[0], 0);
}

/* CALL, C_RETURN and C_RAISE: (code, offset, callable, arg0). */
static PyObject *
on_call(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    assert(nargs == 4);
    PyMethodDef *ml = called_cfunc(args[2], args[3] != P.missing);
    if (ml == NULL || !P.on)
        Py_RETURN_NONE;
    fn_info *caller = PyCode_Check(args[0]) ? tree_code_known(args[0]) : NULL;
    if (caller && tree_skipped(caller))
        Py_RETURN_NONE; /* callscope's own calls */
    fn_info *fi = cfunc_info(args[2], args[3], ml);
    if (fi)
        tree_push(fi);
    Py_RETURN_NONE;
}

static PyObject *
on_c_end(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    assert(nargs == 4);
    PyMethodDef *ml = called_cfunc(args[2], args[3] != P.missing);
    fn_info *fi = ml && P.on ? tree_cfunc_lookup(ml) : NULL;
    if (fi)
        tree_pop(fi);
    Py_RETURN_NONE;
}

/* The callbacks, by the name of their sys.monitoring.events member (the
 * event numbers are read from there, not assumed). */
static const struct {
    const char *event;
    PyMethodDef def;
    int c; /* a C-call event */
} callbacks[] = {
    {"PY_START", {"_cs_all_start", (PyCFunction)(void (*)(void))on_start, METH_FASTCALL, NULL}, 0},
    {"PY_RESUME", {"_cs_all_resume", (PyCFunction)(void (*)(void))on_start, METH_FASTCALL, NULL}, 0},
    {"PY_THROW", {"_cs_all_throw", (PyCFunction)(void (*)(void))on_throw, METH_FASTCALL, NULL}, 0},
    {"PY_RETURN", {"_cs_all_return", (PyCFunction)(void (*)(void))on_return, METH_FASTCALL, NULL}, 0},
    {"PY_YIELD", {"_cs_all_yield", (PyCFunction)(void (*)(void))on_return, METH_FASTCALL, NULL}, 0},
    {"PY_UNWIND", {"_cs_all_unwind", (PyCFunction)(void (*)(void))on_unwind, METH_FASTCALL, NULL}, 0},
    {"CALL", {"_cs_all_call", (PyCFunction)(void (*)(void))on_call, METH_FASTCALL, NULL}, 1},
    {"C_RETURN", {"_cs_all_c_return", (PyCFunction)(void (*)(void))on_c_end, METH_FASTCALL, NULL}, 1},
    {"C_RAISE", {"_cs_all_c_raise", (PyCFunction)(void (*)(void))on_c_end, METH_FASTCALL, NULL}, 1},
};
#define NCALLBACKS (sizeof callbacks / sizeof *callbacks)

static int
event_bit(const char *name)
{
    PyObject *events = PyObject_GetAttrString(P.mon, "events");
    PyObject *v = events ? PyObject_GetAttrString(events, name) : NULL;
    long bit = v ? PyLong_AsLong(v) : -1;
    Py_XDECREF(v);
    Py_XDECREF(events);
    return (int)bit;
}

/* Claim a free tool id among those no standard tool uses (0 debugger, 1
 * coverage, 2 profiler and 5 optimizer stay free). */
static int
claim_tool(void)
{
    static const int candidates[] = {3, 4};
    for (size_t i = 0; i < 2; i++) {
        PyObject *r = PyObject_CallMethod(P.mon, "get_tool", "i", candidates[i]);
        if (r == NULL)
            return -1;
        int is_free = r == Py_None;
        Py_DECREF(r);
        if (!is_free)
            continue;
        r = PyObject_CallMethod(P.mon, "use_tool_id", "is", candidates[i], "callscope-all");
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return candidates[i];
    }
    PyErr_SetString(PyExc_RuntimeError,
                    "profile_all: sys.monitoring tool ids 3 and 4 are both in use");
    return -1;
}

static int
events_on(PyObject *mod)
{
    PyObject *sys = PyImport_ImportModule("sys");
    P.mon = sys ? PyObject_GetAttrString(sys, "monitoring") : NULL;
    Py_XDECREF(sys);
    if (P.mon == NULL)
        return -1;
    P.disable = PyObject_GetAttrString(P.mon, "DISABLE");
    P.missing = PyObject_GetAttrString(P.mon, "MISSING");
    if (P.disable == NULL || P.missing == NULL || (P.tool = claim_tool()) < 0)
        return -1;
    int events = 0;
    for (size_t i = 0; i < NCALLBACKS; i++) {
        if (callbacks[i].c && !P.c_calls)
            continue;
        int bit = event_bit(callbacks[i].event);
        if (bit < 0)
            return -1;
        PyObject *fn = PyCFunction_NewEx((PyMethodDef *)&callbacks[i].def, mod, NULL);
        PyObject *r = fn ? PyObject_CallMethod(P.mon, "register_callback", "iiO", P.tool, bit, fn)
                         : NULL;
        Py_XDECREF(fn);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        events |= bit;
    }
    PyObject *r = PyObject_CallMethod(P.mon, "set_events", "ii", P.tool, events);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    /* code an earlier profile disabled is looked at again */
    r = PyObject_CallMethod(P.mon, "restart_events", NULL);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static void
events_off(void)
{
    if (P.tool >= 0 && P.mon) {
        PyObject *r = PyObject_CallMethod(P.mon, "set_events", "ii", P.tool, 0);
        Py_XDECREF(r);
        for (size_t i = 0; i < NCALLBACKS; i++) {
            int bit = event_bit(callbacks[i].event);
            r = bit < 0 ? NULL
                        : PyObject_CallMethod(P.mon, "register_callback", "iiO", P.tool, bit,
                                              Py_None);
            Py_XDECREF(r);
        }
        r = PyObject_CallMethod(P.mon, "free_tool_id", "i", P.tool);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    P.tool = -1;
    Py_CLEAR(P.mon);
    Py_CLEAR(P.disable);
    Py_CLEAR(P.missing);
}

#else /* 3.10 and 3.11: the C profile hook of every thread */

static int
on_profile(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    (void)obj;
    if (!P.on)
        return 0;
    PyObject *exc;
    switch (what) {
    case PyTrace_CALL:
    case PyTrace_RETURN: {
        PyCodeObject *co = cs_frame_code_borrowed(frame);
        fn_info *fi = tree_code_known((PyObject *)co);
        if (CS_UNLIKELY(fi == NULL)) {
            exc = cs_exc_fetch();
            fi = tree_code_info((PyObject *)co, cs_frame_globals_borrowed(frame));
            cs_exc_restore(exc);
            if (fi == NULL)
                return 0;
        }
        if (what == PyTrace_CALL)
            tree_push(fi);
        else
            tree_pop(fi);
        return 0;
    }
    case PyTrace_C_CALL:
        if (P.c_calls && arg && PyCFunction_Check(arg)) {
            fn_info *caller = tree_code_known((PyObject *)cs_frame_code_borrowed(frame));
            if (caller && tree_skipped(caller))
                return 0;
            exc = cs_exc_fetch();
            fn_info *fi = cfunc_info(arg, NULL, ((PyCFunctionObject *)arg)->m_ml);
            cs_exc_restore(exc);
            if (fi)
                tree_push(fi);
        }
        return 0;
    case PyTrace_C_RETURN:
    case PyTrace_C_EXCEPTION:
        if (P.c_calls && arg && PyCFunction_Check(arg)) {
            fn_info *fi = tree_cfunc_lookup(((PyCFunctionObject *)arg)->m_ml);
            if (fi)
                tree_pop(fi);
        }
        return 0;
    }
    return 0;
}

/* threading.setprofile: a new thread's first event puts the hook in. */
static PyObject *
starter(PyObject *mod, PyObject *args)
{
    (void)mod;
    (void)args;
    if (P.on)
        PyEval_SetProfile(on_profile, NULL);
    Py_RETURN_NONE;
}

static PyMethodDef starter_def = {"_cs_all_starter", starter, METH_VARARGS, NULL};

static void
set_all_threads(PyObject *mod, int on)
{
    PyInterpreterState *interp = PyInterpreterState_Get();
    for (PyThreadState *t = PyInterpreterState_ThreadHead(interp); t; t = PyThreadState_Next(t)) {
        if (on)
            _PyEval_SetProfile(t, on_profile, NULL);
        else if (t->c_profilefunc == on_profile)
            _PyEval_SetProfile(t, NULL, NULL);
    }
    PyErr_Clear();
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *fn = on ? PyCFunction_NewEx(&starter_def, mod, NULL) : Py_NewRef(Py_None);
    PyObject *r = threading && fn ? PyObject_CallMethod(threading, "setprofile", "O", fn) : NULL;
    Py_XDECREF(r);
    Py_XDECREF(fn);
    Py_XDECREF(threading);
    PyErr_Clear();
}

static int
events_on(PyObject *mod)
{
    PyInterpreterState *interp = PyInterpreterState_Get();
    for (PyThreadState *t = PyInterpreterState_ThreadHead(interp); t; t = PyThreadState_Next(t))
        if (t->c_profilefunc != NULL && t->c_profilefunc != on_profile) {
            PyErr_SetString(PyExc_RuntimeError,
                            "profile_all: another profiler (cProfile, a debugger, trace"
                            " with c_functions?) holds the profile hook");
            return -1;
        }
    set_all_threads(mod, 1);
    return 0;
}

static PyObject *events_mod;

static void
events_off(void)
{
    if (events_mod)
        set_all_threads(events_mod, 0);
}

#endif

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
    if (P.on)
        Py_RETURN_NONE;
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    if (tree_begin(st->monitored, own, cpu, max_nodes) < 0)
        return NULL;
    P.c_calls = c_calls;
    P.on = 1;
#if !CS_HAVE_MONITORING
    events_mod = mod;
#endif
    if (events_on(mod) < 0) {
        PyObject *exc = cs_exc_fetch();
        P.on = 0;
        events_off();
        tree_end();
        cs_exc_restore(exc);
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *
profile_stop(PyObject *mod, PyObject *unused)
{
    if (!P.on)
        Py_RETURN_NONE;
    PyObject *exc = cs_exc_fetch(); /* stopping must work while failing */
    P.on = 0;
    events_off();
    tree_end();
    cs_exc_restore(exc);
    Py_RETURN_NONE;
}

PyObject *
profile_active(PyObject *mod, PyObject *unused)
{
    return PyBool_FromLong(P.on);
}
