/* record.c -- the slow paths around the hot path: opening the process's
 * log on first use (and again in a forked child), attaching threads,
 * writing function definitions and errors, and finishing at exit.
 *
 * Nothing here raises into user code: failures are reported once on
 * stderr (through PyErr_WriteUnraisable) and recording stops, while the
 * program runs on. */
#include "ext.h"
#include "cs_store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static _Atomic uint32_t next_func_id;
static int open_failed; /* report once, then stay quiet */
static int finished;    /* the log was closed at exit: never reopen it */
static char *settled_dir; /* a run this process created (see choose_run_dir) */
static struct child_exit {
    uint64_t pid;
    int64_t code;
} *pending_exits; /* seen while this process had no log */
static size_t n_pending, cap_pending;

void
rec_child_exit(uint64_t pid, int64_t code)
{
    cs_tstate *t = cs_log_tstate();
    if (t == NULL && cs_log_is_open())
        t = rec_tstate();
    if (t != NULL) {
        cs_log_put_child_exit(t, pid, code);
        return;
    }
    {
        struct child_exit *v = cs__grow(pending_exits, n_pending, &cap_pending, sizeof *v, 8);
        if (v == NULL)
            return;
        pending_exits = v;
    }
    pending_exits[n_pending].pid = pid;
    pending_exits[n_pending].code = code;
    n_pending++;
}

/* At exit: the children's ends seen before any log was open. */
static void
flush_child_exits(void)
{
    if (n_pending == 0)
        return;
    cs_tstate *t = cs_log_tstate();
    const char *dir = getenv("CALLSCOPE_RUN_DIR");
    for (size_t i = 0; i < n_pending; i++) {
        if (t != NULL)
            cs_log_put_child_exit(t, pending_exits[i].pid, pending_exits[i].code);
        else if (dir && *dir && cs__is_dir(dir))
            cs_run_record_exit(dir, (int64_t)pending_exits[i].pid, pending_exits[i].code);
    }
    cs__free(pending_exits);
    pending_exits = NULL;
    n_pending = cap_pending = 0;
}
int rec_in_use;         /* a monitor or span exists in this process */

static void
after_fork_child(void)
{
    finished = 0; /* a child forked at exit still records its own calls */
}

/* The thread that imported callscope: the main thread, as a rule. */
static unsigned long main_ident;

void
rec_init(void)
{
    static int done;
    if (main_ident == 0)
        main_ident = PyThread_get_thread_ident();
    if (!done && pthread_atfork(NULL, NULL, after_fork_child) == 0)
        done = 1;
}

void
rec_reset(void)
{
    if (rec_held_exc)
        rec_forget_exc();
    rec_finish(1);
    cs_log_forget();
    finished = 0;
    open_failed = 0;
}

uint32_t
rec_new_func_id(void)
{
    return atomic_fetch_add(&next_func_id, 1) + 1;
}

/* The first of `vars` set to a non-negative integer, or -1. */
static int64_t
int_from_env(const char *const *vars, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *s = getenv(vars[i]);
        if (s && *s) {
            char *end;
            long v = strtol(s, &end, 10);
            if (*end == '\0' && v >= 0)
                return v;
        }
    }
    return -1;
}

/* The rank set by hand (callscope.set_rank), or -1. */
int64_t rec_manual_rank = -1;

/* MPI rank and size from the launcher's environment: no MPI import. A
 * rank set by hand, or $CALLSCOPE_RANK, wins. */
static void
rank_from_env(int64_t *rank, int64_t *size)
{
    static const char *const manual[] = {"CALLSCOPE_RANK"};
    static const char *const ranks[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK",
                                        "SLURM_PROCID"};
    static const char *const sizes[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"};
    *rank = rec_manual_rank >= 0 ? rec_manual_rank : int_from_env(manual, 1);
    if (*rank < 0)
        *rank = int_from_env(ranks, sizeof ranks / sizeof *ranks);
    int64_t s = int_from_env(sizes, sizeof sizes / sizeof *sizes);
    *size = s > 0 ? s : 0;
}

/* sys.argv joined with NUL bytes, into `b`. */
static void
argv_bytes(cs_buf *b)
{
    PyObject *argv = PySys_GetObject("argv"); /* borrowed */
    if (argv == NULL || !PyList_Check(argv))
        return;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(argv); i++) {
        PyObject *a = PyList_GET_ITEM(argv, i);
        const char *s = PyUnicode_Check(a) ? PyUnicode_AsUTF8(a) : NULL;
        if (s == NULL) {
            PyErr_Clear();
            s = "?";
        }
        cs_buf_append(b, s, strlen(s) + 1);
    }
}

