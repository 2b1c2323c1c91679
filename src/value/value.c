/* value.c -- reading captured values: validation, skipping, previews,
 * and the hash that names blobs. The encoder is in the extension. */
#include "cs_value.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

uint64_t
cs_value_hash(const void *data, size_t n)
{
    return cs_hash64(data, n);
}

static const char *const tag_names[CS_V__MAX] = {
    "None",  "False", "True",   "int",   "int",     "float",  "complex", "str",
    "bytes", "tuple", "list",   "set",   "frozenset", "dict", "ndarray", "pickle",
    "repr",  "handler", "ident", "truncated", "failed", "redacted", "ref",
};

const char *
cs_value_tag_name(unsigned tag)
{
    return tag < CS_V__MAX ? tag_names[tag] : "?";
}

static int
skip_data(cs_vreader *r)
{
    const char *s;
    int blob;
    uint64_t hash;
    cs_vr_data(r, &s, &blob, &hash);
    return !r->bad;
}

static int
skip_depth(cs_vreader *r, int depth)
{
    if (depth > CS_VAL_MAX_DEPTH) {
        r->bad = 1;
        return 0;
    }
    unsigned tag = cs_vr_u8(r);
    const char *s;
    uint64_t u;
    switch (tag) {
    case CS_V_NONE:
    case CS_V_FALSE:
    case CS_V_TRUE:
    case CS_V_REDACTED:
        break;
    case CS_V_INT:
    case CS_V_FLOAT:
        cs_vr_u64(r);
        break;
    case CS_V_COMPLEX:
        cs_vr_u64(r);
        cs_vr_u64(r);
        break;
    case CS_V_BIGINT: {
        uint32_t n = cs_vr_u32(r);
        if (n == 0 || (size_t)(r->end - r->p) < n)
            r->bad = 1;
        else
            r->p += n;
        break;
    }
    case CS_V_STR:
    case CS_V_BYTES:
    case CS_V_FAILED:
        skip_data(r);
        break;
    case CS_V_TUPLE:
    case CS_V_LIST:
    case CS_V_SET:
    case CS_V_FROZENSET:
    case CS_V_DICT: {
        uint64_t n = cs_vr_u32(r);
        if (tag == CS_V_DICT)
            n *= 2;
        /* every value takes at least one byte: a bound before looping */
        if (n > (uint64_t)(r->end - r->p))
            r->bad = 1;
        for (uint64_t i = 0; i < n && !r->bad; i++)
            skip_depth(r, depth + 1);
        break;
    }
    case CS_V_ARRAY: {
        cs_vr_name(r, &s);
        unsigned ndim = cs_vr_u8(r);
        if (ndim > CS_VAL_MAX_NDIM)
            r->bad = 1;
        for (unsigned i = 0; i < ndim && !r->bad; i++)
            cs_vr_u64(r);
        unsigned order = cs_vr_u8(r);
        if (order != 'C' && order != 'F' && order != 'S')
            r->bad = 1;
        skip_data(r);
        break;
    }
    case CS_V_PICKLE:
    case CS_V_REPR:
    case CS_V_HANDLER:
        cs_vr_name(r, &s);
        skip_data(r);
        break;
    case CS_V_IDENT:
        cs_vr_name(r, &s);
        cs_vr_u64(r);
        break;
    case CS_V_TRUNC:
        u = cs_vr_u64(r);
        (void)u;
        skip_depth(r, depth + 1);
        break;
    case CS_V_REF:
        cs_vr_u64(r);
        cs_vr_u64(r);
        break;
    default:
        r->bad = 1;
    }
    return !r->bad;
}

int
cs_value_skip(cs_vreader *r)
{
    return skip_depth(r, 0);
}

int
cs_value_check(const void *p, size_t n)
{
    cs_vreader r;
    cs_vr_init(&r, p, n);
    if (!cs_value_skip(&r) || r.p != r.end)
        return CS_EFORMAT;
    return CS_OK;
}

/* ---- previews ------------------------------------------------------------ */

typedef struct pv {
    cs_vreader r;
    cs_buf *out;
    size_t start, max;
} pv;

