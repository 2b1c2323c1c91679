/* capture.c -- arguments and return values: Python objects encoded into
 * the value format of cs_value.h, bounded, redacted and sanitised before
 * any byte is written.
 *
 * Common types take C paths. numpy arrays are stored by their buffer.
 * Registered handlers come first for their types. Everything else is
 * pickled, or kept as a bounded repr. Nothing here raises into the
 * monitored program: a value that cannot be captured is recorded as
 * FAILED with the reason, and the call goes on. */
#include "ext.h"
#include "cs_value.h"

#include <fnmatch.h>
#include <string.h>

#define CAP_MAX_DEPTH 16          /* deeper containers are pickled */
#define CAP_DEFAULT_MAX_BYTES (4 << 20)
#define CAP_LIMIT_MAX_BYTES (1 << 29) /* SQLite stores values up to 10^9 bytes */

_Thread_local int cap_busy CS_TLS_MODEL;

/* ---- options --------------------------------------------------------------- */

void
cap_conf_free(cap_conf *c)
{
    if (c == NULL)
        return;
    Py_XDECREF(c->redact);
    Py_XDECREF(c->sanitize);
    PyMem_Free(c);
}

/* A positive int option, or 0 when None. -1 with an error set. */
static Py_ssize_t
size_option(const char *what, PyObject *v, Py_ssize_t limit)
{
    if (v == NULL || v == Py_None)
        return 0;
    if (!PyLong_Check(v) || PyBool_Check(v)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int or None, not %.100s", what,
                     Py_TYPE(v)->tp_name);
        return -1;
    }
    Py_ssize_t n = PyLong_AsSsize_t(v);
    if (n == -1 && PyErr_Occurred())
        return -1;
    if (n <= 0 || n > limit) {
        PyErr_Format(PyExc_ValueError, "%s must be between 1 and %zd, not %zd", what, limit, n);
        return -1;
    }
    return n;
}

int
cap_conf_needed(const cap_conf *c)
{
    return c->args || c->result || c->sanitize != NULL || c->print;
}

cap_conf *
cap_conf_new(int args, int result, PyObject *redact, PyObject *sanitize,
             PyObject *max_arg_length, PyObject *max_bytes, int capture_self, PyObject *print,
             PyObject *capture)
{
    int safe = 0;
    if (capture != NULL && capture != Py_None) {
        if (PyUnicode_Check(capture) && PyUnicode_CompareWithASCIIString(capture, "safe") == 0)
            safe = 1;
        else if (!(PyUnicode_Check(capture) &&
                   PyUnicode_CompareWithASCIIString(capture, "full") == 0)) {
            PyErr_Format(PyExc_ValueError, "capture must be 'full' or 'safe', not %R", capture);
            return NULL;
        }
    }
    int pr = 0;
    if (print == NULL || print == Py_None || print == Py_False)
        pr = 0;
    else if (print == Py_True || (PyUnicode_Check(print) &&
                                  PyUnicode_CompareWithASCIIString(print, "text") == 0))
        pr = 1;
    else if (PyUnicode_Check(print) && PyUnicode_CompareWithASCIIString(print, "json") == 0)
        pr = 2;
    else {
        PyErr_Format(PyExc_ValueError, "print must be True, False, 'text' or 'json', not %R",
                     print);
        return NULL;
    }
    Py_ssize_t mal = size_option("max_arg_length", max_arg_length, PY_SSIZE_T_MAX);
    if (mal < 0)
        return NULL;
    Py_ssize_t mb = size_option("max_bytes", max_bytes, CAP_LIMIT_MAX_BYTES);
    if (mb < 0)
        return NULL;
    PyObject *pats = NULL;
    if (redact != NULL && redact != Py_None) {
        if (PyUnicode_Check(redact)) {
            pats = PyTuple_Pack(1, redact);
        } else {
            pats = PySequence_Tuple(redact);
            if (pats == NULL) {
                PyErr_Format(PyExc_TypeError,
                             "redact must be a list of name patterns, not %.100s",
                             Py_TYPE(redact)->tp_name);
                return NULL;
            }
        }
        if (pats == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(pats); i++) {
            PyObject *p = PyTuple_GET_ITEM(pats, i);
            if (!PyUnicode_Check(p) || PyUnicode_GET_LENGTH(p) == 0) {
                PyErr_Format(PyExc_TypeError,
                             "redact: each pattern must be a non-empty str, not %R", p);
                Py_DECREF(pats);
                return NULL;
            }
        }
    }
    if (sanitize == Py_None)
        sanitize = NULL;
    if (sanitize != NULL && !PyCallable_Check(sanitize)) {
        PyErr_Format(PyExc_TypeError, "sanitize must be a callable taking and returning a str,"
                                      " not %.100s",
                     Py_TYPE(sanitize)->tp_name);
        Py_XDECREF(pats);
        return NULL;
    }
    cap_conf *c = PyMem_Calloc(1, sizeof *c);
    if (c == NULL) {
        Py_XDECREF(pats);
        PyErr_NoMemory();
        return NULL;
    }
    c->args = args;
    c->result = result;
    c->capture_self = capture_self;
    c->print = pr;
    c->max_arg_length = mal;
    c->max_bytes = mb ? mb : CAP_DEFAULT_MAX_BYTES;
    c->redact = pats;
    c->sanitize = Py_XNewRef(sanitize);
    c->safe = safe;
    return c;
}

PyObject *
cap_conf_dict(const cap_conf *c)
{
    if (c == NULL)
        return Py_BuildValue("{s:O,s:O,s:O}", "args", Py_False, "result", Py_False, "print",
                             Py_False);
    return Py_BuildValue("{s:O,s:O,s:O,s:O,s:n,s:n,s:O,s:O,s:s}", "args",
                         c->args ? Py_True : Py_False, "result",
                         c->result ? Py_True : Py_False, "redact",
                         c->redact ? c->redact : Py_None, "sanitize",
                         c->sanitize ? c->sanitize : Py_None, "max_arg_length",
                         c->max_arg_length, "max_bytes", c->max_bytes, "capture_self",
                         c->capture_self ? Py_True : Py_False, "print",
                         c->print == 2 ? PyUnicode_FromString("json")
                                       : (c->print ? Py_True : Py_False),
                         "capture", c->safe ? "safe" : "full");
}

