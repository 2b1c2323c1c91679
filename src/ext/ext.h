/* ext.h -- shared inside the CPython extension. The extension converts
 * Python objects into the engine's types and calls the C library; the
 * library never sees a PyObject. */
#ifndef CS_EXT_H
#define CS_EXT_H

#include "compat.h"
#include "cs_log.h"

/* The call engine's switches and its event source (engine.h). */
typedef struct engine_state {
    int log_on;  /* a selection is in force: sink_log.c records it */
    int log_c;   /* the selection takes C functions too */
    int tree_on; /* --all: sink_tree.c counts every call */
    int tree_c;  /* --all counts C functions */
    int tree_nomem_warned;
#if CS_HAVE_MONITORING
    int tool;           /* our sys.monitoring tool id, valid while mon is set */
    PyObject *mon;      /* sys.monitoring, while the tool is ours */
    PyObject *disable;  /* sys.monitoring.DISABLE */
    PyObject *missing;  /* sys.monitoring.MISSING */
    PyObject *callbacks; /* the registered callback objects */
    int bits[9];        /* the events of the callback table, by position */
#endif
} engine_state;

/* Module state: the heap types and the few Python helpers the slow paths
 * need. The hot path needs none of it. */
typedef struct ext_state {
    PyTypeObject *monitor_type;
    PyTypeObject *span_type;
    PyTypeObject *gencall_type;
    PyObject *format_exception; /* traceback.format_exception */
    PyObject *span_ids;         /* dict: (module, qualname, file, line) -> int */
    PyObject *error;            /* callscope.CallscopeError */
    struct trace_state *trace;  /* trace.c: selection without decorators */
    engine_state eng;           /* engine.h: which sinks are on, the event source */
    PyObject *monitored;        /* set: code objects of decorated functions */
    PyObject *handlers;         /* dict: type -> (name, save, load) */
    PyObject *handler_cache;    /* dict: type -> handler tuple or None */
    PyObject *pickle_dumps;     /* pickle.dumps, once needed */
} ext_state;

/* The state of the module that defined `tp` (borrowed). */
static inline ext_state *
ext_state_of(PyTypeObject *tp)
{
    return (ext_state *)PyType_GetModuleState(tp);
}

/* ---- capture.c: arguments and results ------------------------------------ */

/* What to capture, and the bounds. Owned by a monitor or by the tracer. */
typedef struct cap_conf {
    int args, result, capture_self;
    int print;                 /* stream finished calls to stderr: 1 text, 2 JSON */
    Py_ssize_t max_arg_length; /* 0: no limit */
    Py_ssize_t max_bytes;      /* per argument */
    PyObject *redact;          /* tuple of name patterns, or NULL */
    PyObject *sanitize;        /* callable str -> str, or NULL */
    int safe;                  /* capture="safe": never run the program's code
                                  (repr, pickling, handlers) to keep a value */
} cap_conf;

/* Options checked and kept; NULL with an exception set on bad input.
 * `print` is False, True ("text") or "json". */
cap_conf *cap_conf_new(int args, int result, PyObject *redact, PyObject *sanitize,
                       PyObject *max_arg_length, PyObject *max_bytes, int capture_self,
                       PyObject *print, PyObject *capture);
/* 1 if `c` asks for anything beyond timing. */
int cap_conf_needed(const cap_conf *c);

/* Print one finished call to sys.stderr, as `c->print` asks: `ident` =
 * (module, qualname, ...); `args` the preview of its arguments (or NULL),
 * `res` its result (or NULL), and the exception it raised (or NULL). */
void cap_print(ext_state *st, const cap_conf *c, PyObject *ident, uint64_t wall_ns,
               const char *args, PyObject *res, PyObject *exc);
/* The preview of encoded bytes (malloc'd with cs__malloc), or NULL; with
 * `call`, of an ARGS value as a call's arguments ("1, key=2"). */
char *cap_preview(const cs_buf *b, size_t max_chars, int call);
void cap_conf_free(cap_conf *c);
PyObject *cap_conf_dict(const cap_conf *c);
/* 1 if parameter `name` matches a redaction pattern. */
int cap_redacted(const cap_conf *c, PyObject *name);
/* "module.qualname" of a type. New reference. */
PyObject *cap_type_name(PyTypeObject *tp);

