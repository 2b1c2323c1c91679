/*
 * cs_log.h -- the contract of the event log: run directories, the
 * crash-proof per-process log writer, and the validating log reader.
 *
 * Every process owns one log file in the run directory. Every thread
 * appends fixed-size 16-byte records to its own chunk of that file, which
 * is memory-mapped: the hot path takes no lock and makes no system call.
 * Mapped pages belong to the kernel's page cache, so records survive the
 * process dying by SIGKILL. The byte layout is documented in
 * docs/log-format.md and mirrored by the constants below.
 */
#ifndef CS_LOG_H
#define CS_LOG_H

#include "cs_core.h"

#include <stdatomic.h>
#include <stdint.h>

/* The hot path reads the thread's state through one TLS pointer. The
 * initial-exec model makes that a single fs-relative load, where the
 * default model for shared objects calls __tls_get_addr. */
#if defined(__GNUC__)
#define CS_TLS_MODEL __attribute__((tls_model("initial-exec")))
#else
#define CS_TLS_MODEL
#endif

/* ---- format constants -------------------------------------------------- */
#define CS_LOG_MAGIC "CSLOG\x00\x01\n"
#define CS_LOG_VERSION 2u
#define CS_LOG_HEADER_SIZE 4096u
#define CS_LOG_CHUNK_MAGIC 0x4b435343u /* "CSCK" little-endian */
#define CS_LOG_CHUNK_HEADER 32u
#define CS_LOG_BLOB_MAGIC 0x4c425343u /* "CSBL" little-endian */
#define CS_LOG_DEFAULT_CHUNK (1u << 20)
#define CS_LOG_MIN_CHUNK (1u << 12)
#define CS_LOG_SUFFIX ".cslog"

/* Records are 8 or 16 bytes, aligned to 8. The first word of every record
 * holds its kind (bits 0-3), a check byte (bits 4-11) and a 52-bit
 * payload (bits 12-63). A 16-byte record has a second word, written
 * before the first, so a record is valid only once its first word lands.
 * The two records of a plain call are 8 bytes each: 16 bytes per call.
 * Times are deltas from the stream's clock, which the chunk header sets
 * and TIME records reset. */
enum cs_rec_kind {
    CS_REC_NONE = 0,   /* unwritten space: end of the chunk's records */
    CS_REC_ENTER = 1,  /* 8: func (20) | delta (32) */
    CS_REC_EXIT = 2,   /* 8: status (1) | seq low bits (19) | delta (32) */
    CS_REC_TIME = 3,   /* 16: w1 = absolute timestamp, the stream's clock */
    CS_REC_ENTERX = 4, /* 16: flags (20) | delta (32); w1 = func */
    CS_REC_MARK = 5,   /* 16: mark (2) | status (1) | delta (32) at bit 20;
                          w1 = seq (40) | stream (24) */
    CS_REC_CPU = 6,    /* 8: thread CPU ns (52) at the preceding event */
    CS_REC_MEM = 7,    /* 16: peak RSS KiB (52); w1 = RSS bytes */
    CS_REC_VAR = 8,    /* 16 + body: sub (8) | len (24) | sum (20); w1 = aux */
    CS_REC_END = 9,    /* 8: the stream closed cleanly */
    CS_REC__MAX = 10
};

#define CS_PAYLOAD_BITS 52
#define CS_DELTA_SHIFT 20
#define CS_FUNC8_MAX ((1u << 20) - 1) /* larger ids use ENTERX */
#define CS_SEQLO_MASK ((1u << 19) - 1)

/* What a MARK record does to the call it names. */
enum cs_mark { CS_MARK_EXIT = 1, CS_MARK_SUSPEND = 2, CS_MARK_RESUME = 3 };

/* Kinds of decoded events (cs_event.kind). */
enum cs_ev_kind {
    CS_EV_ENTER = 1,
    CS_EV_EXIT = 2,
    CS_EV_SUSPEND = 3,
    CS_EV_RESUME = 4,
    CS_EV_VAR = 8,
    CS_EV_END = 9,
    CS_EV_TREE = 10 /* a tree region: body = its bytes, header first */
};