static int
pv_full(pv *v)
{
    return v->out->len - v->start >= v->max;
}

static void
pv_quoted(pv *v, const char *s, size_t n, int bytes)
{
    cs_buf *o = v->out;
    if (bytes)
        cs_buf_append(o, "b", 1);
    cs_buf_append(o, "'", 1);
    size_t i = 0;
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        /* stop only at the start of a character, never inside one */
        if (pv_full(v) && !(c >= 0x80 && c < 0xc0 && !bytes))
            break;
        if (c == '\'' || c == '\\') {
            char e[2] = {'\\', (char)c};
            cs_buf_append(o, e, 2);
        } else if (c == '\n') {
            cs_buf_append(o, "\\n", 2);
        } else if (c < 0x20 || c == 0x7f || (bytes && c >= 0x80)) {
            cs_buf_printf(o, "\\x%02x", c);
        } else {
            cs_buf_append(o, s + i, 1);
        }
    }
    cs_buf_append(o, "'", 1);
    if (i < n)
        cs_buf_append(o, "...", 3);
}

static void pv_value(pv *v, int depth);

/* The shortest of %.15g, %.17g that reads back as `d` (Python shows the
 * shortest; this is close and cheap). */
static void
pv_double(cs_buf *o, double d, int sign)
{
    char s[40];
    snprintf(s, sizeof s, sign ? "%+.15g" : "%.15g", d);
    if (strtod(s, NULL) != d && d == d)
        snprintf(s, sizeof s, sign ? "%+.17g" : "%.17g", d);
    cs_buf_puts(o, s);
}

static void
pv_items(pv *v, const char *open, const char *close, int dict, int depth)
{
    uint64_t n = cs_vr_u32(&v->r);
    if (n > (uint64_t)(v->r.end - v->r.p)) {
        v->r.bad = 1;
        return;
    }
    cs_buf_puts(v->out, open);
    for (uint64_t i = 0; i < n && !v->r.bad; i++) {
        if (i)
            cs_buf_append(v->out, ", ", 2);
        if (pv_full(v)) {
            cs_buf_puts(v->out, "...");
            /* skip the rest to keep the reader in step */
            for (; i < n && !v->r.bad; i++) {
                skip_depth(&v->r, depth + 1);
                if (dict)
                    skip_depth(&v->r, depth + 1);
            }
            break;
        }
        pv_value(v, depth + 1);
        if (dict) {
            cs_buf_append(v->out, ": ", 2);
            pv_value(v, depth + 1);
        }
    }
    if (n == 1 && !dict && open[0] == '(')
        cs_buf_append(v->out, ",", 1);
    cs_buf_puts(v->out, close);
}

static void
pv_data_text(pv *v, int bytes, const char *type)
{
    const char *s;
    int blob;
    uint64_t hash, n = cs_vr_data(&v->r, &s, &blob, &hash);
    if (blob)
        cs_buf_printf(v->out, "<%s of %" PRIu64 " bytes>", type, n);
    else if (s)
        pv_quoted(v, s, (size_t)n, bytes);
}

