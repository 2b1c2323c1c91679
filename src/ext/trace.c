/* trace.c -- recording functions selected by name, in code nobody
 * decorated: the standard library, other people's packages.
 *
 * Python 3.12+: PEP 669 sys.monitoring. PY_START is on for all code, and
 * the first call of each code object decides: an unselected one returns
 * DISABLE and never calls back again, so unselected code runs at full
 * speed. A selected code object gets PY_RETURN, PY_YIELD and PY_RESUME
 * switched on for it alone; PY_UNWIND and PY_THROW, which cannot be set
 * per code object, are filtered by a dictionary lookup.
 *
 * A plain call is recorded like a decorated one (ENTER, then EXIT with
 * the seq's low bits), matched through a per-thread stack. A generator or
 * coroutine is one call from its first start to its end: its frame object
 * (stable for the generator's life) names it, and each suspension and
 * resumption is a MARK.
 *
 * Python 3.10 and 3.11: a PEP 523 frame-evaluation hook, installed only
 * while something is selected. Each code object's decision is kept in its
 * co_extra slot, so unselected code pays a pointer test; a generator's
 * resumes pass through the hook and are summed into one call. */
#include "ext.h"
#include "cs_select.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct trace_state {
    cs_select *sel;
    int tool;           /* sys.monitoring tool id in use, -1 when stopped */
    uint32_t opts;      /* MON_CPU | MON_MEM */
    PyObject *mon;      /* sys.monitoring */
    PyObject *disable;  /* sys.monitoring.DISABLE */
    PyObject *selected; /* dict: code -> (ident, packed func id | def epoch << 32) */
    PyObject *gens;     /* dict: frame address -> (seq | stream << 40, weakref) */
    PyObject *gen_refs; /* dict: weakref to a generator -> frame address */
    PyObject *on_gone;  /* the weakref callback */
    uint32_t gens_epoch;
    PyObject *callbacks; /* list of the callback function objects */
    int local_events;    /* PY_RETURN | PY_YIELD | PY_RESUME */
    char *own_prefix;    /* callscope's package directory: never selected */
    cap_conf *cap;       /* argument and result capture, or NULL */
    ext_state *st;
    int cfuncs;          /* C functions (builtins, extension methods) too */
    PyObject *cdecided;  /* dict: C function pointer -> (ident, packed id) or None */
} trace_state;

#define TRACE_SANITIZE (ts->cap ? ts->cap->sanitize : NULL)

#define CO_GEN_FLAGS (0x20 | 0x80 | 0x100 | 0x200) /* generator, coroutine, async gen */

static int
add_all(cs_select *sel, int kind, PyObject *seq, const char *key, char *why)
{
    if (seq == Py_None)
        return 0;
    PyObject *fast = PySequence_Fast(seq, "patterns must be a list of strings");
    if (fast == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); i++) {
        PyObject *p = PySequence_Fast_GET_ITEM(fast, i);
        const char *s = PyUnicode_Check(p) ? PyUnicode_AsUTF8(p) : NULL;
        if (s == NULL) {
            Py_DECREF(fast);
            PyErr_Format(PyExc_TypeError, "%s: patterns must be strings, not %.100s", key,
                         Py_TYPE(p)->tp_name);
            return -1;
        }
        int rc = cs_select_add(sel, kind, s, why);
        if (rc != CS_OK) {
            Py_DECREF(fast);
            if (rc == CS_ENOMEM)
                PyErr_NoMemory();
            else
                PyErr_Format(PyExc_ValueError, "%s: %s", key, why);
            return -1;
        }
    }
    Py_DECREF(fast);
    return 0;
}

/* The selection that _trace_start's arguments describe, validated. NULL
 * with an error set when a pattern is bad. */
