/* monitor.c -- the decorator type. A Monitor wraps a callable; calling it
 * writes an ENTER record, calls through with vectorcall, and writes an
 * EXIT record. It behaves like the function it wraps: attributes,
 * __wrapped__ (so inspect.signature works), binding as a method, and
 * pickling by reference. */
#include "ext.h"

#include <structmember.h>

#define CO_GENERATOR_FLAG 0x20
#define CO_COROUTINE_FLAG 0x80
#define CO_ITERABLE_COROUTINE_FLAG 0x100

/* Encode the arguments of a call of `m`, with its SIG record once per
 * log, into `b`. Done before the call's entry is timed. */
static void
capture_args(MonitorObject *m, cs_tstate *t, PyObject *const *args, size_t nargsf,
             PyObject *kwnames, cs_buf *b)
{
    ext_state *st = ext_state_of(Py_TYPE(m));
    if (m->sig_epoch != t->epoch) {
        m->sig_epoch = t->epoch;
        cap_put_signature(st, m->cap, t, m->func_id, m->func, m->code, m->shift);
    }
    cap_encode_args(st, m->cap, t, m->code, m->varnames, m->shift, args,
                    PyVectorcall_NARGS(nargsf), kwnames, b);
}

/* A generator or coroutine function: the call is its wrapper's. */
static PyObject *
monitor_async_call(MonitorObject *m, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    cs_buf b;
    cs_buf_init(&b);
    if (m->cap && m->cap->args && !cap_busy) {
        cs_tstate *t = cs_log_tstate();
        if (t == NULL || m->def_epoch != t->epoch) {
            if ((t = rec_tstate()) != NULL)
                rec_ensure_defined(t, m);
        }
        if (t)
            capture_args(m, t, args, nargsf, kwnames, &b);
    }
    PyObject *inner = PyObject_Vectorcall(m->func, args, nargsf, kwnames);
    PyObject *r = inner ? gencall_new(m, inner, &b) : NULL;
    cs_buf_free(&b);
    return r;
}

/* The path of a monitor that captures values: arguments are encoded
 * before the entry's timestamp and the result after the exit's, so their
 * cost stays outside the measured call. */
static PyObject *
monitor_capture_call(MonitorObject *m, cs_tstate *t, PyObject *const *args, size_t nargsf,
                     PyObject *kwnames)
{
    const cap_conf *c = m->cap;
    const uint32_t epoch = t->epoch, opts = m->opts;
    int values = !cap_busy; /* not while this thread encodes a value */
    cs_buf *b = NULL;
    if (c->args && values) {
        b = cap_scratch();
        capture_args(m, t, args, nargsf, kwnames, b);
    }
    if (cs_log_tstate() != t) /* the log closed while encoding */
        return PyObject_Vectorcall(m->func, args, nargsf, kwnames);
    char *shown = NULL;
    if (c->print && values) {
        if (b == NULL) {
            /* printed calls show their arguments even when they are not
             * kept: encoded for the preview only, outside the log */
            cs_buf *pb = cap_scratch();
            cap_encode_args(ext_state_of(Py_TYPE(m)), c, NULL, m->code, m->varnames, m->shift,
                            args, PyVectorcall_NARGS(nargsf), kwnames, pb);
            shown = cap_preview(pb, 120, 1);
            pb->len = 0;
        } else {
            shown = cap_preview(b, 120, 1);
        }
    }
    rec_extra x;
    if (opts)
        rec_read_extras(opts, &x, 1);
    uint64_t t0 = cs_clock_mono_ns();
    uint64_t seq = cs_log_enter(t, m->func_id, 0, t0);
    if (opts)
        rec_put_extras(t, opts, &x);
    if (b && b->len)
        cap_write(t, CS_VAR_ARGS, seq, t->stream, b);
    PyObject *res = PyObject_Vectorcall(m->func, args, nargsf, kwnames);
    uint64_t ts = cs_clock_mono_ns();
    t = cs_log_tstate();
    if (t != NULL && t->epoch == epoch) {
        if (opts)
            rec_read_extras(opts, &x, 0);
        if (res == NULL) {
            rec_error_sanitized(ext_state_of(Py_TYPE(m)), t, seq, t->stream, c->sanitize);
        } else {
            if (rec_held_exc)
                rec_forget_exc();
            if (c->result && values) {
                b = cap_scratch();
                cap_encode_value(ext_state_of(Py_TYPE(m)), c, t, res, b);
                if (cs_log_tstate() == t)
                    cap_write(t, CS_VAR_RESULT, seq, t->stream, b);
            }
        }
        if (cs_log_tstate() == t) {
            cs_log_exit(t, seq, res ? CS_STATUS_OK : CS_STATUS_RAISED, ts);
            if (opts)
                rec_put_extras(t, opts, &x);
        }
    }
    if (c->print && values) {
        PyObject *exc = res ? NULL : cs_exc_fetch();
        cap_print(ext_state_of(Py_TYPE(m)), c, m->ident, ts - t0, shown, res, exc);
        if (exc)
            cs_exc_restore(exc);
    }
    cs__free(shown);
    cap_scratch_trim();
    return res;
}

