/* writer.c -- the per-process log writer.
 *
 * The hot path (cs_log_enter/cs_log_exit in cs_log.h) only stores one word
 * into the calling thread's mapped chunk. This file does everything around it: the
 * file and its lock, handing out chunks, thread states, fork handling and
 * the clean close.
 *
 * Concurrency contract: records are written by threads that hold the
 * interpreter's lock, so the hot path never races with cs_log_close().
 * Chunk hand-out and the thread list are protected by `mu`, because thread
 * destructors run without the interpreter's lock. */
#include "cs_log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

cs_writer_state cs__writer;
_Thread_local cs_tstate *cs__tls CS_TLS_MODEL;

typedef struct tpriv {
    cs_tstate pub; /* first: a cs_tstate* is a tpriv* */
    uint64_t *map;
    uint32_t chunk_index;
    uint32_t os_tid;
    struct tpriv *next;
} tpriv;

/* The one state struct of the writer. */
static struct {
    pthread_mutex_t mu;
    int fd;
    char *rundir;
    char *path;
    char *inherited_rundir;
    uint32_t chunk_size;
    uint64_t next_off;
    uint64_t file_size;
    uint32_t next_stream;
    tpriv *threads;
    int broken;
    uint64_t dropped;
    int atfork_done;
    pthread_key_t key;
    int key_done;
    struct tree_map {
        void *addr;
        size_t len;
    } *trees; /* tree regions, mapped until close or fork */
    size_t ntrees, trees_cap;
} W = {.mu = PTHREAD_MUTEX_INITIALIZER, .fd = -1};

#define GROW_CHUNKS 16u

static uint32_t
current_epoch(void)
{
    return atomic_load_explicit(&cs__writer.epoch, memory_order_relaxed);
}

static uint32_t
gettid_u32(void)
{
    return (uint32_t)syscall(SYS_gettid);
}

uint64_t
cs_log_hash64(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint32_t
chunk_size_from_env(void)
{
    const char *s = getenv("CALLSCOPE_CHUNK_SIZE");
    if (s == NULL || *s == '\0')
        return CS_LOG_DEFAULT_CHUNK;
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*end != '\0' || v < CS_LOG_MIN_CHUNK || v > (1ul << 30))
        return CS_LOG_DEFAULT_CHUNK;
    /* a whole number of pages */
    v = (v + CS_LOG_MIN_CHUNK - 1) & ~(unsigned long)(CS_LOG_MIN_CHUNK - 1);
    return (uint32_t)v;
}

/* Reserve space for more chunks. fallocate first, so a full disk is an
 * error here instead of a SIGBUS on a mapped store later. Called with mu. */
static int
grow_file(uint64_t need)
{
    uint64_t size = W.file_size;
    while (size < need)
        size += (uint64_t)W.chunk_size * GROW_CHUNKS;
    if (fallocate(W.fd, 0, (off_t)W.file_size, (off_t)(size - W.file_size)) != 0) {
        if (errno != EOPNOTSUPP && errno != ENOSYS)
            return cs_from_errno(errno);
        if (ftruncate(W.fd, (off_t)size) != 0)
            return cs_from_errno(errno);
    }
    W.file_size = size;
    return CS_OK;
}

