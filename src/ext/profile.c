/* profile.c -- profile everything: every Python function's calls counted
 * and timed in aggregate, with no per-call record (callscope run --all,
 * callscope.profile_all()).
 *
 * Python 3.12+: PEP 669 callbacks for all code; 3.10 and 3.11: a PEP 523
 * frame-evaluation hook (each evaluation is a call or a resume). Each
 * thread keeps a stack
 * and a table of aggregates keyed by code object; resumes of generators
 * and coroutines count as calls, as in cProfile, and a recursive
 * function's total time counts its outermost calls only. At exit the
 * threads' tables are merged and written into the log as PROFILE records,
 * which become the profile table of run.db. */
#include "ext.h"

#include <pthread.h>
#include <string.h>

#define HIST CS_HIST_BUCKETS /* 4 buckets per power of two of ns (cs_log.h) */

typedef struct agg {
    PyObject *code;  /* strong reference */
    PyObject *ident; /* (module, qualname, file, line) */
    uint64_t calls, total, self, min, max;
    uint32_t active; /* open calls on this thread: recursion */
    int skip;        /* callscope's own code: not profiled */
    uint32_t hist[HIST];
} agg;

typedef struct pframe {
    agg *a;
    uint64_t start, child;
} pframe;

typedef struct pthread_data {
    agg **slots; /* open addressing on the code pointer */
    size_t cap, n;
    pframe *stack;
    size_t sn, scap;
    struct pthread_data *next;
} pthread_data;

static _Thread_local pthread_data *tls_prof CS_TLS_MODEL;
static pthread_data *all_threads; /* kept after threads end: merged at exit */
static pthread_mutex_t threads_mu = PTHREAD_MUTEX_INITIALIZER;
#if CS_HAVE_MONITORING
static int prof_tool = -1;
static PyObject *prof_mon, *prof_callbacks;
#endif
static char *prof_own; /* callscope's package directory */
static PyObject *prof_monitored; /* borrowed: decorated functions' code */

/* A forked child starts with nothing counted: its parent writes its own
 * aggregates. Only counters are touched here (no allocation, no Python). */
static void
after_fork_child(void)
{
    for (pthread_data *d = all_threads; d; d = d->next) {
        for (size_t i = 0; i < d->cap; i++) {
            agg *a = d->slots[i];
            if (a == NULL)
                continue;
            a->calls = a->total = a->self = a->max = 0;
            a->min = UINT64_MAX;
            a->active = 0;
            memset(a->hist, 0, sizeof a->hist);
        }
        d->sn = 0;
    }
    pthread_mutex_init(&threads_mu, NULL);
}

static pthread_data *
thread_data(void)
{
    if (CS_LIKELY(tls_prof != NULL))
        return tls_prof;
    pthread_data *d = cs__calloc(1, sizeof *d);
    if (d == NULL)
        return NULL;
    pthread_mutex_lock(&threads_mu);
    d->next = all_threads;
    all_threads = d;
    pthread_mutex_unlock(&threads_mu);
    tls_prof = d;
    return d;
}

static size_t
hash_ptr(const void *p)
{
    uint64_t k = (uint64_t)(uintptr_t)p;
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    return (size_t)(k ^ (k >> 33));
}