/* Set while this thread encodes a value: calls made by reprs, pickling
 * and handlers are recorded, but their own values are not captured. */
extern _Thread_local int cap_busy CS_TLS_MODEL;

/* Encode the arguments of a call as passed: positional values with their
 * parameter names (items may be NULL), and keyword values with names.
 * Large data goes to blobs in `t`'s log at once; the record itself is
 * written by cap_write once the call has its sequence number. */
void cap_encode_call(ext_state *st, const cap_conf *c, cs_tstate *t, PyObject *const *pos,
                     PyObject *const *posnames, Py_ssize_t npos, PyObject *const *kwv,
                     PyObject *const *kwn, Py_ssize_t nkw, cs_buf *b);
/* The same for vectorcall arguments; names come from `code` and its
 * co_varnames `varnames` (either may be NULL), skipping `shift` leading
 * parameters (a bound method's self). */
void cap_encode_args(ext_state *st, const cap_conf *c, cs_tstate *t, PyObject *code,
                     PyObject *varnames, int shift, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames, cs_buf *b);
/* The calling thread's encoding buffer, emptied. Valid until the thread
 * encodes again: write it out before running any Python code. */
cs_buf *cap_scratch(void);
/* Free the thread's encoding buffer if a large value made it large. */
void cap_scratch_trim(void);
/* Encode one value (a result). */
void cap_encode_value(ext_state *st, const cap_conf *c, cs_tstate *t, PyObject *v,
                      cs_buf *b);
/* Write an encoded value as record `sub` (CS_VAR_ARGS, CS_VAR_RESULT) of
 * call `seq` of `stream`. */
void cap_write(cs_tstate *t, unsigned sub, uint64_t seq, uint32_t stream, cs_buf *b);
/* Write the SIG record of function `func_id`: its parameters, kinds and
 * defaults, from `code` and `func` (may be NULL: no defaults), leaving
 * out `shift` leading parameters (a bound method's self). */
void cap_put_signature(ext_state *st, const cap_conf *c, cs_tstate *t, uint32_t func_id,
                       PyObject *func, PyObject *code, int shift);

/* ---- decode.c ----------------------------------------------------------- */
/* _callscope._decode(data, ctx): a value back as a Python object. */
PyObject *ext_decode(PyObject *mod, PyObject *args);

/* Monitor options (flag bits). */
#define MON_CPU 0x1u
#define MON_MEM 0x2u

typedef struct MonitorObject {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *func; /* the wrapped callable, called with the arguments */
    PyObject *dict;
    PyObject *weakrefs;
    uint32_t func_id;
    uint32_t def_epoch; /* writer epoch in which the FUNC record was written */
    uint32_t opts;      /* MON_* */
    int async_kind;     /* 0 plain, 1 generator function, 2 coroutine function */
    PyObject *ident;    /* (module, qualname, file, line) as written in FUNC */
    cap_conf *cap;      /* argument and result capture, or NULL */
    PyObject *code;     /* the wrapped function's code object, or NULL */
    PyObject *varnames; /* its co_varnames, or NULL */
    int shift;          /* 1 for a bound method: its self is not passed */
    uint32_t sig_epoch; /* writer epoch in which the SIG record was written */
} MonitorObject;

extern PyType_Spec monitor_spec;
extern PyType_Spec span_spec;
extern PyType_Spec gencall_spec;

/* ---- record.c: slow paths around the hot path --------------------------- */

/* The calling thread's writer state; opens the process's log and
 * attaches the thread when needed. NULL (no error set) when recording is
 * impossible; the reason was reported once. */
cs_tstate *rec_tstate(void);

/* A new process-wide function id. */
uint32_t rec_new_func_id(void);

/* Write the FUNC record for `ident` = (module, qualname, file, line),
 * with the argument and local variable names of `code` (borrowed; a code
 * object, or NULL). */
void rec_define(cs_tstate *t, uint32_t id, PyObject *ident, unsigned kind, PyObject *code);
/* The same, with `label` (may be NULL): the name cProfile gives the
 * function, for a C function ("<built-in method builtins.len>"). */