static void
run_name(char *out, size_t n)
{
    snprintf(out, n, "python");
    PyObject *argv = PySys_GetObject("argv");
    if (argv && PyList_Check(argv) && PyList_GET_SIZE(argv) > 0) {
        const char *s = PyUnicode_Check(PyList_GET_ITEM(argv, 0))
                            ? PyUnicode_AsUTF8(PyList_GET_ITEM(argv, 0))
                            : NULL;
        if (s == NULL)
            PyErr_Clear();
        else if (*s && strcmp(s, "-c") != 0) {
            const char *slash = strrchr(s, '/');
            snprintf(out, n, "%s", slash ? slash + 1 : s);
            char *dot = strrchr(out, '.');
            if (dot && strcmp(dot, ".py") == 0)
                *dot = '\0';
        }
    }
}

/* `module.<fn>().name` when `module` is loaded, into `out`. 1 if
 * found. Never imports anything, never leaves an error set. */
static int
current_name(const char *module, const char *fn, char *out, size_t n)
{
    PyObject *modules = PySys_GetObject("modules"); /* borrowed */
    PyObject *mod = modules ? PyDict_GetItemString(modules, module) : NULL;
    if (mod == NULL)
        return 0;
    PyObject *exc = cs_exc_fetch();
    PyObject *cur = PyObject_CallMethod(mod, fn, NULL);
    PyObject *name = cur ? PyObject_GetAttrString(cur, "name") : NULL;
    const char *s = name && PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    if (s)
        snprintf(out, n, "%s", s);
    Py_XDECREF(name);
    Py_XDECREF(cur);
    PyErr_Clear();
    cs_exc_restore(exc);
    return s != NULL;
}

/* The name of the current thread, without importing threading: Python's
 * (MainThread, ThreadPoolExecutor-0_1) when threading is loaded; before
 * that only the main thread runs Python code, as a rule. */
static void
thread_name(char *out, size_t n)
{
    if (current_name("threading", "current_thread", out, n))
        return;
    unsigned long id = PyThread_get_thread_ident();
    if (id == main_ident)
        snprintf(out, n, "MainThread");
    else
        snprintf(out, n, "Thread-%lu", id);
}

/* The process's name: multiprocessing's (MainProcess, ForkPoolWorker-3,
 * ...) when multiprocessing is loaded, else "python". */
static void
proc_comm(char *out, size_t n)
{
    if (!current_name("multiprocessing.process", "current_process", out, n))
        snprintf(out, n, "python");
}

static void
report(const char *what, int rc)
{
    if (open_failed)
        return;
    open_failed = 1;
    PyObject *exc = cs_exc_fetch();
    PyErr_Format(PyExc_RuntimeWarning, "callscope: %s: %s; calls are not recorded", what,
                 cs_strerror(rc));
    PyErr_WriteUnraisable(NULL);
    cs_exc_restore(exc);
}


/* Make `dir` the run of this process tree: children, forked or started
 * later, find it in $CALLSCOPE_RUN_DIR and record into the same run. */
static void
export_run_dir(const char *dir)
{
    PyObject *exc = cs_exc_fetch();
    PyObject *os = PyImport_ImportModule("os");
    PyObject *environ = os ? PyObject_GetAttrString(os, "environ") : NULL;
    PyObject *v = PyUnicode_DecodeFSDefault(dir);
    PyObject *key = PyUnicode_FromString("CALLSCOPE_RUN_DIR");
    if (environ == NULL || v == NULL || key == NULL || PyObject_SetItem(environ, key, v) < 0) {
        PyErr_Clear();
        setenv("CALLSCOPE_RUN_DIR", dir, 1);
    }
    Py_XDECREF(key);
    Py_XDECREF(v);
    Py_XDECREF(environ);
    Py_XDECREF(os);
    cs_exc_restore(exc);
}

/* The run directory of this process: inherited from the parent (fork),
 * named by $CALLSCOPE_RUN_DIR, or a new run. Caller frees. */