static agg *
lookup(pthread_data *d, PyObject *code, PyObject *globals)
{
    if (d->cap && d->n * 2 < d->cap) {
        for (size_t i = hash_ptr(code) & (d->cap - 1);; i = (i + 1) & (d->cap - 1)) {
            if (d->slots[i] == NULL)
                break;
            if (d->slots[i]->code == code)
                return d->slots[i];
        }
    } else {
        size_t cap = d->cap ? d->cap * 2 : 256;
        agg **s = cs__calloc(cap, sizeof *s);
        if (s == NULL)
            return NULL;
        for (size_t i = 0; i < d->cap; i++) {
            if (d->slots[i] == NULL)
                continue;
            size_t j = hash_ptr(d->slots[i]->code) & (cap - 1);
            while (s[j])
                j = (j + 1) & (cap - 1);
            s[j] = d->slots[i];
        }
        cs__free(d->slots);
        d->slots = s;
        d->cap = cap;
        return lookup(d, code, globals);
    }
    agg *a = cs__calloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    a->code = Py_NewRef(code);
    a->min = UINT64_MAX;
    PyObject *module = globals ? PyDict_GetItemString(globals, "__name__") : NULL;
    PyObject *qual = cs_code_qualname((PyCodeObject *)code);
    a->ident = Py_BuildValue("(OOOi)", module && PyUnicode_Check(module) ? module : qual, qual,
                             ((PyCodeObject *)code)->co_filename,
                             ((PyCodeObject *)code)->co_firstlineno);
    if (a->ident && !(module && PyUnicode_Check(module))) {
        Py_DECREF(PyTuple_GET_ITEM(a->ident, 0));
        PyTuple_SET_ITEM(a->ident, 0, PyUnicode_FromString(""));
    }
    Py_DECREF(qual);
    const char *file = PyUnicode_AsUTF8(((PyCodeObject *)code)->co_filename);
    a->skip = file && prof_own && strncmp(file, prof_own, strlen(prof_own)) == 0;
    /* a decorated function's calls are recorded one by one already */
    if (prof_monitored && PySet_Contains(prof_monitored, code) > 0)
        a->skip = 1;
    PyErr_Clear();
    size_t i = hash_ptr(code) & (d->cap - 1);
    while (d->slots[i])
        i = (i + 1) & (d->cap - 1);
    d->slots[i] = a;
    d->n++;
    return a;
}

/* A call (or a resume) of `code` begins on this thread. */
static void
prof_push(PyObject *code, PyObject *globals)
{
    uint64_t now = cs_clock_mono_ns();
    pthread_data *d = thread_data();
    agg *a = d ? lookup(d, code, globals) : NULL;
    if (a == NULL || a->skip)
        return;
    {
        pframe *v = cs__grow(d->stack, d->sn, &d->scap, sizeof *v, 128);
        if (v == NULL)
            return;
        d->stack = v;
    }
    a->calls++;
    a->active++;
    d->stack[d->sn++] = (pframe){a, now, 0};
}

/* A call (or a run between resume and yield) of `code` ends. */
static void
prof_pop(PyObject *code)
{
    uint64_t now = cs_clock_mono_ns();
    pthread_data *d = tls_prof;
    if (d == NULL || d->sn == 0 || d->stack[d->sn - 1].a->code != code)
        return; /* began before profiling did */
    pframe f = d->stack[--d->sn];
    agg *a = f.a;
    uint64_t dur = now - f.start;
    a->self += dur > f.child ? dur - f.child : 0;
    if (--a->active == 0)
        a->total += dur; /* the outermost of recursive calls */
    if (dur < a->min)
        a->min = dur;
    if (dur > a->max)
        a->max = dur;
    a->hist[cs_hist_bucket(dur)]++;
    if (d->sn)
        d->stack[d->sn - 1].child += dur;
}

/* Write the merged aggregates into the current log. */
static void
flush_profile(void)
{
    cs_tstate *t = rec_tstate();
    if (t == NULL)
        return;
    /* merge threads: one aggregate per code object */
    PyObject *merged = PyDict_New(); /* code -> capsule-free index into a list */
    PyObject *order = PyList_New(0);
    if (merged == NULL || order == NULL)
        goto out;
    pthread_mutex_lock(&threads_mu);
    pthread_data *list = all_threads;
    pthread_mutex_unlock(&threads_mu);
    for (pthread_data *d = list; d; d = d->next) {
        for (size_t i = 0; i < d->cap; i++) {
            agg *a = d->slots[i];
            if (a == NULL || a->calls == 0 || a->skip)
                continue;
            PyObject *idx = PyDict_GetItemWithError(merged, a->code);
            if (idx == NULL) {
                PyObject *n = PyLong_FromSsize_t(PyList_GET_SIZE(order));
                PyObject *ptr = PyLong_FromVoidPtr(a);
                if (!n || !ptr || PyDict_SetItem(merged, a->code, n) < 0 ||
                    PyList_Append(order, ptr) < 0) {
                    Py_XDECREF(n);
                    Py_XDECREF(ptr);
                    goto out;
                }
                Py_DECREF(n);
                Py_DECREF(ptr);
                continue;
            }
            agg *m = PyLong_AsVoidPtr(PyList_GET_ITEM(order, PyLong_AsSsize_t(idx)));
            m->calls += a->calls;
            m->total += a->total;
            m->self += a->self;
            if (a->min < m->min)
                m->min = a->min;
            if (a->max > m->max)
                m->max = a->max;
            for (int k = 0; k < HIST; k++)
                m->hist[k] += a->hist[k];
            a->calls = 0; /* merged into m */
        }
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(order); i++) {
        agg *a = PyLong_AsVoidPtr(PyList_GET_ITEM(order, i));
        uint32_t id = rec_new_func_id();
        rec_define(t, id, a->ident, CS_FUNC_FUNCTION, a->code);
        cs_buf b;
        cs_buf_init(&b);
        uint64_t head[5] = {a->calls, a->total, a->self, a->min == UINT64_MAX ? 0 : a->min,
                            a->max};
        cs_buf_append(&b, head, sizeof head);
        cs_buf_append(&b, a->hist, sizeof a->hist);
        if (!b.failed)
            cs_log_put_var(t, CS_VAR_PROFILE, id, b.data, b.len);
        cs_buf_free(&b);
    }
out:
    PyErr_Clear();
    Py_XDECREF(merged);
    Py_XDECREF(order);
}