/* The hot path. Records go straight into the thread's mapped chunk. */
static PyObject *
monitor_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    MonitorObject *m = (MonitorObject *)callable;
    if (CS_UNLIKELY(rec_stack_low()))
        return rec_stack_error();
    if (CS_UNLIKELY(m->async_kind != 0))
        return monitor_async_call(m, args, nargsf, kwnames);
    cs_tstate *t = cs_log_tstate();
    if (CS_UNLIKELY(t == NULL || m->def_epoch != t->epoch)) {
        if ((t = rec_tstate()) == NULL)
            return PyObject_Vectorcall(m->func, args, nargsf, kwnames);
        rec_ensure_defined(t, m);
    }
    if (CS_UNLIKELY(m->cap != NULL))
        return monitor_capture_call(m, t, args, nargsf, kwnames);
    const uint32_t epoch = t->epoch, opts = m->opts;
    rec_extra x;
    if (CS_UNLIKELY(opts))
        rec_read_extras(opts, &x, 1);
    uint64_t seq = cs_log_enter(t, m->func_id, 0, cs_clock_mono_ns());
    if (CS_UNLIKELY(opts))
        rec_put_extras(t, opts, &x);
    PyObject *res = PyObject_Vectorcall(m->func, args, nargsf, kwnames);
    uint64_t ts = cs_clock_mono_ns();
    /* Re-read: the call may have forked, or the log may have closed. */
    t = cs_log_tstate();
    if (CS_LIKELY(t != NULL && t->epoch == epoch)) {
        if (CS_UNLIKELY(opts))
            rec_read_extras(opts, &x, 0);
        if (CS_UNLIKELY(res == NULL))
            rec_error(ext_state_of(Py_TYPE(m)), t, seq, t->stream);
        else if (CS_UNLIKELY(rec_held_exc))
            rec_forget_exc();
        cs_log_exit(t, seq, res ? CS_STATUS_OK : CS_STATUS_RAISED, ts);
        if (CS_UNLIKELY(opts))
            rec_put_extras(t, opts, &x);
    }
    return res;
}

/* (module, qualname, file, line) of `func`, with `name` overriding the
 * first two when given. New reference. */
static PyObject *
make_ident(PyObject *func, PyObject *name)
{
    PyObject *module = NULL, *qualname = NULL, *file = NULL, *line = NULL, *r = NULL;
    PyObject *code = PyObject_GetAttrString(func, "__code__");
    if (code == NULL)
        PyErr_Clear();
    if (code && PyCode_Check(code)) {
        file = Py_NewRef(((PyCodeObject *)code)->co_filename);
        line = PyLong_FromLong(((PyCodeObject *)code)->co_firstlineno);
    } else {
        file = PyUnicode_FromString("");
        line = PyLong_FromLong(0);
    }
    if (file == NULL || line == NULL)
        goto out;
    if (name != NULL && name != Py_None) {
        if (!PyUnicode_Check(name)) {
            PyErr_Format(PyExc_TypeError, "monitor(): name must be a str, not %.100s",
                         Py_TYPE(name)->tp_name);
            goto out;
        }
        r = ext_split_name(name, file, PyLong_AsLong(line));
        goto out;
    }
    module = PyObject_GetAttrString(func, "__module__");
    if (module == NULL || !PyUnicode_Check(module)) {
        PyErr_Clear();
        Py_XSETREF(module, PyUnicode_FromString(""));
    }
    qualname = PyObject_GetAttrString(func, "__qualname__");
    if (qualname == NULL || !PyUnicode_Check(qualname)) {
        PyErr_Clear();
        Py_XSETREF(qualname, PyObject_GetAttrString(func, "__name__"));
        if (qualname == NULL || !PyUnicode_Check(qualname)) {
            PyErr_Clear();
            Py_XSETREF(qualname, PyObject_Repr(func));
        }
    }
    if (module && qualname)
        r = PyTuple_Pack(4, module, qualname, file, line);
out:
    Py_XDECREF(code);
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    Py_XDECREF(file);
    Py_XDECREF(line);
    return r;
}

