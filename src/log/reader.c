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
    uint64_t last_ts;
    uint32_t xstream; /* target stream for the next event, 0 if none */
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
    if (d->only_var && d->pending.kind != CS_REC_VAR)
        return CS_OK;
    return d->visit(d->ctx, &d->pending);
}

/* Decode the records of one chunk buffer. Returns 1 to go on to the next
 * chunk of the stream, 0 when the stream ended (bad record), or a negative
 * error from the visitor. */
static int
decode_chunk(stream_dec *d, const char *buf, uint32_t chunk_size, uint32_t stream)
{
    size_t pos = CS_LOG_CHUNK_HEADER;
    while (pos + 16 <= chunk_size) {
        uint64_t w0, w1;
        memcpy(&w0, buf + pos, 8);
        memcpy(&w1, buf + pos + 8, 8);
        unsigned kind = (unsigned)(w1 & 0xff);
        if (kind == CS_REC_NONE)
            return 1; /* rest of the chunk unwritten */
        uint64_t bare = w1 & ~(uint64_t)0xff00;
        if (kind >= CS_REC__MAX || (w1 & 0xff00) != cs_rec_check(w0, bare))
            goto bad;
        uint64_t payload = w1 >> 16;
        pos += 16;
        if (kind == CS_REC_CPU || kind == CS_REC_MEM) {
            if (!d->has_pending)
                goto bad;
            if (kind == CS_REC_CPU) {
                d->pending.has_cpu = 1;
                d->pending.cpu_ns = w0;
            } else {
                d->pending.has_mem = 1;
                d->pending.rss = w0;
                d->pending.peak_rss = payload * 1024u;
            }
            d->info->records++;
            continue;
        }
        int rc = flush(d);
        if (rc != CS_OK)
            return rc;
        if (kind == CS_REC_XSTREAM) {
            if (w0 == 0 || w0 > UINT32_MAX)
                goto bad;
            d->xstream = (uint32_t)w0;
            d->info->records++;
            continue;
        }
        cs_event *e = &d->pending;
        memset(e, 0, sizeof *e);
        e->kind = kind;
        e->stream = stream;
        e->target = d->xstream ? d->xstream : stream;
        d->xstream = 0;
        if (kind == CS_REC_VAR) {
            unsigned sub = (unsigned)(payload & 0xff);
            size_t len = (size_t)((payload >> 8) & 0xffffff);
            size_t padded = (len + 15) & ~(size_t)15;
            if (pos + padded > chunk_size)
                goto bad;
            if ((cs_log_hash64(buf + pos, len) & 0xffff) != ((payload >> 32) & 0xffff))
                goto bad;
            e->var_kind = sub;
            e->aux = w0;
            e->body = buf + pos;
            e->body_len = len;
            pos += padded;
            if (sub == CS_VAR_THREAD) {
                if (len < 24 || d->started)
                    goto bad;
                memcpy(&d->next_seq, e->body + 16, 8);
                d->started = 1;
            } else if (!d->started) {
                goto bad; /* a stream begins with its THREAD record */
            }
            /* The body points into this chunk's buffer: hand it over now,
             * before the next chunk is read into the same buffer. */
            d->has_pending = 1;
            d->info->records++;
            if ((rc = flush(d)) != CS_OK)
                return rc;
            continue;
        } else {
            if (!d->started)
                goto bad;
            if (w0 < d->last_ts)
                goto bad; /* time runs forward within a thread */
            d->last_ts = w0;
            if (w0 > d->info->last_ts)
                d->info->last_ts = w0;
            e->ts = w0;
            switch (kind) {
            case CS_REC_ENTER:
                e->seq = d->next_seq++;
                e->func = (uint32_t)(payload & 0xffffffffu);
                e->flags = (uint32_t)(payload >> 32);
                break;
            case CS_REC_EXIT:
                e->seq = payload & CS_SEQ_MASK;
                e->status = (unsigned)(payload >> CS_SEQ_BITS);
                if (e->status > CS_STATUS_RAISED)
                    goto bad;
                break;
            case CS_REC_SUSPEND:
            case CS_REC_RESUME:
                e->seq = payload & CS_SEQ_MASK;
                break;
            case CS_REC_END:
                break;
            default:
                goto bad;
            }
        }
        d->has_pending = 1;
        d->info->records++;
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
