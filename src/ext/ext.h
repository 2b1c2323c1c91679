/* ext.h -- shared inside the CPython extension. The extension converts
 * Python objects into the engine's types and calls the C library; the
 * library never sees a PyObject. */
#ifndef CS_EXT_H
#define CS_EXT_H

#include "compat.h"
#include "cs_log.h"

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
    PyObject *monitored;        /* set: code objects of decorated functions */
} ext_state;

/* The state of the module that defined `tp` (borrowed). */
static inline ext_state *
ext_state_of(PyTypeObject *tp)
{
    return (ext_state *)PyType_GetModuleState(tp);
}

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
/* Set while this thread holds its last recorded exception (record.c). */
extern _Thread_local int rec_held_exc CS_TLS_MODEL;
/* Drop it: the thread returned normally, the propagation is over. */
void rec_forget_exc(void);
/* Record `exc` (borrowed) as call `seq`'s error. */
void rec_error_obj(ext_state *st, cs_tstate *t, uint64_t seq, uint32_t stream, PyObject *exc);

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
/* profile.c: _profile_start(), _profile_stop(), _profile_active(). Stop
 * writes the aggregates into the log (done before the log closes). */
PyObject *profile_start(PyObject *mod, PyObject *args);
PyObject *profile_stop(PyObject *mod, PyObject *unused);
PyObject *profile_active(PyObject *mod, PyObject *unused);

/* Free the tracer (module clear). */
void trace_free(ext_state *st);

/* ---- asyncwrap.c ---------------------------------------------------------- */
/* Wrap generator or coroutine `inner` (stolen) produced by monitor `m`. */
PyObject *gencall_new(MonitorObject *m, PyObject *inner);

/* Split a display name "a.b.c" into (module "a.b", qualname "c"). */
PyObject *ext_split_name(PyObject *name, PyObject *file, long line);

#endif