/* ENTER flags. */
#define CS_FLAG_SPAN 0x1u  /* paused time is not counted in wall time */
#define CS_FLAG_ASYNC 0x2u /* generator/coroutine: off the stack when suspended */

/* EXIT status values. */
enum cs_status { CS_STATUS_OK = 0, CS_STATUS_RAISED = 1, CS_STATUS_UNFINISHED = 2 };

/* Variable-length record subtypes. */
enum cs_var_kind {
    CS_VAR_PROC = 1,   /* process: see docs/log-format.md */
    CS_VAR_THREAD = 2, /* aux = stream; body = u64 tid, ident, first seq; name */
    CS_VAR_FUNC = 3,   /* aux = func id; body = u32 line, u32 kind, strings */
    CS_VAR_ERROR = 4,  /* aux = seq | stream << 40; body = type, message,
                          traceback[, "^" for "as the thread's previous error"] */
    CS_VAR_CHILD = 5,  /* aux = child pid; body = i64 exit code, or -signal */
    CS_VAR_PROFILE = 6, /* aux = func id; body = u64 calls, total, self, min,
                           max (ns), then u32 hist[256]: 4 buckets per power
                           of two of the duration in ns */
    CS_VAR_ARGS = 7,   /* aux = seq | stream << 40; body = one value (see
                          cs_value.h): (positional tuple, keyword dict) */
    CS_VAR_RESULT = 8, /* aux = seq | stream << 40; body = one value */
    CS_VAR_SIG = 9,    /* aux = func id; body = one value: a tuple of
                          (name, kind[, default]) per parameter */
    CS_VAR_BLOB = 10,  /* aux = blob hash; body = u64 size, u64 file offset of
                          the blob region holding its bytes */
};

/* The histogram of a PROFILE record: CS_HIST_BUCKETS counts of durations,
 * 4 buckets per power of two of nanoseconds. */
#define CS_HIST_BUCKETS 256

static inline unsigned
cs_hist_bucket(uint64_t ns)
{
    if (ns < 4)
        return (unsigned)ns;
    unsigned lg = 63u - (unsigned)__builtin_clzll(ns);
    unsigned b = (lg - 1) * 4 + (unsigned)((ns >> (lg - 2)) & 3u);
    return b < CS_HIST_BUCKETS ? b : CS_HIST_BUCKETS - 1;
}

/* The middle of histogram bucket `b`, in ns: what a duration in it is
 * reported as. */
static inline uint64_t
cs_hist_mid(unsigned b)
{
    if (b < 4)
        return b;
    unsigned lg = b / 4 + 1, sub = b % 4;
    uint64_t lo = (uint64_t)(4 + sub) << (lg - 2), width = 1ull << (lg - 2);
    return lo + width / 2;
}

/* Function kinds, in a FUNC record and in the functions table. */
enum cs_func_kind { CS_FUNC_FUNCTION = 0, CS_FUNC_SPAN = 1, CS_FUNC_BUILTIN = 2 };

#define CS_SEQ_BITS 40
#define CS_SEQ_MASK ((1ull << CS_SEQ_BITS) - 1)
#define CS_STREAM_MAX ((1u << 24) - 1)
#define CS_VAR_MAX_BODY ((1u << 24) - 1)

/* The file header, at offset 0, padded with zeros to CS_LOG_HEADER_SIZE. */
typedef struct cs_log_header {
    char magic[8];
    uint32_t version;
    uint32_t header_size;
    uint32_t chunk_size;
    uint32_t reserved;
    uint64_t pid;
    uint64_t ppid;
    uint64_t start_wall_ns;
    uint64_t start_mono_ns;
    uint64_t nonce;
    char host[64];
    uint64_t check; /* cs_log_hash64 of the bytes before this field */
    uint64_t end_mono_ns; /* set when the writer closes the log cleanly;
                             0 while it is open, or after a crash */
} cs_log_header;

