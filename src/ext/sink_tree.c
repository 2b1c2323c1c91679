/* sink_tree.c -- the calling-context tree of `--all`: the sink that
 * aggregates, where sink_log's records keep each call.
 *
 * Each thread keeps a tree with a node per distinct call path (the root's
 * children are the calls at the bottom of its stack). A call counts on the
 * node of its path: calls, total wall time, CPU time and the longest call.
 * Self time is what a node's total leaves after its children's. The nodes
 * live in tree regions of the process's log (cs_log_map_tree), updated in
 * place, so a process killed at any moment leaves its tree as it stood,
 * calls still open included (each node notes the start of its open call).
 *
 * What cProfile counts comes from the tree without loss: a function's
 * calls are its nodes' calls; its primitive calls and cumulative time
 * those of its nodes whose path above holds no call of it (CS_TN_REC_FUNC
 * clear), and a caller edge's the same with the pair (CS_TN_REC_EDGE).
 * These flags are fixed when a node is made, since its path is fixed.
 *
 * A node is open at most once at a time: a second open call on the same
 * path would need the path to contain itself. Generators resumed from
 * different places are resumptions on different paths, as in cProfile.
 *
 * Memory: 72 bytes a node in the log, a node per distinct path. Past
 * `max_nodes` nodes a thread keeps new paths by function only, under one
 * node named by CS_TN_TRUNC: counts stay right, the paths past the limit
 * are not kept. */
#include "engine.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* What is known of a function, kept on its code object (co_extra) or, for
 * a C function, in a table keyed by its PyMethodDef. */
struct fn_info {
    uint32_t func;   /* process-wide function id */
    uint32_t epoch;  /* writer epoch whose log holds its FUNC record */
    int skip;        /* never in the tree: callscope's own, or decorated */
    int cfunc;       /* a C function */
    PyObject *ident; /* (module, qualname, file, line); strong */
    PyObject *code;  /* the code object (borrowed: it owns this), or NULL */
    char *label;     /* a C function's name as cProfile gives it */
};

typedef struct tframe {
    fn_info *fi;
    uint32_t node;
    uint64_t t0, c0;
    uint64_t child; /* wall time of its finished callees */
} tframe;

typedef struct ttree {
    uint32_t epoch;         /* writer epoch of the regions below */
    cs_tree_header **regions;
    size_t nregions, rcap;
    uint32_t shift, mask;   /* node index -> region, slot */
    uint32_t count;         /* next node index to hand out */
    uint32_t trunc;         /* the node under which truncated paths go, or 0 */
    uint32_t *active;       /* open calls per function id, on this thread */
    size_t active_cap;
    tframe *stack;
    size_t sn, scap;
    int broken;             /* a region could not be mapped: nothing more */
    /* the index of children: (parent, function) -> node, open addressing;
     * the sibling lists in the nodes are what readers follow */
    struct islot {
        uint64_t key; /* parent << 32 | func << 1 | recursive (past the
                         limit); 0 marks an empty slot */
        uint32_t node;
    } *idx;
    size_t icap, in;
    int idx_broken; /* it could not grow: children are found by scanning */
    struct ttree *next;
} ttree;

/* The one state struct of the tree sink. */
static struct {
    pthread_mutex_t mu;
    ttree *threads;
    Py_ssize_t extra; /* our co_extra slot */
    char *own;        /* callscope's package directory: never in the tree */
    PyObject *monitored; /* borrowed: the module's set of decorated code */
    int cpu;
    uint32_t max_nodes;
    int atfork_done;
    int on;
    /* C functions: open addressing on the PyMethodDef pointer */
    struct cslot {
        const void *key;
        fn_info *fi;
    } *cslots;
    size_t ccap, cn;
    uint64_t nomem; /* events lost to a failed allocation: reported at stop */
} T = {.mu = PTHREAD_MUTEX_INITIALIZER, .extra = -1};

static _Thread_local ttree *tls_tree CS_TLS_MODEL;

#define REGION_SLOTS (1u << 14) /* 1 MiB of nodes a region */