int
cs__log_refill(cs_tstate *t)
{
    tpriv *p = (tpriv *)t;
    int rc = CS_OK;
    pthread_mutex_lock(&W.mu);
    if (!cs_log_is_open() || W.broken || t->epoch != current_epoch()) {
        rc = CS_EINVAL;
        goto out;
    }
    uint64_t off = W.next_off;
    if (off + W.chunk_size > W.file_size && (rc = grow_file(off + W.chunk_size)) != CS_OK) {
        W.broken = 1;
        goto out;
    }
    /* No MAP_POPULATE: on ext4 pre-faulted pages still take a write fault
     * each, so it only added work (measured with bench/run.py). */
    void *m = mmap(NULL, W.chunk_size, PROT_READ | PROT_WRITE, MAP_SHARED, W.fd,
                   (off_t)off);
    if (m == MAP_FAILED) {
        rc = cs_from_errno(errno);
        W.broken = 1;
        goto out;
    }
    W.next_off = off + W.chunk_size;
    if (p->map)
        munmap(p->map, W.chunk_size);
    p->map = m;
    cs_chunk_header h = {.magic = CS_LOG_CHUNK_MAGIC,
                         .stream = t->stream,
                         .index = p->chunk_index++,
                         .os_tid = p->os_tid,
                         /* the stream's clock goes on from the last chunk,
                          * so no time taken before the switch is earlier */
                         .first_ts = t->last_ts};
    h.check = (uint32_t)cs_log_hash64(&h, 24);
    memcpy(m, &h, sizeof h);
    t->cur = (uint64_t *)((char *)m + CS_LOG_CHUNK_HEADER);
    t->end = (uint64_t *)((char *)m + W.chunk_size);
out:
    if (rc != CS_OK) {
        t->cur = t->end = NULL;
    }
    pthread_mutex_unlock(&W.mu);
    return rc;
}

/* A variable record whose body is `head` (hn bytes) then `body`. */
static void
put_var2(cs_tstate *t, unsigned sub, uint64_t aux, const void *head, size_t hn,
         const void *body, size_t len)
{
    size_t room = cs_log_var_room();
    if (hn + len > room)
        len = room > hn ? room - hn : 0;
    size_t total = hn + len;
    size_t padded = (total + 7) & ~(size_t)7;
    if (!cs__log_room(t, 2 + padded / 8))
        return;
    /* Body first, header last: a torn write leaves no valid header. */
    char *dst = (char *)(t->cur + 2);
    if (hn)
        memcpy(dst, head, hn);
    if (len)
        memcpy(dst + hn, body, len);
    memset(dst + total, 0, padded - total);
    uint64_t sum = cs_hash64(dst, total) & 0xfffffu;
    uint64_t payload = (uint64_t)(sub & 0xffu) | ((uint64_t)total << 8) | (sum << 32);
    uint64_t w = CS_REC_VAR | (payload << 12);
    t->cur[1] = aux;
    atomic_signal_fence(memory_order_release);
    t->cur[0] = w | cs_rec_check(w, aux);
    t->cur = (uint64_t *)(dst + padded);
}

void
cs_log_put_var(cs_tstate *t, unsigned sub, uint64_t aux, const void *body, size_t len)
{
    put_var2(t, sub, aux, NULL, 0, body, len);
}

size_t
cs_log_var_room(void)
{
    size_t room = W.chunk_size - CS_LOG_CHUNK_HEADER - 16;
    return room < CS_VAR_MAX_BODY ? room : CS_VAR_MAX_BODY;
}

int
cs_log_put_blob(cs_tstate *t, uint64_t hash, const void *data, size_t n)
{
    pthread_mutex_lock(&W.mu);
    if (!cs_log_is_open() || W.broken || t->epoch != current_epoch()) {
        pthread_mutex_unlock(&W.mu);
        t->dropped++;
        return 0;
    }
    uint64_t chunks = (sizeof(cs_blob_header) + n + W.chunk_size - 1) / W.chunk_size;
    uint64_t off = W.next_off, len = chunks * W.chunk_size;
    if (chunks > UINT32_MAX || (off + len > W.file_size && grow_file(off + len) != CS_OK)) {
        pthread_mutex_unlock(&W.mu);
        t->dropped++;
        return 0;
    }
    W.next_off = off + len;
    int fd = W.fd;
    pthread_mutex_unlock(&W.mu);
    cs_blob_header h = {.magic = CS_LOG_BLOB_MAGIC, .chunks = (uint32_t)chunks, .size = n,
                        .hash = hash};
    h.check = (uint32_t)cs_log_hash64(&h, 24);
    /* the header first: a reader skips the region however much of the
     * data made it; the data is checked against the hash when read */
    if (pwrite(fd, &h, sizeof h, (off_t)off) != (ssize_t)sizeof h) {
        t->dropped++;
        return 0;
    }
    const char *p = data;
    size_t done = 0;
    while (done < n) {
        ssize_t k = pwrite(fd, p + done, n - done, (off_t)(off + sizeof h + done));
        if (k <= 0) {
            if (k < 0 && errno == EINTR)
                continue;
            t->dropped++;
            return 0;
        }
        done += (size_t)k;
    }
    uint64_t body[2] = {n, off};
    uint64_t dropped = t->dropped;
    cs_log_put_var(t, CS_VAR_BLOB, hash, body, sizeof body);
    return t->dropped == dropped;
}