/* A blob region: large captured data, written with pwrite in place of a
 * run of chunks (the size rounded up to whole chunks). Its header goes in
 * first, so a reader skips the region even when a crash cut its data. */
typedef struct cs_blob_header {
    uint32_t magic; /* CS_LOG_BLOB_MAGIC */
    uint32_t chunks; /* the region's length in chunks */
    uint64_t size;  /* bytes of data, after this header */
    uint64_t hash;  /* cs_hash64 of the data */
    uint32_t reserved;
    uint32_t check; /* low 32 bits of cs_log_hash64 of the first 24 bytes */
} cs_blob_header;

/* ---- tree regions: the calling-context tree of `--all` ------------------
 * A thread profiled in aggregate keeps its calling-context tree in tree
 * regions of the log: runs of whole chunks, mapped for the life of the log
 * and updated in place, so a process that dies (kill -9 included) leaves
 * the tree as it stood. A region holds CS_TREE_NODE_SIZE-byte slots; slot 0
 * is the region's header. A node is addressed by its index across the
 * thread's regions: index >> shift is the region, index & mask the slot.
 * Node 1 is the thread's root (function 0): the calls made at the top of
 * the thread's stack are its children. See docs/log-format.md. */
#define CS_LOG_TREE_MAGIC 0x52545343u /* "CSTR" little-endian */
#define CS_TREE_NODE_SIZE 72u
#define CS_TREE_ROOT 1u

/* Node flags, fixed when the node is made: its path is fixed. */
#define CS_TN_REC_FUNC 0x1u /* its function is already on the path above it */
#define CS_TN_REC_EDGE 0x2u /* the pair (parent's function, its function) is too */
#define CS_TN_CFUNC 0x4u    /* a C function (builtin, method of a C type) */
#define CS_TN_TRUNC 0x8u    /* past the node limit: kept by function, not path */

typedef struct cs_tree_header {
    uint32_t magic;    /* CS_LOG_TREE_MAGIC */
    uint32_t chunks;   /* the region's length in chunks */
    uint32_t stream;   /* the thread's stream */
    uint32_t index;    /* the region's position in the thread's tree, from 0 */
    uint32_t slots;    /* node slots in the region, a power of two (slot 0: this) */
    uint32_t flags;    /* CS_TREE_CPU: nodes hold CPU time */
    uint32_t reserved;
    uint32_t check;    /* low 32 bits of cs_log_hash64 of the first 28 bytes */
    uint64_t used;     /* slots in use, slot 0 included; a node is written
                          before this count covers it */
    uint64_t alive_ns; /* region 0: when the tree was last updated */
    uint64_t closed;   /* region 0: 1 once every open call was closed */
    uint64_t trunc_calls; /* region 0: calls counted in CS_TN_TRUNC nodes */
    uint64_t pad;
} cs_tree_header;

#define CS_TREE_CPU 0x1u

typedef struct cs_tree_node {
    uint32_t parent;   /* index of the parent node (the root's is 0) */
    uint32_t func;     /* function id (FUNC record); 0 for the root */
    uint32_t child;    /* first child, 0 for none */
    uint32_t sibling;  /* next child of the same parent, 0 for none */
    uint32_t flags;    /* CS_TN_* */
    uint32_t depth;    /* the root's is 0 */
    uint64_t calls;    /* finished calls on this path */
    uint64_t total_ns; /* their wall time, children included */
    uint64_t cpu_ns;   /* their thread CPU time, children included */
    uint64_t max_ns;   /* the longest of them */
    uint64_t open_ns;  /* start of the call open on this path, 0 for none */
    uint64_t self_ns;  /* their wall time less their callees', measured call
                          by call (past the node limit callees are not
                          children, so it cannot be had from the tree) */
} cs_tree_node;