static inline cs_tree_node *
node_at(ttree *tt, uint32_t i)
{
    return (cs_tree_node *)tt->regions[i >> tt->shift] + (i & tt->mask);
}

static void
free_info(void *p)
{
    fn_info *fi = p;
    if (fi == NULL)
        return;
    Py_XDECREF(fi->ident);
    cs__free(fi->label);
    cs__free(fi);
}

/* ---- functions ------------------------------------------------------------ */

static int
own_file(PyObject *filename)
{
    if (T.own == NULL)
        return 0;
    const char *file = PyUnicode_AsUTF8(filename);
    if (file == NULL) {
        PyErr_Clear();
        return 0;
    }
    return strncmp(file, T.own, strlen(T.own)) == 0;
}

fn_info *
tree_code_known(PyObject *co)
{
    void *p = NULL;
    if (CS_LIKELY(cs_code_get_extra(co, T.extra, &p) == 0))
        return p;
    PyErr_Clear();
    return NULL;
}

/* The info of code object `co`, made at its first call. NULL on failure. */
fn_info *
tree_code_info(PyObject *co, PyObject *globals)
{
    fn_info *known = tree_code_known(co);
    if (CS_LIKELY(known != NULL))
        return known;
    fn_info *fi = cs__calloc(1, sizeof *fi);
    if (fi == NULL) {
        T.nomem++;
        return NULL;
    }
    PyCodeObject *code = (PyCodeObject *)co;
    PyObject *module = globals ? PyDict_GetItemString(globals, "__name__") : NULL;
    PyObject *qual = cs_code_qualname(code);
    fi->ident = Py_BuildValue("(OOOi)", module && PyUnicode_Check(module) ? module : Py_None,
                              qual, code->co_filename, code->co_firstlineno);
    Py_DECREF(qual);
    if (fi->ident && !(module && PyUnicode_Check(module))) {
        Py_DECREF(PyTuple_GET_ITEM(fi->ident, 0));
        PyTuple_SET_ITEM(fi->ident, 0, PyUnicode_FromString(""));
    }
    fi->code = co;
    fi->func = rec_new_func_id();
    fi->skip = own_file(code->co_filename) ||
               (T.monitored && PySet_Contains(T.monitored, co) > 0) || fi->ident == NULL;
    PyErr_Clear();
    if (cs_code_set_extra(co, T.extra, fi) < 0) {
        PyErr_Clear();
        free_info(fi);
        return NULL;
    }
    return fi;
}

/* The PyMethodDef of C function `fn` (a builtin function or method). */
static inline PyMethodDef *
cfunc_def(PyObject *fn)
{
    return ((PyCFunctionObject *)fn)->m_ml;
}

/* cProfile's name for C function `fn`: "<built-in method builtins.len>",
 * "<method 'append' of 'list' objects>" (Modules/_lsprof.c,
 * normalizeUserObj). Caller frees. */
static char *
cfunc_label(PyObject *fn)
{
    PyCFunctionObject *f = (PyCFunctionObject *)fn;
    const char *name = f->m_ml->ml_name;
    PyObject *r = NULL;
    PyObject *modname = f->m_module;
    if (f->m_self == NULL) {
        PyObject *mn = NULL;
        if (modname && PyUnicode_Check(modname))
            mn = Py_NewRef(modname);
        else if (modname && PyModule_Check(modname))
            mn = PyModule_GetNameObject(modname);
        PyErr_Clear();
        if (mn && PyUnicode_CompareWithASCIIString(mn, "builtins") != 0)
            r = PyUnicode_FromFormat("<%U.%s>", mn, name);
        else
            r = PyUnicode_FromFormat("<%s>", name);
        Py_XDECREF(mn);
    } else {
        /* a method: the repr of what type(self)'s MRO holds under its name */
        PyObject *attr = cs_type_lookup(Py_TYPE(f->m_self), name);
        if (attr)
            r = PyObject_Repr(attr);
        Py_XDECREF(attr);
        PyErr_Clear();
        if (r == NULL) {
            if (modname && PyUnicode_Check(modname))
                r = PyUnicode_FromFormat("<built-in method %U.%s>", modname, name);
            else
                r = PyUnicode_FromFormat("<built-in method %s>", name);
        }
    }
    const char *s = r ? PyUnicode_AsUTF8(r) : NULL;
    char *out = cs__strdup(s ? s : name);
    Py_XDECREF(r);
    PyErr_Clear();
    return out;
}