PyObject *
ext_split_name(PyObject *name, PyObject *file, long line)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(name);
    Py_ssize_t dot = PyUnicode_FindChar(name, '.', 0, n, -1);
    if (dot == -2)
        return NULL;
    PyObject *module, *qual;
    if (dot <= 0) {
        module = PyUnicode_FromString("");
        qual = Py_NewRef(name);
    } else {
        module = PyUnicode_Substring(name, 0, dot);
        qual = PyUnicode_Substring(name, dot + 1, n);
    }
    PyObject *ln = PyLong_FromLong(line);
    PyObject *r = (module && qual && ln) ? PyTuple_Pack(4, module, qual, file, ln) : NULL;
    Py_XDECREF(module);
    Py_XDECREF(qual);
    Py_XDECREF(ln);
    return r;
}

static int
async_kind_of(PyObject *func)
{
    PyObject *code = PyObject_GetAttrString(func, "__code__");
    int kind = 0;
    if (code && PyCode_Check(code)) {
        int flags = ((PyCodeObject *)code)->co_flags;
        if (flags & CO_COROUTINE_FLAG)
            kind = 2;
        else if (flags & (CO_GENERATOR_FLAG | CO_ITERABLE_COROUTINE_FLAG))
            kind = 1;
    }
    if (code == NULL)
        PyErr_Clear();
    Py_XDECREF(code);
    return kind;
}

/* Copy what functools.update_wrapper copies, into the instance dict. */
static int
copy_attributes(MonitorObject *m, PyObject *func)
{
    static const char *const names[] = {"__module__", "__name__", "__qualname__", "__doc__"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        PyObject *v = PyObject_GetAttrString(func, names[i]);
        if (v == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                return -1;
            PyErr_Clear();
            continue;
        }
        int rc = PyDict_SetItemString(m->dict, names[i], v);
        Py_DECREF(v);
        if (rc < 0)
            return -1;
    }
    PyObject *fdict = PyObject_GetAttrString(func, "__dict__");
    if (fdict && PyDict_Check(fdict) && PyDict_Update(m->dict, fdict) < 0) {
        Py_DECREF(fdict);
        return -1;
    }
    if (fdict == NULL)
        PyErr_Clear();
    Py_XDECREF(fdict);
    return PyDict_SetItemString(m->dict, "__wrapped__", func);
}