_Static_assert(sizeof(cs_tree_node) == CS_TREE_NODE_SIZE, "a tree node fills its slot");
_Static_assert(sizeof(cs_tree_header) <= CS_TREE_NODE_SIZE, "a region's header fits slot 0");

/* The header of each chunk: its first CS_LOG_CHUNK_HEADER bytes. */
typedef struct cs_chunk_header {
    uint32_t magic;
    uint32_t stream;
    uint32_t index; /* position of the chunk within its stream, from 0 */
    uint32_t os_tid;
    uint64_t first_ts;
    uint32_t reserved;
    uint32_t check; /* low 32 bits of cs_log_hash64 of the first 24 bytes */
} cs_chunk_header;

/* FNV-1a over `n` bytes: the checksum of headers. Variable bodies use the
 * faster cs_hash64. */
CS_EXPORT uint64_t cs_log_hash64(const void *p, size_t n);

/* The check byte of a record, in place (bits 4-11), from its first word
 * with the check byte zero and its second word (0 for an 8-byte record).
 * A cheap mix: it tells written records from garbage. */
static inline uint64_t
cs_rec_check(uint64_t w0, uint64_t w1)
{
    uint64_t x = (w0 ^ (w1 * 0x9E3779B97F4A7C15ull)) * 0xBF58476D1CE4E5B9ull;
    return (x >> 56) << 4;
}

/* The size in bytes of a record of `kind` (VAR: without its body). */
static inline unsigned
cs_rec_size(unsigned kind)
{
    return (kind == CS_REC_TIME || kind == CS_REC_ENTERX || kind == CS_REC_MARK ||
            kind == CS_REC_MEM || kind == CS_REC_VAR)
               ? 16u
               : 8u;
}

/* ---- run directories --------------------------------------------------- */

/* The root that holds runs: $CALLSCOPE_DIR, else "callscope-runs". The
 * returned string is static or from the environment; do not free it. */
CS_EXPORT const char *cs_run_root_default(void);

/* Create a new run directory `<root>/<stamp>-<name>`, never reusing an
 * existing one, and point `<root>/latest` at it. `name` is sanitised.
 * *out receives the path; caller frees with cs__free(). */
CS_EXPORT int cs_run_create(const char *root, const char *name, char **out /* OUT */);

/* Like cs_run_create, without moving `latest`: for a run settled before
 * anything is recorded in it. */
CS_EXPORT int cs_run_reserve(const char *root, const char *name, char **out /* OUT */);

/* Point `latest` beside `rundir` at it. */
CS_EXPORT void cs_run_point_latest(const char *rundir);

/* The id of the parallel job this process belongs to, from the launcher's
 * environment (Slurm, PMIx, Open MPI, MPICH/Hydra), written into `buf`.
 * 0 if there is none. */
CS_EXPORT int cs_run_job_id(char *buf, size_t n);

/* The run of parallel job `job`: every process of the job calls this and
 * gets the same directory, created by whichever comes first, without any
 * communication. `<root>/.job-<job>` records the choice. */
CS_EXPORT int cs_run_create_job(const char *root, const char *name, const char *job,
                                char **out /* OUT */);

/* ---- writer ------------------------------------------------------------- */

/* Process facts written into the log. Strings are borrowed for the call. */
typedef struct cs_proc_info {
    const char *name;  /* process name, e.g. "python3" */
    const char *argv;  /* arguments joined by NUL bytes */
    size_t argv_len;   /* bytes in argv */
    const char *cwd;
    int64_t rank;      /* MPI rank, or -1 */
    int64_t size;      /* MPI world size, or 0 */
} cs_proc_info;

/* Per-thread writer state. Fields before `priv_` are read by the inline
 * hot path below; the rest belongs to writer.c. */
typedef struct cs_tstate {
    uint64_t *cur;     /* next free word */
    uint64_t *end;     /* end of the mapped chunk */
    uint64_t last_ts;  /* the stream's clock: time of its last timed record;
                          a new chunk's header starts from it */
    uint64_t next_seq; /* seq of the next ENTER in this stream */
    uint32_t epoch;    /* writer epoch this state belongs to */
    uint32_t stream;   /* stream id within the process, from 1 */
    uint64_t dropped;  /* records lost because no chunk could be mapped */
    void *priv_;
} cs_tstate;