static void
pv_value(pv *v, int depth)
{
    if (depth > CS_VAL_MAX_DEPTH) {
        v->r.bad = 1;
        return;
    }
    cs_buf *o = v->out;
    unsigned tag = cs_vr_u8(&v->r);
    const char *s;
    size_t k;
    switch (tag) {
    case CS_V_NONE:
    case CS_V_FALSE:
    case CS_V_TRUE:
        cs_buf_puts(o, tag_names[tag]);
        break;
    case CS_V_REDACTED:
        cs_buf_puts(o, "<redacted>");
        break;
    case CS_V_INT: {
        int64_t i = (int64_t)cs_vr_u64(&v->r);
        cs_buf_printf(o, "%" PRId64, i);
        break;
    }
    case CS_V_BIGINT: {
        uint32_t n = cs_vr_u32(&v->r);
        if ((size_t)(v->r.end - v->r.p) < n)
            v->r.bad = 1;
        else
            v->r.p += n;
        cs_buf_printf(o, "<int of %u bytes>", n);
        break;
    }
    case CS_V_FLOAT:
    case CS_V_COMPLEX: {
        double d;
        cs_vr_take(&v->r, &d, 8);
        if (tag == CS_V_FLOAT) {
            pv_double(o, d, 0);
        } else {
            double im;
            cs_vr_take(&v->r, &im, 8);
            cs_buf_append(o, "(", 1);
            pv_double(o, d, 0);
            pv_double(o, im, 1);
            cs_buf_append(o, "j)", 2);
        }
        break;
    }
    case CS_V_STR:
    case CS_V_BYTES:
        pv_data_text(v, tag == CS_V_BYTES, tag_names[tag]);
        break;
    case CS_V_TUPLE:
        pv_items(v, "(", ")", 0, depth);
        break;
    case CS_V_LIST:
        pv_items(v, "[", "]", 0, depth);
        break;
    case CS_V_SET:
        pv_items(v, "{", "}", 0, depth);
        break;
    case CS_V_FROZENSET:
        pv_items(v, "frozenset({", "})", 0, depth);
        break;
    case CS_V_DICT:
        pv_items(v, "{", "}", 1, depth);
        break;
    case CS_V_ARRAY: {
        k = cs_vr_name(&v->r, &s);
        unsigned ndim = cs_vr_u8(&v->r);
        if (ndim > CS_VAL_MAX_NDIM) {
            v->r.bad = 1;
            break;
        }
        uint64_t shape[CS_VAL_MAX_NDIM];
        for (unsigned i = 0; i < ndim; i++)
            shape[i] = cs_vr_u64(&v->r);
        unsigned order = cs_vr_u8(&v->r);
        const char *d;
        int blob;
        uint64_t h, n = cs_vr_data(&v->r, &d, &blob, &h);
        if (v->r.bad)
            break;
        if (order == 'S' && ndim == 0 && d && n == 8 && k == 3 && s[0] == '<' && s[2] == '8' &&
            (s[1] == 'f' || s[1] == 'i')) {
            /* a numpy scalar: its value, as numpy shows it */
            if (s[1] == 'f') {
                double x;
                memcpy(&x, d, 8);
                pv_double(o, x, 0);
            } else {
                int64_t x;
                memcpy(&x, d, 8);
                cs_buf_printf(o, "%" PRId64, x);
            }
            break;
        }
        cs_buf_printf(o, "<ndarray %.*s (", (int)k, s);
        for (unsigned i = 0; i < ndim; i++)
            cs_buf_printf(o, i ? ", %" PRIu64 : "%" PRIu64, shape[i]);
        cs_buf_puts(o, ndim == 1 ? ",)>" : ")>");
        break;
    }
    case CS_V_PICKLE:
    case CS_V_HANDLER:
        k = cs_vr_name(&v->r, &s);
        cs_buf_printf(o, "<%.*s>", (int)k, s);
        skip_data(&v->r);
        break;
    case CS_V_REPR: {
        k = cs_vr_name(&v->r, &s);
        (void)k;
        const char *d;
        int blob;
        uint64_t hash, n = cs_vr_data(&v->r, &d, &blob, &hash);
        if (d) {
            size_t m = (size_t)n;
            size_t room = v->max > (o->len - v->start) ? v->max - (o->len - v->start) : 0;
            size_t keep = m < room ? m : room;
            while (keep < m && keep > 0 && ((unsigned char)d[keep] & 0xc0) == 0x80)
                keep--; /* not inside a character */
            for (size_t i = 0; i < keep; i++) {
                if (d[i] == '\0')
                    cs_buf_puts(o, "\\x00");
                else
                    cs_buf_append(o, d + i, 1);
            }
            if (m > room)
                cs_buf_puts(o, "...");
        } else {
            cs_buf_printf(o, "<repr of %" PRIu64 " bytes>", n);
        }
        break;
    }
    case CS_V_IDENT:
        k = cs_vr_name(&v->r, &s);
        cs_buf_printf(o, "<%.*s at 0x%" PRIx64 ">", (int)k, s, cs_vr_u64(&v->r));
        break;
    case CS_V_TRUNC: {
        uint64_t n = cs_vr_u64(&v->r);
        pv_value(v, depth + 1);
        cs_buf_printf(o, "...<truncated from %" PRIu64 ">", n);
        break;
    }
    case CS_V_FAILED:
        cs_buf_puts(o, "<not captured: ");
        pv_data_text(v, 0, "message");
        cs_buf_puts(o, ">");
        break;
    case CS_V_REF: {
        cs_vr_u64(&v->r);
        uint64_t n = cs_vr_u64(&v->r);
        cs_buf_printf(o, "<value of %" PRIu64 " bytes>", n);
        break;
    }
    default:
        v->r.bad = 1;
    }
}

