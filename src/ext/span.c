/* span.c -- named regions: `with callscope.span("load"):`, or the manual
 * form start/pause/resume/stop. A span is recorded like a call of a
 * function of kind "span"; paused time is left out of its wall time. */
#include "ext.h"

enum { SPAN_IDLE = 0, SPAN_RUNNING = 1, SPAN_PAUSED = 2, SPAN_STOPPED = 3 };

typedef struct SpanObject {
    PyObject_HEAD
    PyObject *display; /* the name shown to the user */
    PyObject *ident;   /* (module, qualname, file, line) */
    uint64_t seq;
    uint32_t stream;
    uint32_t epoch;
    uint32_t opts;
    int state;
    uint64_t mark_ns;   /* when it last started or resumed */
    uint64_t active_ns; /* its time running, pauses left out */
} SpanObject;

static const char *const state_names[] = {"idle", "running", "paused", "stopped"};

/* The identity of the enclosing function, for a span without a name. */
static PyObject *
caller_ident(void)
{
    PyFrameObject *f = PyEval_GetFrame(); /* borrowed */
    PyObject *globals = PyEval_GetGlobals(); /* borrowed */
    if (f == NULL)
        return Py_BuildValue("(sssi)", "", "<span>", "", 0);
    PyCodeObject *co = PyFrame_GetCode(f); /* new */
    PyObject *qual = cs_code_qualname(co);
    PyObject *module = globals ? PyDict_GetItemString(globals, "__name__") : NULL;
    PyObject *r = Py_BuildValue("(OOOi)", module && PyUnicode_Check(module) ? module : Py_None,
                                qual, co->co_filename, co->co_firstlineno);
    if (r && !(module && PyUnicode_Check(module))) {
        PyObject *empty = PyUnicode_FromString("");
        if (empty == NULL) {
            Py_CLEAR(r);
        } else {
            PyObject *old = PyTuple_GET_ITEM(r, 0);
            PyTuple_SET_ITEM(r, 0, empty);
            Py_DECREF(old);
        }
    }
    Py_DECREF(qual);
    Py_DECREF(co);
    return r;
}

static PyObject *
span_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "cpu", "memory", NULL};
    PyObject *name = Py_None;
    int cpu = 0, memory = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O$pp:span", kwlist, &name, &cpu, &memory))
        return NULL;
    if (name != Py_None && !PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "span(): name must be a str, not %.100s",
                     Py_TYPE(name)->tp_name);
        return NULL;
    }
    if (name != Py_None && PyUnicode_GET_LENGTH(name) == 0) {
        PyErr_SetString(PyExc_ValueError, "span(): name must not be empty");
        return NULL;
    }
    SpanObject *s = (SpanObject *)type->tp_alloc(type, 0);
    if (s == NULL)
        return NULL;
    if (name != Py_None) {
        PyObject *empty = PyUnicode_FromString("");
        s->ident = empty ? ext_split_name(name, empty, 0) : NULL;
        Py_XDECREF(empty);
        s->display = Py_NewRef(name);
    } else {
        s->ident = caller_ident();
        if (s->ident) {
            PyObject *m = PyTuple_GET_ITEM(s->ident, 0), *q = PyTuple_GET_ITEM(s->ident, 1);
            s->display = PyUnicode_GET_LENGTH(m) ? PyUnicode_FromFormat("%U.%U", m, q)
                                                 : Py_NewRef(q);
        }
    }
    if (s->ident == NULL || s->display == NULL) {
        Py_DECREF(s);
        return NULL;
    }
    s->opts = (cpu ? MON_CPU : 0) | (memory ? MON_MEM : 0);
    rec_in_use = 1;
    return (PyObject *)s;
}

/* The function id of this span's identity, defining it in the current
 * log when needed. 0 on failure (no error set). */