/* The writer's one state struct. `epoch` changes when the log is opened,
 * closed, or the process forks; a thread whose state is from another epoch
 * must go through cs_log_tstate_slow(). */
typedef struct cs_writer_state {
    _Atomic uint32_t epoch;
    _Atomic int open;
} cs_writer_state;

extern CS_EXPORT cs_writer_state cs__writer;
extern _Thread_local cs_tstate *cs__tls CS_TLS_MODEL;

/* Open this process's log in `rundir`, creating `rundir` if needed. Called
 * once; a second call while open returns CS_EEXIST. Registers fork handlers
 * so a child never writes into its parent's mapping: after fork the child
 * is closed and must call cs_log_open again with its own directory. */
CS_EXPORT int cs_log_open(const char *rundir, const cs_proc_info *info);

/* 1 if a log is open in this process. */
static inline int
cs_log_is_open(void)
{
    return atomic_load_explicit(&cs__writer.open, memory_order_relaxed);
}

/* The run directory of the open log, or NULL. Borrowed. */
CS_EXPORT const char *cs_log_rundir(void);
/* The path of the open log file, or NULL. Borrowed. */
CS_EXPORT const char *cs_log_path(void);
/* 1 if the process forked since the log of its parent was open and has no
 * log of its own yet. The child then opens one in cs_log_inherited_rundir(). */
CS_EXPORT const char *cs_log_inherited_rundir(void);

/* Close the log: end every stream, unmap every chunk, release the lock.
 * Records written after this are dropped until the log is opened again.
 * *path_out (if not NULL) receives the log's path; caller frees. */
CS_EXPORT int cs_log_close(char **path_out /* OUT */);

/* With the log closed, free what the writer keeps between logs: the
 * calling thread's state and the remembered directories. A thread that
 * records again gets a new state. */
CS_EXPORT void cs_log_forget(void);

/* Records lost because chunks could not be mapped (disk full). */
CS_EXPORT uint64_t cs_log_dropped(void);

/* The calling thread's state, creating it (and writing its THREAD record)
 * when needed. Returns NULL when no log is open or on failure. `name` is
 * the thread's name, `ident` its language-level identifier. */
CS_EXPORT cs_tstate *cs_log_tstate_slow(const char *name, uint64_t ident);

/* Map the next chunk for `t`. Returns CS_OK or an error, in which case the
 * thread drops records until a later refill succeeds. */
CS_EXPORT int cs__log_refill(cs_tstate *t);

/* Fast path: the calling thread's state if it is current, else NULL. */
static inline cs_tstate *
cs_log_tstate(void)
{
    cs_tstate *t = cs__tls;
    if (CS_LIKELY(t != NULL &&
                  t->epoch == atomic_load_explicit(&cs__writer.epoch,
                                                   memory_order_relaxed)))
        return t;
    return NULL;
}

/* Make room for `words` more words in `t`'s chunk, mapping the next chunk
 * if needed. 0 (and the record is counted as dropped) when impossible. */
static inline int
cs__log_room(cs_tstate *t, size_t words)
{
    if (CS_LIKELY((size_t)(t->end - t->cur) >= words))
        return 1;
    if (cs__log_refill(t) == CS_OK && (size_t)(t->end - t->cur) >= words)
        return 1;
    t->dropped++;
    return 0;
}

/* Store an 8-byte record; room must have been made. */
static inline void
cs__log_put8(cs_tstate *t, uint64_t kind, uint64_t payload)
{
    uint64_t w = kind | (payload << 12);
    *t->cur++ = w | cs_rec_check(w, 0);
}

/* Store a 16-byte record; room must have been made. The second word
 * lands first: the record becomes valid with its first word. */