static cs_select *
parse_selection(PyObject *args, PyObject *kw, uint32_t *opts, const char **own, cap_conf **cap,
                int *cfuncs)
{
    static char *kwlist[] = {"patterns", "modules", "excludes", "cpu", "memory", "own",
                             "args", "result", "redact", "sanitize", "max_arg_length",
                             "max_bytes", "capture_self", "print", "c_functions", NULL};
    PyObject *patterns = Py_None, *modules = Py_None, *excludes = Py_None;
    PyObject *redact = Py_None, *sanitize = Py_None, *mal = Py_None, *mb = Py_None;
    PyObject *print = Py_False;
    int cpu = 0, memory = 0, cargs = 0, cresult = 0, cself = 0;
    *own = NULL;
    *cap = NULL;
    *cfuncs = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OOOppzppOOOOpOp:_trace_start", kwlist,
                                     &patterns, &modules, &excludes, &cpu, &memory, own, &cargs,
                                     &cresult, &redact, &sanitize, &mal, &mb, &cself, &print,
                                     cfuncs))
        return NULL;

    cap_conf *c = cap_conf_new(cargs, cresult, redact, sanitize, mal, mb, cself, print);
    if (c == NULL)
        return NULL;
    if (!cap_conf_needed(c)) {
        cap_conf_free(c);
        c = NULL;
    }
    cs_select *sel = NULL;
    char why[128];
    if (cs_select_new(&sel) != CS_OK) {
        PyErr_NoMemory();
        return NULL;
    }
    if (add_all(sel, CS_SEL_TRACE, patterns, "trace", why) < 0 ||
        add_all(sel, CS_SEL_MODULE, modules, "module", why) < 0 ||
        add_all(sel, CS_SEL_EXCLUDE, excludes, "exclude", why) < 0) {
        cs_select_free(sel);
        cap_conf_free(c);
        return NULL;
    }
    if (cs_select_count(sel) == 0) {
        cs_select_free(sel);
        cap_conf_free(c);
        PyErr_SetString(PyExc_ValueError, "trace: give at least one pattern or module");
        return NULL;
    }
    *opts = (cpu ? MON_CPU : 0) | (memory ? MON_MEM : 0);
    *cap = c;
    return sel;
}

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
    cs_select *sel = parse_selection(args, kw, &opts, &own, &cap, &cfuncs);
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
        ts->tool = -1;
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
    if (!ts->selected || !ts->gens || !ts->cdecided || (own && !ts->own_prefix)) {
        r = trace_stop(mod, NULL);
        Py_XDECREF(r);
        PyErr_NoMemory();
        return NULL;
    }
    rec_in_use = 1; /* a fork or spawn now settles the run first */
    return ts;
}

/* Drop the selection's state (both backends, and module clear). */
static void
forget_selection(trace_state *ts)
{
    ts->tool = -1;
    cs_select_free(ts->sel);
    ts->sel = NULL;
    cs__free(ts->own_prefix);
    ts->own_prefix = NULL;
    cap_conf_free(ts->cap);
    ts->cap = NULL;
    Py_CLEAR(ts->selected);
    Py_CLEAR(ts->cdecided);
    Py_CLEAR(ts->gens);
#if CS_HAVE_MONITORING
    Py_CLEAR(ts->mon);
    Py_CLEAR(ts->disable);
    Py_CLEAR(ts->gen_refs);
    Py_CLEAR(ts->on_gone);
    Py_CLEAR(ts->callbacks);
#endif
}

/* (module, qualname, file, line) of `co`, whose module's globals are
 * `globals`. */
static PyObject *
code_ident(PyCodeObject *co, PyObject *globals)
{
    PyObject *module = globals ? PyDict_GetItemString(globals, "__name__") : NULL;
    if (module == NULL || !PyUnicode_Check(module))
        module = NULL;
    PyObject *empty = PyUnicode_FromString("");
    PyObject *qual = cs_code_qualname(co);
    PyObject *r = empty ? Py_BuildValue("(OOOi)", module ? module : empty, qual,
                                        co->co_filename, co->co_firstlineno)
                        : NULL;
    Py_XDECREF(empty);
    Py_DECREF(qual);
    return r;
}

/* The function id of selected code `co` (0 if it is not selected), its
 * FUNC record written into the current log if needed. `v` is its entry in
 * ts->selected when the caller has looked it up already, else NULL. */
static uint32_t
func_of_code(trace_state *ts, PyObject *co, cs_tstate *t, PyObject *v)
{
    if (v == NULL && (v = PyDict_GetItemWithError(ts->selected, co)) == NULL) {
        PyErr_Clear();
        return 0;
    }
    PyObject *ident = PyTuple_GET_ITEM(v, 0);
    uint64_t packed = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(v, 1));
    uint32_t id = (uint32_t)packed;
    if ((uint32_t)(packed >> 32) != t->epoch) {
        rec_define(t, id, ident, CS_FUNC_FUNCTION, co);
        if (ts->cap && ts->cap->args)
            cap_put_signature(ts->st, ts->cap, t, id, NULL, co, 0);
        PyObject *nv = Py_BuildValue("(OK)", ident,
                                     (unsigned long long)id | ((unsigned long long)t->epoch << 32));
        if (nv == NULL || PyDict_SetItem(ts->selected, co, nv) < 0)
            PyErr_Clear();
        Py_XDECREF(nv);
    }
    return id;
}

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
        uint32_t id = func_of_code(ts, co, t, NULL);
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
        rec_error_obj(st, t, seq, stream, exc, TRACE_SANITIZE);
    else if (mark == CS_MARK_EXIT)
        trace_result(ts, t, seq, stream, result);
    cs_log_mark(t, mark, seq, stream, status, now);
    if (ts->opts)
        rec_put_extras(t, ts->opts, &x);
    if (mark == CS_MARK_EXIT && PyDict_DelItem(ts->gens, key) < 0)
        PyErr_Clear();
    Py_DECREF(key);
}

