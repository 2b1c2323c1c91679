/* events_eval.c -- the event sources on Python 3.10 and 3.11, which have
 * no sys.monitoring (engine.h).
 *
 * Selected code (sink_log): a PEP 523 frame-evaluation hook, installed
 * only while a selection is in force. Each code object's decision is kept
 * in its co_extra slot, so unselected code pays a pointer test; the legacy
 * profile hook would cost 1.4-3x and de-specialise every bytecode on 3.11.
 *
 * Every call (sink_tree, --all) and C functions selected by name
 * (sink_log): the C profile hook of every thread, one function for both,
 * as cProfile uses it (an evaluation hook never sees a C call). There is
 * one profile slot per thread: another profiler holding it is refused.
 *
 * Hooks have no context argument: the module state is found through one
 * pointer, set while a hook is installed. */
#include "engine.h"

#if !CS_HAVE_MONITORING

#include <stdlib.h>

static struct {
    ext_state *st;                /* while a hook is installed */
    _PyFrameEvalFunction prev;    /* an evaluation hook installed before ours */
    int eval_on, prof_on;
    Py_ssize_t extra;             /* our co_extra slot, -1 until requested */
    uint32_t gen;                 /* bumped by every change of the sinks */
} H = {.extra = -1};

/* ---- selected code: the evaluation hook -------------------------------------- */

/* What we know of a code object, in its co_extra slot. */
typedef struct code_mark {
    uint32_t gen; /* H.gen it was decided in */
    int selected;
} code_mark;

static void
free_mark(void *p)
{
    cs__free(p);
}

static PyObject *
call_prev(PyThreadState *tstate, cs_eframe *f, int throwflag)
{
    return H.prev ? H.prev(tstate, f, throwflag) : _PyEval_EvalFrameDefault(tstate, f, throwflag);
}

static int
is_selected(PyCodeObject *co, cs_eframe *f)
{
    code_mark *m = NULL;
    if (cs_code_get_extra((PyObject *)co, H.extra, (void **)&m) < 0) {
        PyErr_Clear();
        return 0;
    }
    if (CS_LIKELY(m != NULL && m->gen == H.gen))
        return m->selected;
    if (m == NULL) {
        m = cs__calloc(1, sizeof *m);
        if (m == NULL || cs_code_set_extra((PyObject *)co, H.extra, m) < 0) {
            PyErr_Clear();
            cs__free(m);
            return 0;
        }
    }
    PyObject *exc = cs_exc_fetch();
    m->gen = H.gen;
    m->selected = policy_decide(H.st, (PyObject *)co, cs_eframe_globals(f));
    cs_exc_restore(exc);
    return m->selected;
}

static PyObject *
cs_eval(PyThreadState *tstate, cs_eframe *f, int throwflag)
{
    ext_state *st = H.st;
    /* With a hook in, every Python call is a C call: near the end of the C
     * stack a new frame (not a generator's resumption) is refused. */
    if (CS_UNLIKELY(rec_stack_low()) && !throwflag &&
        !(cs_eframe_code(f)->co_flags & (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR)))
        return rec_stack_error();
    if (CS_LIKELY(st == NULL || !st->eng.log_on || st->trace == NULL || st->trace->sel == NULL ||
                  !is_selected(cs_eframe_code(f), f)))
        return call_prev(tstate, f, throwflag);
    return log_eval(st, tstate, f, throwflag, call_prev);
}

/* ---- every call, and C functions: the profile hook ---------------------------- */

