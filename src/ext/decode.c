/* decode.c -- captured values back into Python objects.
 *
 * The common types are rebuilt here. What needs a policy or a library
 * goes through the context object the caller passes: blobs (from run.db),
 * numpy arrays, pickles (only from trusted runs), registered handlers, and
 * the markers for values that were only partly kept. */
#include "ext.h"
#include "cs_value.h"

typedef struct dec {
    cs_vreader r;
    PyObject *ctx;
    PyObject *error; /* CallscopeError */
    PyObject *keep;  /* the blob bytes the reader points into, when any */
} dec;

static PyObject *
damaged(dec *d, const char *what)
{
    if (!PyErr_Occurred())
        PyErr_Format(d->error, "damaged value record: %s", what);
    return NULL;
}

/* Data as a new bytes object: inline, or fetched from the blob store. */
static PyObject *
dec_data(dec *d)
{
    const char *s;
    int blob;
    uint64_t hash, n = cs_vr_data(&d->r, &s, &blob, &hash);
    if (d->r.bad)
        return damaged(d, "truncated data");
    if (!blob)
        return PyBytes_FromStringAndSize(s, (Py_ssize_t)n);
    PyObject *b = PyObject_CallMethod(d->ctx, "blob", "LK", (long long)hash,
                                      (unsigned long long)n);
    if (b != NULL && (!PyBytes_Check(b) || (uint64_t)PyBytes_GET_SIZE(b) != n)) {
        Py_DECREF(b);
        return damaged(d, "a blob of the wrong size");
    }
    return b;
}

static PyObject *
dec_name(dec *d)
{
    const char *s;
    size_t n = cs_vr_name(&d->r, &s);
    if (d->r.bad)
        return damaged(d, "truncated name");
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)n, "replace");
}

static PyObject *
dec_text(PyObject *bytes)
{
    if (bytes == NULL)
        return NULL;
    PyObject *s = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(bytes), PyBytes_GET_SIZE(bytes),
                                       "surrogatepass");
    Py_DECREF(bytes);
    return s;
}

static PyObject *dec_value(dec *d, int depth);

static PyObject *
dec_items(dec *d, unsigned tag, int depth)
{
    uint32_t n = cs_vr_u32(&d->r);
    if (d->r.bad || n > (size_t)(d->r.end - d->r.p))
        return damaged(d, "bad item count");
    PyObject *c;
    if (tag == CS_V_DICT)
        c = PyDict_New();
    else if (tag == CS_V_TUPLE)
        c = PyTuple_New(n);
    else if (tag == CS_V_LIST)
        c = PyList_New(n);
    else
        c = PySet_New(NULL);
    if (c == NULL)
        return NULL;
    for (uint32_t i = 0; i < n; i++) {
        PyObject *v = dec_value(d, depth + 1);
        if (v == NULL)
            goto fail;
        if (tag == CS_V_DICT) {
            PyObject *val = dec_value(d, depth + 1);
            int rc = val ? PyDict_SetItem(c, v, val) : -1;
            Py_DECREF(v);
            Py_XDECREF(val);
            if (rc < 0)
                goto fail;
        } else if (tag == CS_V_TUPLE) {
            PyTuple_SET_ITEM(c, i, v);
        } else if (tag == CS_V_LIST) {
            PyList_SET_ITEM(c, i, v);
        } else {
            int rc = PySet_Add(c, v);
            Py_DECREF(v);
            if (rc < 0)
                goto fail;
        }
    }
    if (tag == CS_V_FROZENSET) {
        PyObject *f = PyFrozenSet_New(c);
        Py_DECREF(c);
        return f;
    }
    return c;
fail:
    Py_DECREF(c);
    return NULL;
}

static PyObject *
dec_array(dec *d)
{
    PyObject *dtype = dec_name(d);
    if (dtype == NULL)
        return NULL;
    unsigned ndim = cs_vr_u8(&d->r);
    if (ndim > CS_VAL_MAX_NDIM) {
        Py_DECREF(dtype);
        return damaged(d, "bad array rank");
    }
    PyObject *shape = PyTuple_New(ndim);
    for (unsigned i = 0; shape && i < ndim; i++) {
        PyObject *k = PyLong_FromUnsignedLongLong(cs_vr_u64(&d->r));
        if (k == NULL) {
            Py_CLEAR(shape);
            break;
        }
        PyTuple_SET_ITEM(shape, i, k);
    }
    char order[2] = {(char)cs_vr_u8(&d->r), 0};
    PyObject *data = shape ? dec_data(d) : NULL;
    PyObject *r = NULL;
    if (data != NULL && (order[0] == 'C' || order[0] == 'F' || order[0] == 'S'))
        r = PyObject_CallMethod(d->ctx, "array", "OOsO", dtype, shape, order, data);
    else if (data != NULL)
        damaged(d, "bad array order");
    Py_DECREF(dtype);
    Py_XDECREF(shape);
    Py_XDECREF(data);
    return r;
}