char *
cap_preview(const cs_buf *b, size_t max_chars, int call)
{
    if (b == NULL || b->len == 0 || b->failed)
        return NULL;
    cs_buf t;
    cs_buf_init(&t);
    if (call)
        cs_value_preview_args(b->data, b->len, &t, max_chars);
    else
        cs_value_preview(b->data, b->len, &t, max_chars);
    if (t.failed) {
        cs_buf_free(&t);
        return NULL;
    }
    return t.data ? t.data : cs__strdup(""); /* owned by the caller now */
}

/* "module.qualname" of an ident tuple. New reference. */
static PyObject *
ident_name(PyObject *ident)
{
    if (ident && PyTuple_Check(ident) && PyTuple_GET_SIZE(ident) >= 2) {
        PyObject *m = PyTuple_GET_ITEM(ident, 0), *q = PyTuple_GET_ITEM(ident, 1);
        if (PyUnicode_Check(m) && PyUnicode_Check(q))
            return PyUnicode_GET_LENGTH(m) ? PyUnicode_FromFormat("%U.%U", m, q)
                                           : Py_NewRef(q);
    }
    return PyUnicode_FromString("?");
}

void
cap_print(ext_state *st, const cap_conf *c, PyObject *ident, uint64_t wall_ns,
          const char *args, PyObject *res, PyObject *exc)
{
    PyObject *saved = cs_exc_fetch();
    cap_busy++;
    PyObject *name = ident_name(ident), *line = NULL;
    char t[32];
    cs_fmt_ns(wall_ns, t, sizeof t);
    PyObject *rtext = NULL, *etext = NULL, *ename = NULL;
    if (exc) {
        ename = cap_type_name(Py_TYPE(exc));
        etext = PyObject_Str(exc);
        if (etext == NULL)
            PyErr_Clear();
        if (etext && c->sanitize) {
            PyObject *s2 = PyObject_CallOneArg(c->sanitize, etext);
            Py_DECREF(etext);
            etext = s2 && PyUnicode_Check(s2) ? s2 : NULL;
            if (etext == NULL) {
                Py_XDECREF(s2);
                PyErr_Clear();
            }
        }
    } else if (res && c->result) {
        cs_buf b;
        cs_buf_init(&b);
        cap_encode_value(st, c, NULL, res, &b); /* no log: no blobs */
        char *p = cap_preview(&b, 120, 0);
        rtext = p ? PyUnicode_DecodeUTF8(p, (Py_ssize_t)strlen(p), "replace") : NULL;
        cs__free(p);
        cs_buf_free(&b);
    }
    PyErr_Clear();
    if (c->print == 2) {
        PyObject *d = Py_BuildValue("{s:O,s:K,s:s,s:K}", "function", name, "wall_ns",
                                    (unsigned long long)wall_ns, "status",
                                    exc ? "raised" : "ok", "thread",
                                    (unsigned long long)PyThread_get_thread_ident());
        if (d) {
            if (args)
                PyDict_SetItemString(d, "args", PyUnicode_FromString(args));
            if (rtext)
                PyDict_SetItemString(d, "result", rtext);
            if (ename)
                PyDict_SetItemString(d, "error", ename);
            if (etext)
                PyDict_SetItemString(d, "message", etext);
            PyObject *json = PyImport_ImportModule("json");
            line = json ? PyObject_CallMethod(json, "dumps", "O", d) : NULL;
            Py_XDECREF(json);
            Py_DECREF(d);
        }
    } else if (exc) {
        line = PyUnicode_FromFormat("callscope: %U(%s) raised %S: %S  [%s]", name,
                                    args ? args : "...", ename ? ename : Py_None,
                                    etext ? etext : Py_None, t);
    } else if (rtext) {
        line = PyUnicode_FromFormat("callscope: %U(%s) -> %U  [%s]", name, args ? args : "...",
                                    rtext, t);
    } else {
        line = PyUnicode_FromFormat("callscope: %U(%s) returned  [%s]", name,
                                    args ? args : "...", t);
    }
    if (line) {
        PyObject *err = PySys_GetObject("stderr"); /* borrowed */
        if (err && err != Py_None) {
            PyObject *r = PyObject_CallMethod(err, "write", "O", line);
            Py_XDECREF(r);
            r = PyObject_CallMethod(err, "write", "s", "\n");
            Py_XDECREF(r);
        }
    }
    PyErr_Clear();
    Py_XDECREF(line);
    Py_XDECREF(rtext);
    Py_XDECREF(etext);
    Py_XDECREF(ename);
    Py_DECREF(name);
    cap_busy--;
    cs_exc_restore(saved);
}

int
cap_redacted(const cap_conf *c, PyObject *name)
{
    if (c->redact == NULL || name == NULL || !PyUnicode_Check(name))
        return 0;
    const char *s = PyUnicode_AsUTF8(name);
    if (s == NULL) {
        PyErr_Clear();
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(c->redact); i++) {
        const char *p = PyUnicode_AsUTF8(PyTuple_GET_ITEM(c->redact, i));
        if (p && fnmatch(p, s, FNM_CASEFOLD) == 0)
            return 1;
    }
    PyErr_Clear();
    return 0;
}

/* ---- blobs written by this process ---------------------------------------- */

/* The blobs already in this process's log: large data is written once and
 * referred to after that. Reset with each new log (a forked child writes
 * its own). Guarded by the GIL. */
static struct {
    uint64_t *keys; /* hash ^ size; 0 marks a free slot */
    size_t cap, n;
    uint32_t epoch;
} seen;

