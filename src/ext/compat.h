/* compat.h -- every CPython version difference the extension cares about,
 * in one place. No other file tests PY_VERSION_HEX. */
#ifndef CS_COMPAT_H
#define CS_COMPAT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

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

/* PEP 669 sys.monitoring: selection without decorators. */
#define CS_HAVE_MONITORING (PY_VERSION_HEX >= 0x030C0000)

#if PY_VERSION_HEX < 0x030A0000
#error "callscope needs Python 3.10 or newer"
#endif

#endif