static size_t
hash_ptr(const void *p)
{
    uint64_t k = (uint64_t)(uintptr_t)p;
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    return (size_t)(k ^ (k >> 33));
}

static int
cslots_grow(void)
{
    size_t cap = T.ccap ? T.ccap * 2 : 256;
    struct cslot *s = cs__calloc(cap, sizeof *s);
    if (s == NULL)
        return -1;
    for (size_t i = 0; i < T.ccap; i++) {
        if (T.cslots[i].key == NULL)
            continue;
        size_t j = hash_ptr(T.cslots[i].key) & (cap - 1);
        while (s[j].key)
            j = (j + 1) & (cap - 1);
        s[j] = T.cslots[i];
    }
    cs__free(T.cslots);
    T.cslots = s;
    T.ccap = cap;
    return 0;
}

/* The info of C function `fn` (a PyCFunction), by its PyMethodDef, as
 * cProfile keys it. NULL on failure. */
fn_info *
tree_cfunc_lookup(const void *ml)
{
    if (T.ccap) {
        for (size_t i = hash_ptr(ml) & (T.ccap - 1);; i = (i + 1) & (T.ccap - 1)) {
            if (T.cslots[i].key == ml)
                return T.cslots[i].fi;
            if (T.cslots[i].key == NULL)
                break;
        }
    }
    return NULL;
}

fn_info *
tree_cfunc_info(PyObject *fn)
{
    PyMethodDef *ml = cfunc_def(fn);
    fn_info *known = tree_cfunc_lookup(ml);
    if (known)
        return known;
    if ((T.cn + 1) * 2 > T.ccap && cslots_grow() < 0) {
        T.nomem++;
        return NULL;
    }
    fn_info *fi = cs__calloc(1, sizeof *fi);
    if (fi == NULL) {
        T.nomem++;
        return NULL;
    }
    fi->cfunc = 1;
    fi->func = rec_new_func_id();
    fi->ident = policy_c_ident(fn, cfunc_def(fn));
    fi->label = cfunc_label(fn);
    /* callscope's own C functions (its start and stop) are not the
     * program's: the rest of its own code is never in the tree either */
    const char *mod = fi->ident ? PyUnicode_AsUTF8(PyTuple_GET_ITEM(fi->ident, 0)) : NULL;
    PyErr_Clear();
    fi->skip = fi->ident == NULL || fi->label == NULL ||
               (mod && (strcmp(mod, "callscope") == 0 || strncmp(mod, "callscope.", 10) == 0));
    size_t i = hash_ptr(ml) & (T.ccap - 1);
    while (T.cslots[i].key)
        i = (i + 1) & (T.ccap - 1);
    T.cslots[i] = (struct cslot){ml, fi};
    T.cn++;
    return fi;
}

fn_info *
tree_cfunc_of_call(PyObject *callable, PyObject *self, int make)
{
    /* most calls are of Python functions and bound methods: exact type
     * tests first, before the subtype walk of PyCFunction_Check */
    PyTypeObject *tp = Py_TYPE(callable);
    PyMethodDef *ml = NULL;
    if (tp == &PyFunction_Type || tp == &PyMethod_Type)
        return NULL;
    if (tp == &PyCFunction_Type || tp == &PyCMethod_Type || PyCFunction_Check(callable))
        ml = ((PyCFunctionObject *)callable)->m_ml;
    else if (self && tp == &PyMethodDescr_Type)
        ml = ((PyMethodDescrObject *)callable)->d_method;
    if (ml == NULL)
        return NULL;
    fn_info *fi = tree_cfunc_lookup(ml);
    if (CS_LIKELY(fi != NULL) || !make)
        return fi;
    if (tp != &PyMethodDescr_Type)
        return tree_cfunc_info(callable);
    /* first sight of a method descriptor: bound, it names itself */
    PyObject *exc = cs_exc_fetch();
    PyObject *bound = tp->tp_descr_get(callable, self, (PyObject *)Py_TYPE(self));
    if (bound && PyCFunction_Check(bound))
        fi = tree_cfunc_info(bound);
    Py_XDECREF(bound);
    PyErr_Clear();
    cs_exc_restore(exc);
    return fi;
}