/* 1 if blob `key` is in this log already; else remember it (`add`) and
 * return 0. */
static int
seen_check(uint32_t epoch, uint64_t key, int add)
{
    if (key == 0)
        key = 1;
    if (seen.epoch != epoch) {
        if (seen.keys)
            memset(seen.keys, 0, seen.cap * sizeof *seen.keys);
        seen.n = 0;
        seen.epoch = epoch;
    }
    if (add && seen.n * 2 >= seen.cap) {
        size_t cap = seen.cap ? seen.cap * 2 : 256;
        uint64_t *k = PyMem_Calloc(cap, sizeof *k);
        if (k == NULL)
            return 0; /* written again: correct, only larger */
        for (size_t i = 0; i < seen.cap; i++) {
            uint64_t x = seen.keys[i];
            if (x == 0)
                continue;
            size_t j = (size_t)(x * 0x9E3779B97F4A7C15ull) & (cap - 1);
            while (k[j])
                j = (j + 1) & (cap - 1);
            k[j] = x;
        }
        PyMem_Free(seen.keys);
        seen.keys = k;
        seen.cap = cap;
    }
    if (seen.cap == 0)
        return 0;
    size_t j = (size_t)(key * 0x9E3779B97F4A7C15ull) & (seen.cap - 1);
    while (seen.keys[j]) {
        if (seen.keys[j] == key)
            return 1;
        j = (j + 1) & (seen.cap - 1);
    }
    if (add) {
        seen.keys[j] = key;
        seen.n++;
    }
    return 0;
}

/* Write blob `h` of `n` bytes into `t`'s log unless it is there already;
 * it counts as there only once written. */
static void
put_blob_once(cs_tstate *t, uint64_t h, const void *p, size_t n)
{
    uint64_t key = h ^ (uint64_t)n * 0xff51afd7ed558ccdull;
    if (!seen_check(t->epoch, key, 0) && cs_log_put_blob(t, h, p, n))
        seen_check(t->epoch, key, 1);
}

/* ---- the encoder ------------------------------------------------------------ */

typedef struct enc {
    ext_state *st;
    const cap_conf *c;
    cs_tstate *t;
    cs_buf *b;
    size_t arg_start;  /* where the current argument began in b */
    size_t arg_blobs;  /* blob bytes of the current argument */
    PyObject *path[CAP_MAX_DEPTH + 2]; /* the containers being encoded */
    int npath;
    int cycle;         /* a container contains itself: pickle the whole */
} enc;

static size_t
enc_used(const enc *e)
{
    return e->b->len - e->arg_start + e->arg_blobs;
}

static int
over_budget(const enc *e)
{
    return enc_used(e) > (size_t)e->c->max_bytes;
}

static void
enc_data(enc *e, const void *p, size_t n)
{
    if (n >= CS_VAL_BLOB_MIN && e->t != NULL && cs_log_tstate() == e->t) {
        uint64_t h = cs_hash64(p, n);
        put_blob_once(e->t, h, p, n);
        cs_val_blobref(e->b, h, n);
        e->arg_blobs += n;
        return;
    }
    cs_val_data(e->b, p, n);
}

/* "module.qualname" of `tp` ("qualname" for builtins). New reference. */
PyObject *
cap_type_name(PyTypeObject *tp)
{
    PyObject *exc = cs_exc_fetch();
    PyObject *mod = PyObject_GetAttrString((PyObject *)tp, "__module__");
    PyObject *qn = PyObject_GetAttrString((PyObject *)tp, "__qualname__");
    PyObject *r = NULL;
    if (mod && qn && PyUnicode_Check(mod) && PyUnicode_Check(qn)) {
        if (PyUnicode_CompareWithASCIIString(mod, "builtins") == 0)
            r = Py_NewRef(qn);
        else
            r = PyUnicode_FromFormat("%U.%U", mod, qn);
    }
    Py_XDECREF(mod);
    Py_XDECREF(qn);
    PyErr_Clear();
    if (r == NULL)
        r = PyUnicode_FromString(tp->tp_name);
    PyErr_Clear();
    cs_exc_restore(exc);
    return r;
}

static void
enc_name(enc *e, PyObject *s)
{
    Py_ssize_t n = 0;
    const char *p = s && PyUnicode_Check(s) ? PyUnicode_AsUTF8AndSize(s, &n) : NULL;
    if (p == NULL) {
        PyErr_Clear();
        p = "?";
        n = 1;
    }
    cs_val_name(e->b, p, (size_t)n);
}

static void
enc_type_name(enc *e, PyTypeObject *tp)
{
    PyObject *n = cap_type_name(tp);
    enc_name(e, n);
    Py_XDECREF(n);
}

/* A str through the user's sanitiser. New reference, or NULL (no error
 * set) when the sanitiser failed: the text must then not be written. */
static PyObject *
sanitized(const cap_conf *c, PyObject *s)
{
    if (c->sanitize == NULL)
        return Py_NewRef(s);
    PyObject *r = PyObject_CallOneArg(c->sanitize, s);
    if (r == NULL || !PyUnicode_Check(r)) {
        PyErr_Clear();
        Py_XDECREF(r);
        return NULL;
    }
    return r;
}

/* A name (a keyword, a parameter) as STR: names are code, not data, and
 * go in as they are, never sanitised or cut. */
static void
enc_param_name(enc *e, PyObject *name)
{
    Py_ssize_t n = 0;
    const char *s = PyUnicode_Check(name) ? PyUnicode_AsUTF8AndSize(name, &n) : NULL;
    if (s == NULL) {
        PyErr_Clear();
        s = "?";
        n = 1;
    }
    cs_val_tag(e->b, CS_V_STR);
    cs_val_data(e->b, s, (size_t)n);
}

