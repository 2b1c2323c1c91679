/* policy.c -- which calls are recorded one by one: a selection by name
 * (callscope.trace, callscope run -t/--module/--exclude) matched against
 * each code object's and each C function's qualified name once, at its
 * first call, and the decision kept (ts->selected, ts->cdecided; on
 * 3.10 and 3.11 a mark in co_extra too). Functions only: module and class
 * bodies, decorated functions (their decorator records them) and
 * callscope's own code are never selected. Nothing here starts or stops
 * anything. */
#include "engine.h"

#include <string.h>

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

cs_select *
policy_parse(PyObject *args, PyObject *kw, uint32_t *opts, const char **own, cap_conf **cap,
             int *cfuncs)
{
    static char *kwlist[] = {"patterns", "modules", "excludes", "cpu", "memory", "own",
                             "args", "result", "redact", "sanitize", "max_arg_length",
                             "max_bytes", "capture_self", "print", "c_functions", "capture",
                             NULL};
    PyObject *patterns = Py_None, *modules = Py_None, *excludes = Py_None;
    PyObject *redact = Py_None, *sanitize = Py_None, *mal = Py_None, *mb = Py_None;
    PyObject *print = Py_False, *capture = Py_None;
    int cpu = 0, memory = 0, cargs = 0, cresult = 0, cself = 0;
    *own = NULL;
    *cap = NULL;
    *cfuncs = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OOOppzppOOOOpOpO:_trace_start", kwlist,
                                     &patterns, &modules, &excludes, &cpu, &memory, own, &cargs,
                                     &cresult, &redact, &sanitize, &mal, &mb, &cself, &print,
                                     cfuncs, &capture))
        return NULL;

    cap_conf *c = cap_conf_new(cargs, cresult, redact, sanitize, mal, mb, cself, print, capture);
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

uint32_t
policy_func_id(trace_state *ts, PyObject *co, cs_tstate *t, PyObject *v)
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

int
policy_decide(ext_state *st, PyObject *co, PyObject *globals)
{
    trace_state *ts = st->trace;
    /* functions only: module and class bodies have no local namespace */
    if (!(((PyCodeObject *)co)->co_flags & CO_NEWLOCALS))
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
        if (ok)
            ok = events_watch(st, co) == 0;
        if (!ok) {
            PyErr_Clear();
            yes = 0;
        }
        Py_XDECREF(v);
    }
    Py_DECREF(ident);
    return yes;
}

/* ---- C functions: selected by their C entry point ---------------------------
 * A C function is known by its C entry point (ml_meth), the same whether
 * it is called as a builtin, a module function, a method descriptor or a
 * bound method. The first call of each decides, from its qualified name,
 * as for Python code. */

PyMethodDef *
policy_c_method(PyObject *callable)
{
    if (PyCFunction_Check(callable))
        return ((PyCFunctionObject *)callable)->m_ml;
    if (Py_IS_TYPE(callable, &PyMethodDescr_Type))
        return ((PyMethodDescrObject *)callable)->d_method;
    return NULL;
}

/* (module, qualname) of a C function: its module's name and its own for a
 * module function; the type's module and "Type.name" for a method. */
PyObject *
policy_c_ident(PyObject *callable, PyMethodDef *ml)
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

uint32_t
policy_c_selected(trace_state *ts, PyObject *callable, cs_tstate *t, void **meth_out)
{
    PyMethodDef *ml = policy_c_method(callable);
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
        PyObject *ident = policy_c_ident(callable, ml);
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
        rec_define(t, id, PyTuple_GET_ITEM(v, 0), CS_FUNC_BUILTIN, NULL);
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

int
policy_own_code(trace_state *ts, PyCodeObject *code)
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
