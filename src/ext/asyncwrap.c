/* asyncwrap.c -- generator and coroutine calls. A monitored generator
 * function returns this wrapper around its generator: the call lasts from
 * creation until the generator is exhausted or closed. A monitored
 * coroutine function returns it around its coroutine: the call lasts from
 * the first await until it completes. Each resumption and suspension is
 * recorded, so the call is off its thread's stack while suspended and its
 * running time is known. */
#include "ext.h"

typedef struct GenCallObject {
    PyObject_HEAD
    PyObject *inner;
    MonitorObject *mon;
    uint64_t seq;
    uint32_t stream;
    uint32_t epoch;
    int started;  /* ENTER written */
    int finished; /* EXIT written, or never to be written */
    int is_coro;
    cs_buf args; /* captured arguments, written when the call starts */
} GenCallObject;

static void
gc_begin(GenCallObject *g)
{
    cs_tstate *t = cs_log_tstate();
    if (t == NULL || g->mon->def_epoch != t->epoch) {
        if ((t = rec_tstate()) == NULL) {
            g->finished = 1;
            return;
        }
        rec_ensure_defined(t, g->mon);
    }
    rec_extra x;
    uint32_t opts = g->mon->opts;
    if (opts)
        rec_read_extras(opts, &x, 1);
    g->seq = cs_log_enter(t, g->mon->func_id, CS_FLAG_ASYNC, cs_clock_mono_ns());
    if (opts)
        rec_put_extras(t, opts, &x);
    g->stream = t->stream;
    g->epoch = t->epoch;
    g->started = 1;
    if (g->args.len)
        cap_write(t, CS_VAR_ARGS, g->seq, g->stream, &g->args);
    cs_buf_free(&g->args);
}

/* Record RESUME, SUSPEND or EXIT. For EXIT with an error set, the error
 * is recorded too and stays set. */
static void
gc_mark_result(GenCallObject *g, unsigned kind, unsigned status, PyObject *result)
{
    if (!g->started || g->finished)
        return;
    if (kind == CS_MARK_EXIT)
        g->finished = 1;
    uint64_t ts = cs_clock_mono_ns();
    cs_tstate *t = rec_tstate();
    if (t == NULL || t->epoch != g->epoch)
        return;
    uint32_t opts = g->mon->opts;
    rec_extra x;
    if (opts)
        rec_read_extras(opts, &x, kind == CS_MARK_RESUME);
    ext_state *st = ext_state_of(Py_TYPE(g->mon));
    const cap_conf *c = g->mon->cap;
    if (status == CS_STATUS_RAISED) {
        rec_error_sanitized(st, t, g->seq, g->stream, c ? c->sanitize : NULL);
    } else if (result && c && c->result && !cap_busy) {
        cs_buf b;
        cs_buf_init(&b);
        cap_encode_value(st, c, t, result, &b);
        cap_write(t, CS_VAR_RESULT, g->seq, g->stream, &b);
        cs_buf_free(&b);
    }
    cs_log_mark(t, kind, g->seq, g->stream, status, ts);
    if (opts)
        rec_put_extras(t, opts, &x);
}

static void
gc_mark(GenCallObject *g, unsigned kind, unsigned status)
{
    gc_mark_result(g, kind, status, NULL);
}

PyObject *
gencall_new(MonitorObject *m, PyObject *inner, cs_buf *args)
{
    ext_state *st = ext_state_of(Py_TYPE(m));
    GenCallObject *g = PyObject_GC_New(GenCallObject, st->gencall_type);
    if (g == NULL) {
        Py_DECREF(inner);
        return NULL;
    }
    g->inner = inner;
    g->mon = (MonitorObject *)Py_NewRef(m);
    g->seq = 0;
    g->stream = g->epoch = 0;
    g->started = g->finished = 0;
    g->is_coro = m->async_kind == 2;
    g->args = *args; /* taken over */
    cs_buf_init(args);
    PyObject_GC_Track(g);
    if (!g->is_coro)
        gc_begin(g); /* a generator's call starts when it is created */
    return (PyObject *)g;
}

/* One step: send `v` in; returns the yielded value, or NULL with
 * StopIteration (or nothing, if `bare` and the result is None) set. */