static void
enc_failed(enc *e, const char *fmt, PyObject *what)
{
    PyObject *msg = what ? PyUnicode_FromFormat(fmt, what) : PyUnicode_FromString(fmt);
    PyObject *clean = msg ? sanitized(e->c, msg) : NULL;
    Py_ssize_t n = 0;
    const char *s = clean ? PyUnicode_AsUTF8AndSize(clean, &n) : NULL;
    if (s == NULL) {
        PyErr_Clear();
        s = "not captured";
        n = (Py_ssize_t)strlen(s);
    }
    cs_val_tag(e->b, CS_V_FAILED);
    cs_val_data(e->b, s, (size_t)n);
    Py_XDECREF(clean);
    Py_XDECREF(msg);
}

/* The reason an exception was raised, "Type: message", for FAILED. */
static PyObject *
exc_reason(void)
{
    PyObject *exc = cs_exc_fetch();
    if (exc == NULL)
        return PyUnicode_FromString("unknown error");
    PyObject *tn = cap_type_name(Py_TYPE(exc));
    PyObject *msg = PyObject_Str(exc);
    PyErr_Clear();
    PyObject *r = PyUnicode_FromFormat("%S: %S", tn ? tn : Py_None, msg ? msg : Py_None);
    Py_XDECREF(tn);
    Py_XDECREF(msg);
    Py_DECREF(exc);
    PyErr_Clear();
    return r;
}

/* Text (already sanitised) as STR or REPR, cut to max_arg_length
 * characters and to the byte budget, and marked when cut. */
static void
enc_text(enc *e, unsigned tag, PyTypeObject *tp, PyObject *s)
{
    Py_ssize_t len = PyUnicode_GET_LENGTH(s);
    Py_ssize_t keep = len;
    if (e->c->max_arg_length && keep > e->c->max_arg_length)
        keep = e->c->max_arg_length;
    size_t room = (size_t)e->c->max_bytes > enc_used(e) ? (size_t)e->c->max_bytes - enc_used(e)
                                                         : 0;
    room = room > 16 ? room - 16 : 0; /* the tags and lengths */
    /* ASCII takes a byte a character, anything else at most 4 */
    size_t per = PyUnicode_IS_ASCII(s) ? 1 : 4;
    if ((size_t)keep * per > room)
        keep = (Py_ssize_t)(room / per);
    if (keep == len && PyUnicode_IS_ASCII(s)) {
        /* ASCII is its own UTF-8: no copy */
        cs_val_tag(e->b, tag);
        if (tag == CS_V_REPR)
            enc_type_name(e, tp);
        enc_data(e, PyUnicode_DATA(s), (size_t)len);
        return;
    }
    PyObject *part = keep < len ? PyUnicode_Substring(s, 0, keep) : Py_NewRef(s);
    PyObject *bytes = part ? PyUnicode_AsEncodedString(part, "utf-8", "surrogatepass") : NULL;
    if (bytes == NULL) {
        PyErr_Clear();
        Py_XDECREF(part);
        enc_failed(e, "could not encode text", NULL);
        return;
    }
    if (keep < len) {
        cs_val_tag(e->b, CS_V_TRUNC);
        cs_val_u64(e->b, (uint64_t)len);
    }
    cs_val_tag(e->b, tag);
    if (tag == CS_V_REPR)
        enc_type_name(e, tp);
    enc_data(e, PyBytes_AS_STRING(bytes), (size_t)PyBytes_GET_SIZE(bytes));
    Py_DECREF(bytes);
    Py_DECREF(part);
}

/* Only a repr: when nothing else can keep the value. */
static void
enc_repr(enc *e, PyObject *v, const char *why)
{
    PyObject *r = PyObject_Repr(v);
    if (r == NULL) {
        PyObject *reason = exc_reason();
        enc_failed(e, "repr() raised %S", reason);
        Py_XDECREF(reason);
        return;
    }
    PyObject *clean = sanitized(e->c, r);
    Py_DECREF(r);
    if (clean == NULL) {
        enc_failed(e, "the sanitize function failed on the repr", NULL);
        return;
    }
    (void)why;
    enc_text(e, CS_V_REPR, Py_TYPE(v), clean);
    Py_DECREF(clean);
}

static void enc_value(enc *e, PyObject *v, int depth);
static void enc_ident(enc *e, PyObject *v);

/* Bytes-like data of `kind` (PICKLE, HANDLER), or a marked repr when it
 * does not fit the budget. */
static void
enc_blob_value(enc *e, unsigned tag, PyObject *name, PyObject *v, PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        enc_failed(e, "the handler's save did not return bytes", NULL);
        return;
    }
    if (enc_used(e) + (size_t)view.len > (size_t)e->c->max_bytes) {
        cs_val_tag(e->b, CS_V_TRUNC);
        cs_val_u64(e->b, (uint64_t)view.len);
        PyBuffer_Release(&view);
        enc_repr(e, v, "too large");
        return;
    }
    cs_val_tag(e->b, tag);
    if (name)
        enc_name(e, name);
    else
        enc_type_name(e, Py_TYPE(v));
    enc_data(e, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
}

static void
enc_pickle(enc *e, PyObject *v)
{
    ext_state *st = e->st;
    if (st->pickle_dumps == NULL) {
        PyObject *m = PyImport_ImportModule("pickle");
        st->pickle_dumps = m ? PyObject_GetAttrString(m, "dumps") : NULL;
        Py_XDECREF(m);
        if (st->pickle_dumps == NULL) {
            PyErr_Clear();
            enc_repr(e, v, "no pickle");
            return;
        }
    }
    PyObject *data = PyObject_CallFunction(st->pickle_dumps, "Oi", v, 4);
    if (data == NULL) {
        PyErr_Clear();
        enc_repr(e, v, "not picklable");
        return;
    }
    enc_blob_value(e, CS_V_PICKLE, NULL, v, data);
    Py_DECREF(data);
}

/* The handler registered for `tp` or a base of it: (name, save, load), or
 * NULL. Borrowed. Looked up once per type, then cached. */