static uint32_t
span_func_id(SpanObject *s, cs_tstate *t)
{
    ext_state *st = ext_state_of(Py_TYPE(s));
    PyObject *v = PyDict_GetItemWithError(st->span_ids, s->ident); /* borrowed */
    uint64_t packed = 0;
    if (v)
        packed = PyLong_AsUnsignedLongLongMask(v);
    else if (PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    uint32_t id = (uint32_t)packed, ep = (uint32_t)(packed >> 32);
    if (id == 0)
        id = rec_new_func_id();
    if (v == NULL || ep != t->epoch) {
        rec_define(t, id, s->ident, CS_FUNC_SPAN, NULL);
        PyObject *nv = PyLong_FromUnsignedLongLong((uint64_t)id | ((uint64_t)t->epoch << 32));
        if (nv == NULL || PyDict_SetItem(st->span_ids, s->ident, nv) < 0)
            PyErr_Clear();
        Py_XDECREF(nv);
    }
    return id;
}

static PyObject *
wrong_state(SpanObject *s, const char *what)
{
    PyErr_Format(PyExc_RuntimeError, "span %R: cannot %s a span that is %s", s->display, what,
                 state_names[s->state]);
    return NULL;
}

static PyObject *
span_start(SpanObject *s, PyObject *unused)
{
    if (s->state == SPAN_RUNNING || s->state == SPAN_PAUSED)
        return wrong_state(s, "start");
    s->state = SPAN_RUNNING;
    s->active_ns = 0;
    cs_tstate *t = rec_tstate();
    if (t == NULL) {
        s->epoch = 0; /* not recorded; the span still works */
        s->mark_ns = cs_clock_mono_ns();
        Py_RETURN_NONE;
    }
    uint32_t id = span_func_id(s, t);
    rec_extra x;
    if (s->opts)
        rec_read_extras(s->opts, &x, 1);
    s->mark_ns = cs_clock_mono_ns();
    s->seq = cs_log_enter(t, id, CS_FLAG_SPAN, s->mark_ns);
    if (s->opts)
        rec_put_extras(t, s->opts, &x);
    s->stream = t->stream;
    s->epoch = t->epoch;
    Py_RETURN_NONE;
}

/* Write `kind` for the span if its log is still the current one, and
 * keep its running time. */
static void
span_mark(SpanObject *s, unsigned kind, unsigned status, PyObject *exc)
{
    uint64_t ts = cs_clock_mono_ns();
    if (s->state == SPAN_RUNNING && ts > s->mark_ns)
        s->active_ns += ts - s->mark_ns; /* it pauses or stops */
    if (kind == CS_MARK_RESUME)
        s->mark_ns = ts;
    cs_tstate *t = s->epoch ? rec_tstate() : NULL;
    if (t == NULL || t->epoch != s->epoch)
        return;
    rec_extra x;
    if (s->opts)
        rec_read_extras(s->opts, &x, kind == CS_MARK_RESUME);
    if (exc)
        rec_error_obj(ext_state_of(Py_TYPE(s)), t, s->seq, s->stream, exc, NULL);
    cs_log_mark(t, kind, s->seq, s->stream, status, ts);
    if (s->opts)
        rec_put_extras(t, s->opts, &x);
}

static PyObject *
span_pause(SpanObject *s, PyObject *unused)
{
    if (s->state != SPAN_RUNNING)
        return wrong_state(s, "pause");
    span_mark(s, CS_MARK_SUSPEND, 0, NULL);
    s->state = SPAN_PAUSED;
    Py_RETURN_NONE;
}

static PyObject *
span_resume(SpanObject *s, PyObject *unused)
{
    if (s->state != SPAN_PAUSED)
        return wrong_state(s, "resume");
    span_mark(s, CS_MARK_RESUME, 0, NULL);
    s->state = SPAN_RUNNING;
    Py_RETURN_NONE;
}

static PyObject *
span_stop(SpanObject *s, PyObject *unused)
{
    if (s->state != SPAN_RUNNING && s->state != SPAN_PAUSED)
        return wrong_state(s, "stop");
    span_mark(s, CS_MARK_EXIT, CS_STATUS_OK, NULL);
    s->state = SPAN_STOPPED;
    /* what it measured: its time running, in seconds, as recorded */
    return PyFloat_FromDouble((double)s->active_ns / 1e9);
}

static PyObject *
span_enter(SpanObject *s, PyObject *unused)
{
    PyObject *r = span_start(s, NULL);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    return Py_NewRef(s);
}

static PyObject *
span_exit(SpanObject *s, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "__exit__ takes 3 arguments");
        return NULL;
    }
    if (s->state == SPAN_RUNNING || s->state == SPAN_PAUSED) {
        PyObject *exc = args[1] != Py_None ? args[1] : NULL;
        span_mark(s, CS_MARK_EXIT, exc ? CS_STATUS_RAISED : CS_STATUS_OK, exc);
        s->state = SPAN_STOPPED;
    }
    Py_RETURN_FALSE; /* never swallow the exception */
}