static int
prof_hook(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    (void)obj;
    ext_state *st = H.st;
    if (st == NULL)
        return 0;
    PyObject *exc;
    switch (what) {
    case PyTrace_CALL:
    case PyTrace_RETURN: {
        if (!st->eng.tree_on)
            return 0;
        PyCodeObject *co = cs_frame_code_borrowed(frame);
        if (CS_UNLIKELY(what == PyTrace_CALL && rec_stack_low()) &&
            !(co->co_flags & (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR))) {
            rec_stack_error(); /* the frame fails before its first line */
            return -1;
        }
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
        if (arg == NULL)
            return 0;
        if (st->eng.tree_on && st->eng.tree_c) {
            fn_info *fi = tree_cfunc_of_call(arg, NULL, 0);
            if (CS_UNLIKELY(fi == NULL)) { /* first sight: named now */
                exc = cs_exc_fetch();
                fi = tree_cfunc_of_call(arg, NULL, 1);
                cs_exc_restore(exc);
            }
            if (fi)
                tree_push(fi);
        }
        if (st->eng.log_on && st->eng.log_c && policy_c_method(arg) &&
            !policy_own_code(st->trace, cs_frame_code_borrowed(frame)))
            log_c_begin(st->trace, arg);
        return 0;
    case PyTrace_C_RETURN:
    case PyTrace_C_EXCEPTION:
        if (arg == NULL)
            return 0;
        if (st->eng.tree_on && st->eng.tree_c) {
            fn_info *fi = tree_cfunc_of_call(arg, NULL, 0);
            if (fi)
                tree_pop(fi);
        }
        if (st->eng.log_on && st->eng.log_c && policy_c_method(arg))
            log_c_end(st->trace, arg, what == PyTrace_C_EXCEPTION);
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
    if (H.prof_on)
        PyEval_SetProfile(prof_hook, NULL);
    Py_RETURN_NONE;
}

static PyMethodDef starter_def = {"_cs_profile_starter", starter, METH_VARARGS, NULL};

/* Set (on) or remove (off) the profile hook in every thread, and for
 * threads started later. -1 with an error set when another profiler holds
 * a thread's hook. */
static int
profile_all_threads(PyObject *mod, int on)
{
    PyInterpreterState *interp = PyInterpreterState_Get();
    if (on)
        for (PyThreadState *t = PyInterpreterState_ThreadHead(interp); t;
             t = PyThreadState_Next(t))
            if (t->c_profilefunc != NULL && t->c_profilefunc != prof_hook) {
                PyErr_SetString(PyExc_RuntimeError,
                                "callscope: --all and C functions by name need the profile"
                                " hook, and another profiler (cProfile, a debugger?) holds it");
                return -1;
            }
    /* threads started later: threading.setprofile, called (and threading
     * imported) before the hook is in, so that this is not profiled */
    H.prof_on = on;
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *fn = on ? PyCFunction_NewEx(&starter_def, mod, NULL) : Py_NewRef(Py_None);
    PyObject *r = threading && fn ? PyObject_CallMethod(threading, "setprofile", "O", fn) : NULL;
    Py_XDECREF(r);
    Py_XDECREF(fn);
    Py_XDECREF(threading);
    PyErr_Clear();
    for (PyThreadState *t = PyInterpreterState_ThreadHead(interp); t; t = PyThreadState_Next(t)) {
        if (on)
            _PyEval_SetProfile(t, prof_hook, NULL);
        else if (t->c_profilefunc == prof_hook)
            _PyEval_SetProfile(t, NULL, NULL);
    }
    PyErr_Clear();
    return 0;
}

int
events_update(PyObject *mod)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    engine_state *e = &st->eng;
    if (H.extra < 0 && (H.extra = cs_code_extra_index(free_mark)) < 0) {
        PyErr_SetString(PyExc_RuntimeError, "callscope: no free co_extra slot");
        return -1;
    }
    H.gen++; /* every code object is decided again */
    int want_eval = e->log_on, want_prof = e->tree_on || (e->log_on && e->log_c);
    if (want_eval || want_prof)
        H.st = st;
    if (want_prof != H.prof_on && profile_all_threads(mod, want_prof) < 0)
        return -1;
    if (want_eval && !H.eval_on)
        cs_eval_hook_install(cs_eval, &H.prev); /* chained to one before ours */
    else if (!want_eval && H.eval_on)
        cs_eval_hook_remove(cs_eval, &H.prev);
    H.eval_on = want_eval;
    if (!want_eval && !want_prof)
        H.st = NULL;
    return 0;
}

int
events_watch(ext_state *st, PyObject *co)
{
    (void)st;
    (void)co;
    return 0; /* the evaluation hook sees every frame of selected code */
}

void
events_unwatch(ext_state *st, PyObject *codes)
{
    (void)st;
    (void)codes;
}

void
events_free(ext_state *st)
{
    if (H.st != st)
        return;
    if (H.eval_on)
        cs_eval_hook_remove(cs_eval, &H.prev);
    H.eval_on = 0;
    if (H.prof_on) {
        PyInterpreterState *interp = PyInterpreterState_Get();
        for (PyThreadState *t = PyInterpreterState_ThreadHead(interp); t;
             t = PyThreadState_Next(t))
            if (t->c_profilefunc == prof_hook)
                _PyEval_SetProfile(t, NULL, NULL);
        PyErr_Clear();
        H.prof_on = 0;
    }
    H.st = NULL;
}

#endif
