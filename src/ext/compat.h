/* compat.h -- every CPython version difference the extension cares about,
 * in one place. No other file tests PY_VERSION_HEX. */
#ifndef CS_COMPAT_H
#define CS_COMPAT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#if PY_VERSION_HEX < 0x030B0000
#include <frameobject.h>
#endif

/* Take the raised exception as one object (a new reference), leaving no
 * error set. Its __traceback__ is attached. */
static inline PyObject *
cs_exc_fetch(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (t == NULL)
        return NULL;
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb != NULL && v != NULL)
        PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
#endif
}

/* Raise `exc` again; steals the reference. */
static inline void
cs_exc_restore(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    if (exc == NULL)
        return;
    PyObject *tb = PyException_GetTraceback(exc);
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, tb);
#endif
}

/* The qualified name of a code object. */
static inline PyObject *
cs_code_qualname(PyCodeObject *co)
{
#if PY_VERSION_HEX >= 0x030B0000
    return Py_NewRef(co->co_qualname);
#else
    return Py_NewRef(co->co_name);
#endif
}

/* An int as `n` bytes of two's complement, little-endian. */
static inline int
cs_long_to_bytes(PyObject *v, unsigned char *buf, size_t n)
{
#if PY_VERSION_HEX >= 0x030D0000
    return _PyLong_AsByteArray((PyLongObject *)v, buf, n, 1, 1, 1);
#else
    return _PyLong_AsByteArray((PyLongObject *)v, buf, n, 1, 1);
#endif
}

/* A code object's extra slots (PEP 523's co_extra): where the decision
 * about a code object is kept. Public, if unstable, API from 3.12. */
#if PY_VERSION_HEX >= 0x030C0000
#define cs_code_extra_index(fn) PyUnstable_Eval_RequestCodeExtraIndex(fn)
#define cs_code_get_extra(co, i, p) PyUnstable_Code_GetExtra((co), (i), (p))
#define cs_code_set_extra(co, i, p) PyUnstable_Code_SetExtra((co), (i), (p))
#else
#define cs_code_extra_index(fn) _PyEval_RequestCodeExtraIndex(fn)
#define cs_code_get_extra(co, i, p) _PyCode_GetExtra((co), (i), (p))
#define cs_code_set_extra(co, i, p) _PyCode_SetExtra((co), (i), (p))
#endif

/* `name` looked up in the dicts of `tp`'s MRO, as the type machinery
 * finds an attribute (no descriptor called, no metaclass consulted): a
 * new reference, or NULL with no error set. cProfile names C methods
 * after what this finds. */
static inline PyObject *
cs_type_lookup(PyTypeObject *tp, const char *name)
{
    PyObject *mro = tp->tp_mro, *key = PyUnicode_FromString(name), *found = NULL;
    for (Py_ssize_t i = 0; key && mro && PyTuple_Check(mro) && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *dict = PyType_GetDict(base); /* new reference */
#else
        PyObject *dict = Py_XNewRef(base->tp_dict);
#endif
        PyObject *v = dict ? PyDict_GetItemWithError(dict, key) : NULL;
        Py_XINCREF(v);
        Py_XDECREF(dict);
        if (v) {
            found = v;
            break;
        }
    }
    Py_XDECREF(key);
    PyErr_Clear();
    return found;
}

/* The code object of a legacy profile hook's frame (borrowed). */
static inline PyCodeObject *
cs_frame_code_borrowed(PyFrameObject *f)
{
    PyCodeObject *co = PyFrame_GetCode(f); /* new reference; the frame keeps one */
    Py_DECREF(co);
    return co;
}

/* The globals of a legacy profile hook's frame (borrowed). */
static inline PyObject *
cs_frame_globals_borrowed(PyFrameObject *f)
{
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *g = PyFrame_GetGlobals(f); /* new reference; the frame keeps one */
    Py_XDECREF(g);
    return g;
#else
    return f->f_globals;
#endif
}

/* Selection without decorators: PEP 669 sys.monitoring on 3.12+, a PEP
 * 523 frame-evaluation hook before. */
#define CS_HAVE_MONITORING (PY_VERSION_HEX >= 0x030C0000)

#if !CS_HAVE_MONITORING
#include <stddef.h>
#if PY_VERSION_HEX >= 0x030B0000
/* 3.11 evaluates _PyInterpreterFrame, whose definition is internal. The
 * head of it is stable across 3.11 releases (Include/internal/
 * pycore_frame.h): only these fields are read. */
typedef struct _PyInterpreterFrame cs_eframe;
typedef struct cs_eframe_head {
    PyObject *f_func;
    PyObject *f_globals;
    PyObject *f_builtins;
    PyObject *f_locals;
    PyCodeObject *f_code;
    PyObject *frame_obj;
    void *previous;
    void *prev_instr;
    int stacktop;
    _Bool is_entry;
    char owner; /* 1: the frame lives in a generator */
    PyObject *localsplus[1];
} cs_eframe_head;