/* Used as a decorator: time every call of `func` under this span's name. */
static PyObject *
span_call(SpanObject *s, PyObject *args, PyObject *kwds)
{
    PyObject *func;
    if (kwds && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "a span used as a decorator takes only the function");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O:span", &func))
        return NULL;
    ext_state *st = ext_state_of(Py_TYPE(s));
    PyObject *kw = Py_BuildValue("{s:O,s:O}", "cpu", (s->opts & MON_CPU) ? Py_True : Py_False,
                                 "memory", (s->opts & MON_MEM) ? Py_True : Py_False);
    if (kw == NULL)
        return NULL;
    /* a named span names the function; an unnamed one keeps the function's */
    PyObject *file = PyTuple_GET_ITEM(s->ident, 2); /* "" for a named span */
    int named = PyUnicode_Check(file) && PyUnicode_GET_LENGTH(file) == 0;
    if (named && PyDict_SetItemString(kw, "name", s->display) < 0) {
        Py_DECREF(kw);
        return NULL;
    }
    PyObject *a = PyTuple_Pack(1, func);
    PyObject *r = a ? PyObject_Call((PyObject *)st->monitor_type, a, kw) : NULL;
    Py_XDECREF(a);
    Py_DECREF(kw);
    return r;
}

static void
span_dealloc(SpanObject *s)
{
    PyTypeObject *tp = Py_TYPE(s);
    PyObject_GC_UnTrack(s);
    if (s->state == SPAN_RUNNING || s->state == SPAN_PAUSED) {
        /* like the profilers users know: a span dropped running ends here */
        PyObject *exc = cs_exc_fetch();
        span_mark(s, CS_MARK_EXIT, CS_STATUS_OK, NULL);
        cs_exc_restore(exc);
    }
    Py_CLEAR(s->display);
    Py_CLEAR(s->ident);
    tp->tp_free(s);
    Py_DECREF(tp);
}

static int
span_traverse(SpanObject *s, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(s));
    Py_VISIT(s->ident);
    Py_VISIT(s->display);
    return 0;
}

static PyObject *
span_repr(SpanObject *s)
{
    return PyUnicode_FromFormat("<callscope.span %R %s>", s->display, state_names[s->state]);
}

static PyObject *
span_get_name(SpanObject *s, void *c)
{
    return Py_NewRef(s->display);
}

static PyObject *
span_get_state(SpanObject *s, void *c)
{
    return PyUnicode_FromString(state_names[s->state]);
}

/* Its time running so far, in seconds: pauses left out; the whole of it
 * once stopped (also after a `with` block). */
static PyObject *
span_get_elapsed(SpanObject *s, void *c)
{
    uint64_t ns = s->active_ns;
    if (s->state == SPAN_RUNNING) {
        uint64_t now = cs_clock_mono_ns();
        ns += now > s->mark_ns ? now - s->mark_ns : 0;
    }
    return PyFloat_FromDouble((double)ns / 1e9);
}

static PyMethodDef span_methods[] = {
    {"start", (PyCFunction)span_start, METH_NOARGS, "Start timing (again, after stop)."},
    {"pause", (PyCFunction)span_pause, METH_NOARGS, "Stop counting time until resume()."},
    {"resume", (PyCFunction)span_resume, METH_NOARGS, "Count time again after pause()."},
    {"stop", (PyCFunction)span_stop, METH_NOARGS,
     "End the span and record it. Returns its time running, in seconds (pauses left out)."},
    {"__enter__", (PyCFunction)span_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))span_exit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef span_getset[] = {
    {"name", (getter)span_get_name, NULL, "the name the run shows", NULL},
    {"state", (getter)span_get_state, NULL, "idle, running, paused or stopped", NULL},
    {"elapsed", (getter)span_get_elapsed, NULL,
     "its time running, in seconds, pauses left out (so far, or in all once stopped)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot span_slots[] = {
    {Py_tp_new, span_new},
    {Py_tp_dealloc, span_dealloc},
    {Py_tp_traverse, span_traverse},
    {Py_tp_call, span_call},
    {Py_tp_repr, span_repr},
    {Py_tp_methods, span_methods},
    {Py_tp_getset, span_getset},
    {Py_tp_doc, "span(name=None, *, cpu=False, memory=False)\n--\n\n"
                "A named region, timed like a call. Use as a context manager, by hand\n"
                "with start/pause/resume/stop, or as a decorator. Without a name it\n"
                "takes the name of the enclosing function."},
    {0, NULL},
};

PyType_Spec span_spec = {
    .name = "callscope._callscope.span",
    .basicsize = sizeof(SpanObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = span_slots,
};
