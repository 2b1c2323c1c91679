/* sink_log.c -- a record per call of selected code: the sink of
 * callscope.trace and callscope run -t/--module, fed by the event sources
 * (events_mon.c, events_eval.c) once policy.c has selected the code.
 *
 * A plain call is recorded like a decorated one (ENTER, then EXIT with the
 * seq's low bits), matched through a per-thread stack. A generator or
 * coroutine is one call from its first start to its end: its frame (stable
 * for the generator's life) names it, and each suspension and resumption
 * is a MARK. A selected C function is known by its C entry point. Its
 * arguments and result are captured as the selection asks. */
#include "engine.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- values of selected calls -------------------------------------------- */

/* Parameter `i` of the frame starting now: a new reference, or NULL. On
 * 3.12+ `frame` is unused: the current frame is the one starting. */
static PyObject *
param_value(PyCodeObject *co, PyObject *names, Py_ssize_t i, void *frame)
{
#if CS_HAVE_MONITORING
    (void)co;
    (void)frame;
    PyFrameObject *f = PyEval_GetFrame();
    PyObject *v = f ? PyFrame_GetVar(f, PyTuple_GET_ITEM(names, i)) : NULL;
    if (v == NULL)
        PyErr_Clear();
    return v;
#else
    (void)names;
    (void)co;
    PyObject *v = cs_eframe_arg((cs_eframe *)frame, i);
    return v ? Py_NewRef(v) : NULL;
#endif
}

/* Encode the arguments of the selected call starting now, as a call
 * f(*args, **kwargs) that binds the same way: positional parameters and
 * *args positionally, keyword-only parameters and **kwargs by name. */
static void
trace_args(trace_state *ts, cs_tstate *t, PyCodeObject *co, void *frame, cs_buf *b)
{
    PyObject *names = PyObject_GetAttrString((PyObject *)co, "co_varnames");
    if (names == NULL || !PyTuple_Check(names)) {
        PyErr_Clear();
        Py_XDECREF(names);
        return;
    }
    Py_ssize_t argc = co->co_argcount, kwc = co->co_kwonlyargcount;
    int star = (co->co_flags & CO_VARARGS) != 0, dstar = (co->co_flags & CO_VARKEYWORDS) != 0;
    if (argc + kwc + star + dstar > PyTuple_GET_SIZE(names)) {
        Py_DECREF(names);
        return;
    }
    PyObject *varargs = star ? param_value(co, names, argc + kwc, frame) : NULL;
    PyObject *varkw = dstar ? param_value(co, names, argc + kwc + star, frame) : NULL;
    Py_ssize_t nvar = varargs && PyTuple_Check(varargs) ? PyTuple_GET_SIZE(varargs) : 0;
    Py_ssize_t ndict = varkw && PyDict_Check(varkw) ? PyDict_GET_SIZE(varkw) : 0;
    Py_ssize_t npos = argc + nvar, nkw = kwc + ndict;
    PyObject **v = PyMem_Calloc((size_t)(2 * npos + 2 * nkw + 1), sizeof *v);
    if (v == NULL) {
        Py_XDECREF(varargs);
        Py_XDECREF(varkw);
        Py_DECREF(names);
        return;
    }
    PyObject **pn = v + npos, **kv = v + 2 * npos, **kn = kv + nkw;
    for (Py_ssize_t i = 0; i < argc; i++) {
        v[i] = param_value(co, names, i, frame);
        pn[i] = PyTuple_GET_ITEM(names, i);
    }
    for (Py_ssize_t i = 0; i < nvar; i++) {
        v[argc + i] = Py_NewRef(PyTuple_GET_ITEM(varargs, i));
        pn[argc + i] = PyTuple_GET_ITEM(names, argc + kwc);
    }
    for (Py_ssize_t i = 0; i < kwc; i++) {
        kv[i] = param_value(co, names, argc + i, frame);
        kn[i] = Py_NewRef(PyTuple_GET_ITEM(names, argc + i));
    }
    Py_ssize_t pos = 0, j = kwc;
    PyObject *key, *val;
    while (ndict && PyDict_Next(varkw, &pos, &key, &val) && j < nkw) {
        kv[j] = Py_NewRef(val);
        kn[j++] = Py_NewRef(key);
    }
    cap_encode_call(ts->st, ts->cap, t, v, pn, npos, kv, kn, j, b);
    for (Py_ssize_t i = 0; i < npos; i++)
        Py_XDECREF(v[i]);
    for (Py_ssize_t i = 0; i < j; i++) {
        Py_XDECREF(kv[i]);
        Py_XDECREF(kn[i]);
    }
    PyMem_Free(v);
    Py_XDECREF(varargs);
    Py_XDECREF(varkw);
    Py_DECREF(names);
}