static inline void
cs__log_put16(cs_tstate *t, uint64_t kind, uint64_t payload, uint64_t w1)
{
    uint64_t w = kind | (payload << 12);
    t->cur[1] = w1;
    atomic_signal_fence(memory_order_release);
    t->cur[0] = w | cs_rec_check(w, w1);
    t->cur += 2;
}

/* The delta of `ts` from the stream's clock, advancing the clock. A gap
 * that does not fit in 32 bits is written as a TIME record first. A time
 * before the clock (an exit stamped before the records that recording its
 * error wrote) is moved up to the clock: times never run backwards within
 * a stream. Room for 2 words must have been made. */
static inline uint64_t
cs__log_delta(cs_tstate *t, uint64_t ts)
{
    if (CS_UNLIKELY(ts < t->last_ts))
        return 0;
    uint64_t d = ts - t->last_ts;
    if (CS_UNLIKELY(d > 0xffffffffu)) {
        cs__log_put16(t, CS_REC_TIME, 0, ts);
        d = 0;
    }
    t->last_ts = ts;
    return d;
}

/* Append the entry of a call of function `func` at `ts`; returns the
 * call's sequence number (implicit in the log: entries are counted). */
static inline uint64_t
cs_log_enter(cs_tstate *t, uint32_t func, uint32_t flags, uint64_t ts)
{
    if (!cs__log_room(t, 4))
        return t->next_seq; /* nothing more is written: the seq is moot */
    uint64_t seq = t->next_seq++;
    uint64_t d = cs__log_delta(t, ts);
    if (CS_LIKELY(func <= CS_FUNC8_MAX && flags == 0))
        cs__log_put8(t, CS_REC_ENTER, func | (d << CS_DELTA_SHIFT));
    else
        cs__log_put16(t, CS_REC_ENTERX, (flags & 0xfffffu) | (d << CS_DELTA_SHIFT), func);
    return seq;
}

/* Append the exit of call `seq`, the innermost open plain call of this
 * thread (the decorator's calls nest). The record keeps the low bits of
 * seq, so the reader can check the match. */
static inline void
cs_log_exit(cs_tstate *t, uint64_t seq, unsigned status, uint64_t ts)
{
    if (!cs__log_room(t, 3))
        return;
    uint64_t d = cs__log_delta(t, ts);
    cs__log_put8(t, CS_REC_EXIT,
                 (status & 1u) | ((seq & CS_SEQLO_MASK) << 1) | (d << CS_DELTA_SHIFT));
}

/* Append a MARK naming call `seq` of `stream` explicitly: its exit
 * (CS_MARK_EXIT), suspension or resumption. For calls that do not nest:
 * generators, coroutines, spans, calls of another thread. */
static inline void
cs_log_mark(cs_tstate *t, unsigned mark, uint64_t seq, uint32_t stream, unsigned status,
            uint64_t ts)
{
    if (!cs__log_room(t, 4))
        return;
    uint64_t d = cs__log_delta(t, ts);
    cs__log_put16(t, CS_REC_MARK, (mark & 3u) | ((status & 1u) << 2) | (d << CS_DELTA_SHIFT),
                  (seq & CS_SEQ_MASK) | ((uint64_t)(stream & CS_STREAM_MAX) << CS_SEQ_BITS));
}

/* Append the thread's CPU time, or the process's memory, measured at the
 * event just written. */
static inline void
cs_log_cpu(cs_tstate *t, uint64_t cpu_ns)
{
    if (cs__log_room(t, 1))
        cs__log_put8(t, CS_REC_CPU, cpu_ns & ((1ull << CS_PAYLOAD_BITS) - 1));
}

static inline void
cs_log_mem(cs_tstate *t, uint64_t rss, uint64_t peak)
{
    if (cs__log_room(t, 2))
        cs__log_put16(t, CS_REC_MEM, (peak / 1024u) & ((1ull << CS_PAYLOAD_BITS) - 1), rss);
}