static char *
choose_run_dir(void)
{
    const char *dir = cs_log_inherited_rundir();
    const char *env = getenv("CALLSCOPE_RUN_DIR");
    if (dir == NULL && env && *env)
        dir = env;
    if (dir)
        return cs__strdup(dir);
    char name[96], job[128], *made = NULL;
    run_name(name, sizeof name);
    /* the processes of a parallel job share one run */
    int in_job = cs_run_job_id(job, sizeof job);
    int rc = in_job ? cs_run_create_job(cs_run_root_default(), name, job, &made)
                    : cs_run_reserve(cs_run_root_default(), name, &made);
    if (rc != CS_OK) {
        report("cannot create a run directory", rc);
        return NULL;
    }
    export_run_dir(made);
    /* remembered so that, if nothing is ever recorded in it, the empty
     * directory goes away at exit (a job's run is shared: it stays) */
    if (!in_job) {
        cs__free(settled_dir);
        settled_dir = cs__strdup(made);
    }
    return made;
}

void
rec_prepare_fork(void)
{
    /* A child forked before this process recorded anything must still
     * join its run: decide the run now, if callscope is in use. */
    if (cs_log_is_open() || finished || open_failed || !rec_in_use)
        return;
    const char *env = getenv("CALLSCOPE_RUN_DIR");
    if (env && *env)
        return;
    cs__free(choose_run_dir());
}

/* Open this process's log in its run directory. */
static int
open_log(void)
{
    char *dir = choose_run_dir();
    if (dir == NULL)
        return CS_EIO;
    char comm[64], cwd[4096];
    proc_comm(comm, sizeof comm);
    if (getcwd(cwd, sizeof cwd) == NULL)
        cwd[0] = '\0';
    cs_buf argv;
    cs_buf_init(&argv);
    argv_bytes(&argv);
    cs_proc_info info = {.name = comm, .argv = argv.data, .argv_len = argv.len, .cwd = cwd};
    rank_from_env(&info.rank, &info.size);
    int rc = cs_log_open(dir, &info);
    if (rc != CS_OK) {
        report("cannot open the event log", rc);
    } else {
        /* the run has records now: it is the latest */
        cs_run_point_latest(dir);
        char tname[128];
        thread_name(tname, sizeof tname);
        cs_tstate *t = cs_log_tstate_slow(tname, PyThread_get_thread_ident());
        if (t)
            cs_log_put_proc(t, &info);
    }
    cs_buf_free(&argv);
    cs__free(dir);
    return rc;
}

cs_tstate *
rec_tstate(void)
{
    cs_tstate *t = cs_log_tstate();
    if (t)
        return t;
    if (!cs_log_is_open()) {
        if (open_failed || finished || open_log() != CS_OK)
            return NULL;
        if ((t = cs_log_tstate()) != NULL)
            return t;
    }
    char name[128];
    thread_name(name, sizeof name);
    return cs_log_tstate_slow(name, PyThread_get_thread_ident());
}

static void
put_str(cs_buf *b, PyObject *o)
{
    const char *s = NULL;
    Py_ssize_t n = 0;
    if (o && PyUnicode_Check(o))
        s = PyUnicode_AsUTF8AndSize(o, &n);
    if (s == NULL) {
        PyErr_Clear();
        s = "";
        n = 0;
    }
    cs_buf_append(b, s, (size_t)n);
    cs_buf_append(b, "", 1);
}

/* ",".join(names[lo:hi]) into `b`, NUL-terminated. */
static void
put_names(cs_buf *b, PyObject *names, Py_ssize_t lo, Py_ssize_t hi)
{
    for (Py_ssize_t i = lo; names && i < hi && i < PyTuple_GET_SIZE(names); i++) {
        const char *s = PyUnicode_AsUTF8(PyTuple_GET_ITEM(names, i));
        if (s == NULL) {
            PyErr_Clear();
            continue;
        }
        if (i > lo)
            cs_buf_append(b, ",", 1);
        cs_buf_puts(b, s);
    }
    cs_buf_append(b, "", 1);
}

void
rec_define(cs_tstate *t, uint32_t id, PyObject *ident, unsigned kind, PyObject *code)
{
    rec_define_label(t, id, ident, kind, code, NULL);
}