/* Argument `i` of a frame about to start (borrowed, or NULL). A plain
 * function's frame has not run MAKE_CELL yet: every argument is in its own
 * slot. A generator ran it before its first resume: an argument that a
 * closure captures is in a cell by then (CO_FAST_CELL, 0x40, in
 * co_localspluskinds). */
static inline PyObject *
cs_eframe_arg(cs_eframe *f, Py_ssize_t i)
{
    PyObject *v = ((cs_eframe_head *)f)->localsplus[i];
    PyObject *kinds = ((cs_eframe_head *)f)->f_code->co_localspluskinds;
    if (v != NULL && PyCell_Check(v) && kinds && PyBytes_Check(kinds) &&
        i < PyBytes_GET_SIZE(kinds) && (PyBytes_AS_STRING(kinds)[i] & 0x40))
        return PyCell_GET(v);
    return v;
}

/* 1 if `f` is a generator's own frame (a generator function's first
 * evaluation only creates the generator, in a frame of its caller's). */
static inline int
cs_eframe_in_gen(cs_eframe *f)
{
    return ((cs_eframe_head *)f)->owner == 1;
}

static inline PyCodeObject *
cs_eframe_code(cs_eframe *f)
{
    return ((cs_eframe_head *)f)->f_code;
}

static inline PyObject *
cs_eframe_globals(cs_eframe *f)
{
    return ((cs_eframe_head *)f)->f_globals;
}

/* The state of the generator owning `f`: -2 created, -1 suspended. A
 * generator's frame lives inside the generator object. */
static inline int
cs_eframe_gen_state(cs_eframe *f)
{
    PyGenObject *g = (PyGenObject *)((char *)f - offsetof(PyGenObject, gi_iframe));
    return g->gi_frame_state;
}
#else
#include <frameobject.h> /* 3.10: the PyFrameObject fields */
typedef PyFrameObject cs_eframe;

static inline PyCodeObject *
cs_eframe_code(cs_eframe *f)
{
    return f->f_code;
}

static inline PyObject *
cs_eframe_globals(cs_eframe *f)
{
    return f->f_globals;
}

static inline int
cs_eframe_gen_state(cs_eframe *f)
{
    return f->f_state;
}

/* Argument `i` of a frame about to start (borrowed, or NULL). 3.10 moves
 * an argument that a closure captures into its cell before the first
 * instruction, and empties its slot. */
static inline PyObject *
cs_eframe_arg(cs_eframe *f, Py_ssize_t i)
{
    PyObject *v = f->f_localsplus[i];
    PyCodeObject *co = f->f_code;
    if (v != NULL || co->co_cell2arg == NULL)
        return v;
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(co->co_cellvars); j++) {
        if (co->co_cell2arg[j] == i) {
            PyObject *cell = f->f_localsplus[co->co_nlocals + j];
            return cell && PyCell_Check(cell) ? PyCell_GET(cell) : NULL;
        }
    }
    return NULL;
}

static inline int
cs_eframe_in_gen(cs_eframe *f)
{
    return 1; /* 3.10 creates generators without evaluating their frame */
}
#endif
#define CS_GEN_SUSPENDED (-1)

/* Install `ours` as the interpreter's frame-evaluation function, keeping
 * in *prev a function installed before it (NULL for the default). */
static inline void
cs_eval_hook_install(_PyFrameEvalFunction ours, _PyFrameEvalFunction *prev)
{
    PyInterpreterState *interp = PyInterpreterState_Get();
    _PyFrameEvalFunction cur = _PyInterpreterState_GetEvalFrameFunc(interp);
    if (cur != ours) {
        *prev = cur == _PyEval_EvalFrameDefault ? NULL : cur;
        _PyInterpreterState_SetEvalFrameFunc(interp, ours);
    }
}

/* Put back what was there before `ours`, only if ours is still the one
 * installed (a hook installed later keeps calling ours through its chain). */
static inline void
cs_eval_hook_remove(_PyFrameEvalFunction ours, _PyFrameEvalFunction *prev)
{
    PyInterpreterState *interp = PyInterpreterState_Get();
    if (_PyInterpreterState_GetEvalFrameFunc(interp) != ours)
        return;
    _PyInterpreterState_SetEvalFrameFunc(interp, *prev ? *prev : _PyEval_EvalFrameDefault);
    *prev = NULL;
}
#endif

#if PY_VERSION_HEX < 0x030A0000
#error "callscope needs Python 3.10 or newer"
#endif

#endif