static PyObject *
monitor_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"func",   "cpu",      "memory",         "name",
                             "args",   "result",   "redact",         "sanitize",
                             "max_arg_length", "max_bytes", "capture_self", "print",
                             "capture", NULL};
    PyObject *func, *name = Py_None, *redact = Py_None, *sanitize = Py_None;
    PyObject *max_arg_length = Py_None, *max_bytes = Py_None, *print = Py_False;
    PyObject *capture = Py_None;
    int cpu = 0, memory = 0, cargs = 0, cresult = 0, capture_self = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$ppOppOOOOpOO:monitor", kwlist, &func, &cpu,
                                     &memory, &name, &cargs, &cresult, &redact, &sanitize,
                                     &max_arg_length, &max_bytes, &capture_self, &print,
                                     &capture))
        return NULL;
    cap_conf *cap = cap_conf_new(cargs, cresult, redact, sanitize, max_arg_length, max_bytes,
                                 capture_self, print, capture);
    if (cap == NULL)
        return NULL;
    if (!cap_conf_needed(cap)) {
        cap_conf_free(cap); /* nothing to capture: the plain path */
        cap = NULL;
    }
    if (!PyCallable_Check(func)) {
        PyErr_Format(PyExc_TypeError, "monitor() needs a callable, not %.100s",
                     Py_TYPE(func)->tp_name);
        cap_conf_free(cap);
        return NULL;
    }
    MonitorObject *m = (MonitorObject *)type->tp_alloc(type, 0);
    if (m == NULL) {
        cap_conf_free(cap);
        return NULL;
    }
    m->cap = cap;
    m->vectorcall = monitor_vectorcall;
    m->func = Py_NewRef(func);
    m->dict = PyDict_New();
    m->ident = make_ident(func, name);
    if (m->dict == NULL || m->ident == NULL || copy_attributes(m, func) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (name != Py_None) {
        /* the chosen name is what the run shows */
        if (PyDict_SetItemString(m->dict, "__callscope_name__", name) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    m->func_id = rec_new_func_id();
    rec_in_use = 1;
    /* selection by name leaves this code to the decorator */
    PyObject *code = PyObject_GetAttrString(func, "__code__");
    ext_state *st = ext_state_of(type);
    if (code == NULL || PySet_Add(st->monitored, code) < 0)
        PyErr_Clear();
    /* a bound method's code names self first, but self is bound already */
    m->shift = PyMethod_Check(func) ? 1 : 0;
    if (code && PyCode_Check(code)) {
        m->code = code; /* kept */
        m->varnames = PyObject_GetAttrString(code, "co_varnames");
        if (m->varnames == NULL || !PyTuple_Check(m->varnames)) {
            PyErr_Clear();
            Py_CLEAR(m->varnames);
        }
    } else {
        Py_XDECREF(code);
    }
    m->opts = (cpu ? MON_CPU : 0) | (memory ? MON_MEM : 0);
    m->async_kind = async_kind_of(func);
    return (PyObject *)m;
}

static int
monitor_traverse(MonitorObject *m, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(m));
    Py_VISIT(m->func);
    Py_VISIT(m->dict);
    Py_VISIT(m->ident);
    Py_VISIT(m->code);
    Py_VISIT(m->varnames);
    if (m->cap)
        Py_VISIT(m->cap->sanitize);
    return 0;
}

static int
monitor_clear(MonitorObject *m)
{
    Py_CLEAR(m->func);
    Py_CLEAR(m->dict);
    Py_CLEAR(m->ident);
    Py_CLEAR(m->code);
    Py_CLEAR(m->varnames);
    return 0;
}

static void
monitor_dealloc(MonitorObject *m)
{
    PyTypeObject *tp = Py_TYPE(m);
    PyObject_GC_UnTrack(m);
    if (m->weakrefs)
        PyObject_ClearWeakRefs((PyObject *)m);
    monitor_clear(m);
    cap_conf_free(m->cap);
    m->cap = NULL;
    tp->tp_free(m);
    Py_DECREF(tp);
}

/* Bound like a function: through an instance it becomes a method. */
static PyObject *
monitor_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static PyObject *
monitor_repr(MonitorObject *m)
{
    return PyUnicode_FromFormat("<callscope.monitor of %R>", m->func);
}

/* Pickle by reference: the module attribute of the same name is this
 * object, so pickle stores just the qualified name. */
static PyObject *
monitor_reduce(MonitorObject *m, PyObject *unused)
{
    PyObject *qn = PyDict_GetItemString(m->dict, "__qualname__");
    if (qn == NULL) {
        PyErr_SetString(PyExc_TypeError, "cannot pickle a monitor without __qualname__");
        return NULL;
    }
    return Py_NewRef(qn);
}

static PyObject *
monitor_get_ident(MonitorObject *m, void *closure)
{
    return Py_NewRef(m->ident);
}

static PyObject *
monitor_get_opts(MonitorObject *m, void *closure)
{
    PyObject *d = cap_conf_dict(m->cap);
    if (d == NULL || PyDict_SetItemString(d, "cpu", (m->opts & MON_CPU) ? Py_True : Py_False) < 0 ||
        PyDict_SetItemString(d, "memory", (m->opts & MON_MEM) ? Py_True : Py_False) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

static PyMethodDef monitor_methods[] = {
    {"__reduce__", (PyCFunction)monitor_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef monitor_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {"_callscope_ident", (getter)monitor_get_ident, NULL,
     "(module, qualname, file, line) as recorded", NULL},
    {"_callscope_options", (getter)monitor_get_opts, NULL, "the recording options", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef monitor_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(MonitorObject, vectorcall), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(MonitorObject, dict), READONLY, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(MonitorObject, weakrefs), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot monitor_slots[] = {
    {Py_tp_new, monitor_new},
    {Py_tp_dealloc, monitor_dealloc},
    {Py_tp_traverse, monitor_traverse},
    {Py_tp_clear, monitor_clear},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, monitor_get},
    {Py_tp_repr, monitor_repr},
    {Py_tp_methods, monitor_methods},
    {Py_tp_getset, monitor_getset},
    {Py_tp_members, monitor_members},
    {Py_tp_doc, "Monitor(func, *, cpu=False, memory=False, name=None, args=False,"
                " result=False, redact=None, sanitize=None, max_arg_length=None,"
                " max_bytes=None, capture_self=False)\n--\n\n"
                "Record every call of func. Use callscope.monitor, the decorator."},
    {0, NULL},
};

PyType_Spec monitor_spec = {
    .name = "callscope._callscope.Monitor",
    .basicsize = sizeof(MonitorObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
             Py_TPFLAGS_METHOD_DESCRIPTOR,
    .slots = monitor_slots,
};