void
cs_value_preview_args(const void *p, size_t n, cs_buf *out, size_t max_chars)
{
    /* (positional tuple, keyword dict) -> "a, b, k=v" */
    pv v = {.out = out, .start = out->len, .max = max_chars ? max_chars : 1};
    cs_vr_init(&v.r, p, n);
    if (cs_vr_u8(&v.r) != CS_V_TUPLE || cs_vr_u32(&v.r) != 2 || cs_vr_u8(&v.r) != CS_V_TUPLE) {
        cs_value_preview(p, n, out, max_chars);
        return;
    }
    uint32_t np = cs_vr_u32(&v.r);
    int first = 1;
    for (uint32_t i = 0; i < np && !v.r.bad; i++, first = 0) {
        if (!first)
            cs_buf_append(out, ", ", 2);
        pv_value(&v, 1);
    }
    if (!v.r.bad && cs_vr_u8(&v.r) == CS_V_DICT) {
        uint32_t nk = cs_vr_u32(&v.r);
        for (uint32_t i = 0; i < nk && !v.r.bad; i++, first = 0) {
            if (!first)
                cs_buf_append(out, ", ", 2);
            const char *s;
            int blob;
            uint64_t h, len;
            if (cs_vr_u8(&v.r) != CS_V_STR ||
                (len = cs_vr_data(&v.r, &s, &blob, &h), s == NULL)) {
                v.r.bad = 1;
                break;
            }
            cs_buf_append(out, s, (size_t)len);
            cs_buf_append(out, "=", 1);
            pv_value(&v, 1);
        }
    } else {
        v.r.bad = 1;
    }
    if (v.r.bad) {
        out->len = v.start;
        if (out->data)
            out->data[out->len] = '\0';
        cs_buf_puts(out, "<damaged>");
    }
}

void
cs_value_preview(const void *p, size_t n, cs_buf *out, size_t max_chars)
{
    pv v = {.out = out, .start = out->len, .max = max_chars ? max_chars : 1};
    cs_vr_init(&v.r, p, n);
    pv_value(&v, 0);
    if (v.r.bad) {
        out->len = v.start;
        if (out->data)
            out->data[out->len] = '\0';
        cs_buf_puts(out, "<damaged>");
    }
}

/* ---- numbers ------------------------------------------------------------- */

#define DIGITS_F64 15.954589770191003 /* 53 * log10(2) */
#define DIGITS_F32 7.224719895935548  /* 24 * log10(2) */
#define DIGITS_F16 3.3113299523037933 /* 11 * log10(2) */

typedef struct nums {
    cs_vreader r;
    cs_blob_fn blob;
    void *ctx;
    cs_buf *out;
} nums;

static void
put_num(nums *x, uint8_t kind, double re, double im, int64_t exact, double maxd)
{
    cs_num v = {.re = re, .im = im, .exact = exact, .max_digits = (float)maxd, .kind = kind};
    cs_buf_append(x->out, &v, sizeof v);
}

/* The elements of an array of dtype `dt` (numpy's dtype.str). */
/* The storage index of the element at C-order position `i` of an array
 * of `shape` stored in Fortran order. */
static uint64_t
fortran_index(uint64_t i, const uint64_t *shape, unsigned ndim)
{
    uint64_t off = 0, stride = 1;
    uint64_t idx[CS_VAL_MAX_NDIM] = {0};
    for (unsigned k = ndim; k-- > 0;) {
        idx[k] = shape[k] ? i % shape[k] : 0;
        i = shape[k] ? i / shape[k] : 0;
    }
    for (unsigned k = 0; k < ndim; k++) {
        off += idx[k] * stride;
        stride *= shape[k];
    }
    return off;
}