static PyObject *
gc_send(GenCallObject *g, PyObject *v, int bare)
{
    if (!g->started && !g->finished)
        gc_begin(g);
    gc_mark(g, CS_MARK_RESUME, 0);
    PyObject *out = NULL;
    PySendResult r = PyIter_Send(g->inner, v, &out);
    if (r == PYGEN_NEXT) {
        gc_mark(g, CS_MARK_SUSPEND, 0);
        return out;
    }
    if (r == PYGEN_RETURN) {
        gc_mark_result(g, CS_MARK_EXIT, CS_STATUS_OK, out);
        if (bare && out == Py_None) {
            Py_DECREF(out);
            return NULL;
        }
        /* StopIteration(value) as an object, so a tuple is not unpacked */
        PyObject *e = PyObject_CallOneArg(PyExc_StopIteration, out);
        Py_DECREF(out);
        if (e) {
            PyErr_SetObject(PyExc_StopIteration, e);
            Py_DECREF(e);
        }
        return NULL;
    }
    gc_mark(g, CS_MARK_EXIT, CS_STATUS_RAISED);
    return NULL;
}

static PyObject *
gc_iternext(GenCallObject *g)
{
    return gc_send(g, Py_None, 1);
}

static PyObject *
gc_send_method(GenCallObject *g, PyObject *v)
{
    return gc_send(g, v, 0);
}

static PyObject *
gc_throw(GenCallObject *g, PyObject *const *args, Py_ssize_t nargs)
{
    if (!g->started && !g->finished)
        gc_begin(g);
    gc_mark(g, CS_MARK_RESUME, 0);
    PyObject *meth = PyObject_GetAttrString(g->inner, "throw");
    PyObject *out = meth ? PyObject_Vectorcall(meth, args, (size_t)nargs, NULL) : NULL;
    Py_XDECREF(meth);
    if (out) {
        gc_mark(g, CS_MARK_SUSPEND, 0);
        return out;
    }
    if (PyErr_ExceptionMatches(PyExc_StopIteration) ||
        PyErr_ExceptionMatches(PyExc_GeneratorExit))
        gc_mark(g, CS_MARK_EXIT, CS_STATUS_OK);
    else
        gc_mark(g, CS_MARK_EXIT, CS_STATUS_RAISED);
    return NULL;
}

static PyObject *
gc_close(GenCallObject *g, PyObject *unused)
{
    int live = g->started && !g->finished;
    if (live)
        gc_mark(g, CS_MARK_RESUME, 0);
    PyObject *r = PyObject_CallMethod(g->inner, "close", NULL);
    if (live)
        gc_mark(g, CS_MARK_EXIT, r ? CS_STATUS_OK : CS_STATUS_RAISED);
    return r;
}

static PyObject *
gc_self(PyObject *self)
{
    return Py_NewRef(self);
}

static PyObject *
gc_getattro(GenCallObject *g, PyObject *name)
{
    PyObject *r = PyObject_GenericGetAttr((PyObject *)g, name);
    if (r || !PyErr_ExceptionMatches(PyExc_AttributeError))
        return r;
    PyErr_Clear();
    return PyObject_GetAttr(g->inner, name); /* gi_frame, cr_await, ... */
}

static PyObject *
gc_repr(GenCallObject *g)
{
    return PyUnicode_FromFormat("<callscope call of %R>", g->inner);
}

static int
gc_traverse(GenCallObject *g, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(g));
    Py_VISIT(g->inner);
    Py_VISIT(g->mon);
    return 0;
}

static int
gc_clear(GenCallObject *g)
{
    Py_CLEAR(g->inner);
    Py_CLEAR(g->mon);
    return 0;
}

static void
gc_dealloc(GenCallObject *g)
{
    PyTypeObject *tp = Py_TYPE(g);
    PyObject_GC_UnTrack(g);
    if (g->started && !g->finished && g->mon) {
        /* dropped before exhaustion: the generator is closed now */
        PyObject *exc = cs_exc_fetch();
        gc_mark(g, CS_MARK_EXIT, CS_STATUS_OK);
        cs_exc_restore(exc);
    }
    gc_clear(g);
    cs_buf_free(&g->args);
    PyObject_GC_Del(g);
    Py_DECREF(tp);
}

static PyMethodDef gc_methods[] = {
    {"send", (PyCFunction)gc_send_method, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))gc_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)gc_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot gc_slots[] = {
    {Py_tp_dealloc, gc_dealloc},
    {Py_tp_traverse, gc_traverse},
    {Py_tp_clear, gc_clear},
    {Py_tp_iter, gc_self},
    {Py_tp_iternext, gc_iternext},
    {Py_am_await, gc_self},
    {Py_tp_getattro, gc_getattro},
    {Py_tp_repr, gc_repr},
    {Py_tp_methods, gc_methods},
    {0, NULL},
};

PyType_Spec gencall_spec = {
    .name = "callscope._callscope.GeneratorCall",
    .basicsize = sizeof(GenCallObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = gc_slots,
};
