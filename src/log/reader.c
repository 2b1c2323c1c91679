/* reader.c -- the validating log reader.
 *
 * A log may be torn (the writer was killed) or damaged. The reader trusts
 * nothing: it checks the file header, every chunk header and every record,
 * and keeps the valid prefix of each thread's stream. It reads with pread
 * into one chunk-sized buffer, so memory stays flat whatever the log size. */
#include "cs_log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct chunk_ref {
    uint32_t stream;
    uint32_t index;
    uint64_t off;
} chunk_ref;

static int
cmp_chunk(const void *a, const void *b)
{
    const chunk_ref *x = a, *y = b;
    if (x->stream != y->stream)
        return x->stream < y->stream ? -1 : 1;
    if (x->index != y->index)
        return x->index < y->index ? -1 : 1;
    return 0;
}

static int
check_header(const cs_log_header *h)
{
    if (memcmp(h->magic, CS_LOG_MAGIC, 8) != 0)
        return CS_EFORMAT;
    if (h->check != cs_log_hash64(h, offsetof(cs_log_header, check)))
        return CS_EFORMAT;
    if (h->version != CS_LOG_VERSION)
        return CS_EVERSION;
    if (h->header_size != CS_LOG_HEADER_SIZE || h->chunk_size < CS_LOG_MIN_CHUNK ||
        h->chunk_size > (1u << 30) || h->chunk_size % CS_LOG_MIN_CHUNK != 0)
        return CS_EFORMAT;
    return CS_OK;
}

int
cs_log_read_header(const char *path, cs_log_header *out)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cs_from_errno(errno);
    ssize_t n = pread(fd, out, sizeof *out, 0);
    close(fd);
    if (n != (ssize_t)sizeof *out) {
        memset(out, 0, sizeof *out);
        return CS_EFORMAT;
    }
    int rc = check_header(out);
    if (rc != CS_OK)
        memset(out, 0, sizeof *out);
    return rc;
}

/* State of one stream while it is decoded. */
typedef struct stream_dec {
    cs_event pending; /* event waiting for CPU/MEM records that follow it */
    int has_pending;
    uint64_t next_seq;
    uint64_t clock;   /* the stream's clock (see cs__log_delta) */
    uint64_t last_ts; /* time of the last event: time runs forward */
    int started;      /* the THREAD record has been seen */
    int only_var;
    cs_event_fn visit;
    void *ctx;
    cs_scan_info *info;
} stream_dec;

static int
flush(stream_dec *d)
{
    if (!d->has_pending)
        return CS_OK;
    d->has_pending = 0;
    if (d->only_var && d->pending.kind != CS_EV_VAR)
        return CS_OK;
    return d->visit(d->ctx, &d->pending);
}

/* A timed event at `delta` from the stream's clock. 0 if time would run
 * backwards, which no writer does. */
static int
timed(stream_dec *d, cs_event *e, uint64_t delta)
{
    uint64_t ts = d->clock + delta;
    if (ts < d->last_ts)
        return 0;
    d->clock = d->last_ts = e->ts = ts;
    if (ts > d->info->last_ts)
        d->info->last_ts = ts;
    return 1;
}

/* Decode the records of one chunk buffer. Returns 1 to go on to the next
 * chunk of the stream, 0 when the stream ended (bad record), or a negative
 * error from the visitor. */