static PyObject *
handler_for(ext_state *st, PyTypeObject *tp)
{
    PyObject *h = PyDict_GetItemWithError(st->handler_cache, (PyObject *)tp);
    if (h != NULL)
        return h == Py_None ? NULL : h;
    PyErr_Clear();
    PyObject *mro = tp->tp_mro;
    PyObject *found = Py_None;
    for (Py_ssize_t i = 0; mro && i < PyTuple_GET_SIZE(mro); i++) {
        PyObject *x = PyDict_GetItemWithError(st->handlers, PyTuple_GET_ITEM(mro, i));
        if (x != NULL) {
            found = x;
            break;
        }
    }
    PyErr_Clear();
    if (PyDict_SetItem(st->handler_cache, (PyObject *)tp, found) < 0)
        PyErr_Clear();
    return found == Py_None ? NULL : found;
}

static void
enc_handler(enc *e, PyObject *h, PyObject *v)
{
    PyObject *data = PyObject_CallOneArg(PyTuple_GET_ITEM(h, 1), v);
    if (data == NULL) {
        PyObject *reason = exc_reason();
        PyObject *msg = PyUnicode_FromFormat("handler %S: save raised %S",
                                             PyTuple_GET_ITEM(h, 0), reason);
        enc_failed(e, "%U", msg);
        Py_XDECREF(msg);
        Py_XDECREF(reason);
        return;
    }
    enc_blob_value(e, CS_V_HANDLER, PyTuple_GET_ITEM(h, 0), v, data);
    Py_DECREF(data);
}

static int
is_ndarray(PyObject *v)
{
    return strcmp(Py_TYPE(v)->tp_name, "numpy.ndarray") == 0;
}

/* A numpy scalar (numpy.float64, numpy.int32, ...): numpy's own type,
 * with a buffer. */
static int
is_numpy_scalar(PyObject *v)
{
    const char *n = Py_TYPE(v)->tp_name;
    return strncmp(n, "numpy.", 6) == 0 && PyObject_CheckBuffer(v) && !is_ndarray(v);
}

/* A numpy array (or, with `scalar`, a numpy scalar) by its buffer: 1 if
 * done, 0 to fall back to pickle. */
static int
enc_ndarray(enc *e, PyObject *v, int scalar)
{
    PyObject *dtype = PyObject_GetAttrString(v, "dtype");
    PyObject *hasobj = dtype ? PyObject_GetAttrString(dtype, "hasobject") : NULL;
    PyObject *names = dtype ? PyObject_GetAttrString(dtype, "names") : NULL;
    PyObject *dstr = dtype ? PyObject_GetAttrString(dtype, "str") : NULL;
    int ok = dstr && PyUnicode_Check(dstr) && hasobj == Py_False && names == Py_None;
    Py_XDECREF(dtype);
    Py_XDECREF(hasobj);
    Py_XDECREF(names);
    Py_buffer view;
    if (!ok || PyObject_GetBuffer(v, &view, PyBUF_RECORDS_RO) < 0) {
        PyErr_Clear();
        Py_XDECREF(dstr);
        return 0;
    }
    if (view.ndim > CS_VAL_MAX_NDIM) {
        PyBuffer_Release(&view);
        Py_DECREF(dstr);
        return 0;
    }
    size_t nbytes = (size_t)view.len;
    if (enc_used(e) + nbytes > (size_t)e->c->max_bytes) {
        cs_val_tag(e->b, CS_V_TRUNC);
        cs_val_u64(e->b, nbytes);
        PyBuffer_Release(&view);
        Py_DECREF(dstr);
        enc_repr(e, v, "too large"); /* numpy's repr summarises */
        return 1;
    }
    char order = scalar ? 'S' : 'C';
    if (scalar && view.ndim != 0) {
        PyBuffer_Release(&view);
        Py_DECREF(dstr);
        return 0;
    }
    void *tmp = NULL;
    const void *data = view.buf;
    if (!PyBuffer_IsContiguous(&view, 'C')) {
        if (PyBuffer_IsContiguous(&view, 'F')) {
            order = 'F';
        } else {
            tmp = PyMem_Malloc(nbytes ? nbytes : 1);
            if (tmp == NULL || PyBuffer_ToContiguous(tmp, &view, view.len, 'C') < 0) {
                PyErr_Clear();
                PyMem_Free(tmp);
                PyBuffer_Release(&view);
                Py_DECREF(dstr);
                return 0;
            }
            data = tmp;
        }
    }
    cs_val_tag(e->b, CS_V_ARRAY);
    enc_name(e, dstr);
    cs_val_u8(e->b, (unsigned)view.ndim);
    for (int i = 0; i < view.ndim; i++)
        cs_val_u64(e->b, (uint64_t)view.shape[i]);
    cs_val_u8(e->b, (unsigned)order);
    enc_data(e, data, nbytes);
    PyMem_Free(tmp);
    PyBuffer_Release(&view);
    Py_DECREF(dstr);
    return 1;
}

static void
enc_int(enc *e, PyObject *v)
{
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (!overflow && !(x == -1 && PyErr_Occurred())) {
        cs_val_tag(e->b, CS_V_INT);
        cs_val_u64(e->b, (uint64_t)x);
        return;
    }
    PyErr_Clear();
    size_t n = _PyLong_NumBits(v) / 8 + 1;
    if (n + enc_used(e) > (size_t)e->c->max_bytes || n > 0x7fffffffu) {
        cs_val_tag(e->b, CS_V_TRUNC);
        cs_val_u64(e->b, n);
        enc_failed(e, "an int too large for max_bytes", NULL);
        return;
    }
    unsigned char *buf = PyMem_Malloc(n);
    if (buf == NULL || cs_long_to_bytes(v, buf, n) < 0) {
        PyErr_Clear();
        PyMem_Free(buf);
        enc_failed(e, "could not convert an int", NULL);
        return;
    }
    cs_val_tag(e->b, CS_V_BIGINT);
    cs_val_u32(e->b, (uint32_t)n);
    cs_buf_append(e->b, buf, n);
    PyMem_Free(buf);
}