/* Unmap every tree region and forget them. Called with mu. */
static void
unmap_trees(void)
{
    for (size_t i = 0; i < W.ntrees; i++)
        munmap(W.trees[i].addr, W.trees[i].len);
    cs__free(W.trees);
    W.trees = NULL;
    W.ntrees = W.trees_cap = 0;
}

cs_tree_header *
cs_log_map_tree(cs_tstate *t, uint32_t index, uint32_t slots, uint32_t flags)
{
    uint32_t n = 64;
    while (n < slots && n < (1u << 30))
        n <<= 1;
    pthread_mutex_lock(&W.mu);
    cs_tree_header *h = NULL;
    if (!cs_log_is_open() || W.broken || t->epoch != current_epoch())
        goto out;
    uint64_t bytes = (uint64_t)n * CS_TREE_NODE_SIZE;
    uint64_t chunks = (bytes + W.chunk_size - 1) / W.chunk_size;
    uint64_t off = W.next_off, len = chunks * W.chunk_size;
    struct tree_map *v = cs__grow(W.trees, W.ntrees, &W.trees_cap, sizeof *v, 16);
    if (v == NULL)
        goto out;
    W.trees = v;
    if (off + len > W.file_size && grow_file(off + len) != CS_OK)
        goto out;
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, W.fd, (off_t)off);
    if (m == MAP_FAILED)
        goto out;
    W.next_off = off + len;
    W.trees[W.ntrees++] = (struct tree_map){m, len};
    h = m;
    /* the slots past `n` in the last chunk are left unused */
    cs_tree_header hd = {.magic = CS_LOG_TREE_MAGIC,
                         .chunks = (uint32_t)chunks,
                         .stream = t->stream,
                         .index = index,
                         .slots = n,
                         .flags = flags,
                         .used = 1};
    hd.check = (uint32_t)cs_log_hash64(&hd, 28);
    memcpy(h, &hd, sizeof hd);
out:
    if (h == NULL)
        t->dropped++;
    pthread_mutex_unlock(&W.mu);
    return h;
}

/* The END record of a stream, if its chunk has room. Called with mu. */
static void
put_end(tpriv *p)
{
    if (p->pub.cur && p->pub.cur < p->pub.end)
        cs__log_put8(&p->pub, CS_REC_END, 0);
}

/* Thread exit: end the stream and give the chunk back. Runs without the
 * interpreter's lock, so it only touches state under `mu`. */