/* Write the result of call `seq` of `stream`, when results are captured. */
static void
trace_result(trace_state *ts, cs_tstate *t, uint64_t seq, uint32_t stream, PyObject *res)
{
    if (ts->cap == NULL || !ts->cap->result || res == NULL || cap_busy)
        return;
    cs_buf b;
    cs_buf_init(&b);
    cap_encode_value(ts->st, ts->cap, t, res, &b);
    if (cs_log_tstate() == t)
        cap_write(t, CS_VAR_RESULT, seq, stream, &b);
    cs_buf_free(&b);
}

/* Encode the arguments of a call starting now, if they are captured. */
static void
trace_begin_args(trace_state *ts, cs_tstate *t, PyObject *co, void *frame, cs_buf *b)
{
    if (ts->cap && ts->cap->args && !cap_busy)
        trace_args(ts, t, (PyCodeObject *)co, frame, b);
}

/* The preview of the arguments of the call of `co` starting now, for
 * --print: from `ab` when arguments are captured, else encoded for it. */
static char *
trace_shown(trace_state *ts, PyObject *co, void *frame, cs_buf *ab)
{
    if (cap_busy)
        return NULL;
    if (ab->len)
        return cap_preview(ab, 120, 1);
    cs_buf b;
    cs_buf_init(&b);
    PyObject *exc = cs_exc_fetch();
    trace_args(ts, NULL, (PyCodeObject *)co, frame, &b);
    cs_exc_restore(exc);
    char *p = cap_preview(&b, 120, 1);
    cs_buf_free(&b);
    return p;
}

/* Print a finished selected call, as --print asks. */
static void
trace_print(trace_state *ts, PyObject *co, uint64_t wall, const char *shown, PyObject *res,
            PyObject *exc)
{
    PyObject *v = PyDict_GetItemWithError(ts->selected, co); /* borrowed */
    if (v == NULL) {
        PyErr_Clear();
        return;
    }
    cap_print(ts->st, ts->cap, PyTuple_GET_ITEM(v, 0), wall, shown, res, exc);
}

/* Enter a selected plain call of `co` (function `id`), starting now in
 * `frame` (unused on 3.12+): its arguments captured and written after
 * the ENTER record, with the extras. Returns its seq; *t0 is its start,
 * *shown its arguments' preview for --print (or NULL; owned). */
static uint64_t
trace_enter(trace_state *ts, cs_tstate *t, PyObject *co, void *frame, uint32_t id,
            uint64_t *t0, char **shown)
{
    cs_buf ab;
    cs_buf_init(&ab);
    if (ts->cap && ts->cap->args && !cap_busy) {
        PyObject *exc = cs_exc_fetch();
        trace_args(ts, t, (PyCodeObject *)co, frame, &ab);
        cs_exc_restore(exc);
    }
    *shown = ts->cap && ts->cap->print ? trace_shown(ts, co, frame, &ab) : NULL;
    rec_extra x;
    if (ts->opts)
        rec_read_extras(ts->opts, &x, 1);
    *t0 = cs_clock_mono_ns();
    uint64_t seq = cs_log_enter(t, id, 0, *t0);
    if (ts->opts)
        rec_put_extras(t, ts->opts, &x);
    if (ab.len && cs_log_tstate() == t)
        cap_write(t, CS_VAR_ARGS, seq, t->stream, &ab);
    cs_buf_free(&ab);
    return seq;
}