void rec_define_label(cs_tstate *t, uint32_t id, PyObject *ident, unsigned kind,
                      PyObject *code, const char *label);

/* The C stack. A monitored call adds C frames (a decorator's, and on
 * 3.10/3.11 the evaluation hook turns off the interpreter's inlined calls),
 * so a recursion Python allows could overflow it. Below the floor -- 256 KiB
 * above the thread's stack end -- a call raises RecursionError instead of
 * crashing (record.c). */
extern _Thread_local uintptr_t rec_stack_floor CS_TLS_MODEL;
uintptr_t rec_stack_floor_init(void);
/* Raise the RecursionError; returns NULL. */
PyObject *rec_stack_error(void);

static inline int
rec_stack_low(void)
{
    uintptr_t floor = rec_stack_floor;
    if (CS_UNLIKELY(floor == 0))
        floor = rec_stack_floor_init();
    return CS_UNLIKELY((uintptr_t)__builtin_frame_address(0) < floor);
}

/* Make sure monitor `m`'s FUNC record is in the current log. */
static inline void
rec_ensure_defined(cs_tstate *t, MonitorObject *m)
{
    if (CS_UNLIKELY(m->def_epoch != t->epoch)) {
        PyObject *code = PyObject_GetAttrString(m->func, "__code__");
        if (code == NULL)
            PyErr_Clear();
        rec_define(t, m->func_id, m->ident, CS_FUNC_FUNCTION, code);
        Py_XDECREF(code);
        m->def_epoch = t->epoch;
    }
}

/* Record the exception being raised as call `seq`'s error; the exception
 * stays raised, the same object. `stream` is the stream of the call. */
void rec_error(ext_state *st, cs_tstate *t, uint64_t seq, uint32_t stream);
/* The same, with the message and traceback through `sanitize` (a
 * callable str -> str, or NULL). */
void rec_error_sanitized(ext_state *st, cs_tstate *t, uint64_t seq, uint32_t stream,
                         PyObject *sanitize);
/* Set while this thread holds its last recorded exception (record.c). */
extern _Thread_local int rec_held_exc CS_TLS_MODEL;
/* Drop it: the thread returned normally, the propagation is over. */
void rec_forget_exc(void);
/* Record `exc` (borrowed) as call `seq`'s error. */
void rec_error_obj(ext_state *st, cs_tstate *t, uint64_t seq, uint32_t stream, PyObject *exc,
                   PyObject *sanitize);

/* CPU time and memory, read as `opts` asks. They are read before an
 * entry's timestamp and after an exit's, so their cost stays outside the
 * measured call, and written after the event they belong to. */
typedef struct rec_extra {
    uint64_t cpu, rss, peak; /* peak: 0 on entry */
} rec_extra;

static inline void
rec_read_extras(uint32_t opts, rec_extra *x, int entering)
{
    /* The CPU clock is read closest to the call, so it never counts the
     * memory reading: last on the way in, first on the way out. */
    if ((opts & MON_CPU) && !entering)
        x->cpu = cs_clock_thread_cpu_ns();
    /* the peak is only reported at the exit: one system call less */
    x->peak = 0;
    if (opts & MON_MEM)
        cs_mem_rss(&x->rss, entering ? NULL : &x->peak);
    if ((opts & MON_CPU) && entering)
        x->cpu = cs_clock_thread_cpu_ns();
}

static inline void
rec_put_extras(cs_tstate *t, uint32_t opts, const rec_extra *x)
{
    if (opts & MON_CPU)
        cs_log_cpu(t, x->cpu);
    if (opts & MON_MEM)
        cs_log_mem(t, x->rss, x->peak);
}

/* Close this process's log and ingest it into run.db; then ingest logs
 * of other processes of the run that ended. Reports problems on stderr. */
int rec_finish(int quiet);
/* Record how child `pid` ended (exit code, or -signal). Written to the log
 * if this process records; else kept, and stored at exit only if the run
 * has anything in it (a child that never joined leaves no trace). */
void rec_child_exit(uint64_t pid, int64_t code);

/* The rank set with callscope.set_rank(), or -1. */
extern int64_t rec_manual_rank;