static int
is_gen(PyObject *co)
{
    return (((PyCodeObject *)co)->co_flags & CO_GEN_FLAGS) != 0;
}

/* Decide about code seen for the first time. 1 if selected. */
static int
decide(ext_state *st, PyObject *co, PyObject *globals)
{
    trace_state *ts = st->trace;
    /* functions only: module and class bodies have no local namespace */
    if (!(((PyCodeObject *)co)->co_flags & 0x2 /* CO_NEWLOCALS */))
        return 0;
    /* a decorated function is recorded by its decorator, once */
    if (st->monitored && PySet_Contains(st->monitored, co) > 0)
        return 0;
    /* callscope's own code (the launcher's main) is never the user's */
    if (ts->own_prefix) {
        const char *file = PyUnicode_AsUTF8(((PyCodeObject *)co)->co_filename);
        if (file == NULL)
            PyErr_Clear();
        else if (strncmp(file, ts->own_prefix, strlen(ts->own_prefix)) == 0)
            return 0;
    }
    PyObject *ident = code_ident((PyCodeObject *)co, globals);
    if (ident == NULL) {
        PyErr_Clear();
        return 0;
    }
    const char *module = PyUnicode_AsUTF8(PyTuple_GET_ITEM(ident, 0));
    const char *qual = PyUnicode_AsUTF8(PyTuple_GET_ITEM(ident, 1));
    int yes = module && qual && cs_select_match(ts->sel, module, qual);
    PyErr_Clear();
    if (yes) {
        PyObject *v = Py_BuildValue("(OK)", ident, (unsigned long long)rec_new_func_id());
        int ok = v && PyDict_SetItem(ts->selected, co, v) == 0;
#if CS_HAVE_MONITORING
        if (ok) {
            PyObject *r = PyObject_CallMethod(ts->mon, "set_local_events", "iOi", ts->tool, co,
                                              ts->local_events);
            ok = r != NULL;
            Py_XDECREF(r);
        }
#endif
        if (!ok) {
            PyErr_Clear();
            yes = 0;
        }
        Py_XDECREF(v);
    }
    Py_DECREF(ident);
    return yes;
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


/* ---- C functions: selected by their C entry point ---------------------------
 * A C function is known by its C entry point (ml_meth), the same whether
 * it is called as a builtin, a module function, a method descriptor or a
 * bound method. The first call of each decides, from its qualified name,
 * as for Python code. */

/* The PyMethodDef behind `callable`, or NULL if it is no C function. */
static PyMethodDef *
c_method(PyObject *callable)
{
    if (PyCFunction_Check(callable))
        return ((PyCFunctionObject *)callable)->m_ml;
    if (Py_IS_TYPE(callable, &PyMethodDescr_Type))
        return ((PyMethodDescrObject *)callable)->d_method;
    return NULL;
}

/* (module, qualname) of a C function: its module's name and its own for a
 * module function; the type's module and "Type.name" for a method. */
static PyObject *
c_ident(PyObject *callable, PyMethodDef *ml)
{
    PyObject *owner = NULL;
    if (PyCFunction_Check(callable))
        owner = ((PyCFunctionObject *)callable)->m_self;
    else
        owner = (PyObject *)((PyMethodDescrObject *)callable)->d_common.d_type;
    PyObject *module = NULL, *qual = NULL;
    if (owner && PyModule_Check(owner)) {
        module = PyModule_GetNameObject(owner);
        qual = PyUnicode_FromString(ml->ml_name);
    } else if (owner) {
        PyTypeObject *tp = PyType_Check(owner) ? (PyTypeObject *)owner : Py_TYPE(owner);
        PyObject *tq = PyObject_GetAttrString((PyObject *)tp, "__qualname__");
        module = PyObject_GetAttrString((PyObject *)tp, "__module__");
        qual = tq && PyUnicode_Check(tq) ? PyUnicode_FromFormat("%U.%s", tq, ml->ml_name) : NULL;
        Py_XDECREF(tq);
    } else {
        PyObject *m = PyObject_GetAttrString(callable, "__module__");
        module = m && PyUnicode_Check(m) ? m : (Py_XDECREF(m), PyUnicode_FromString("builtins"));
        qual = PyUnicode_FromString(ml->ml_name);
    }
    PyErr_Clear();
    if (module == NULL || !PyUnicode_Check(module)) {
        Py_XDECREF(module);
        module = PyUnicode_FromString("");
    }
    PyObject *r = module && qual ? Py_BuildValue("(OOsi)", module, qual, "", 0) : NULL;
    Py_XDECREF(module);
    Py_XDECREF(qual);
    PyErr_Clear();
    return r;
}

/* The function id of selected C function `callable` (0 when not
 * selected), its FUNC record written into the current log if needed. */
static uint32_t
c_selected(trace_state *ts, PyObject *callable, cs_tstate *t, void **meth_out)
{
    PyMethodDef *ml = c_method(callable);
    if (ml == NULL)
        return 0;
    PyObject *key = PyLong_FromVoidPtr((void *)ml->ml_meth);
    if (key == NULL) {
        PyErr_Clear();
        return 0;
    }
    PyObject *v = PyDict_GetItemWithError(ts->cdecided, key); /* borrowed */
    if (v == NULL) {
        PyErr_Clear();
        PyObject *ident = c_ident(callable, ml);
        int yes = 0;
        if (ident) {
            const char *m = PyUnicode_AsUTF8(PyTuple_GET_ITEM(ident, 0));
            const char *q = PyUnicode_AsUTF8(PyTuple_GET_ITEM(ident, 1));
            yes = m && q && cs_select_match(ts->sel, m, q);
            PyErr_Clear();
        }
        PyObject *nv = yes ? Py_BuildValue("(OK)", ident, (unsigned long long)rec_new_func_id())
                           : Py_NewRef(Py_None);
        Py_XDECREF(ident);
        if (nv == NULL || PyDict_SetItem(ts->cdecided, key, nv) < 0) {
            PyErr_Clear();
            Py_XDECREF(nv);
            Py_DECREF(key);
            return 0;
        }
        Py_DECREF(nv);
        v = PyDict_GetItem(ts->cdecided, key);
    }
    if (v == NULL || v == Py_None) {
        Py_DECREF(key);
        return 0;
    }
    uint64_t packed = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(v, 1));
    uint32_t id = (uint32_t)packed;
    if (t && (uint32_t)(packed >> 32) != t->epoch) {
        rec_define(t, id, PyTuple_GET_ITEM(v, 0), CS_FUNC_FUNCTION, NULL);
        PyObject *nv = Py_BuildValue("(OK)", PyTuple_GET_ITEM(v, 0),
                                     (unsigned long long)id | ((unsigned long long)t->epoch << 32));
        if (nv == NULL || PyDict_SetItem(ts->cdecided, key, nv) < 0)
            PyErr_Clear();
        Py_XDECREF(nv);
    }
    Py_DECREF(key);
    *meth_out = (void *)ml->ml_meth;
    return id;
}