/* A generator's or coroutine's event; `begin` starts its call. `frame`
 * (stable for the generator's life) names the call. */
static void
gen_event(ext_state *st, PyObject *co, cs_tstate *t, unsigned mark, unsigned status,
          PyObject *exc, int begin, void *frame, PyObject *result)
{
    trace_state *ts = st->trace;
    if (ts->gens_epoch != t->epoch) {
        PyDict_Clear(ts->gens); /* a forked child: the parent's calls are gone */
        ts->gens_epoch = t->epoch;
    }
    PyObject *key = PyLong_FromVoidPtr(frame);
    if (key == NULL) {
        PyErr_Clear();
        return;
    }
    uint64_t now = cs_clock_mono_ns();
    rec_extra x;
    if (begin) {
        uint32_t id = policy_func_id(ts, co, t, NULL);
        cs_buf ab;
        cs_buf_init(&ab);
        trace_begin_args(ts, t, co, frame, &ab);
        if (ts->opts)
            rec_read_extras(ts->opts, &x, 1);
        uint64_t seq = cs_log_enter(t, id, CS_FLAG_ASYNC, now);
        if (ts->opts)
            rec_put_extras(t, ts->opts, &x); /* they belong to the entry */
        if (ab.len && cs_log_tstate() == t)
            cap_write(t, CS_VAR_ARGS, seq, t->stream, &ab);
        cs_buf_free(&ab);
        cs_log_mark(t, CS_MARK_RESUME, seq, t->stream, 0, now);
        if (ts->opts)
            rec_put_extras(t, ts->opts, &x); /* and to the first resume */
        PyObject *ref = NULL;
#if CS_HAVE_MONITORING
        /* close() may end a suspended generator without any event: a weak
         * reference ends its call when the generator goes away */
        PyObject *gen = PyFrame_GetGenerator(PyEval_GetFrame());
        ref = gen ? PyWeakref_NewRef(gen, ts->on_gone) : NULL;
        Py_XDECREF(gen);
        PyErr_Clear();
#endif
        PyObject *v = Py_BuildValue("(KO)", seq | ((unsigned long long)t->stream << CS_SEQ_BITS),
                                    ref ? ref : Py_None);
        if (v == NULL || PyDict_SetItem(ts->gens, key, v) < 0 ||
            (ref && PyDict_SetItem(ts->gen_refs, ref, key) < 0))
            PyErr_Clear();
        Py_XDECREF(v);
        Py_XDECREF(ref);
        Py_DECREF(key);
        return;
    }
    PyObject *v = PyDict_GetItemWithError(ts->gens, key); /* borrowed */
    if (v == NULL) {
        PyErr_Clear();
        Py_DECREF(key);
        return; /* it started before tracing did */
    }
    uint64_t packed = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(v, 0));
    uint64_t seq = packed & CS_SEQ_MASK;
    uint32_t stream = (uint32_t)(packed >> CS_SEQ_BITS);
    if (mark == CS_MARK_EXIT) {
        PyObject *ref = PyTuple_GET_ITEM(v, 1);
        if (ref != Py_None && PyDict_DelItem(ts->gen_refs, ref) < 0)
            PyErr_Clear();
    }
    if (ts->opts)
        rec_read_extras(ts->opts, &x, mark == CS_MARK_RESUME);
    if (exc)
        rec_error_obj(st, t, seq, stream, exc, TRACE_SANITIZE(ts));
    else if (mark == CS_MARK_EXIT)
        trace_result(ts, t, seq, stream, result);
    cs_log_mark(t, mark, seq, stream, status, now);
    if (ts->opts)
        rec_put_extras(t, ts->opts, &x);
    if (mark == CS_MARK_EXIT && PyDict_DelItem(ts->gens, key) < 0)
        PyErr_Clear();
    Py_DECREF(key);
}