/* Append a variable-length record: subtype `sub`, `aux` word, and the
 * bytes of `body` (truncated to what one chunk holds). */
CS_EXPORT void cs_log_put_var(cs_tstate *t, unsigned sub, uint64_t aux, const void *body,
                              size_t len);

/* The largest body one variable record can hold. */
CS_EXPORT size_t cs_log_var_room(void);

/* Write blob `hash` (the `n` bytes at `data`) into a blob region of the
 * log, with pwrite (large data written through the mapping would cost a
 * page fault and a zeroed page per 4 KiB), and a BLOB record naming it.
 * 0 if it could not be written. */
CS_EXPORT int cs_log_put_blob(cs_tstate *t, uint64_t hash, const void *data, size_t n);

/* Map a new tree region of at least `slots` node slots (rounded to a
 * power of two and whole chunks) for `t`'s stream, as region `index` of
 * its tree, zeroed but for its header. It stays mapped until the log is
 * closed or the process forks; after that the pointer must not be used
 * (the epoch tells). NULL when it cannot be made (disk full). */
CS_EXPORT cs_tree_header *cs_log_map_tree(cs_tstate *t, uint32_t index, uint32_t slots,
                                          uint32_t flags);

/* Write the PROC record (process facts) into `t`'s stream. The opener
 * calls this once, right after cs_log_open. */
CS_EXPORT void cs_log_put_proc(cs_tstate *t, const cs_proc_info *info);

/* Record that child process `pid` ended with `code` (an exit status, or
 * minus the signal that killed it), as its parent saw it. */
CS_EXPORT void cs_log_put_child_exit(cs_tstate *t, uint64_t pid, int64_t code);

/* Release the lock of a log closed by cs_log_close(), once the caller has
 * ingested it (or decided not to). */
CS_EXPORT void cs_log_release(void);

/* ---- reader ------------------------------------------------------------- */

/* One decoded event. CPU and MEM records are folded into the event they
 * follow. Pointers in `var` are borrowed until the next event. */
typedef struct cs_event {
    unsigned kind;   /* CS_EV_* */
    uint32_t stream; /* stream the event was written in */
    uint32_t target; /* stream of the call named by `seq` */
    uint64_t ts;
    uint64_t seq;    /* ENTER: its own seq; EXIT/SUSPEND/RESUME: the call */
    int implicit;    /* EXIT: `seq` holds only the low 19 bits; the call is
                        the innermost open plain call of the stream */
    uint32_t func;
    uint32_t flags;
    unsigned status;
    int has_cpu, has_mem;
    uint64_t cpu_ns, rss, peak_rss;
    unsigned var_kind;
    uint64_t aux;
    const char *body;
    size_t body_len;
} cs_event;

/* What a scan found. */
typedef struct cs_scan_info {
    cs_log_header header;
    uint64_t records;      /* valid records */
    uint64_t bad_records;  /* streams cut short at a rejected record (bad
                              check, kind or order); one per stream */
    uint64_t bad_chunks;   /* chunks with a bad header */
    uint32_t streams;      /* distinct streams seen */
    int clean_end;         /* the writer closed the log (header end_mono_ns) */
    uint64_t last_ts;      /* latest timestamp seen */
} cs_scan_info;

/* Visit every valid event of the log at `path`, stream by stream, each
 * stream in order. Each stream stops at its first invalid record: the
 * valid prefix is kept and the stream counted in bad_records. `only_var`
 * visits variable records only (a fast first pass). `visit` returns CS_OK
 * to continue or an error to stop the scan with that error. */
typedef int (*cs_event_fn)(void *ctx, const cs_event *ev);
CS_EXPORT int cs_log_scan(const char *path, int only_var, cs_event_fn visit, void *ctx,
                          cs_scan_info *info /* OUT */);

/* Read and validate only the file header of the log at `path`. */
CS_EXPORT int cs_log_read_header(const char *path, cs_log_header *out /* OUT */);

#endif /* CS_LOG_H */