/* A call of C function `callable` begins: recorded if it is selected. */
static void
c_begin(trace_state *ts, PyObject *callable)
{
    PyObject *exc = cs_exc_fetch();
    cs_tstate *t = rec_tstate();
    void *meth = NULL;
    uint32_t id = t ? c_selected(ts, callable, t, &meth) : 0;
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
static void
c_finish(trace_state *ts, PyObject *callable, int raised)
{
    uint64_t now = cs_clock_mono_ns();
    PyObject *exc = cs_exc_fetch();
    cs_tstate *t = cs_log_tstate();
    void *meth = NULL;
    if (t && c_selected(ts, callable, NULL, &meth)) {
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

/* 1 if `code` is callscope's own: its calls are not the program's. */
static int
own_code(trace_state *ts, PyCodeObject *code)
{
    if (ts->own_prefix == NULL || code == NULL)
        return 0;
    const char *file = PyUnicode_AsUTF8(code->co_filename);
    if (file == NULL) {
        PyErr_Clear();
        return 0;
    }
    return strncmp(file, ts->own_prefix, strlen(ts->own_prefix)) == 0;
}

#if CS_HAVE_MONITORING

/* ---- per-thread stack of plain calls -------------------------------------- */

/* A traced generator went away while its call was open (closed without an
 * event, or dropped): its call ends now, as a decorated one's does. */
static PyObject *
cb_gone(PyObject *mod, PyObject *ref)
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

static PyMethodDef gone_def = {"_cs_gen_gone", cb_gone, METH_O, NULL};

/* ---- the callbacks (sys.monitoring calls them with vectorcall) ---------- */

static PyObject *
cb_start(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    trace_state *ts = st->trace;
    if (nargs < 1 || ts == NULL || ts->tool < 0)
        Py_RETURN_NONE;
    PyObject *co = args[0];
    PyObject *exc = cs_exc_fetch();
    /* one lookup (a code object's hash is not cached): the entry, if any */
    PyObject *entry = PyDict_GetItemWithError(ts->selected, co);
    if (entry == NULL) {
        PyErr_Clear();
        if (!decide(st, co, PyEval_GetGlobals())) {
            cs_exc_restore(exc);
            return Py_NewRef(ts->disable); /* never again for this code */
        }
    }
    Py_XINCREF(entry); /* held: opening the log below may run Python code */
    cs_tstate *t = rec_tstate();
    if (t != NULL) {
        if (is_gen(co)) {
            gen_event(st, co, t, CS_MARK_RESUME, 0, NULL, 1, PyEval_GetFrame(), NULL);
        } else {
            uint32_t id = func_of_code(ts, co, t, entry);
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
    cs_exc_restore(exc);
    Py_RETURN_NONE;
}

/* The end of a selected call: returned (exc NULL) or unwound. */
static void
end_call(ext_state *st, PyObject *co, PyObject *exc, PyObject *result)
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
        rec_error_obj(st, t, f.seq, t->stream, exc, TRACE_SANITIZE);
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

static int
selected(trace_state *ts, PyObject *co)
{
    if (ts == NULL || ts->tool < 0)
        return 0;
    int r = PyDict_Contains(ts->selected, co);
    if (r < 0)
        PyErr_Clear();
    return r > 0;
}

static PyObject *
cb_return(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    if (nargs >= 1 && selected(st->trace, args[0])) {
        PyObject *exc = cs_exc_fetch();
        end_call(st, args[0], NULL, nargs >= 3 ? args[2] : NULL);
        cs_exc_restore(exc);
    }
    Py_RETURN_NONE;
}

static PyObject *
cb_unwind(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    if (nargs >= 3 && selected(st->trace, args[0])) {
        PyObject *exc = cs_exc_fetch();
        end_call(st, args[0], args[2], NULL);
        cs_exc_restore(exc);
    }
    Py_RETURN_NONE;
}

static PyObject *
mark_gen(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, unsigned mark)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    if (nargs >= 1 && is_gen(args[0]) && selected(st->trace, args[0])) {
        PyObject *exc = cs_exc_fetch();
        cs_tstate *t = rec_tstate();
        if (t)
            gen_event(st, args[0], t, mark, 0, NULL, 0, PyEval_GetFrame(), NULL);
        cs_exc_restore(exc);
    }
    Py_RETURN_NONE;
}

static PyObject *
cb_yield(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    return mark_gen(mod, args, nargs, CS_MARK_SUSPEND);
}

static PyObject *
cb_resume(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    return mark_gen(mod, args, nargs, CS_MARK_RESUME);
}

static PyObject *
cb_call(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    trace_state *ts = st->trace;
    if (nargs < 3 || ts == NULL || ts->tool < 0 || !ts->cfuncs || c_method(args[2]) == NULL)
        Py_RETURN_NONE;
    if (PyCode_Check(args[0]) && own_code(ts, (PyCodeObject *)args[0]))
        Py_RETURN_NONE;
    c_begin(ts, args[2]);
    Py_RETURN_NONE;
}

static PyObject *
c_end(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, int raised)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    trace_state *ts = st->trace;
    if (nargs < 3 || ts == NULL || ts->tool < 0 || !ts->cfuncs || c_method(args[2]) == NULL)
        Py_RETURN_NONE;
    c_finish(ts, args[2], raised);
    Py_RETURN_NONE;
}

static PyObject *
cb_c_return(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    return c_end(mod, args, nargs, 0);
}

static PyObject *
cb_c_raise(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    return c_end(mod, args, nargs, 1);
}

/* The callbacks, by the name of their sys.monitoring.events member (the
 * event numbers are read from there, not assumed). */
static const char *const callback_events[] = {"PY_START", "PY_RESUME", "PY_RETURN",
                                              "PY_YIELD", "PY_UNWIND", "PY_THROW",
                                              "CALL",     "C_RETURN",  "C_RAISE"};

static PyMethodDef callback_defs[] = {
    {"_cs_py_start", (PyCFunction)(void (*)(void))cb_start, METH_FASTCALL, NULL},
    {"_cs_py_resume", (PyCFunction)(void (*)(void))cb_resume, METH_FASTCALL, NULL},
    {"_cs_py_return", (PyCFunction)(void (*)(void))cb_return, METH_FASTCALL, NULL},
    {"_cs_py_yield", (PyCFunction)(void (*)(void))cb_yield, METH_FASTCALL, NULL},
    {"_cs_py_unwind", (PyCFunction)(void (*)(void))cb_unwind, METH_FASTCALL, NULL},
    {"_cs_py_throw", (PyCFunction)(void (*)(void))cb_resume, METH_FASTCALL, NULL},
    {"_cs_call", (PyCFunction)(void (*)(void))cb_call, METH_FASTCALL, NULL},
    {"_cs_c_return", (PyCFunction)(void (*)(void))cb_c_return, METH_FASTCALL, NULL},
    {"_cs_c_raise", (PyCFunction)(void (*)(void))cb_c_raise, METH_FASTCALL, NULL},
};

/* sys.monitoring.events.<name>, or -1 with an error set. */
static int
event_bit(PyObject *mon, const char *name)
{
    PyObject *events = PyObject_GetAttrString(mon, "events");
    PyObject *v = events ? PyObject_GetAttrString(events, name) : NULL;
    long bit = v ? PyLong_AsLong(v) : -1;
    Py_XDECREF(v);
    Py_XDECREF(events);
    return (int)bit;
}

/* A free tool id. Ours is looked for among those no standard tool claims:
 * 0 debugger, 1 coverage, 2 profiler and 5 optimizer stay free. */
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
                    "callscope.trace: sys.monitoring tool ids 3 and 4 are both in use");
    return -1;
}

PyObject *
trace_start(PyObject *mod, PyObject *args, PyObject *kw)
{
    trace_state *ts = new_selection(mod, args, kw);
    if (ts == NULL)
        return NULL;
    PyObject *r;
    PyObject *sys = PyImport_ImportModule("sys");
    ts->mon = sys ? PyObject_GetAttrString(sys, "monitoring") : NULL;
    Py_XDECREF(sys);
    if (ts->mon == NULL)
        goto fail;
    ts->disable = PyObject_GetAttrString(ts->mon, "DISABLE");
    ts->gen_refs = PyDict_New();
    ts->on_gone = PyCFunction_NewEx(&gone_def, mod, NULL);
    ts->callbacks = PyList_New(0);
    if (!ts->disable || !ts->gen_refs || !ts->on_gone || !ts->callbacks)
        goto fail;
    if ((ts->tool = claim_tool(ts->mon)) < 0)
        goto fail;
    int bits[9];
    for (size_t i = 0; i < 9; i++)
        if ((bits[i] = event_bit(ts->mon, callback_events[i])) < 0)
            goto fail;
    ts->local_events = bits[1] | bits[2] | bits[3];
    for (size_t i = 0; i < sizeof callback_defs / sizeof *callback_defs; i++) {
        PyObject *fn = PyCFunction_NewEx(&callback_defs[i], mod, NULL);
        PyObject *ok = fn ? PyObject_CallMethod(ts->mon, "register_callback", "iiO", ts->tool,
                                                bits[i], fn)
                          : NULL;
        if (ok == NULL || PyList_Append(ts->callbacks, fn) < 0) {
            Py_XDECREF(fn);
            Py_XDECREF(ok);
            goto fail;
        }
        Py_DECREF(fn);
        Py_DECREF(ok);
    }
    /* PY_START, PY_UNWIND and PY_THROW for all code; the rest per code.
     * C functions need CALL everywhere (C_RETURN and C_RAISE follow it):
     * every call of the program then costs a callback. */
    r = PyObject_CallMethod(ts->mon, "set_events", "ii", ts->tool,
                            bits[0] | bits[4] | bits[5] | (ts->cfuncs ? bits[6] : 0));
    if (r == NULL)
        goto fail;
    Py_DECREF(r);
    /* code disabled by an earlier selection is looked at again */
    r = PyObject_CallMethod(ts->mon, "restart_events", NULL);
    if (r == NULL)
        goto fail;
    Py_DECREF(r);
    Py_RETURN_NONE;
fail:
    r = trace_stop(mod, NULL);
    Py_XDECREF(r);
    return NULL;
}

PyObject *
trace_stop(PyObject *mod, PyObject *unused)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    trace_state *ts = st->trace;
    if (ts == NULL)
        Py_RETURN_NONE;
    PyObject *exc = cs_exc_fetch(); /* stopping must work while failing */
    if (ts->tool >= 0 && ts->mon) {
        PyObject *r = PyObject_CallMethod(ts->mon, "set_events", "ii", ts->tool, 0);
        Py_XDECREF(r);
        if (ts->selected) {
            PyObject *code;
            Py_ssize_t pos = 0;
            PyObject *value;
            while (PyDict_Next(ts->selected, &pos, &code, &value)) {
                r = PyObject_CallMethod(ts->mon, "set_local_events", "iOi", ts->tool, code, 0);
                Py_XDECREF(r);
            }
        }
        for (size_t i = 0; i < sizeof callback_events / sizeof *callback_events; i++) {
            int bit = event_bit(ts->mon, callback_events[i]);
            r = bit < 0 ? NULL
                        : PyObject_CallMethod(ts->mon, "register_callback", "iiO", ts->tool,
                                              bit, Py_None);
            Py_XDECREF(r);
        }
        r = PyObject_CallMethod(ts->mon, "free_tool_id", "i", ts->tool);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    forget_selection(ts);
    cs_exc_restore(exc);
    Py_RETURN_NONE;
}

#else /* Python 3.10 and 3.11: a PEP 523 frame-evaluation hook */

/* The hook has no context argument: the one interpreter's state is kept
 * here while the hook is installed. */
static ext_state *hook_st;
static _PyFrameEvalFunction prev_eval; /* a hook installed before ours */
static Py_ssize_t extra_index = -1;     /* our co_extra slot */
static uint32_t selection_gen;          /* bumped by every new selection */

/* What we know of a code object, in its co_extra slot. */
typedef struct code_mark {
    uint32_t gen; /* selection_gen it was decided in */
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
    return prev_eval ? prev_eval(tstate, f, throwflag)
                     : _PyEval_EvalFrameDefault(tstate, f, throwflag);
}

static int
is_selected(PyCodeObject *co, cs_eframe *f)
{
    code_mark *m = NULL;
    if (_PyCode_GetExtra((PyObject *)co, extra_index, (void **)&m) < 0) {
        PyErr_Clear();
        return 0;
    }
    if (CS_LIKELY(m != NULL && m->gen == selection_gen))
        return m->selected;
    if (m == NULL) {
        m = cs__calloc(1, sizeof *m);
        if (m == NULL || _PyCode_SetExtra((PyObject *)co, extra_index, m) < 0) {
            PyErr_Clear();
            cs__free(m);
            return 0;
        }
    }
    PyObject *exc = cs_exc_fetch();
    m->gen = selection_gen;
    m->selected = decide(hook_st, (PyObject *)co, cs_eframe_globals(f));
    cs_exc_restore(exc);
    return m->selected;
}

static PyObject *
cs_eval(PyThreadState *tstate, cs_eframe *f, int throwflag)
{
    PyCodeObject *co = cs_eframe_code(f);
    if (CS_LIKELY(hook_st == NULL || hook_st->trace == NULL || hook_st->trace->sel == NULL ||
                  !is_selected(co, f)))
        return call_prev(tstate, f, throwflag);
    ext_state *st = hook_st;
    trace_state *ts = st->trace;
    PyObject *exc = cs_exc_fetch();
    cs_tstate *t = rec_tstate();
    cs_exc_restore(exc);
    if (t == NULL)
        return call_prev(tstate, f, throwflag);
    if (is_gen((PyObject *)co)) {
        if (!cs_eframe_in_gen(f))
            return call_prev(tstate, f, throwflag); /* only creates the generator */
        /* each resume passes here: the first (not yet open) starts the call */
        exc = cs_exc_fetch();
        PyObject *key = PyLong_FromVoidPtr(f);
        int begin = key && ts->gens && PyDict_Contains(ts->gens, key) == 0;
        Py_XDECREF(key);
        PyErr_Clear();
        gen_event(st, (PyObject *)co, t, CS_MARK_RESUME, 0, NULL, begin, f, NULL);
        cs_exc_restore(exc);
        PyObject *res = call_prev(tstate, f, throwflag);
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
    uint32_t id = func_of_code(ts, (PyObject *)co, t, NULL);
    uint32_t epoch = t->epoch;
    uint64_t t0;
    char *shown;
    uint64_t seq = trace_enter(ts, t, (PyObject *)co, f, id, &t0, &shown);
    rec_extra x;
    PyObject *res = call_prev(tstate, f, throwflag);
    uint64_t now = cs_clock_mono_ns();
    t = cs_log_tstate();
    if (t != NULL && t->epoch == epoch) {
        if (ts->opts)
            rec_read_extras(ts->opts, &x, 0);
        if (res == NULL)
            rec_error_sanitized(st, t, seq, t->stream, TRACE_SANITIZE);
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

/* C functions on 3.10 and 3.11: the C profile hook, in every thread (an
 * evaluation hook never sees a C call). It costs: 3.11 runs every
 * bytecode unspecialised while a profile hook is set. */
static int
c_profile(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    (void)obj;
    if (what != PyTrace_C_CALL && what != PyTrace_C_RETURN && what != PyTrace_C_EXCEPTION)
        return 0;
    ext_state *st = hook_st;
    trace_state *ts = st ? st->trace : NULL;
    if (ts == NULL || ts->tool < 0 || !ts->cfuncs || arg == NULL || c_method(arg) == NULL)
        return 0;
    if (what == PyTrace_C_CALL) {
        PyCodeObject *co = frame ? PyFrame_GetCode(frame) : NULL;
        int own = own_code(ts, co);
        Py_XDECREF(co);
        if (!own)
            c_begin(ts, arg);
    } else {
        c_finish(ts, arg, what == PyTrace_C_EXCEPTION);
    }
    return 0;
}

/* threading.setprofile: a new thread's first event puts the C hook in. */
static PyObject *
c_profile_starter(PyObject *mod, PyObject *args)
{
    (void)mod;
    (void)args;
    PyEval_SetProfile(c_profile, NULL);
    Py_RETURN_NONE;
}

static PyMethodDef starter_def = {"_cs_c_profile_starter", c_profile_starter, METH_VARARGS,
                                  NULL};

/* Set (on) or remove (off) the C hook in every thread, and for threads
 * started later. -1 with an error set when another profiler holds a
 * thread (cProfile, a debugger): there is one profile slot per thread. */
static int
c_profile_all(PyObject *mod, int on)
{
    PyInterpreterState *interp = PyInterpreterState_Get();
    if (on) {
        for (PyThreadState *t = PyInterpreterState_ThreadHead(interp); t;
             t = PyThreadState_Next(t))
            if (t->c_profilefunc != NULL && t->c_profilefunc != c_profile) {
                PyErr_SetString(PyExc_RuntimeError,
                                "trace: c_functions needs the profile hook, and another"
                                " profiler (cProfile, a debugger?) is using it");
                return -1;
            }
    }
    for (PyThreadState *t = PyInterpreterState_ThreadHead(interp); t; t = PyThreadState_Next(t)) {
        if (on)
            _PyEval_SetProfile(t, c_profile, NULL);
        else if (t->c_profilefunc == c_profile)
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
    return 0;
}

PyObject *
trace_start(PyObject *mod, PyObject *args, PyObject *kw)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    if (extra_index < 0 && (extra_index = _PyEval_RequestCodeExtraIndex(free_mark)) < 0) {
        PyErr_SetString(PyExc_RuntimeError, "callscope.trace: no free co_extra slot");
        return NULL;
    }
    trace_state *ts = new_selection(mod, args, kw);
    if (ts == NULL)
        return NULL;
    selection_gen++;
    cs_eval_hook_install(cs_eval, &prev_eval); /* chained to one before ours */
    hook_st = st;
    ts->tool = 0; /* active */
    if (ts->cfuncs && c_profile_all(mod, 1) < 0) {
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
    if (ts->tool >= 0) {
        /* the hook stays only while something is selected */
        if (ts->cfuncs)
            c_profile_all(mod, 0);
        cs_eval_hook_remove(cs_eval, &prev_eval);
        hook_st = NULL;
        selection_gen++;
    }
    forget_selection(ts);
    Py_RETURN_NONE;
}

#endif

PyObject *
trace_active(PyObject *mod, PyObject *unused)
{
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    return PyBool_FromLong(st->trace != NULL && st->trace->tool >= 0);
}

void
trace_free(ext_state *st)
{
    if (st->trace == NULL)
        return;
#if !CS_HAVE_MONITORING
    /* the module goes away: so must the hook that points into it */
    if (hook_st == st) {
        cs_eval_hook_remove(cs_eval, &prev_eval);
        hook_st = NULL;
    }
#endif
    forget_selection(st->trace);
    cs__free(st->trace);
    st->trace = NULL;
}