/* Items of a container. When the budget runs out, the items that fit are
 * kept, and the container is marked as truncated from its full count. */
static void
enc_items(enc *e, unsigned tag, PyObject *v, int depth)
{
    PyObject *seq = NULL, *key, *val;
    Py_ssize_t n, pos = 0;
    for (int i = 0; i < e->npath; i++) {
        if (e->path[i] == v) {
            e->cycle = 1; /* the caller starts again with pickle */
            cs_val_tag(e->b, CS_V_NONE);
            return;
        }
    }
    if (e->npath >= (int)(sizeof e->path / sizeof *e->path)) {
        if (e->c->safe)
            enc_ident(e, v);
        else
            enc_pickle(e, v);
        return;
    }
    e->path[e->npath++] = v;
    if (tag == CS_V_SET || tag == CS_V_FROZENSET) {
        seq = PySequence_List(v);
        if (seq == NULL) {
            PyErr_Clear();
            e->npath--;
            enc_failed(e, "could not iterate a set", NULL);
            return;
        }
        n = PyList_GET_SIZE(seq);
    } else if (tag == CS_V_DICT) {
        n = PyDict_GET_SIZE(v);
    } else {
        n = PySequence_Fast_GET_SIZE(v);
    }
    if (n > 0x7fffffff)
        n = 0x7fffffff;
    size_t start = e->b->len;
    cs_val_tag(e->b, tag);
    size_t count_at = e->b->len;
    cs_val_u32(e->b, (uint32_t)n);
    Py_ssize_t done = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        size_t before = e->b->len, blobs_before = e->arg_blobs;
        if (tag == CS_V_DICT) {
            if (!PyDict_Next(v, &pos, &key, &val))
                break;
            Py_INCREF(key);
            Py_INCREF(val);
            enc_value(e, key, depth + 1);
            if (PyUnicode_Check(key) && cap_redacted(e->c, key))
                cs_val_tag(e->b, CS_V_REDACTED);
            else
                enc_value(e, val, depth + 1);
            Py_DECREF(key);
            Py_DECREF(val);
        } else {
            /* code run while encoding (a repr, pickling, sanitize, another
             * thread) may shrink a list: read its size again every time */
            if (seq == NULL && PyList_Check(v) && i >= PyList_GET_SIZE(v))
                break;
            PyObject *item = seq ? PyList_GET_ITEM(seq, i) : PySequence_Fast_GET_ITEM(v, i);
            Py_INCREF(item);
            enc_value(e, item, depth + 1);
            Py_DECREF(item);
        }
        if (over_budget(e)) {
            e->b->len = before; /* drop the item that did not fit */
            e->arg_blobs = blobs_before;
            break;
        }
        done++;
    }
    Py_XDECREF(seq);
    e->npath--;
    if (e->b->failed)
        return;
    if (done < n) {
        uint32_t k = (uint32_t)done;
        memcpy(e->b->data + count_at, &k, 4);
        /* the TRUNC marker goes in front of the container */
        unsigned char hdr[9];
        hdr[0] = CS_V_TRUNC;
        uint64_t full = (uint64_t)n;
        memcpy(hdr + 1, &full, 8);
        size_t tail = e->b->len - start;
        cs_buf_append(e->b, hdr, 9); /* grow by 9 */
        if (e->b->failed)
            return;
        memmove(e->b->data + start + 9, e->b->data + start, tail);
        memcpy(e->b->data + start, hdr, 9);
    }
}

static void
enc_value(enc *e, PyObject *v, int depth)
{
    PyTypeObject *tp = Py_TYPE(v);
    if (!e->c->safe && PyDict_GET_SIZE(e->st->handlers) > 0) {
        PyObject *h = handler_for(e->st, tp);
        if (h != NULL) {
            Py_INCREF(h); /* save may register again, dropping the cached tuple */
            enc_handler(e, h, v);
            Py_DECREF(h);
            return;
        }
    }
    if (v == Py_None) {
        cs_val_tag(e->b, CS_V_NONE);
    } else if (v == Py_True || v == Py_False) {
        cs_val_tag(e->b, v == Py_True ? CS_V_TRUE : CS_V_FALSE);
    } else if (tp == &PyLong_Type) {
        enc_int(e, v);
    } else if (tp == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(v);
        cs_val_tag(e->b, CS_V_FLOAT);
        cs_buf_append(e->b, &d, 8);
    } else if (tp == &PyComplex_Type) {
        Py_complex z = PyComplex_AsCComplex(v);
        cs_val_tag(e->b, CS_V_COMPLEX);
        cs_buf_append(e->b, &z.real, 8);
        cs_buf_append(e->b, &z.imag, 8);
    } else if (tp == &PyUnicode_Type) {
        PyObject *s = sanitized(e->c, v);
        if (s == NULL) {
            enc_failed(e, "the sanitize function failed", NULL);
            return;
        }
        enc_text(e, CS_V_STR, tp, s);
        Py_DECREF(s);
    } else if (tp == &PyBytes_Type) {
        Py_ssize_t n = PyBytes_GET_SIZE(v);
        size_t avail = (size_t)e->c->max_bytes > enc_used(e)
                           ? (size_t)e->c->max_bytes - enc_used(e)
                           : 0;
        size_t room = avail > 16 ? avail - 16 : 0;
        if ((size_t)n > room) {
            cs_val_tag(e->b, CS_V_TRUNC);
            cs_val_u64(e->b, (uint64_t)n);
            n = (Py_ssize_t)room;
        }
        cs_val_tag(e->b, CS_V_BYTES);
        enc_data(e, PyBytes_AS_STRING(v), (size_t)n);
    } else if (depth < CAP_MAX_DEPTH && (tp == &PyTuple_Type || tp == &PyList_Type)) {
        enc_items(e, tp == &PyList_Type ? CS_V_LIST : CS_V_TUPLE, v, depth);
    } else if (depth < CAP_MAX_DEPTH && tp == &PyDict_Type) {
        enc_items(e, CS_V_DICT, v, depth);
    } else if (depth < CAP_MAX_DEPTH && (tp == &PySet_Type || tp == &PyFrozenSet_Type)) {
        enc_items(e, tp == &PySet_Type ? CS_V_SET : CS_V_FROZENSET, v, depth);
    } else if (is_ndarray(v) && enc_ndarray(e, v, 0)) {
        ;
    } else if (is_numpy_scalar(v) && enc_ndarray(e, v, 1)) {
        ;
    } else if (e->c->safe) {
        enc_ident(e, v); /* its type and id: no code of the program runs */
    } else {
        enc_pickle(e, v);
    }
}