static void
thread_destructor(void *arg)
{
    tpriv *p = arg;
    pthread_mutex_lock(&W.mu);
    int live = cs_log_is_open() && p->pub.epoch == current_epoch();
    if (live && p->map) {
        put_end(p);
        munmap(p->map, W.chunk_size);
    }
    p->map = NULL;
    p->pub.cur = p->pub.end = NULL;
    p->pub.epoch = 0;
    /* unlink and free */
    for (tpriv **pp = &W.threads; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    if (cs__tls == &p->pub)
        cs__tls = NULL;
    pthread_mutex_unlock(&W.mu);
    cs__free(p);
}

static void
atfork_prepare(void)
{
    pthread_mutex_lock(&W.mu);
}

static void
atfork_parent(void)
{
    pthread_mutex_unlock(&W.mu);
}

/* The child must never write into the parent's mapping. It drops every
 * inherited mapping and starts a new epoch; its own log is opened lazily.
 * Closing the inherited descriptor does not release the parent's lock,
 * which belongs to the open file description the parent still holds. */
static void
atfork_child(void)
{
    pthread_mutex_init(&W.mu, NULL);
    if (!cs_log_is_open())
        return;
    for (tpriv *p = W.threads; p; p = p->next) {
        if (p->map)
            munmap(p->map, W.chunk_size);
        p->map = NULL;
        p->pub.cur = p->pub.end = NULL;
    }
    unmap_trees();
    /* Only the forking thread exists now; keep just its state. */
    tpriv *self = (tpriv *)cs__tls;
    W.threads = NULL;
    if (self) {
        self->next = NULL;
        W.threads = self;
    }
    if (W.fd >= 0)
        close(W.fd);
    W.fd = -1;
    cs__free(W.inherited_rundir);
    W.inherited_rundir = W.rundir;
    W.rundir = NULL;
    cs__free(W.path);
    W.path = NULL;
    atomic_store(&cs__writer.open, 0);
    atomic_fetch_add(&cs__writer.epoch, 1);
}

static void
write_host(char *dst, size_t n)
{
    memset(dst, 0, n);
    cs_hostname(dst, n);
}

static void
put_proc_record(cs_tstate *t, const cs_proc_info *info)
{
    cs_buf b;
    cs_buf_init(&b);
    uint64_t pid = (uint64_t)getpid(), ppid = (uint64_t)getppid();
    int64_t rank = info ? info->rank : -1, size = info ? info->size : 0;
    cs_buf_append(&b, &pid, 8);
    cs_buf_append(&b, &ppid, 8);
    cs_buf_append(&b, &rank, 8);
    cs_buf_append(&b, &size, 8);
    char host[64];
    write_host(host, sizeof host);
    cs_buf_append(&b, host, strlen(host) + 1);
    const char *name = info && info->name ? info->name : "";
    const char *cwd = info && info->cwd ? info->cwd : "";
    cs_buf_append(&b, name, strlen(name) + 1);
    cs_buf_append(&b, cwd, strlen(cwd) + 1);
    if (info && info->argv)
        cs_buf_append(&b, info->argv, info->argv_len);
    if (!b.failed)
        cs_log_put_var(t, CS_VAR_PROC, 0, b.data, b.len);
    cs_buf_free(&b);
}

/* Create the calling thread's state, or revive a stale one. Called with
 * the log open. */
static cs_tstate *
attach_thread(const char *name, uint64_t ident)
{
    tpriv *p = (tpriv *)cs__tls;
    pthread_mutex_lock(&W.mu);
    if (p == NULL) {
        p = cs__calloc(1, sizeof *p);
        if (p == NULL) {
            pthread_mutex_unlock(&W.mu);
            return NULL;
        }
        p->next = W.threads;
        W.threads = p;
        if (W.key_done)
            pthread_setspecific(W.key, p);
    }
    /* seq keeps counting across epochs, so an exit of a call entered
     * before a fork can never match a call of the new stream. */
    p->pub.epoch = current_epoch();
    p->pub.stream = ++W.next_stream;
    p->pub.cur = p->pub.end = NULL;
    p->pub.last_ts = 0; /* the first timed record writes the absolute time */
    p->map = NULL;
    p->chunk_index = 0;
    p->os_tid = gettid_u32();
    pthread_mutex_unlock(&W.mu);
    cs__tls = &p->pub;

    cs_buf b;
    cs_buf_init(&b);
    uint64_t tid = p->os_tid;
    cs_buf_append(&b, &tid, 8);
    cs_buf_append(&b, &ident, 8);
    cs_buf_append(&b, &p->pub.next_seq, 8);
    cs_buf_puts(&b, name ? name : "");
    if (!b.failed)
        cs_log_put_var(&p->pub, CS_VAR_THREAD, p->pub.stream, b.data, b.len);
    cs_buf_free(&b);
    return &p->pub;
}

cs_tstate *
cs_log_tstate_slow(const char *name, uint64_t ident)
{
    cs_tstate *t = cs_log_tstate();
    if (t)
        return t;
    if (!cs_log_is_open())
        return NULL;
    return attach_thread(name, ident);
}

int
cs_log_open(const char *rundir, const cs_proc_info *info)
{
    if (cs_log_is_open())
        return CS_EEXIST;
    int rc = cs_mkdirs(rundir);
    if (rc != CS_OK)
        return rc;
    if (!W.atfork_done) {
        if (pthread_atfork(atfork_prepare, atfork_parent, atfork_child) != 0)
            return CS_ENOMEM;
        W.atfork_done = 1;
    }
    if (!W.key_done) {
        if (pthread_key_create(&W.key, thread_destructor) != 0)
            return CS_ENOMEM;
        W.key_done = 1;
    }
    cs_log_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, CS_LOG_MAGIC, 8);
    h.version = CS_LOG_VERSION;
    h.header_size = CS_LOG_HEADER_SIZE;
    h.chunk_size = chunk_size_from_env();
    h.pid = (uint64_t)getpid();
    h.ppid = (uint64_t)getppid();
    h.start_mono_ns = cs_clock_mono_ns();
    h.start_wall_ns = cs_clock_wall_ns();
    h.nonce = h.start_mono_ns ^ (h.pid << 32);
    write_host(h.host, sizeof h.host);
    h.check = cs_log_hash64(&h, offsetof(cs_log_header, check));

    char name[160];
    snprintf(name, sizeof name, "%s-%llu-%llx%s", h.host, (unsigned long long)h.pid,
             (unsigned long long)(h.start_mono_ns & 0xffffffffffull), CS_LOG_SUFFIX);
    for (char *c = name; *c; c++)
        if (*c == '/')
            *c = '_';
    /* The log is made under a hidden name, locked and given its header,
     * and only then linked under its own name: a merge, which takes the
     * lock of every log it finds free, never sees one that is not yet
     * locked by its writer. */
    char tmpname[176];
    snprintf(tmpname, sizeof tmpname, ".%s.new", name);
    char *path = cs__path_join(rundir, name);
    char *tmp = cs__path_join(rundir, tmpname);
    char *dir = cs__strdup(rundir);
    if (path == NULL || dir == NULL || tmp == NULL) {
        rc = CS_ENOMEM;
        goto fail;
    }
    int fd = cs_create_file(tmp, O_RDWR | O_EXCL | O_CLOEXEC);
    if (fd < 0) {
        rc = cs_from_errno(errno);
        goto fail;
    }
    /* The lock says "a live process owns this log"; the kernel drops it
     * when the process dies, however it dies. */
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        rc = cs_from_errno(errno);
        close(fd);
        unlink(tmp);
        goto fail;
    }
    char page[CS_LOG_HEADER_SIZE];
    memset(page, 0, sizeof page);
    memcpy(page, &h, sizeof h);
    if (pwrite(fd, page, sizeof page, 0) != (ssize_t)sizeof page) {
        rc = CS_EIO;
        close(fd);
        unlink(tmp);
        goto fail;
    }
    /* link, not rename: an existing log of that name is never replaced.
     * File systems without hard links get a rename. */
    int linked = link(tmp, path) == 0;
    if (!linked && (errno == EPERM || errno == EOPNOTSUPP || errno == ENOSYS) &&
        access(path, F_OK) != 0 && errno == ENOENT)
        linked = rename(tmp, path) == 0;
    if (!linked) {
        rc = cs_from_errno(errno);
        close(fd);
        unlink(tmp);
        goto fail;
    }
    unlink(tmp);
    cs__free(tmp);
    tmp = NULL;
    pthread_mutex_lock(&W.mu);
    W.fd = fd;
    W.chunk_size = h.chunk_size;
    W.next_off = CS_LOG_HEADER_SIZE;
    W.file_size = CS_LOG_HEADER_SIZE;
    W.broken = 0;
    cs__free(W.rundir);
    cs__free(W.path);
    W.rundir = dir;
    W.path = path;
    atomic_fetch_add(&cs__writer.epoch, 1);
    atomic_store(&cs__writer.open, 1);
    pthread_mutex_unlock(&W.mu);
    return CS_OK;