/* Forget the aggregates (they are written). */
static void
clear_aggregates(void)
{
    pthread_mutex_lock(&threads_mu);
    for (pthread_data *d = all_threads; d; d = d->next) {
        for (size_t i = 0; i < d->cap; i++) {
            if (d->slots[i]) {
                Py_XDECREF(d->slots[i]->code);
                Py_XDECREF(d->slots[i]->ident);
                cs__free(d->slots[i]);
                d->slots[i] = NULL;
            }
        }
        d->n = 0;
        d->sn = 0;
    }
    pthread_mutex_unlock(&threads_mu);
}

/* What both backends do when profiling starts. */
static void
begin(PyObject *mod, const char *own)
{
    static int atfork_done;
    if (!atfork_done && pthread_atfork(NULL, NULL, after_fork_child) == 0)
        atfork_done = 1;
    prof_monitored = ((ext_state *)PyModule_GetState(mod))->monitored;
    cs__free(prof_own);
    prof_own = own ? cs__strdup(own) : NULL;
    rec_in_use = 1;
}

#if CS_HAVE_MONITORING

static PyObject *
p_push(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs >= 1)
        prof_push(args[0], PyEval_GetGlobals());
    Py_RETURN_NONE;
}

static PyObject *
p_pop(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs >= 1)
        prof_pop(args[0]);
    Py_RETURN_NONE;
}

static PyMethodDef push_def = {"_cs_prof_push", (PyCFunction)(void (*)(void))p_push,
                               METH_FASTCALL, NULL};
static PyMethodDef pop_def = {"_cs_prof_pop", (PyCFunction)(void (*)(void))p_pop,
                              METH_FASTCALL, NULL};

static int
event_bit(const char *name)
{
    PyObject *events = PyObject_GetAttrString(prof_mon, "events");
    PyObject *v = events ? PyObject_GetAttrString(events, name) : NULL;
    long bit = v ? PyLong_AsLong(v) : -1;
    Py_XDECREF(v);
    Py_XDECREF(events);
    return (int)bit;
}