/* ---- records ------------------------------------------------------------------ */

void
cap_write(cs_tstate *t, unsigned sub, uint64_t seq, uint32_t stream, cs_buf *b)
{
    if (b->failed || b->len == 0)
        return;
    uint64_t aux = (seq & CS_SEQ_MASK) | ((uint64_t)stream << CS_SEQ_BITS);
    if (b->len <= cs_log_var_room()) {
        cs_log_put_var(t, sub, aux, b->data, b->len);
        return;
    }
    /* larger than a record: the whole value goes into a blob */
    uint64_t h = cs_hash64(b->data, b->len);
    put_blob_once(t, h, b->data, b->len);
    unsigned char ref[17];
    ref[0] = CS_V_REF;
    uint64_t n = b->len;
    memcpy(ref + 1, &h, 8);
    memcpy(ref + 9, &n, 8);
    cs_log_put_var(t, sub, aux, ref, sizeof ref);
}

/* The identity of `self`: its type and id, not its contents. */
static void
enc_ident(enc *e, PyObject *v)
{
    cs_val_tag(e->b, CS_V_IDENT);
    enc_type_name(e, PyType_Check(v) ? (PyTypeObject *)v : Py_TYPE(v));
    cs_val_u64(e->b, (uint64_t)(uintptr_t)v);
}

/* A value at the top of an argument or result. A structure that contains
 * itself is pickled whole, which keeps its cycles. */
static void
enc_top(enc *e, PyObject *v, int depth)
{
    size_t start = e->b->len;
    e->cycle = 0;
    e->npath = 0;
    enc_value(e, v, depth);
    if (e->cycle) {
        e->b->len = start;
        e->arg_blobs = 0;
        e->cycle = 0;
        if (e->c->safe)
            enc_ident(e, v);
        else
            enc_pickle(e, v);
    }
}

/* One argument, with its own byte budget. */
static void
enc_arg(enc *e, PyObject *name, PyObject *v, int first)
{
    e->arg_start = e->b->len;
    e->arg_blobs = 0;
    if (v == NULL) {
        enc_failed(e, "no value", NULL);
    } else if (name && cap_redacted(e->c, name)) {
        cs_val_tag(e->b, CS_V_REDACTED);
    } else if (first && !e->c->capture_self && name && PyUnicode_Check(name) &&
               (PyUnicode_GET_LENGTH(name) == 4 || PyUnicode_GET_LENGTH(name) == 3) &&
               (PyUnicode_CompareWithASCIIString(name, "self") == 0 ||
                PyUnicode_CompareWithASCIIString(name, "cls") == 0)) {
        enc_ident(e, v);
    } else {
        enc_top(e, v, 1);
    }
}

void
cap_encode_call(ext_state *st, const cap_conf *c, cs_tstate *t, PyObject *const *pos,
                PyObject *const *posnames, Py_ssize_t npos, PyObject *const *kwv,
                PyObject *const *kwn, Py_ssize_t nkw, cs_buf *b)
{
    enc e = {.st = st, .c = c, .t = t, .b = b};
    PyObject *exc = cs_exc_fetch();
    cap_busy++;
    cs_val_tag(b, CS_V_TUPLE);
    cs_val_u32(b, 2);
    cs_val_tag(b, CS_V_TUPLE);
    cs_val_u32(b, (uint32_t)npos);
    for (Py_ssize_t i = 0; i < npos; i++)
        enc_arg(&e, posnames ? posnames[i] : NULL, pos[i], i == 0);
    cs_val_tag(b, CS_V_DICT);
    cs_val_u32(b, (uint32_t)nkw);
    for (Py_ssize_t i = 0; i < nkw; i++) {
        enc_param_name(&e, kwn[i]);
        enc_arg(&e, kwn[i], kwv[i], npos == 0 && i == 0);
    }
    cap_busy--;
    PyErr_Clear();
    cs_exc_restore(exc);
}

void
cap_encode_value(ext_state *st, const cap_conf *c, cs_tstate *t, PyObject *v, cs_buf *b)
{
    enc e = {.st = st, .c = c, .t = t, .b = b};
    PyObject *exc = cs_exc_fetch();
    cap_busy++;
    enc_top(&e, v, 0);
    cap_busy--;
    PyErr_Clear();
    cs_exc_restore(exc);
}

/* Positional parameter names of `code` for `npos` arguments: the names of
 * the positional parameters, then the *args name. */
static void
pos_names(PyCodeObject *co, PyObject *varnames, Py_ssize_t npos, PyObject **out, int shift)
{
    Py_ssize_t argc = co ? co->co_argcount : 0;
    PyObject *star = NULL;
    if (co && (co->co_flags & CO_VARARGS) && varnames &&
        argc + co->co_kwonlyargcount < PyTuple_GET_SIZE(varnames))
        star = PyTuple_GET_ITEM(varnames, argc + co->co_kwonlyargcount);
    for (Py_ssize_t i = 0; i < npos; i++) {
        Py_ssize_t k = i + shift; /* a bound method's self is not passed */
        out[i] = (varnames && k < argc && k < PyTuple_GET_SIZE(varnames))
                     ? PyTuple_GET_ITEM(varnames, k)
                     : star;
    }
}

