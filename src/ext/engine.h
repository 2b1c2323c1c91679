/* engine.h -- the call engine inside the extension: event sources, one
 * policy, two sinks.
 *
 *   events_mon.c  (3.12+)  sys.monitoring: one tool id, one callback table
 *   events_eval.c (3.10/11) a PEP 523 evaluation hook for selected code and
 *                           one C profile hook in every thread
 *        |
 *   policy.c     which code is recorded: a selection by name, decided once
 *                per code object (and per C function) and kept
 *        |
 *   sink_log.c   a record per call of selected code (callscope.trace, -t)
 *   sink_tree.c  the calling-context tree of every call (--all)
 *
 * trace.c and profile.c only start and stop: they say which sinks are on
 * and the event sources follow. A code object no sink wants is disabled
 * once (DISABLE on 3.12+, a mark in co_extra before) and then runs at full
 * speed. The state lives in the module (ext_state.eng and .trace); the
 * hooks of 3.10 and 3.11 have no context argument and find it through
 * one pointer set while they are installed. */
#ifndef CS_ENGINE_H
#define CS_ENGINE_H

#include "ext.h"
#include "cs_select.h"

/* A selection by name and what its sink keeps (trace.c makes it). */
typedef struct trace_state {
    cs_select *sel;
    uint32_t opts;      /* MON_CPU | MON_MEM */
    PyObject *selected; /* dict: code -> (ident, packed func id | def epoch << 32) */
    PyObject *gens;     /* dict: frame address -> (seq | stream << 40, weakref) */
    PyObject *gen_refs; /* dict: weakref to a generator -> frame address */
    PyObject *on_gone;  /* the weakref callback */
    uint32_t gens_epoch;
    char *own_prefix;   /* callscope's package directory: never selected */
    cap_conf *cap;      /* argument and result capture, or NULL */
    ext_state *st;
    int cfuncs;         /* C functions (builtins, extension methods) too */
    PyObject *cdecided; /* dict: C function pointer -> (ident, packed id) or None */
} trace_state;

#define TRACE_SANITIZE(ts) ((ts)->cap ? (ts)->cap->sanitize : NULL)

static inline int
is_gen(PyObject *co)
{
    return (((PyCodeObject *)co)->co_flags &
            (CO_GENERATOR | CO_COROUTINE | CO_ITERABLE_COROUTINE | CO_ASYNC_GENERATOR)) != 0;
}

/* ---- policy.c ------------------------------------------------------------ */

/* The selection _trace_start's arguments describe, validated: NULL with an
 * error set when a pattern or option is bad. */
cs_select *policy_parse(PyObject *args, PyObject *kw, uint32_t *opts /* OUT */,
                        const char **own /* OUT */, cap_conf **cap /* OUT */,
                        int *cfuncs /* OUT */);
/* Decide about code `co` seen for the first time (its module's globals
 * `globals`): 1 if selected, and then kept in ts->selected and watched
 * for its returns. Never calls back into start or stop. */
int policy_decide(ext_state *st, PyObject *co, PyObject *globals);
/* The function id of selected code `co` (0 if not selected), its FUNC
 * record written into the current log if needed. `v` is its entry in
 * ts->selected when looked up already, else NULL. */
uint32_t policy_func_id(trace_state *ts, PyObject *co, cs_tstate *t, PyObject *v);
/* 1 if `code` is callscope's own: its calls are not the program's. */
int policy_own_code(trace_state *ts, PyCodeObject *code);
/* (module, qualname, "", 0) of C function `callable` (its PyMethodDef
 * `ml`): its module's name and its own for a module function, the type's
 * module and "Type.name" for a method. The one naming of C functions, for
 * a selection and for --all. New reference, or NULL. */
PyObject *policy_c_ident(PyObject *callable, PyMethodDef *ml);
/* The PyMethodDef behind `callable`, or NULL if it is no C function. */
PyMethodDef *policy_c_method(PyObject *callable);
/* The function id of C function `callable` if selected (0 if not), its
 * FUNC record written into `t`'s log if needed; *meth_out its entry point. */
uint32_t policy_c_selected(trace_state *ts, PyObject *callable, cs_tstate *t,
                           void **meth_out /* OUT */);

/* ---- sink_log.c ---------------------------------------------------------- */

/* A selected plain call of `co` begins (3.12+: in the current frame), or a
 * generator's resumption (`begin` 1 for its first). */
void log_call_begin(ext_state *st, PyObject *co, PyObject *entry);
/* A selected call ends: returned `result` or raised `exc`. */
void log_call_end(ext_state *st, PyObject *co, PyObject *exc, PyObject *result);
/* A selected generator suspends or resumes (CS_MARK_*). */
void log_gen_mark(ext_state *st, PyObject *co, unsigned mark);
/* A selected C function's call begins or ends. */
void log_c_begin(trace_state *ts, PyObject *callable);
void log_c_end(trace_state *ts, PyObject *callable, int raised);
/* 3.10/11: the evaluation of selected code's frame `f`, recorded around
 * `eval(tstate, f, throwflag)`. */
#if !CS_HAVE_MONITORING
PyObject *log_eval(ext_state *st, PyThreadState *tstate, cs_eframe *f, int throwflag,
                   PyObject *(*eval)(PyThreadState *, cs_eframe *, int));
#endif
#if CS_HAVE_MONITORING
/* The weakref callback that ends the call of a generator gone without an
 * event (3.12+). */
extern PyMethodDef log_gone_def;
#endif

/* ---- events: what trace.c and profile.c switch -------------------------- */

/* The sinks in force changed (st->eng): the event sources follow. -1 with
 * an error set when they cannot (no free tool id, another profiler holds
 * the profile hook). */
int events_update(PyObject *mod);
/* Selected code `co` also needs its returns, yields and resumptions
 * (3.12+: local events). -1 with an error set. */
int events_watch(ext_state *st, PyObject *co);
/* The selection stops: the code objects in dict `codes` (its keys) no
 * longer need their returns watched. */
void events_unwatch(ext_state *st, PyObject *codes);
/* The module goes away: so must any hook pointing into it. */
void events_free(ext_state *st);

#endif