/* Write `fi`'s FUNC record into the current log once. */
static inline void
define(fn_info *fi, cs_tstate *t)
{
    if (CS_LIKELY(fi->epoch == t->epoch))
        return;
    rec_define_label(t, fi->func, fi->ident, fi->cfunc ? CS_FUNC_BUILTIN : CS_FUNC_FUNCTION,
                     fi->code, fi->label);
    fi->epoch = t->epoch;
}

/* ---- the per-thread tree --------------------------------------------------- */

static int
map_region(ttree *tt, cs_tstate *t)
{
    cs_tree_header **v = cs__grow(tt->regions, tt->nregions, &tt->rcap, sizeof *v, 8);
    if (v == NULL)
        return -1;
    tt->regions = v;
    cs_tree_header *h = cs_log_map_tree(t, (uint32_t)tt->nregions, REGION_SLOTS,
                                        T.cpu ? CS_TREE_CPU : 0);
    if (h == NULL)
        return -1;
    tt->regions[tt->nregions++] = h;
    return 0;
}

/* Start the thread's tree afresh in the current log, keeping the calls
 * open on its stack (a forked child goes on with its parent's). */
static int
tree_reset_thread(ttree *tt, cs_tstate *t)
{
    tt->nregions = 0;
    tt->broken = 0;
    tt->epoch = t->epoch;
    tt->shift = 14;
    tt->mask = REGION_SLOTS - 1;
    tt->trunc = 0;
    if (tt->active)
        memset(tt->active, 0, tt->active_cap * sizeof *tt->active);
    if (tt->idx)
        memset(tt->idx, 0, tt->icap * sizeof *tt->idx);
    tt->in = 0;
    tt->idx_broken = 0;
    if (map_region(tt, t) < 0) {
        tt->broken = 1;
        return -1;
    }
    /* slot 0 of every region is its header; node 1 is the root */
    tt->count = CS_TREE_ROOT + 1;
    tt->regions[0]->used = tt->count;
    return 0;
}

static ttree *
thread_tree(void)
{
    ttree *tt = tls_tree;
    if (CS_LIKELY(tt != NULL && tt->epoch == atomic_load_explicit(&cs__writer.epoch,
                                                                  memory_order_relaxed)))
        return tt->broken ? NULL : tt;
    PyObject *exc = cs_exc_fetch();
    cs_tstate *t = rec_tstate();
    cs_exc_restore(exc);
    if (t == NULL)
        return NULL;
    if (tt == NULL) {
        tt = cs__calloc(1, sizeof *tt);
        if (tt == NULL) {
            T.nomem++;
            return NULL;
        }
        pthread_mutex_lock(&T.mu);
        tt->next = T.threads;
        T.threads = tt;
        pthread_mutex_unlock(&T.mu);
        tls_tree = tt;
    }
    if (tree_reset_thread(tt, t) < 0)
        return NULL;
    /* calls open before this log (a forked child's) go on in it */
    size_t n = tt->sn;
    tt->sn = 0;
    for (size_t i = 0; i < n; i++) {
        tframe f = tt->stack[i];
        tree_push(f.fi);
        if (tt->sn)
            tt->stack[tt->sn - 1].t0 = f.t0, tt->stack[tt->sn - 1].c0 = f.c0;
    }
    return tt->broken ? NULL : tt;
}