static void
array_numbers(nums *x, const char *dt, size_t dn, const unsigned char *d, uint64_t nbytes,
              const uint64_t *shape, unsigned ndim, int fortran)
{
    if (dn < 3 || (dt[0] != '<' && dt[0] != '|' && dt[0] != '='))
        return; /* big-endian or unusual: not compared */
    char kind = dt[1];
    long size = strtol(dt + 2, NULL, 10);
    if (size <= 0 || size > 16 || nbytes % (uint64_t)size)
        return;
    uint64_t count = nbytes / (uint64_t)size;
    uint64_t want = 1;
    for (unsigned k = 0; k < ndim; k++)
        want *= shape[k];
    if (fortran && ndim > 1 && want != count)
        return; /* the shape does not describe the data */
    for (uint64_t i = 0; i < count; i++) {
        /* numbers in C order, however the array was stored */
        uint64_t at = fortran && ndim > 1 ? fortran_index(i, shape, ndim) : i;
        const unsigned char *e = d + at * (uint64_t)size;
        if (kind == 'f' && size == 8) {
            double v;
            memcpy(&v, e, 8);
            put_num(x, CS_NUM_FLOAT, v, 0, 0, DIGITS_F64);
        } else if (kind == 'f' && size == 4) {
            float v;
            memcpy(&v, e, 4);
            put_num(x, CS_NUM_FLOAT, v, 0, 0, DIGITS_F32);
        } else if (kind == 'f' && size == 2) {
            /* IEEE half: widened by hand */
            uint16_t h;
            memcpy(&h, e, 2);
            int ex = (h >> 10) & 0x1f, m = h & 0x3ff;
            double v = ex == 0 ? ldexp(m, -24) : ex == 31 ? (m ? NAN : INFINITY)
                                                          : ldexp(m | 0x400, ex - 25);
            put_num(x, CS_NUM_FLOAT, (h & 0x8000) ? -v : v, 0, 0, DIGITS_F16);
        } else if (kind == 'c' && (size == 16 || size == 8)) {
            double re, im;
            if (size == 16) {
                memcpy(&re, e, 8);
                memcpy(&im, e + 8, 8);
            } else {
                float a, b;
                memcpy(&a, e, 4);
                memcpy(&b, e + 4, 4);
                re = a;
                im = b;
            }
            put_num(x, CS_NUM_COMPLEX, re, im, 0, size == 16 ? DIGITS_F64 : DIGITS_F32);
        } else if (kind == 'i' || kind == 'u' || kind == 'b') {
            int64_t v = 0;
            memcpy(&v, e, (size_t)size < 8 ? (size_t)size : 8);
            if (kind == 'i' && size < 8 && (e[size - 1] & 0x80))
                v |= (int64_t)(~0ull << (8 * size)); /* sign-extend */
            put_num(x, CS_NUM_EXACT, 0, 0, v, DIGITS_F64);
        } else {
            return; /* not numbers this compares */
        }
    }
}

static int num_value(nums *x, int depth);

/* The bytes of `data` at the reader: inline, or from the blob store. */
static const unsigned char *
num_data(nums *x, uint64_t *len)
{
    const char *s;
    int blob;
    uint64_t hash;
    *len = cs_vr_data(&x->r, &s, &blob, &hash);
    if (x->r.bad)
        return NULL;
    if (!blob)
        return (const unsigned char *)s;
    const unsigned char *b = x->blob ? x->blob(x->ctx, hash, *len) : NULL;
    if (b == NULL)
        x->r.bad = 1;
    return b;
}