static PyObject *
dec_value(dec *d, int depth)
{
    if (depth > CS_VAL_MAX_DEPTH)
        return damaged(d, "nested too deep");
    unsigned tag = cs_vr_u8(&d->r);
    if (d->r.bad)
        return damaged(d, "truncated");
    switch (tag) {
    case CS_V_NONE:
        Py_RETURN_NONE;
    case CS_V_FALSE:
        Py_RETURN_FALSE;
    case CS_V_TRUE:
        Py_RETURN_TRUE;
    case CS_V_REDACTED:
        return PyObject_CallMethod(d->ctx, "redacted", NULL);
    case CS_V_INT: {
        int64_t v = (int64_t)cs_vr_u64(&d->r);
        return d->r.bad ? damaged(d, "truncated int") : PyLong_FromLongLong(v);
    }
    case CS_V_BIGINT: {
        uint32_t n = cs_vr_u32(&d->r);
        if (d->r.bad || n == 0 || n > (size_t)(d->r.end - d->r.p))
            return damaged(d, "truncated int");
        PyObject *v = _PyLong_FromByteArray(d->r.p, n, 1, 1);
        d->r.p += n;
        return v;
    }
    case CS_V_FLOAT: {
        double x;
        cs_vr_take(&d->r, &x, 8);
        return d->r.bad ? damaged(d, "truncated float") : PyFloat_FromDouble(x);
    }
    case CS_V_COMPLEX: {
        double re, im;
        cs_vr_take(&d->r, &re, 8);
        cs_vr_take(&d->r, &im, 8);
        return d->r.bad ? damaged(d, "truncated complex") : PyComplex_FromDoubles(re, im);
    }
    case CS_V_STR:
        return dec_text(dec_data(d));
    case CS_V_BYTES:
        return dec_data(d);
    case CS_V_TUPLE:
    case CS_V_LIST:
    case CS_V_SET:
    case CS_V_FROZENSET:
    case CS_V_DICT:
        return dec_items(d, tag, depth);
    case CS_V_ARRAY:
        return dec_array(d);
    case CS_V_PICKLE:
    case CS_V_HANDLER:
    case CS_V_REPR: {
        PyObject *name = dec_name(d);
        PyObject *data = name ? dec_data(d) : NULL;
        PyObject *r = NULL;
        if (data == NULL)
            ;
        else if (tag == CS_V_PICKLE)
            r = PyObject_CallMethod(d->ctx, "unpickle", "OO", data, name);
        else if (tag == CS_V_HANDLER)
            r = PyObject_CallMethod(d->ctx, "handler", "OO", name, data);
        else {
            PyObject *text = dec_text(Py_NewRef(data));
            r = text ? PyObject_CallMethod(d->ctx, "repr_only", "OO", name, text) : NULL;
            Py_XDECREF(text);
        }
        Py_XDECREF(name);
        Py_XDECREF(data);
        return r;
    }
    case CS_V_IDENT: {
        PyObject *name = dec_name(d);
        uint64_t id = cs_vr_u64(&d->r);
        PyObject *r = name && !d->r.bad
                          ? PyObject_CallMethod(d->ctx, "identity", "OK", name,
                                                (unsigned long long)id)
                          : damaged(d, "truncated identity");
        Py_XDECREF(name);
        return r;
    }
    case CS_V_TRUNC: {
        uint64_t n = cs_vr_u64(&d->r);
        PyObject *v = dec_value(d, depth + 1);
        PyObject *r = v ? PyObject_CallMethod(d->ctx, "truncated", "OK", v,
                                              (unsigned long long)n)
                        : NULL;
        Py_XDECREF(v);
        return r;
    }
    case CS_V_FAILED: {
        PyObject *msg = dec_text(dec_data(d));
        PyObject *r = msg ? PyObject_CallMethod(d->ctx, "failed", "O", msg) : NULL;
        Py_XDECREF(msg);
        return r;
    }
    case CS_V_REF: {
        uint64_t hash = cs_vr_u64(&d->r), n = cs_vr_u64(&d->r);
        if (d->r.bad)
            return damaged(d, "truncated reference");
        PyObject *b = PyObject_CallMethod(d->ctx, "blob", "LK", (long long)hash,
                                          (unsigned long long)n);
        if (b == NULL)
            return NULL;
        if (!PyBytes_Check(b) || (uint64_t)PyBytes_GET_SIZE(b) != n) {
            Py_DECREF(b);
            return damaged(d, "a blob of the wrong size");
        }
        dec inner = {.ctx = d->ctx, .error = d->error};
        cs_vr_init(&inner.r, PyBytes_AS_STRING(b), (size_t)n);
        PyObject *v = dec_value(&inner, depth + 1);
        if (v && inner.r.p != inner.r.end) {
            Py_CLEAR(v);
            damaged(d, "trailing bytes");
        }
        Py_DECREF(b);
        return v;
    }
    default:
        return damaged(d, "unknown tag");
    }
}

PyObject *
ext_decode(PyObject *mod, PyObject *args)
{
    Py_buffer data;
    PyObject *ctx;
    if (!PyArg_ParseTuple(args, "y*O:_decode", &data, &ctx))
        return NULL;
    ext_state *st = (ext_state *)PyModule_GetState(mod);
    dec d = {.ctx = ctx, .error = st->error};
    cs_vr_init(&d.r, data.buf, (size_t)data.len);
    PyObject *v = dec_value(&d, 0);
    if (v && d.r.p != d.r.end) {
        Py_CLEAR(v);
        damaged(&d, "trailing bytes");
    }
    PyBuffer_Release(&data);
    return v;
}