typedef struct tframe {
    void *code;
    uint64_t seq;
    uint32_t epoch;
    uint64_t start; /* when it started, for --print */
    char *shown;    /* its arguments' preview, for --print; owned */
} tframe;

typedef struct tstack {
    tframe *v;
    size_t n, cap;
} tstack;

static _Thread_local tstack *tls_stack CS_TLS_MODEL;
static pthread_key_t stack_key;
static pthread_once_t stack_once = PTHREAD_ONCE_INIT;

static void
free_stack(void *p)
{
    tstack *s = p;
    if (s) {
        for (size_t i = 0; i < s->n; i++)
            cs__free(s->v[i].shown);
        cs__free(s->v);
        cs__free(s);
    }
}

static void
make_key(void)
{
    pthread_key_create(&stack_key, free_stack);
}

static tstack *
my_stack(void)
{
    if (CS_LIKELY(tls_stack != NULL))
        return tls_stack;
    pthread_once(&stack_once, make_key);
    tstack *s = cs__calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    pthread_setspecific(stack_key, s);
    tls_stack = s;
    return s;
}

static int
push(tstack *s, void *code, uint64_t seq, uint32_t epoch, uint64_t start, char *shown)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        tframe *v = cs__realloc(s->v, cap * sizeof *v);
        if (v == NULL) {
            cs__free(shown);
            return -1;
        }
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (tframe){code, seq, epoch, start, shown};
    return 0;
}

/* Pop the innermost entry of `code`; 1 with *out set if there was one. */
static int
pop(tstack *s, void *code, tframe *out)
{
    for (size_t i = s->n; i-- > 0;) {
        if (s->v[i].code == code) {
            *out = s->v[i];
            /* entries above it were left by calls never closed */
            for (size_t j = i + 1; j < s->n; j++)
                cs__free(s->v[j].shown);
            s->n = i;
            return 1;
        }
    }
    return 0;
}

/* A call of C function `callable` begins: recorded if it is selected. */
void
log_c_begin(trace_state *ts, PyObject *callable)
{
    PyObject *exc = cs_exc_fetch();
    cs_tstate *t = rec_tstate();
    void *meth = NULL;
    uint32_t id = t ? policy_c_selected(ts, callable, t, &meth) : 0;
    if (id) {
        rec_extra x;
        if (ts->opts)
            rec_read_extras(ts->opts, &x, 1);
        uint64_t t0 = cs_clock_mono_ns();
        uint64_t seq = cs_log_enter(t, id, 0, t0);
        if (ts->opts)
            rec_put_extras(t, ts->opts, &x);
        tstack *s = my_stack();
        if (s)
            push(s, meth, seq, t->epoch, t0, NULL); /* its C entry point names it */
    }
    cs_exc_restore(exc);
}

/* A call of C function `callable` ends, returned or `raised`. */
void
log_c_end(trace_state *ts, PyObject *callable, int raised)
{
    uint64_t now = cs_clock_mono_ns();
    PyObject *exc = cs_exc_fetch();
    cs_tstate *t = cs_log_tstate();
    void *meth = NULL;
    if (t && policy_c_selected(ts, callable, NULL, &meth)) {
        tstack *s = my_stack();
        tframe f;
        if (s && pop(s, meth, &f) && f.epoch == t->epoch) {
            rec_extra x;
            if (ts->opts)
                rec_read_extras(ts->opts, &x, 0);
            cs_log_exit(t, f.seq, raised ? CS_STATUS_RAISED : CS_STATUS_OK, now);
            if (ts->opts)
                rec_put_extras(t, ts->opts, &x);
            if (ts->cap && ts->cap->print && !cap_busy) {
                /* the ident is the decision kept for this C function */
                PyObject *key = PyLong_FromVoidPtr(meth);
                PyObject *v = key ? PyDict_GetItemWithError(ts->cdecided, key) : NULL;
                Py_XDECREF(key);
                if (v && v != Py_None)
                    cap_print(ts->st, ts->cap, PyTuple_GET_ITEM(v, 0), now - f.start, NULL,
                              NULL, raised ? exc : NULL);
            }
        }
    }
    PyErr_Clear();
    cs_exc_restore(exc);
}