static int
grow_active(ttree *tt, uint32_t func)
{
    size_t cap = tt->active_cap ? tt->active_cap : 256;
    while (cap <= func)
        cap *= 2;
    uint32_t *v = cs__realloc(tt->active, cap * sizeof *v);
    if (v == NULL)
        return -1;
    memset(v + tt->active_cap, 0, (cap - tt->active_cap) * sizeof *v);
    tt->active = v;
    tt->active_cap = cap;
    return 0;
}

/* Hand out a node slot; 0 when no region can be had. */
static uint32_t
new_slot(ttree *tt)
{
    uint32_t i = tt->count;
    if ((i & tt->mask) == 0) {
        PyObject *exc = cs_exc_fetch();
        cs_tstate *t = rec_tstate();
        cs_exc_restore(exc);
        if (t == NULL || map_region(tt, t) < 0) {
            tt->broken = 1;
            return 0;
        }
        i++; /* slot 0 is the new region's header */
    }
    tt->count = i + 1;
    return i;
}

static inline size_t
ihash(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    return (size_t)(k ^ (k >> 33));
}

static uint32_t
idx_find(const ttree *tt, uint64_t key)
{
    if (tt->icap == 0)
        return 0;
    for (size_t i = ihash(key) & (tt->icap - 1);; i = (i + 1) & (tt->icap - 1)) {
        if (tt->idx[i].key == key)
            return tt->idx[i].node;
        if (tt->idx[i].key == 0)
            return 0;
    }
}

static void
idx_add(ttree *tt, uint64_t key, uint32_t node)
{
    if ((tt->in + 1) * 2 > tt->icap) {
        size_t cap = tt->icap ? tt->icap * 2 : 1024;
        struct islot *v = cs__calloc(cap, sizeof *v);
        if (v == NULL) {
            tt->idx_broken = 1;
            return;
        }
        for (size_t i = 0; i < tt->icap; i++) {
            if (tt->idx[i].key == 0)
                continue;
            size_t j = ihash(tt->idx[i].key) & (cap - 1);
            while (v[j].key)
                j = (j + 1) & (cap - 1);
            v[j] = tt->idx[i];
        }
        cs__free(tt->idx);
        tt->idx = v;
        tt->icap = cap;
    }
    size_t j = ihash(key) & (tt->icap - 1);
    while (tt->idx[j].key)
        j = (j + 1) & (tt->icap - 1);
    tt->idx[j] = (struct islot){key, node};
    tt->in++;
}

/* The child of `parent` for `func`, made if new. */
static uint32_t
child_of(ttree *tt, uint32_t parent, fn_info *fi)
{
    cs_tree_node *p = node_at(tt, parent);
    uint32_t prev = 0;
    /* under the truncation head a function has two nodes, for its calls
     * made inside another of its calls and for the others: the flag of a
     * path, known there only per call */
    int under_trunc = parent == tt->trunc && parent != 0;
    uint32_t rec = fi->func < tt->active_cap && tt->active[fi->func] ? CS_TN_REC_FUNC : 0;
    uint64_t key = (uint64_t)parent << 32 | (uint64_t)fi->func << 1 | (under_trunc && rec);
    if (CS_LIKELY(!tt->idx_broken)) {
        uint32_t c = idx_find(tt, key);
        if (CS_LIKELY(c != 0))
            return c;
    }
    for (uint32_t c = tt->idx_broken ? p->child : 0; c; prev = c, c = node_at(tt, c)->sibling) {
        cs_tree_node *n = node_at(tt, c);
        if (n->func == fi->func && (!under_trunc || (n->flags & CS_TN_REC_FUNC) == rec)) {
            if (prev) { /* the most recent first: loops call the same again */
                node_at(tt, prev)->sibling = n->sibling;
                n->sibling = p->child;
                p->child = c;
            }
            return c;
        }
    }
    uint32_t flags = fi->cfunc ? CS_TN_CFUNC : 0;
    if (tt->count - tt->nregions >= T.max_nodes && parent != tt->trunc) {
        /* past the limit: by function under one node, not by path */
        if (tt->trunc == 0) {
            uint32_t tr = new_slot(tt);
            if (tr == 0)
                return 0;
            cs_tree_node *r = node_at(tt, CS_TREE_ROOT);
            *node_at(tt, tr) = (cs_tree_node){.parent = CS_TREE_ROOT, .flags = CS_TN_TRUNC,
                                              .depth = 1, .sibling = r->child};
            r->child = tr;
            tt->trunc = tr;
            tt->regions[(tr >> tt->shift)]->used = (tr & tt->mask) + 1;
        }
        return child_of(tt, tt->trunc, fi);
    }
    uint32_t idx = new_slot(tt);
    if (idx == 0)
        return 0;
    p = node_at(tt, parent); /* (a new region does not move old ones) */
    if (under_trunc)
        flags |= CS_TN_TRUNC | rec;
    else if (rec) {
        /* recursive: is the pair (parent's function, this one) above too? */
        flags |= CS_TN_REC_FUNC;
        for (uint32_t a = parent; a > CS_TREE_ROOT;) {
            cs_tree_node *an = node_at(tt, a);
            if (an->parent < CS_TREE_ROOT)
                break;
            if (an->func == fi->func && node_at(tt, an->parent)->func == p->func) {
                flags |= CS_TN_REC_EDGE;
                break;
            }
            a = an->parent;
        }
    }
    cs_tree_node *n = node_at(tt, idx);
    *n = (cs_tree_node){.parent = parent, .func = fi->func, .sibling = p->child,
                        .flags = flags, .depth = p->depth + 1};
    p->child = idx;
    if (!tt->idx_broken)
        idx_add(tt, key, idx);
    /* published: the region's count covers it only now */
    atomic_signal_fence(memory_order_release);
    tt->regions[idx >> tt->shift]->used = (idx & tt->mask) + 1;
    return idx;
}