fail:
    cs__free(tmp);
    cs__free(path);
    cs__free(dir);
    return rc;
}

void
cs_log_put_proc(cs_tstate *t, const cs_proc_info *info)
{
    put_proc_record(t, info);
}

void
cs_log_put_child_exit(cs_tstate *t, uint64_t pid, int64_t code)
{
    cs_log_put_var(t, CS_VAR_CHILD, pid, &code, sizeof code);
}

const char *
cs_log_rundir(void)
{
    return cs_log_is_open() ? W.rundir : NULL;
}

const char *
cs_log_path(void)
{
    return cs_log_is_open() ? W.path : NULL;
}

const char *
cs_log_inherited_rundir(void)
{
    return W.inherited_rundir;
}

uint64_t
cs_log_dropped(void)
{
    uint64_t n = W.dropped;
    for (tpriv *p = W.threads; p; p = p->next)
        n += p->pub.dropped;
    return n;
}

int
cs_log_close(char **path_out)
{
    if (path_out)
        *path_out = NULL;
    if (!cs_log_is_open())
        return CS_EINVAL;
    pthread_mutex_lock(&W.mu);
    for (tpriv *p = W.threads; p; p = p->next) {
        if (p->map) {
            if (p->pub.epoch == current_epoch())
                put_end(p);
            munmap(p->map, W.chunk_size);
        }
        p->map = NULL;
        W.dropped += p->pub.dropped;
        p->pub.dropped = 0;
        p->pub.cur = p->pub.end = NULL;
    }
    unmap_trees();
    /* Trim the reserved tail so the file holds only written chunks. */
    if (ftruncate(W.fd, (off_t)W.next_off) != 0) {
        /* harmless: readers skip zeroed chunks */
    }
    /* Mark the clean close in the header, after every record is in. */
    uint64_t end = cs_clock_mono_ns();
    if (pwrite(W.fd, &end, sizeof end, offsetof(cs_log_header, end_mono_ns)) != sizeof end) {
        /* then the log reads as recovered: nothing is lost */
    }
    atomic_store(&cs__writer.open, 0);
    atomic_fetch_add(&cs__writer.epoch, 1);
    if (path_out) {
        *path_out = W.path;
        W.path = NULL;
    }
    /* Keep the descriptor (and its lock) until the caller has ingested:
     * cs_log_release() drops it. */
    pthread_mutex_unlock(&W.mu);
    return CS_OK;
}

void
cs_log_release(void)
{
    pthread_mutex_lock(&W.mu);
    if (W.fd >= 0)
        close(W.fd);
    W.fd = -1;
    pthread_mutex_unlock(&W.mu);
}

void
cs_log_forget(void)
{
    if (cs_log_is_open())
        return;
    pthread_mutex_lock(&W.mu);
    tpriv *self = (tpriv *)cs__tls;
    if (self) {
        for (tpriv **pp = &W.threads; *pp; pp = &(*pp)->next) {
            if (*pp == self) {
                *pp = self->next;
                break;
            }
        }
        if (W.key_done)
            pthread_setspecific(W.key, NULL);
        cs__tls = NULL;
        cs__free(self);
    }
    cs__free(W.rundir);
    W.rundir = NULL;
    cs__free(W.inherited_rundir);
    W.inherited_rundir = NULL;
    pthread_mutex_unlock(&W.mu);
}