#if CS_HAVE_MONITORING

/* A selected plain call of `co` begins in the current frame, or a
 * selected generator's first resumption (3.12+). `entry` is its entry in
 * ts->selected (borrowed), or NULL. */
void
log_call_begin(ext_state *st, PyObject *co, PyObject *entry)
{
    trace_state *ts = st->trace;
    Py_XINCREF(entry); /* held: opening the log below may run Python code */
    cs_tstate *t = rec_tstate();
    if (t != NULL) {
        if (is_gen(co)) {
            gen_event(st, co, t, CS_MARK_RESUME, 0, NULL, 1, PyEval_GetFrame(), NULL);
        } else {
            uint32_t id = policy_func_id(ts, co, t, entry);
            uint64_t t0;
            char *shown;
            uint64_t seq = trace_enter(ts, t, co, NULL, id, &t0, &shown);
            tstack *s = my_stack();
            if (s)
                push(s, co, seq, t->epoch, t0, shown);
            else
                cs__free(shown);
        }
    }
    Py_XDECREF(entry);
}

/* A selected generator suspends or resumes (not its first start). */
void
log_gen_mark(ext_state *st, PyObject *co, unsigned mark)
{
    cs_tstate *t = rec_tstate();
    if (t)
        gen_event(st, co, t, mark, 0, NULL, 0, PyEval_GetFrame(), NULL);
}

/* The end of a selected call: returned (exc NULL) or unwound. */
void
log_call_end(ext_state *st, PyObject *co, PyObject *exc, PyObject *result)
{
    uint64_t now = cs_clock_mono_ns();
    trace_state *ts = st->trace;
    cs_tstate *t = cs_log_tstate();
    if (t == NULL)
        return;
    if (is_gen(co)) {
        /* close() ends a generator with GeneratorExit: an ordinary end */
        if (exc && PyErr_GivenExceptionMatches(exc, PyExc_GeneratorExit))
            exc = NULL;
        gen_event(st, co, t, CS_MARK_EXIT, exc ? CS_STATUS_RAISED : CS_STATUS_OK, exc, 0,
                  PyEval_GetFrame(), result);
        return;
    }
    tstack *s = my_stack();
    tframe f;
    if (s == NULL || !pop(s, co, &f) || f.epoch != t->epoch)
        return; /* entered before tracing, or before a fork */
    rec_extra x;
    if (ts->opts)
        rec_read_extras(ts->opts, &x, 0);
    if (exc)
        rec_error_obj(st, t, f.seq, t->stream, exc, TRACE_SANITIZE(ts));
    else
        trace_result(ts, t, f.seq, t->stream, result);
    if (cs_log_tstate() == t) {
        cs_log_exit(t, f.seq, exc ? CS_STATUS_RAISED : CS_STATUS_OK, now);
        if (ts->opts)
            rec_put_extras(t, ts->opts, &x);
    }
    if (ts->cap && ts->cap->print && !cap_busy)
        trace_print(ts, co, now - f.start, f.shown, result, exc);
    cs__free(f.shown);
}

/* A traced generator went away while its call was open (closed without an
 * event, or dropped): its call ends now, as a decorated one's does. */
static PyObject *
log_gone(PyObject *mod, PyObject *ref)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    trace_state *ts = st->trace;
    if (ts == NULL || ts->gen_refs == NULL)
        Py_RETURN_NONE;
    PyObject *exc = cs_exc_fetch();
    PyObject *key = PyDict_GetItemWithError(ts->gen_refs, ref); /* borrowed */
    PyObject *v = key ? PyDict_GetItemWithError(ts->gens, key) : NULL;
    cs_tstate *t = v ? rec_tstate() : NULL;
    if (v && t && ts->gens_epoch == t->epoch) {
        uint64_t packed = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(v, 0));
        cs_log_mark(t, CS_MARK_EXIT, packed & CS_SEQ_MASK, (uint32_t)(packed >> CS_SEQ_BITS),
                    CS_STATUS_OK, cs_clock_mono_ns());
    }
    if (key) {
        Py_INCREF(key);
        if (PyDict_DelItem(ts->gens, key) < 0)
            PyErr_Clear();
        Py_DECREF(key);
    }
    if (PyDict_DelItem(ts->gen_refs, ref) < 0)
        PyErr_Clear();
    PyErr_Clear();
    cs_exc_restore(exc);
    Py_RETURN_NONE;
}