void
tree_push(fn_info *fi)
{
    if (fi->skip)
        return;
    ttree *tt = thread_tree();
    if (tt == NULL)
        return;
    cs_tstate *t = cs__tls;
    if (t)
        define(fi, t);
    if (CS_UNLIKELY(tt->sn == tt->scap)) {
        tframe *v = cs__grow(tt->stack, tt->sn, &tt->scap, sizeof *v, 128);
        if (v == NULL) {
            T.nomem++;
            return;
        }
        tt->stack = v;
    }
    if (fi->func >= tt->active_cap && grow_active(tt, fi->func) < 0) {
        T.nomem++;
        return;
    }
    uint32_t parent = tt->sn ? tt->stack[tt->sn - 1].node : CS_TREE_ROOT;
    uint32_t idx = child_of(tt, parent, fi);
    if (idx == 0)
        return;
    tt->active[fi->func]++;
    tframe *f = &tt->stack[tt->sn++];
    f->fi = fi;
    f->node = idx;
    f->child = 0;
    /* the wall clock first and the CPU clock inside it: CPU <= wall */
    f->t0 = cs_clock_fast_ns();
    f->c0 = T.cpu ? cs_clock_thread_cpu_ns() : 0;
    cs_tree_node *n = node_at(tt, idx);
    if (n->open_ns == 0)
        n->open_ns = f->t0;
}

/* Close frame `f` at `now` (CPU `cnow`). */
static inline void
close_frame(ttree *tt, tframe *f, uint64_t now, uint64_t cnow)
{
    cs_tree_node *n = node_at(tt, f->node);
    uint64_t dur = now - f->t0;
    n->calls++;
    n->total_ns += dur;
    if (T.cpu) {
        uint64_t c = cnow > f->c0 ? cnow - f->c0 : 0;
        n->cpu_ns += c < dur ? c : dur;
    }
    n->self_ns += dur > f->child ? dur - f->child : 0;
    if (dur > n->max_ns)
        n->max_ns = dur;
    if (f > tt->stack)
        f[-1].child += dur;
    if (n->open_ns == f->t0)
        n->open_ns = 0;
    if (f->fi->func < tt->active_cap && tt->active[f->fi->func])
        tt->active[f->fi->func]--;
}