/* Before os.fork(): settle the run directory so the child joins it. */
void rec_prepare_fork(void);
/* Set once a monitor or span is created. */
extern int rec_in_use;
/* Register fork handlers; called at module init. */
void rec_init(void);
/* Finish, then forget everything so recording can start afresh (tests). */
void rec_reset(void);

/* ---- trace.c -------------------------------------------------------------- */
/* Module functions: _trace_start(patterns, modules, excludes, cpu, memory),
 * _trace_stop(), _trace_active(). */
PyObject *trace_start(PyObject *mod, PyObject *args, PyObject *kw);
PyObject *trace_stop(PyObject *mod, PyObject *unused);
PyObject *trace_active(PyObject *mod, PyObject *unused);
/* ---- sink_tree.c: the calling-context tree of --all ---------------------- */
typedef struct fn_info fn_info;
/* What is known of code object `co` (kept on it), or of C function `fn`
 * (a PyCFunction); made at the first call. NULL on failure. Borrowed. */
fn_info *tree_code_info(PyObject *co, PyObject *globals);
/* The info of `co` if it was made, else NULL: the fast path. */
fn_info *tree_code_known(PyObject *co);
fn_info *tree_cfunc_info(PyObject *fn);
/* The info of the C function whose PyMethodDef is `ml`, if it was seen. */
fn_info *tree_cfunc_lookup(const void *ml);
/* 1 if `fi` is never in the tree (callscope's own code, decorated code). */
int tree_skipped(const fn_info *fi);
/* The info of the C function a CALL event calls: `callable` with its
 * first argument `self` (NULL when none), as cProfile names it: a builtin
 * function or method, or a method descriptor bound to `self`. Made at the
 * first call when `make`, else only looked up. NULL for anything else. */
fn_info *tree_cfunc_of_call(PyObject *callable, PyObject *self, int make);
/* A call (or resumption) of `fi` begins on this thread; one ends. */
void tree_push(fn_info *fi);
void tree_pop(fn_info *fi);
/* Profiling starts: `monitored` (borrowed) is the set of decorated code,
 * `own` the package directory, `cpu` asks for CPU time, `max_nodes` bounds
 * each thread's tree (0: the default). -1 with an error set on failure. */
int tree_begin(PyObject *monitored, const char *own, int cpu, uint64_t max_nodes);
/* Profiling stops: every open call is closed into the tree. */
void tree_end(void);

/* profile.c: _profile_start(), _profile_stop(), _profile_active(). Stop
 * writes the aggregates into the log (done before the log closes). */
PyObject *profile_start(PyObject *mod, PyObject *args, PyObject *kw);
PyObject *profile_stop(PyObject *mod, PyObject *unused);
PyObject *profile_active(PyObject *mod, PyObject *unused);

/* Free the tracer (module clear). */
void trace_free(ext_state *st);

/* ---- module.c and api.c --------------------------------------------------- */
/* Raise the error of library code `rc` about `what` (returns NULL). */
PyObject *ext_raise_cs(ext_state *st, int rc, const char *what);
/* The read-side module functions (api.c). */
PyObject *py_resolve(PyObject *mod, PyObject *args);
PyObject *py_sync(PyObject *mod, PyObject *args);
PyObject *py_stats(PyObject *mod, PyObject *args, PyObject *kw);
PyObject *py_stats_by(PyObject *mod, PyObject *args, PyObject *kw);
PyObject *py_index(PyObject *mod, PyObject *args);
PyObject *py_summary(PyObject *mod, PyObject *args);
PyObject *py_list_runs(PyObject *mod, PyObject *args);
PyObject *py_compare(PyObject *mod, PyObject *args, PyObject *kw);
PyObject *py_diff(PyObject *mod, PyObject *args);
PyObject *py_export(PyObject *mod, PyObject *args);

/* ---- asyncwrap.c ---------------------------------------------------------- */
/* Wrap generator or coroutine `inner` (stolen) produced by monitor `m`,
 * taking over the captured arguments in `args` (left empty). */
PyObject *gencall_new(MonitorObject *m, PyObject *inner, cs_buf *args);

/* Split a display name "a.b.c" into (module "a.b", qualname "c"). */
PyObject *ext_split_name(PyObject *name, PyObject *file, long line);

#endif