static int
num_value(nums *x, int depth)
{
    if (depth > CS_VAL_MAX_DEPTH) {
        x->r.bad = 1;
        return 0;
    }
    const unsigned char *start = x->r.p;
    unsigned tag = cs_vr_u8(&x->r);
    switch (tag) {
    case CS_V_FALSE:
    case CS_V_TRUE:
        put_num(x, CS_NUM_EXACT, 0, 0, tag == CS_V_TRUE, DIGITS_F64);
        break;
    case CS_V_INT:
        put_num(x, CS_NUM_EXACT, 0, 0, (int64_t)cs_vr_u64(&x->r), DIGITS_F64);
        break;
    case CS_V_BIGINT: {
        uint32_t n = cs_vr_u32(&x->r);
        if (n == 0 || (size_t)(x->r.end - x->r.p) < n) {
            x->r.bad = 1;
            break;
        }
        put_num(x, CS_NUM_EXACT, 0, 0, (int64_t)cs_hash64(x->r.p, n), DIGITS_F64);
        x->r.p += n;
        break;
    }
    case CS_V_FLOAT: {
        double d;
        cs_vr_take(&x->r, &d, 8);
        put_num(x, CS_NUM_FLOAT, d, 0, 0, DIGITS_F64);
        break;
    }
    case CS_V_COMPLEX: {
        double re, im;
        cs_vr_take(&x->r, &re, 8);
        cs_vr_take(&x->r, &im, 8);
        put_num(x, CS_NUM_COMPLEX, re, im, 0, DIGITS_F64);
        break;
    }
    case CS_V_TUPLE:
    case CS_V_LIST:
    case CS_V_SET:
    case CS_V_FROZENSET:
    case CS_V_DICT: {
        uint64_t n = cs_vr_u32(&x->r);
        if (n > (uint64_t)(x->r.end - x->r.p)) {
            x->r.bad = 1;
            break;
        }
        for (uint64_t i = 0; i < n && !x->r.bad; i++) {
            if (tag == CS_V_DICT)
                skip_depth(&x->r, depth + 1); /* keys are structure, not results */
            num_value(x, depth + 1);
        }
        break;
    }
    case CS_V_ARRAY: {
        const char *dt;
        size_t dn = cs_vr_name(&x->r, &dt);
        unsigned ndim = cs_vr_u8(&x->r);
        if (ndim > CS_VAL_MAX_NDIM) {
            x->r.bad = 1;
            break;
        }
        uint64_t shape[CS_VAL_MAX_NDIM];
        for (unsigned i = 0; i < ndim; i++)
            shape[i] = cs_vr_u64(&x->r);
        unsigned order = cs_vr_u8(&x->r);
        char dtype[16];
        snprintf(dtype, sizeof dtype, "%.*s", (int)(dn < 15 ? dn : 15), dt);
        uint64_t len;
        const unsigned char *d = num_data(x, &len);
        if (d)
            array_numbers(x, dtype, strlen(dtype), d, len, shape, ndim, order == 'F');
        break;
    }
    case CS_V_REF: {
        uint64_t hash = cs_vr_u64(&x->r), size = cs_vr_u64(&x->r);
        const unsigned char *b = x->r.bad || !x->blob ? NULL : x->blob(x->ctx, hash, size);
        if (b == NULL) {
            x->r.bad = 1;
            break;
        }
        /* the blob is the whole value: read it with a reader of its own;
         * copy it first, as the next blob fetch may replace it */
        unsigned char *copy = cs__malloc(size ? size : 1);
        if (copy == NULL) {
            x->r.bad = 1;
            break;
        }
        memcpy(copy, b, size);
        nums inner = {.blob = x->blob, .ctx = x->ctx, .out = x->out};
        cs_vr_init(&inner.r, copy, size);
        num_value(&inner, depth + 1);
        if (inner.r.bad || inner.r.p != inner.r.end)
            x->r.bad = 1;
        cs__free(copy);
        break;
    }
    default:
        /* text, bytes, pickles, reprs, truncated parts: no numbers */
        x->r.p = start;
        skip_depth(&x->r, depth);
    }
    return !x->r.bad;
}

int
cs_value_numbers(const void *p, size_t n, cs_blob_fn blob, void *ctx, cs_buf *out)
{
    nums x = {.blob = blob, .ctx = ctx, .out = out};
    cs_vr_init(&x.r, p, n);
    num_value(&x, 0);
    if (x.r.bad || x.r.p != x.r.end || out->failed)
        return CS_EFORMAT;
    return CS_OK;
}