void
tree_pop(fn_info *fi)
{
    if (fi->skip)
        return;
    /* the CPU clock inside the wall clock: CPU <= wall */
    uint64_t cnow = T.cpu ? cs_clock_thread_cpu_ns() : 0;
    uint64_t now = cs_clock_fast_ns();
    ttree *tt = tls_tree;
    if (tt == NULL || tt->sn == 0 ||
        tt->epoch != atomic_load_explicit(&cs__writer.epoch, memory_order_relaxed) ||
        tt->broken)
        return;
    /* the innermost frame, as a rule; frames above a match were left by
     * calls whose end was never seen: they end now too */
    size_t i = tt->sn;
    while (i > 0 && tt->stack[i - 1].fi != fi && tt->sn - i < 4)
        i--;
    if (i == 0 || tt->stack[i - 1].fi != fi)
        return; /* it began before profiling did */
    while (tt->sn >= i)
        close_frame(tt, &tt->stack[--tt->sn], now, cnow);
    tt->regions[0]->alive_ns = now;
}

/* Close the calls still open on every thread, as cProfile does when it is
 * disabled, and mark each tree closed. */
static void
tree_close_all(void)
{
    uint64_t now = cs_clock_fast_ns();
    uint32_t epoch = atomic_load_explicit(&cs__writer.epoch, memory_order_relaxed);
    pthread_mutex_lock(&T.mu);
    for (ttree *tt = T.threads; tt; tt = tt->next) {
        if (tt->epoch != epoch || tt->broken || tt->nregions == 0) {
            tt->sn = 0;
            continue;
        }
        /* another thread's CPU clock is not ours to read: its open calls
         * keep the CPU time they had */
        int mine = tt == tls_tree;
        uint64_t cnow = T.cpu && mine ? cs_clock_thread_cpu_ns() : 0;
        while (tt->sn) {
            tframe *f = &tt->stack[--tt->sn];
            close_frame(tt, f, now, mine ? cnow : f->c0);
        }
        tt->regions[0]->alive_ns = now;
        tt->regions[0]->closed = 1;
        tt->epoch = 0; /* the next event starts a new tree */
    }
    pthread_mutex_unlock(&T.mu);
}

/* A forked child keeps only the forking thread: the others do not exist
 * in it. Their trees belong to the parent's log. */
static void
after_fork_child(void)
{
    pthread_mutex_init(&T.mu, NULL);
    ttree *self = tls_tree;
    for (ttree *tt = T.threads, *next; tt; tt = next) {
        next = tt->next;
        if (tt == self)
            continue;
        cs__free(tt->regions);
        cs__free(tt->active);
        cs__free(tt->stack);
        cs__free(tt->idx);
        cs__free(tt);
    }
    T.threads = self;
    if (self)
        self->next = NULL;
}

int
tree_begin(PyObject *monitored, const char *own, int cpu, uint64_t max_nodes)
{
    if (T.extra < 0 && (T.extra = cs_code_extra_index(free_info)) < 0) {
        PyErr_SetString(PyExc_RuntimeError, "callscope: no free co_extra slot");
        return -1;
    }
    if (!T.atfork_done && pthread_atfork(NULL, NULL, after_fork_child) == 0)
        T.atfork_done = 1;
    cs__free(T.own);
    T.own = own ? cs__strdup(own) : NULL;
    T.monitored = monitored;
    T.cpu = cpu;
    T.max_nodes = max_nodes ? (uint32_t)(max_nodes < (1u << 30) ? max_nodes : (1u << 30))
                            : (1u << 20);
    T.nomem = 0;
    cs_clock_fast_init();
    T.on = 1;
    rec_in_use = 1;
    return 0;
}

void
tree_end(void)
{
    tree_close_all();
    T.on = 0;
    if (T.nomem) {
        PyObject *exc = cs_exc_fetch();
        PyErr_Format(PyExc_RuntimeWarning,
                     "callscope: --all lost %llu events for want of memory",
                     (unsigned long long)T.nomem);
        PyErr_WriteUnraisable(NULL);
        cs_exc_restore(exc);
        T.nomem = 0;
    }
}

int
tree_skipped(const fn_info *fi)
{
    return fi->skip;
}