static int
decode_chunk(stream_dec *d, const char *buf, uint32_t chunk_size, uint32_t stream)
{
    size_t pos = CS_LOG_CHUNK_HEADER;
    cs_chunk_header ch;
    memcpy(&ch, buf, sizeof ch);
    d->clock = ch.first_ts;
    while (pos + 8 <= chunk_size) {
        uint64_t w0, w1 = 0;
        memcpy(&w0, buf + pos, 8);
        unsigned kind = (unsigned)(w0 & 0xf);
        if (kind == CS_REC_NONE)
            return 1; /* rest of the chunk unwritten */
        if (kind >= CS_REC__MAX)
            goto bad;
        unsigned size = cs_rec_size(kind);
        if (pos + size > chunk_size)
            goto bad;
        if (size == 16)
            memcpy(&w1, buf + pos + 8, 8);
        if ((w0 & 0xff0) != cs_rec_check(w0 & ~(uint64_t)0xff0, w1))
            goto bad;
        uint64_t p = w0 >> 12;
        uint64_t delta = p >> CS_DELTA_SHIFT;
        pos += size;
        if (kind == CS_REC_CPU || kind == CS_REC_MEM) {
            if (!d->has_pending)
                goto bad;
            if (kind == CS_REC_CPU) {
                d->pending.has_cpu = 1;
                d->pending.cpu_ns = p;
            } else {
                d->pending.has_mem = 1;
                d->pending.rss = w1;
                d->pending.peak_rss = p * 1024u;
            }
            d->info->records++;
            continue;
        }
        int rc = flush(d);
        if (rc != CS_OK)
            return rc;
        d->info->records++;
        if (kind == CS_REC_TIME) {
            if (w1 < d->last_ts)
                goto bad;
            d->clock = w1;
            continue;
        }
        cs_event *e = &d->pending;
        memset(e, 0, sizeof *e);
        e->stream = e->target = stream;
        if (kind == CS_REC_VAR) {
            unsigned sub = (unsigned)(p & 0xff);
            size_t len = (size_t)((p >> 8) & 0xffffff);
            size_t padded = (len + 7) & ~(size_t)7;
            if (pos + padded > chunk_size)
                goto bad;
            if ((cs_hash64(buf + pos, len) & 0xfffff) != ((p >> 32) & 0xfffff))
                goto bad;
            e->kind = CS_EV_VAR;
            e->var_kind = sub;
            e->aux = w1;
            e->body = buf + pos;
            e->body_len = len;
            e->ts = d->last_ts;
            pos += padded;
            if (sub == CS_VAR_THREAD) {
                if (len < 24 || d->started)
                    goto bad;
                memcpy(&d->next_seq, e->body + 16, 8);
                d->started = 1;
            } else if (!d->started) {
                goto bad; /* a stream begins with its THREAD record */
            }
            if (sub == CS_VAR_ERROR || sub == CS_VAR_ARGS || sub == CS_VAR_RESULT) {
                e->seq = w1 & CS_SEQ_MASK;
                e->target = (uint32_t)(w1 >> CS_SEQ_BITS);
                if (e->target == 0)
                    e->target = stream;
            }
            /* The body points into this chunk's buffer: hand it over now,
             * before the next chunk is read into the same buffer. */
            d->has_pending = 1;
            if ((rc = flush(d)) != CS_OK)
                return rc;
            continue;
        }
        if (!d->started)
            goto bad;
        switch (kind) {
        case CS_REC_ENTER:
        case CS_REC_ENTERX:
            if (!timed(d, e, delta))
                goto bad;
            e->kind = CS_EV_ENTER;
            e->seq = d->next_seq++;
            e->func = kind == CS_REC_ENTER ? (uint32_t)(p & 0xfffff) : (uint32_t)w1;
            e->flags = kind == CS_REC_ENTER ? 0 : (uint32_t)(p & 0xfffff);
            break;
        case CS_REC_EXIT:
            if (!timed(d, e, delta))
                goto bad;
            e->kind = CS_EV_EXIT;
            e->status = (unsigned)(p & 1);
            e->seq = (p >> 1) & CS_SEQLO_MASK;
            e->implicit = 1;
            break;
        case CS_REC_MARK: {
            unsigned mark = (unsigned)(p & 3);
            if (mark == 0 || !timed(d, e, delta))
                goto bad;
            e->kind = mark == CS_MARK_EXIT      ? CS_EV_EXIT
                      : mark == CS_MARK_SUSPEND ? CS_EV_SUSPEND
                                                : CS_EV_RESUME;
            e->status = (unsigned)((p >> 2) & 1);
            e->seq = w1 & CS_SEQ_MASK;
            e->target = (uint32_t)(w1 >> CS_SEQ_BITS);
            if (e->target == 0)
                goto bad;
            break;
        }
        case CS_REC_END:
            e->kind = CS_EV_END;
            e->ts = d->last_ts;
            break;
        default:
            goto bad;
        }
        d->has_pending = 1;
    }
    return 1;
bad:
    d->info->bad_records++;
    return 0;
}

static int
scan_streams(int fd, const cs_log_header *h, chunk_ref *refs, size_t nrefs, int only_var,
             cs_event_fn visit, void *ctx, cs_scan_info *info)
{
    char *buf = cs__malloc(h->chunk_size);
    if (buf == NULL)
        return CS_ENOMEM;
    int rc = CS_OK;
    size_t i = 0;
    while (i < nrefs) {
        uint32_t stream = refs[i].stream;
        stream_dec d;
        memset(&d, 0, sizeof d);
        d.only_var = only_var;
        d.visit = visit;
        d.ctx = ctx;
        d.info = info;
        info->streams++;
        uint32_t expect = 0;
        int alive = 1;
        for (; i < nrefs && refs[i].stream == stream; i++) {
            if (!alive)
                continue;
            if (refs[i].index != expect++) {
                alive = 0; /* a missing chunk: keep the prefix before it */
                info->bad_chunks++;
                continue;
            }
            ssize_t n = pread(fd, buf, h->chunk_size, (off_t)refs[i].off);
            if (n < (ssize_t)CS_LOG_CHUNK_HEADER) {
                alive = 0;
                continue;
            }
            if (n < (ssize_t)h->chunk_size)
                memset(buf + n, 0, h->chunk_size - (size_t)n);
            int r = decode_chunk(&d, buf, h->chunk_size, stream);
            if (r < 0) {
                rc = r;
                goto out;
            }
            if (r == 0)
                alive = 0;
        }
        rc = flush(&d);
        if (rc != CS_OK)
            goto out;
    }
out:
    cs__free(buf);
    return rc;
}