void
rec_define_label(cs_tstate *t, uint32_t id, PyObject *ident, unsigned kind, PyObject *code,
                 const char *label)
{
    /* ident = (module, qualname, file, line) */
    cs_buf b;
    cs_buf_init(&b);
    uint32_t line = 0;
    if (PyTuple_Check(ident) && PyTuple_GET_SIZE(ident) == 4) {
        line = (uint32_t)PyLong_AsUnsignedLongMask(PyTuple_GET_ITEM(ident, 3));
        if (PyErr_Occurred())
            PyErr_Clear();
    }
    uint32_t k = kind;
    cs_buf_append(&b, &line, 4);
    cs_buf_append(&b, &k, 4);
    for (Py_ssize_t i = 0; i < 3; i++)
        put_str(&b, PyTuple_Check(ident) && PyTuple_GET_SIZE(ident) == 4
                        ? PyTuple_GET_ITEM(ident, i)
                        : NULL);
    /* argument names, then the other local variable names */
    PyObject *names = NULL;
    Py_ssize_t nargs = 0;
    if (code && PyCode_Check(code)) {
        PyCodeObject *co = (PyCodeObject *)code;
        names = PyObject_GetAttrString(code, "co_varnames");
        nargs = co->co_argcount + co->co_kwonlyargcount + ((co->co_flags & 0x04) != 0) +
                ((co->co_flags & 0x08) != 0); /* *args, **kwargs */
        if (names && !PyTuple_Check(names))
            Py_CLEAR(names);
        PyErr_Clear();
    }
    put_names(&b, names, 0, nargs);
    put_names(&b, names, nargs, names ? PyTuple_GET_SIZE(names) : 0);
    Py_XDECREF(names);
    if (label)
        cs_buf_puts(&b, label); /* a sixth string, cProfile's name for it */
    if (!b.failed)
        cs_log_put_var(t, CS_VAR_FUNC, id, b.data, b.len);
    cs_buf_free(&b);
}

/* An exception that propagates out through many monitored calls keeps its
 * object, and its traceback grows outwards. Formatting it at every level
 * would cost O(depth^2) for a deep recursion, so each thread keeps the
 * exception it recorded last, with its traceback head, in its thread-state
 * dict (strong references: pointer comparisons stay valid, and the dict
 * dies with the thread). A later error of the same object whose traceback
 * still holds that head is the same propagation: it refers back instead of
 * formatting again. The thread drops them at its next normal return. */
_Thread_local int rec_held_exc CS_TLS_MODEL;

_Thread_local uintptr_t rec_stack_floor CS_TLS_MODEL;

uintptr_t
rec_stack_floor_init(void)
{
    uintptr_t floor = 1; /* unknown: never low */
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        void *addr = NULL;
        size_t size = 0;
        if (pthread_attr_getstack(&attr, &addr, &size) == 0 && addr != NULL && size > 0) {
            size_t margin = 256 * 1024;
            if (margin > size / 4)
                margin = size / 4;
            floor = (uintptr_t)addr + margin;
        }
        pthread_attr_destroy(&attr);
    }
    rec_stack_floor = floor;
    return floor;
}

PyObject *
rec_stack_error(void)
{
    PyErr_SetString(PyExc_RecursionError,
                    "maximum recursion depth exceeded: the C stack is nearly full");
    return NULL;
}

static PyObject *
held_key(void)
{
    static PyObject *key;
    if (key == NULL)
        key = PyUnicode_InternFromString("callscope.last_error");
    return key;
}

void
rec_forget_exc(void)
{
    rec_held_exc = 0;
    PyObject *d = PyThreadState_GetDict(); /* borrowed */
    PyObject *k = held_key();
    if (d && k && PyDict_DelItem(d, k) < 0)
        PyErr_Clear();
}

static int
same_propagation(PyObject *exc, PyObject *tb)
{
    if (!rec_held_exc)
        return 0;
    PyObject *d = PyThreadState_GetDict();
    PyObject *k = held_key();
    PyObject *v = d && k ? PyDict_GetItemWithError(d, k) : NULL; /* borrowed */
    if (v == NULL || !PyTuple_Check(v) || PyTuple_GET_SIZE(v) != 2) {
        PyErr_Clear();
        return 0;
    }
    if (PyTuple_GET_ITEM(v, 0) != exc)
        return 0;
    PyObject *head = PyTuple_GET_ITEM(v, 1);
    for (PyTracebackObject *p = (PyTracebackObject *)tb; p; p = p->tb_next)
        if ((PyObject *)p == head)
            return 1;
    return 0;
}

static void
hold(PyObject *exc, PyObject *tb)
{
    PyObject *d = PyThreadState_GetDict();
    PyObject *k = held_key();
    PyObject *v = PyTuple_Pack(2, exc, tb);
    if (d && k && v && PyDict_SetItem(d, k, v) == 0)
        rec_held_exc = 1;
    else
        PyErr_Clear();
    Py_XDECREF(v);
}

/* `s` through the user's sanitiser; a failure keeps nothing of it. */
static PyObject *
sanitize_text(PyObject *sanitize, PyObject *s)
{
    if (sanitize == NULL || s == NULL)
        return s;
    PyObject *r = PyObject_CallOneArg(sanitize, s);
    Py_DECREF(s);
    if (r == NULL || !PyUnicode_Check(r)) {
        PyErr_Clear();
        Py_XDECREF(r);
        return PyUnicode_FromString("<the sanitize function failed>");
    }
    return r;
}