void
cap_encode_args(ext_state *st, const cap_conf *c, cs_tstate *t, PyObject *code,
                PyObject *varnames, int shift, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames, cs_buf *b)
{
    PyObject *small[16], **names = small;
    PyCodeObject *co = code && PyCode_Check(code) ? (PyCodeObject *)code : NULL;
    if (varnames && !PyTuple_Check(varnames))
        varnames = NULL;
    if (nargs > 16 && (names = PyMem_Malloc((size_t)nargs * sizeof *names)) == NULL)
        return;
    pos_names(co, varnames, nargs, names, shift);
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    cap_encode_call(st, c, t, args, names, nargs, args + nargs,
                    nkw ? &PyTuple_GET_ITEM(kwnames, 0) : NULL, nkw, b);
    if (names != small)
        PyMem_Free(names);
}

/* A per-thread buffer for encoding, kept between calls: the common small
 * values need no allocation. */
static _Thread_local cs_buf scratch CS_TLS_MODEL;

void
cap_scratch_trim(void)
{
    if (scratch.cap > (1u << 16))
        cs_buf_free(&scratch);
}

cs_buf *
cap_scratch(void)
{
    if (scratch.cap > (1u << 16)) /* do not keep a large one */
        cs_buf_free(&scratch);
    scratch.len = 0;
    scratch.failed = 0;
    return &scratch;
}

void
cap_put_signature(ext_state *st, const cap_conf *c, cs_tstate *t, uint32_t func_id,
                  PyObject *func, PyObject *code, int shift)
{
    if (code == NULL || !PyCode_Check(code))
        return;
    PyCodeObject *co = (PyCodeObject *)code;
    PyObject *varnames = PyObject_GetAttrString(code, "co_varnames");
    PyObject *defaults = func ? PyObject_GetAttrString(func, "__defaults__") : NULL;
    PyErr_Clear();
    PyObject *kwdefaults = func ? PyObject_GetAttrString(func, "__kwdefaults__") : NULL;
    PyErr_Clear();
    if (varnames == NULL || !PyTuple_Check(varnames)) {
        PyErr_Clear();
        Py_XDECREF(varnames);
        Py_XDECREF(defaults);
        Py_XDECREF(kwdefaults);
        return;
    }
    Py_ssize_t argc = co->co_argcount, kwc = co->co_kwonlyargcount;
    Py_ssize_t n = argc + kwc + ((co->co_flags & CO_VARARGS) != 0) +
                   ((co->co_flags & CO_VARKEYWORDS) != 0);
    if (n > PyTuple_GET_SIZE(varnames))
        n = PyTuple_GET_SIZE(varnames);
    Py_ssize_t ndef = defaults && PyTuple_Check(defaults) ? PyTuple_GET_SIZE(defaults) : 0;
    cs_buf b;
    cs_buf_init(&b);
    enc e = {.st = st, .c = c, .t = t, .b = &b};
    PyObject *exc = cs_exc_fetch();
    cap_busy++;
    if (shift > argc)
        shift = 0;
    cs_val_tag(&b, CS_V_TUPLE);
    cs_val_u32(&b, (uint32_t)(n - shift));
    Py_ssize_t star = argc + kwc; /* *args comes after the kw-only names */
    for (Py_ssize_t i = 0, slot = shift; slot < n; slot++) {
        /* parameters in signature order: positional, *args, kw-only, **kw;
         * a bound method's self is bound already: left out */
        Py_ssize_t vi;
        int kind;
        if (slot < argc) {
            vi = slot;
            kind = slot < co->co_posonlyargcount ? 0 : 1;
        } else if (slot == argc && (co->co_flags & CO_VARARGS)) {
            vi = star;
            kind = 2;
        } else if (i < kwc) {
            vi = argc + i++;
            kind = 3;
        } else {
            vi = star + ((co->co_flags & CO_VARARGS) != 0);
            kind = 4;
        }
        if (vi >= PyTuple_GET_SIZE(varnames))
            break;
        PyObject *name = PyTuple_GET_ITEM(varnames, vi), *def = NULL;
        if (kind <= 1 && vi >= argc - ndef)
            def = PyTuple_GET_ITEM(defaults, vi - (argc - ndef));
        else if (kind == 3 && kwdefaults && PyDict_Check(kwdefaults))
            def = PyDict_GetItemWithError(kwdefaults, name);
        PyErr_Clear();
        cs_val_tag(&b, CS_V_TUPLE);
        cs_val_u32(&b, def ? 3 : 2);
        enc_param_name(&e, name);
        cs_val_tag(&b, CS_V_INT);
        cs_val_u64(&b, (uint64_t)kind);
        if (def)
            enc_arg(&e, name, def, 0);
    }
    cap_busy--;
    PyErr_Clear();
    cs_exc_restore(exc);
    if (!b.failed && cs_value_check(b.data, b.len) == CS_OK) {
        if (b.len <= cs_log_var_room()) {
            cs_log_put_var(t, CS_VAR_SIG, func_id, b.data, b.len);
        } else { /* large defaults: the whole signature in a blob */
            uint64_t h = cs_hash64(b.data, b.len);
            put_blob_once(t, h, b.data, b.len);
            unsigned char ref[17];
            uint64_t len = b.len;
            ref[0] = CS_V_REF;
            memcpy(ref + 1, &h, 8);
            memcpy(ref + 9, &len, 8);
            cs_log_put_var(t, CS_VAR_SIG, func_id, ref, sizeof ref);
        }
    }
    cs_buf_free(&b);
    Py_DECREF(varnames);
    Py_XDECREF(defaults);
    Py_XDECREF(kwdefaults);
}