/* A tree region at `off`: its length in chunks (0 if its header is not
 * valid), after handing its used slots to `visit` on the first pass. A
 * region cut short by a crash gives the nodes that made it to the file. */
static int
read_tree(int fd, uint64_t off, int only_var, cs_event_fn visit, void *ctx, cs_scan_info *info)
{
    cs_tree_header th;
    if (pread(fd, &th, sizeof th, (off_t)off) != (ssize_t)sizeof th)
        return 0;
    if (th.check != (uint32_t)cs_log_hash64(&th, 28) || th.chunks == 0 || th.slots < 2 ||
        th.stream == 0 || (th.slots & (th.slots - 1)) != 0 ||
        (uint64_t)th.slots * CS_TREE_NODE_SIZE > (uint64_t)th.chunks * info->header.chunk_size)
        return 0;
    if (!only_var)
        return (int)th.chunks;
    uint64_t used = th.used < th.slots ? th.used : th.slots;
    size_t bytes = (size_t)used * CS_TREE_NODE_SIZE;
    char *buf = cs__calloc(1, bytes ? bytes : 1);
    if (buf == NULL)
        return CS_ENOMEM;
    ssize_t n = pread(fd, buf, bytes, (off_t)off);
    if (n < (ssize_t)sizeof th) {
        cs__free(buf);
        return (int)th.chunks;
    }
    /* the header as it was read with the nodes: `used` may have grown */
    memcpy(buf, &th, sizeof th);
    size_t got = (size_t)n / CS_TREE_NODE_SIZE;
    ((cs_tree_header *)buf)->used = got < used ? got : used;
    cs_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = CS_EV_TREE;
    ev.stream = th.stream;
    ev.target = th.stream;
    ev.body = buf;
    ev.body_len = (size_t)(got < used ? got : used) * CS_TREE_NODE_SIZE;
    info->records++;
    int rc = visit(ctx, &ev);
    cs__free(buf);
    return rc != CS_OK ? rc : (int)th.chunks;
}

int
cs_log_scan(const char *path, int only_var, cs_event_fn visit, void *ctx, cs_scan_info *info)
{
    memset(info, 0, sizeof *info);
    chunk_ref *refs = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cs_from_errno(errno);
    int rc = CS_OK;
    ssize_t n = pread(fd, &info->header, sizeof info->header, 0);
    if (n != (ssize_t)sizeof info->header) {
        rc = CS_EFORMAT;
        goto out;
    }
    if ((rc = check_header(&info->header)) != CS_OK)
        goto out;
    if (info->header.end_mono_ns) {
        info->clean_end = 1;
        info->last_ts = info->header.end_mono_ns;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = cs_from_errno(errno);
        goto out;
    }
    const cs_log_header *h = &info->header;
    uint64_t size = (uint64_t)st.st_size;
    size_t nchunks = size > CS_LOG_HEADER_SIZE ? (size - CS_LOG_HEADER_SIZE) / h->chunk_size : 0;
    /* a last chunk cut short by a crash is still read */
    if (size > CS_LOG_HEADER_SIZE && (size - CS_LOG_HEADER_SIZE) % h->chunk_size)
        nchunks++;
    refs = cs__calloc(nchunks ? nchunks : 1, sizeof *refs);
    if (refs == NULL) {
        rc = CS_ENOMEM;
        goto out;
    }
    size_t nrefs = 0;
    for (size_t c = 0; c < nchunks; c++) {
        uint64_t off = CS_LOG_HEADER_SIZE + (uint64_t)c * h->chunk_size;
        cs_chunk_header ch;
        if (pread(fd, &ch, sizeof ch, (off_t)off) != (ssize_t)sizeof ch)
            break;
        if (ch.magic == 0 && ch.check == 0 && ch.stream == 0)
            continue; /* reserved, never used */
        if (ch.magic == CS_LOG_BLOB_MAGIC) {
            cs_blob_header bh;
            memcpy(&bh, &ch, sizeof bh);
            if (bh.check == (uint32_t)cs_log_hash64(&bh, 24) && bh.chunks > 0) {
                c += bh.chunks - 1; /* a blob region: its data is no chunk */
                continue;
            }
        }
        if (ch.magic == CS_LOG_TREE_MAGIC) {
            int r = read_tree(fd, off, only_var, visit, ctx, info);
            if (r < 0) {
                rc = r;
                goto out;
            }
            if (r > 0) {
                c += (size_t)r - 1; /* the region's chunks hold nodes */
                continue;
            }
        }
        if (ch.magic != CS_LOG_CHUNK_MAGIC || ch.check != (uint32_t)cs_log_hash64(&ch, 24) ||
            ch.stream == 0) {
            info->bad_chunks++;
            continue;
        }
        refs[nrefs].stream = ch.stream;
        refs[nrefs].index = ch.index;
        refs[nrefs].off = off;
        nrefs++;
    }
    qsort(refs, nrefs, sizeof *refs, cmp_chunk);
    rc = scan_streams(fd, h, refs, nrefs, only_var, visit, ctx, info);
out:
    cs__free(refs);
    close(fd);
    return rc;
}