void
rec_error_obj(ext_state *st, cs_tstate *t, uint64_t seq, uint32_t stream, PyObject *exc,
              PyObject *sanitize)
{
    PyObject *saved = cs_exc_fetch();
    cs_buf b;
    cs_buf_init(&b);
    PyObject *tb = PyException_GetTraceback(exc);
    int same = tb != NULL && same_propagation(exc, tb);
    if (tb != NULL)
        hold(exc, tb);
    PyObject *tname = cap_type_name(Py_TYPE(exc));
    put_str(&b, tname);
    Py_XDECREF(tname);
    PyObject *msg = PyObject_Str(exc);
    if (msg == NULL)
        PyErr_Clear();
    msg = sanitize_text(sanitize, msg);
    put_str(&b, msg);
    Py_XDECREF(msg);
    PyObject *tb_text = NULL;
    if (same) {
        /* "^": the traceback is the one of this thread's previous error */
        cs_buf_append(&b, "", 1);
        cs_buf_append(&b, "^", 2);
        goto write;
    }
    if (st->format_exception == NULL) {
        PyObject *tbmod = PyImport_ImportModule("traceback");
        st->format_exception = tbmod ? PyObject_GetAttrString(tbmod, "format_exception") : NULL;
        Py_XDECREF(tbmod);
    }
    if (st->format_exception) {
        PyObject *lines = PyObject_CallFunctionObjArgs(st->format_exception,
                                                       (PyObject *)Py_TYPE(exc), exc,
                                                       tb ? tb : Py_None, NULL);
        if (lines) {
            PyObject *empty = PyUnicode_FromString("");
            tb_text = empty ? PyUnicode_Join(empty, lines) : NULL;
            Py_XDECREF(empty);
            Py_DECREF(lines);
        }
    }
    PyErr_Clear();
    tb_text = sanitize_text(sanitize, tb_text);
    put_str(&b, tb_text);
    Py_XDECREF(tb_text);
write:
    Py_XDECREF(tb);
    if (!b.failed)
        cs_log_put_var(t, CS_VAR_ERROR, (seq & CS_SEQ_MASK) | ((uint64_t)stream << CS_SEQ_BITS),
                       b.data, b.len);
    cs_buf_free(&b);
    cs_exc_restore(saved);
}

void
rec_error_sanitized(ext_state *st, cs_tstate *t, uint64_t seq, uint32_t stream,
                    PyObject *sanitize)
{
    PyObject *exc = cs_exc_fetch();
    if (exc == NULL)
        return;
    rec_error_obj(st, t, seq, stream, exc, sanitize);
    cs_exc_restore(exc); /* the same object goes on to the caller */
}

void
rec_error(ext_state *st, cs_tstate *t, uint64_t seq, uint32_t stream)
{
    rec_error_sanitized(st, t, seq, stream, NULL);
}

int
rec_finish(int quiet)
{
    finished = 1;
    if (settled_dir) {
        rmdir(settled_dir); /* only if still empty: nothing was recorded */
        cs__free(settled_dir);
        settled_dir = NULL;
    }
    flush_child_exits();
    if (!cs_log_is_open())
        return CS_OK;
    uint64_t dropped = cs_log_dropped();
    char *path = NULL;
    const char *dir0 = cs_log_rundir();
    char *dir = dir0 ? cs__strdup(dir0) : NULL;
    int rc = cs_log_close(&path);
    if (rc != CS_OK || dir == NULL || path == NULL) {
        cs_log_release();
        cs__free(path);
        cs__free(dir);
        return rc;
    }
    /* Let go of the log, then merge it (and any other finished process's)
     * into run.db, unless another process is merging: that one takes it. */
    cs_log_release();
    const char *python = Py_GetVersion();
    cs_sync_result sr;
    Py_BEGIN_ALLOW_THREADS
    rc = cs_run_finish(dir, python, &sr);
    Py_END_ALLOW_THREADS
    if (rc != CS_OK && !quiet)
        fprintf(stderr, "callscope: warning: could not store the calls of this process (%s);"
                        " the log %s is kept and will be recovered\n",
                cs_store_last_error(), path);
    if (dropped && !quiet)
        fprintf(stderr, "callscope: warning: %llu record(s) were dropped (the disk is full?)\n",
                (unsigned long long)dropped);
    cs__free(path);
    cs__free(dir);
    return rc;
}
