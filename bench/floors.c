/* floors.c -- the _floors extension: the cost floors callscope's hot path
 * is measured against (bench/run.py).
 *
 *   Forward(func)    a vectorcall wrapper that only forwards the call: the
 *                    least any C decorator can cost.
 *   Timed(func, n)   also reads clock_gettime(CLOCK_MONOTONIC) before and
 *                    after the call and stores both stamps into a
 *                    preallocated ring of n slots: the least a C decorator
 *                    that records a call's time can cost.
 *
 * Built only with meson -Dbench=true; never installed. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <time.h>

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *func;
} ForwardObject;

typedef struct {
    uint64_t start, end;
} stamp_pair;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *func;
    stamp_pair *ring;
    uint64_t n; /* slots in the ring */
    uint64_t pos;       /* next slot */
    uint64_t calls;
} TimedObject;

static inline uint64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- Forward ------------------------------------------------------------ */

static PyObject *
forward_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return PyObject_Vectorcall(((ForwardObject *)callable)->func, args, nargsf, kwnames);
}

static PyObject *
forward_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"func", NULL};
    PyObject *func;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Forward", kwlist, &func))
        return NULL;
    if (!PyCallable_Check(func)) {
        PyErr_SetString(PyExc_TypeError, "Forward() needs a callable");
        return NULL;
    }
    ForwardObject *o = (ForwardObject *)type->tp_alloc(type, 0);
    if (o == NULL)
        return NULL;
    o->vectorcall = forward_vectorcall;
    o->func = Py_NewRef(func);
    return (PyObject *)o;
}

static int
forward_traverse(ForwardObject *o, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(o));
    Py_VISIT(o->func);
    return 0;
}

static int
forward_clear(ForwardObject *o)
{
    Py_CLEAR(o->func);
    return 0;
}

static void
forward_dealloc(ForwardObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    PyObject_GC_UnTrack(o);
    forward_clear(o);
    tp->tp_free(o);
    Py_DECREF(tp);
}

static PyMemberDef forward_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(ForwardObject, vectorcall), READONLY, NULL},
    {"__wrapped__", T_OBJECT, offsetof(ForwardObject, func), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot forward_slots[] = {
    {Py_tp_new, forward_new},
    {Py_tp_dealloc, forward_dealloc},
    {Py_tp_traverse, forward_traverse},
    {Py_tp_clear, forward_clear},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_members, forward_members},
    {Py_tp_doc, "Forward(func)\n--\n\nCall func through vectorcall; nothing else."},
    {0, NULL},
};

static PyType_Spec forward_spec = {
    .name = "_floors.Forward",
    .basicsize = sizeof(ForwardObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .slots = forward_slots,
};

/* ---- Timed -------------------------------------------------------------- */

static PyObject *
timed_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    TimedObject *o = (TimedObject *)callable;
    uint64_t t0 = mono_ns();
    PyObject *res = PyObject_Vectorcall(o->func, args, nargsf, kwnames);
    uint64_t t1 = mono_ns();
    stamp_pair *s = &o->ring[o->pos];
    s->start = t0;
    s->end = t1;
    if (++o->pos == o->n)
        o->pos = 0;
    o->calls++;
    return res;
}

static PyObject *
timed_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"func", "n", NULL};
    PyObject *func;
    Py_ssize_t n = 1 << 16;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|n:Timed", kwlist, &func, &n))
        return NULL;
    if (!PyCallable_Check(func)) {
        PyErr_SetString(PyExc_TypeError, "Timed() needs a callable");
        return NULL;
    }
    if (n < 1 || (size_t)n > PY_SSIZE_T_MAX / sizeof(stamp_pair)) {
        PyErr_SetString(PyExc_ValueError, "Timed(): n must be at least 1");
        return NULL;
    }
    TimedObject *o = (TimedObject *)type->tp_alloc(type, 0);
    if (o == NULL)
        return NULL;
    o->vectorcall = timed_vectorcall;
    o->func = Py_NewRef(func);
    o->ring = PyMem_Calloc((size_t)n, sizeof(stamp_pair));
    if (o->ring == NULL) {
        Py_DECREF(o);
        return PyErr_NoMemory();
    }
    o->n = (uint64_t)n;
    return (PyObject *)o;
}

static int
timed_traverse(TimedObject *o, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(o));
    Py_VISIT(o->func);
    return 0;
}

static int
timed_clear(TimedObject *o)
{
    Py_CLEAR(o->func);
    return 0;
}

static void
timed_dealloc(TimedObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    PyObject_GC_UnTrack(o);
    timed_clear(o);
    PyMem_Free(o->ring);
    tp->tp_free(o);
    Py_DECREF(tp);
}

/* The most recent (start, end) pair, so tests can see the stamps land. */
static PyObject *
timed_last(TimedObject *o, PyObject *unused)
{
    (void)unused;
    if (o->calls == 0)
        Py_RETURN_NONE;
    uint64_t i = o->pos ? o->pos - 1 : o->n - 1;
    return Py_BuildValue("(KK)", (unsigned long long)o->ring[i].start,
                         (unsigned long long)o->ring[i].end);
}

static PyObject *
timed_get_calls(TimedObject *o, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(o->calls);
}

static PyMethodDef timed_methods[] = {
    {"last", (PyCFunction)timed_last, METH_NOARGS, "The latest (start_ns, end_ns) pair."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef timed_getset[] = {
    {"calls", (getter)timed_get_calls, NULL, "Calls made through this wrapper.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef timed_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(TimedObject, vectorcall), READONLY, NULL},
    {"__wrapped__", T_OBJECT, offsetof(TimedObject, func), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot timed_slots[] = {
    {Py_tp_new, timed_new},
    {Py_tp_dealloc, timed_dealloc},
    {Py_tp_traverse, timed_traverse},
    {Py_tp_clear, timed_clear},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_methods, timed_methods},
    {Py_tp_getset, timed_getset},
    {Py_tp_members, timed_members},
    {Py_tp_doc, "Timed(func, n=65536)\n--\n\n"
                "Call func through vectorcall, storing CLOCK_MONOTONIC stamps taken before\n"
                "and after into a ring of n preallocated slots."},
    {0, NULL},
};

static PyType_Spec timed_spec = {
    .name = "_floors.Timed",
    .basicsize = sizeof(TimedObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .slots = timed_slots,
};

/* ---- module ------------------------------------------------------------- */

static int
floors_exec(PyObject *mod)
{
    PyObject *fwd = PyType_FromModuleAndSpec(mod, &forward_spec, NULL);
    if (fwd == NULL)
        return -1;
    int rc = PyModule_AddObjectRef(mod, "Forward", fwd);
    Py_DECREF(fwd);
    if (rc < 0)
        return -1;
    PyObject *timed = PyType_FromModuleAndSpec(mod, &timed_spec, NULL);
    if (timed == NULL)
        return -1;
    rc = PyModule_AddObjectRef(mod, "Timed", timed);
    Py_DECREF(timed);
    return rc;
}

static PyModuleDef_Slot floors_slots[] = {
    {Py_mod_exec, floors_exec},
    {0, NULL},
};

static struct PyModuleDef floors_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_floors",
    .m_doc = "Cost floors for callscope's benchmark: Forward and Timed C wrappers.",
    .m_size = 0,
    .m_slots = floors_slots,
};

PyMODINIT_FUNC PyInit__floors(void);

PyMODINIT_FUNC
PyInit__floors(void)
{
    return PyModuleDef_Init(&floors_def);
}