PyObject *
profile_start(PyObject *mod, PyObject *args)
{
    const char *own = NULL;
    if (!PyArg_ParseTuple(args, "|z:_profile_start", &own))
        return NULL;
    if (prof_tool >= 0)
        Py_RETURN_NONE;
    begin(mod, own);
    PyObject *sys = PyImport_ImportModule("sys");
    prof_mon = sys ? PyObject_GetAttrString(sys, "monitoring") : NULL;
    Py_XDECREF(sys);
    if (prof_mon == NULL)
        return NULL;
    static const int candidates[] = {3, 4};
    for (size_t i = 0; i < 2 && prof_tool < 0; i++) {
        PyObject *r = PyObject_CallMethod(prof_mon, "get_tool", "i", candidates[i]);
        if (r == NULL)
            return NULL;
        int is_free = r == Py_None;
        Py_DECREF(r);
        if (!is_free)
            continue;
        r = PyObject_CallMethod(prof_mon, "use_tool_id", "is", candidates[i], "callscope-all");
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
        prof_tool = candidates[i];
    }
    if (prof_tool < 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "profile_all: sys.monitoring tool ids 3 and 4 are both in use");
        return NULL;
    }
    static const char *const pushes[] = {"PY_START", "PY_RESUME", "PY_THROW"};
    static const char *const pops[] = {"PY_RETURN", "PY_YIELD", "PY_UNWIND"};
    PyObject *push = PyCFunction_NewEx(&push_def, mod, NULL);
    PyObject *pop = PyCFunction_NewEx(&pop_def, mod, NULL);
    prof_callbacks = push && pop ? PyTuple_Pack(2, push, pop) : NULL;
    int events = 0, ok = prof_callbacks != NULL;
    for (size_t i = 0; ok && i < 3; i++) {
        int bp = event_bit(pushes[i]), bq = event_bit(pops[i]);
        PyObject *r1 = bp < 0 ? NULL
                              : PyObject_CallMethod(prof_mon, "register_callback", "iiO",
                                                    prof_tool, bp, push);
        PyObject *r2 = bq < 0 || r1 == NULL
                           ? NULL
                           : PyObject_CallMethod(prof_mon, "register_callback", "iiO",
                                                 prof_tool, bq, pop);
        ok = r1 && r2;
        Py_XDECREF(r1);
        Py_XDECREF(r2);
        events |= bp | bq;
    }
    Py_XDECREF(push);
    Py_XDECREF(pop);
    PyObject *r = ok ? PyObject_CallMethod(prof_mon, "set_events", "ii", prof_tool, events) : NULL;
    if (r == NULL) {
        PyObject *s = profile_stop(mod, NULL);
        Py_XDECREF(s);
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_NONE;
}

PyObject *
profile_stop(PyObject *mod, PyObject *unused)
{
    if (prof_tool >= 0 && prof_mon) {
        PyObject *r = PyObject_CallMethod(prof_mon, "set_events", "ii", prof_tool, 0);
        Py_XDECREF(r);
        r = PyObject_CallMethod(prof_mon, "free_tool_id", "i", prof_tool);
        Py_XDECREF(r);
        PyErr_Clear();
        flush_profile();
    }
    prof_tool = -1;
    Py_CLEAR(prof_mon);
    Py_CLEAR(prof_callbacks);
    clear_aggregates();
    Py_RETURN_NONE;
}

#else /* 3.10 and 3.11: a frame-evaluation hook, chained like trace.c's */

static int prof_on;
static _PyFrameEvalFunction prof_prev;

static PyObject *
prof_eval(PyThreadState *tstate, cs_eframe *f, int throwflag)
{
    PyCodeObject *co = cs_eframe_code(f);
    int counted = prof_on && !((co->co_flags & (0x20 | 0x80 | 0x100 | 0x200)) &&
                               !cs_eframe_in_gen(f)); /* not a generator's creation */
    if (counted) {
        PyObject *exc = cs_exc_fetch();
        prof_push((PyObject *)co, cs_eframe_globals(f));
        cs_exc_restore(exc);
    }
    PyObject *res = prof_prev ? prof_prev(tstate, f, throwflag)
                              : _PyEval_EvalFrameDefault(tstate, f, throwflag);
    if (counted)
        prof_pop((PyObject *)co);
    return res;
}

PyObject *
profile_start(PyObject *mod, PyObject *args)
{
    const char *own = NULL;
    if (!PyArg_ParseTuple(args, "|z:_profile_start", &own))
        return NULL;
    if (prof_on)
        Py_RETURN_NONE;
    begin(mod, own);
    cs_eval_hook_install(prof_eval, &prof_prev);
    prof_on = 1;
    Py_RETURN_NONE;
}

PyObject *
profile_stop(PyObject *mod, PyObject *unused)
{
    if (prof_on) {
        prof_on = 0; /* a hook left in a chain passes everything through */
        cs_eval_hook_remove(prof_eval, &prof_prev);
        flush_profile();
    }
    clear_aggregates();
    Py_RETURN_NONE;
}

#endif

PyObject *
profile_active(PyObject *mod, PyObject *unused)
{
#if CS_HAVE_MONITORING
    return PyBool_FromLong(prof_tool >= 0);
#else
    return PyBool_FromLong(prof_on);
#endif
}