PyMethodDef log_gone_def = {"_cs_gen_gone", log_gone, METH_O, NULL};

#else

/* 3.10/11: the evaluation of selected code's frame `f`, recorded around
 * the evaluator `eval`. */
PyObject *
log_eval(ext_state *st, PyThreadState *tstate, cs_eframe *f, int throwflag,
         PyObject *(*eval)(PyThreadState *, cs_eframe *, int))
{
    trace_state *ts = st->trace;
    PyCodeObject *co = cs_eframe_code(f);
    PyObject *exc = cs_exc_fetch();
    cs_tstate *t = rec_tstate();
    cs_exc_restore(exc);
    if (t == NULL)
        return eval(tstate, f, throwflag);
    if (is_gen((PyObject *)co)) {
        if (!cs_eframe_in_gen(f))
            return eval(tstate, f, throwflag); /* only creates the generator */
        /* each resume passes here: the first (not yet open) starts the call */
        exc = cs_exc_fetch();
        PyObject *key = PyLong_FromVoidPtr(f);
        int begin = key && ts->gens && PyDict_Contains(ts->gens, key) == 0;
        Py_XDECREF(key);
        PyErr_Clear();
        gen_event(st, (PyObject *)co, t, CS_MARK_RESUME, 0, NULL, begin, f, NULL);
        cs_exc_restore(exc);
        PyObject *res = eval(tstate, f, throwflag);
        exc = cs_exc_fetch();
        t = cs_log_tstate();
        if (t != NULL) {
            if (cs_eframe_gen_state(f) == CS_GEN_SUSPENDED) {
                gen_event(st, (PyObject *)co, t, CS_MARK_SUSPEND, 0, NULL, 0, f, NULL);
            } else {
                /* close() ends a generator with GeneratorExit: an ordinary end */
                PyObject *err = res == NULL ? exc : NULL;
                if (err && PyErr_GivenExceptionMatches(err, PyExc_GeneratorExit))
                    err = NULL;
                gen_event(st, (PyObject *)co, t, CS_MARK_EXIT,
                          err ? CS_STATUS_RAISED : CS_STATUS_OK, err, 0, f, res);
            }
        }
        cs_exc_restore(exc);
        return res;
    }
    uint32_t id = policy_func_id(ts, (PyObject *)co, t, NULL);
    uint32_t epoch = t->epoch;
    uint64_t t0;
    char *shown;
    uint64_t seq = trace_enter(ts, t, (PyObject *)co, f, id, &t0, &shown);
    rec_extra x;
    PyObject *res = eval(tstate, f, throwflag);
    uint64_t now = cs_clock_mono_ns();
    t = cs_log_tstate();
    if (t != NULL && t->epoch == epoch) {
        if (ts->opts)
            rec_read_extras(ts->opts, &x, 0);
        if (res == NULL)
            rec_error_sanitized(st, t, seq, t->stream, TRACE_SANITIZE(ts));
        else
            trace_result(ts, t, seq, t->stream, res);
        if (cs_log_tstate() == t) {
            cs_log_exit(t, seq, res ? CS_STATUS_OK : CS_STATUS_RAISED, now);
            if (ts->opts)
                rec_put_extras(t, ts->opts, &x);
        }
    }
    if (shown || (ts->cap && ts->cap->print && !cap_busy)) {
        PyObject *raised = res ? NULL : cs_exc_fetch();
        trace_print(ts, (PyObject *)co, now - t0, shown, res, raised);
        if (raised)
            cs_exc_restore(raised);
    }
    cs__free(shown);
    return res;
}

#endif
