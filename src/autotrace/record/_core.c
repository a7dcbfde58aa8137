/* The compiled per-call path of the recorder: the twin of recorder.py's hot path.
 *
 * recorder.py stays the reference and the whole recorder; this module only takes
 * over what runs for *every* traced call, and hands each call that is not on its
 * fast path to the Python methods unchanged (`Recorder.start`, `Recorder.finish`):
 *
 *   Core      a base class of `compiled.CompiledRecorder`: the recorder's per-call
 *             settings as C fields, and `start` / `finish` whose fast path is a
 *             pending call that starts and is dropped (min_duration), a call only
 *             counted (spans off, metrics on), or a call refused by require_parent /
 *             busy / suppression; `suspend` / `resume`
 *             (a generator's or coroutine's steps) whole. Everything else (eager
 *             spans, kept calls, own time, failures held on a caller) calls the
 *             Python methods, which see the same fields.
 *   Call      the storage of one call (the fields recorder.Call has as slots);
 *             `compiled.CompiledCall` adds the rarely set ones through __dict__.
 *   Local     the per-thread `busy` flag, readable here without threading.local.
 *   FunctionCall  the wrapt wrapper of a plain function: no Python frame between
 *             the caller and the callee.
 *   Definer   the decorator of a rewritten def (wrapt/main.py's `function`, `method`):
 *             a plain def's proxy made with no Python frame as a module body runs.
 *   Monitor   the sys.monitoring callbacks: PY_START / PY_RETURN, PY_YIELD /
 *             PY_RESUME (a function's first call, PY_THROW and PY_UNWIND stay Python).
 *   Running   id(frame) -> (call, code) of the running traced frames, keyed by address:
 *             the Monitor's, used by the backend's Python callbacks as a dict.
 *   FrameSentinel  a suspending frame's f_trace that ends its span if no event does.
 *   Bins, Counts  metrics.Bins' fields and its bucket counts as C integers, which the
 *             C finish increments in place (metrics.Aggregates.finished, compiled).
 *
 * The same extension module is built with backends/_monitoring.c (`register_plain`: a
 * module's plain functions registered with sys.monitoring as it is imported), which sits
 * beside the backend it speeds up.
 *
 * The rules of recorder.py hold here: nothing on this path waits for a lock, raises
 * into the program, or loses an exception in flight. Every Python object touched is
 * reference-counted exactly; the tests run this file under valgrind memcheck.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <frameobject.h>

#ifdef _WIN32
#include <windows.h>
#define THREAD_LOCAL __declspec(thread)
#else
#include <time.h>
#if defined(__GNUC__)
/* The module is loaded once, at start-up: the static TLS model needs no call per read
 * (the general model calls __tls_get_addr, ~120 instructions, per access). */
#define THREAD_LOCAL _Thread_local __attribute__((tls_model("initial-exec")))
#else
#define THREAD_LOCAL _Thread_local
#endif
#endif

/* What accel.py expects (its INTERFACE): bumped with every change to what this module
   offers Python, so that an extension built from older source is not loaded. */
#define INTERFACE 13

/* The other source file built into this module (setup.py): backends/_monitoring.c. */
int autotrace_monitoring_add(PyObject *module);

#define RETURNED 0
#define RAISED 1
#define ABANDONED 2

/* -- process state (set up once by compiled.py) ------------------------------------ */

static PyObject *current_var;      /* recorder._current: the innermost traced call */
static PyObject *otel_var;         /* the OpenTelemetry runtime context's ContextVar */
static PyObject *suppress_key;     /* _SUPPRESS_INSTRUMENTATION_KEY */
static PyObject *span_key;         /* the context key of the current span */
static PyObject *invalid_span;     /* trace.INVALID_SPAN */
static PyObject *pending_span_type;
static PyObject *call_type;        /* compiled.CompiledCall */
static PyObject *empty_tuple;      /* () */
static PyObject *py_start;         /* Recorder.start: everything off the fast path */
static PyObject *py_finish;        /* Recorder.finish */
static PyObject *py_suspend;       /* Recorder.suspend */
static PyObject *py_resume;        /* Recorder.resume */
static PyObject *report;           /* report(kind, what): logs an own failure once */
static PyObject *str_frame_values, *str_f_trace, *str_frame_released, *str_param_names;
static PyObject *missing_value;    /* describe.function._MISSING: a parameter with no value */
static PyObject *sys_gettrace;     /* sys.gettrace */
static PyObject *shown_runtime;    /* the runtime context whose get_current is
                                      otel_current (compiled.py), or NULL */
static PyObject *otel_globals;     /* opentelemetry.context's namespace */
static PyObject *str_runtime_context;
/* UNBOUND: the instance a plain function's proxy holds when its wrapper is a
   FunctionCall. wrapt's C call compares the binding with four strings whenever the
   instance is None (~350 instructions a call, to find a `__self__` a plain function
   lacks); with this stand-in it calls the wrapper at once, which reads it as None. */
static PyObject *unbound;
static PyObject *str_pending_context, *str_describe_first;

static long long generation;       /* recorder._fork_generation */
static unsigned long collecting;   /* recorder._collecting (< 3.12): a thread ident */
/* recorder._gc_first, _gc_last, _IDLE (< 3.12): the collector's phase markers */
static PyObject *gc_first, *gc_last, *gc_idle;
static PyObject *gc_namespace;     /* recorder's module namespace: its _collecting */
static PyObject *str_move_to_end, *str_start, *str_collecting;
static THREAD_LOCAL int busy;      /* recorder._local.busy */

static long long
now_ns(void)
{
#ifdef _WIN32
    FILETIME ft;
    GetSystemTimePreciseAsFileTime(&ft);
    ULARGE_INTEGER t;
    t.LowPart = ft.dwLowDateTime;
    t.HighPart = ft.dwHighDateTime;
    return (long long)(t.QuadPart - 116444736000000000ULL) * 100;
#else
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);  /* time.time_ns()'s clock */
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
#endif
}

/* recorder._in_collection (< 3.12; see there): both markers idle, or another thread
   is collecting. An exception in flight is kept; a failed comparison counts as
   collecting (the side that sets no ContextVar). */
static int
in_collection(void)
{
    if (gc_first == NULL)
        return 0;
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    int idle = PyObject_RichCompareBool(gc_first, gc_idle, Py_EQ);
    if (idle == 1)
        idle = PyObject_RichCompareBool(gc_last, gc_idle, Py_EQ);
    if (idle < 0)
        PyErr_Clear();
    PyErr_Restore(exc_type, exc_value, exc_tb);
    if (idle == 1)
        return 0;
    return collecting == 0 || collecting == PyThread_get_thread_ident();
}

/* Log an own failure once (through Python), keeping any exception in flight. */
static void
report_failure(const char *kind, PyObject *what)
{
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    Py_XDECREF(exc_type);
    Py_XDECREF(exc_tb);
    if (report != NULL) {
        PyObject *res = PyObject_CallFunction(report, "sOO", kind,
                                              what ? what : Py_None,
                                              exc_value ? exc_value : Py_None);
        Py_XDECREF(res);
        PyErr_Clear();
    }
    Py_XDECREF(exc_value);
}

/* -- Call -------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *info, *parent, *saved, *span, *token, *run_ctx, *parent_ctx;
    PyObject *instance, *args, *kwargs, *frame;
    PyObject *values;  /* a generator's arguments read at its start (monitoring); NULL: None */
    PyObject *lazy_base;  /* NULL, or the OpenTelemetry ContextVar's value under which
                             run_ctx is current without being set ("Shown, not set") */
    PyObject *dict;  /* the rarely set fields (class defaults otherwise) */
    PyObject *chain;  /* NULL, or the Chain its start (or resume) wrote it in: its end
                         writes there with no read of the ContextVar while that chain
                         is still its context's (set_current_call_at) */
    PyObject *weakrefs;
    long long depth, generation, start_ns, child_ns;
    char closed, under_pending, counted;
    char unshow;  /* undo what its body left attached when it ends or suspends */
    char frame_later;  /* monitoring: its frame object is made when it ends, if Python
                          finishes it (its arguments are read from it) */
} CallObject;

static PyTypeObject Call_Type;

/* A Call: compiled.CompiledCall, the type the core makes, checked first (a subtype
   check walks the MRO, ~16 instructions). */
#define IS_CALL(o) (Py_TYPE(o) == (PyTypeObject *)call_type || \
                    ((o) != Py_None && PyObject_TypeCheck((o), &Call_Type)))

#define CALL_FIELDS(X) X(info) X(parent) X(saved) X(span) X(token) X(run_ctx) \
    X(parent_ctx) X(instance) X(args) X(kwargs) X(frame) X(values) X(lazy_base) X(dict) \
    X(chain)

static int
Call_traverse(CallObject *self, visitproc visit, void *arg)
{
#define VISIT(f) Py_VISIT(self->f);
    CALL_FIELDS(VISIT)
#undef VISIT
    return 0;
}

static int
Call_clear(CallObject *self)
{
#define CLEAR(f) Py_CLEAR(self->f);
    CALL_FIELDS(CLEAR)
#undef CLEAR
    return 0;
}

/* Freed calls of call_type kept for the next one, as CPython's own free lists do: a
   dropped call's storage then skips the allocator's and the collector's round trip
   (~300 instructions a call). Only the type's memory is kept: its reference to the
   type goes with the object (subtype_dealloc), PyObject_Init takes it again. A kept
   call is left as new_call finds it (call_reset): its None fields hold None, the rest
   NULL, so that neither the free nor the next call clears or sets what a dropped call
   never changed. */
#ifdef Py_GIL_DISABLED
#define CALL_FREE_MAX 0
#else
#define CALL_FREE_MAX 64
#endif
static CallObject *call_free[CALL_FREE_MAX > 0 ? CALL_FREE_MAX : 1];
static int call_free_n;

/* The fields a new call starts with None in; the others of CALL_FIELDS start NULL or
   are set by new_call. */
#define CALL_NONE_FIELDS(X) X(span) X(token) X(run_ctx) X(parent_ctx) X(frame)
#define CALL_NULL_FIELDS(X) X(info) X(parent) X(saved) X(instance) X(args) X(kwargs) \
    X(values) X(lazy_base) X(dict) X(chain)

/* Put a freed call's fields back as new_call finds them. Each reference it held is
   released after its field is reset: a finaliser that runs meanwhile sees no stale
   field (the call is unreachable by then anyway, and not in the free list yet). */
static void
call_reset(CallObject *self)
{
#define NONE(f) if (self->f != Py_None) { \
        PyObject *old = self->f; self->f = Py_NewRef(Py_None); Py_XDECREF(old); }
    CALL_NONE_FIELDS(NONE)
#undef NONE
#define CLEAR(f) Py_CLEAR(self->f);
    CALL_NULL_FIELDS(CLEAR)
#undef CLEAR
}

static void
call_free_drain(void)
{
    while (call_free_n > 0) {
        CallObject *call = call_free[--call_free_n];
        Call_clear(call);  /* its None references */
        PyObject_GC_Del(call);
    }
}

static void
Call_dealloc(CallObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakrefs != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (call_free_n < CALL_FREE_MAX && Py_TYPE(self) == (PyTypeObject *)call_type) {
        call_reset(self);
        /* a finaliser in the reset may have freed calls, or set another call type */
        if (call_free_n < CALL_FREE_MAX && Py_TYPE(self) == (PyTypeObject *)call_type) {
            self->weakrefs = NULL;
            call_free[call_free_n++] = self;
            return;
        }
    }
    Call_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A tracked CallObject of `type` (new reference) with every field NULL, but those of
   CALL_NONE_FIELDS: None if `*reset` is set (a kept one), NULL otherwise (a new one);
   its other members are to be set by the caller. NULL with an error. */
static CallObject *
alloc_call(PyTypeObject *type, int *reset)
{
    if (call_free_n > 0 && type == (PyTypeObject *)call_type) {
        CallObject *call = call_free[--call_free_n];
        PyObject_Init((PyObject *)call, type);
        PyObject_GC_Track(call);
        *reset = 1;
        return call;
    }
    *reset = 0;
    return (CallObject *)type->tp_alloc(type, 0);
}

/* A new call with every field set as recorder.Call.__init__ sets it; `args` NULL: no
   argument references (an empty tuple: read from a frame, or not recorded). */
static CallObject *
new_call(PyTypeObject *type, PyObject *info, PyObject *parent, long long depth,
         PyObject *instance, PyObject *args, PyObject *kwargs)
{
    int reset;
    if (args == NULL)
        args = empty_tuple;
    CallObject *call = alloc_call(type, &reset);
    if (call == NULL)
        return NULL;
    call->info = Py_NewRef(info);
    call->parent = Py_NewRef(parent);
    call->saved = Py_NewRef(parent);
    call->instance = Py_NewRef(instance);
    call->args = Py_NewRef(args);
    call->kwargs = Py_NewRef(kwargs);
    if (!reset) {
#define NONE(f) call->f = Py_NewRef(Py_None);
        CALL_NONE_FIELDS(NONE)
#undef NONE
    }
    call->depth = depth;
    call->generation = generation;
    call->start_ns = call->child_ns = 0;
    call->closed = call->under_pending = call->counted = call->unshow = 0;
    call->frame_later = 0;
    return call;
}

static int
Call_init(CallObject *self, PyObject *args, PyObject *kwds)
{
    PyObject *info, *parent, *instance, *call_args, *kwargs;
    long long depth;
    static char *names[] = {"info", "parent", "depth", "instance", "args", "kwargs", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOLOOO", names, &info, &parent, &depth,
                                     &instance, &call_args, &kwargs))
        return -1;
#define SET(f, v) Py_INCREF(v); Py_XSETREF(self->f, v);
    SET(info, info)
    SET(parent, parent)
    SET(saved, parent)
    SET(span, Py_None)
    SET(token, Py_None)
    SET(run_ctx, Py_None)
    SET(parent_ctx, Py_None)
    SET(instance, instance)
    SET(args, call_args)
    SET(kwargs, kwargs)
    SET(frame, Py_None)
#undef SET
    Py_CLEAR(self->lazy_base);
    Py_CLEAR(self->chain);
    self->depth = depth;
    self->generation = generation;
    self->start_ns = self->child_ns = 0;
    self->closed = self->under_pending = self->counted = self->unshow = 0;
    self->frame_later = 0;
    return 0;
}

static PyMemberDef Call_members[] = {
    {"info", T_OBJECT, offsetof(CallObject, info), 0, NULL},
    {"parent", T_OBJECT, offsetof(CallObject, parent), 0, NULL},
    {"saved", T_OBJECT, offsetof(CallObject, saved), 0, NULL},
    {"span", T_OBJECT, offsetof(CallObject, span), 0, NULL},
    {"token", T_OBJECT, offsetof(CallObject, token), 0, NULL},
    {"run_ctx", T_OBJECT, offsetof(CallObject, run_ctx), 0, NULL},
    {"parent_ctx", T_OBJECT, offsetof(CallObject, parent_ctx), 0, NULL},
    {"instance", T_OBJECT, offsetof(CallObject, instance), 0, NULL},
    {"args", T_OBJECT, offsetof(CallObject, args), 0, NULL},
    {"kwargs", T_OBJECT, offsetof(CallObject, kwargs), 0, NULL},
    {"frame", T_OBJECT, offsetof(CallObject, frame), 0, NULL},
    {"values", T_OBJECT, offsetof(CallObject, values), 0, NULL},
    {"lazy_base", T_OBJECT, offsetof(CallObject, lazy_base), 0, NULL},
    {"depth", T_LONGLONG, offsetof(CallObject, depth), 0, NULL},
    {"generation", T_LONGLONG, offsetof(CallObject, generation), 0, NULL},
    {"start_ns", T_LONGLONG, offsetof(CallObject, start_ns), 0, NULL},
    {"child_ns", T_LONGLONG, offsetof(CallObject, child_ns), 0, NULL},
    {"closed", T_BOOL, offsetof(CallObject, closed), 0, NULL},
    {"under_pending", T_BOOL, offsetof(CallObject, under_pending), 0, NULL},
    {"unshow", T_BOOL, offsetof(CallObject, unshow), 0, NULL},
    {"counted", T_BOOL, offsetof(CallObject, counted), 0, NULL},
    {NULL}
};

static PyGetSetDef Call_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL}
};

static PyTypeObject Call_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "autotrace.record._core.Call",
    .tp_doc = "The storage of one traced call (see recorder.Call).",
    .tp_basicsize = sizeof(CallObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Call_init,
    .tp_dealloc = (destructor)Call_dealloc,
    .tp_traverse = (traverseproc)Call_traverse,
    .tp_clear = (inquiry)Call_clear,
    .tp_members = Call_members,
    .tp_getset = Call_getset,
    .tp_dictoffset = offsetof(CallObject, dict),
    .tp_weaklistoffset = offsetof(CallObject, weakrefs),
};

/* The call type the core makes (compiled.CompiledCall): Call with `bases`' class
   defaults (recorder.RareFields), made here rather than by a class statement so that
   its dealloc is Call's own: a class statement's subtype_dealloc costs ~120
   instructions a dropped call more. It adds no field (`bases` must have empty
   __slots__); a heap type's instances hold and visit their type. */
static int
CompiledCall_traverse(CallObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return Call_traverse(self, visit, arg);
}

/* Whether freeing `o` (a field of a call being freed) may free a call in turn. */
#define MAY_FREE_CALL(o) ((o) != NULL && (o) != Py_None && Py_REFCNT(o) == 1)

static void
CompiledCall_dealloc(CallObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    /* The trashcan bounds the C stack where freeing a call frees a chain of calls (each
       holds its parent). A dropped call has let go of what it held, and its parent is
       still running: it skips it (~60 instructions). */
    if (MAY_FREE_CALL(self->parent) || MAY_FREE_CALL(self->saved) || self->chain != NULL ||
        self->dict != NULL || self->values != NULL || self->frame != Py_None ||
        self->span != Py_None) {
        Py_TRASHCAN_BEGIN(self, CompiledCall_dealloc)
        Call_dealloc(self);  /* kept for the next call, or freed */
        Py_DECREF(type);
        Py_TRASHCAN_END
    }
    else {
        Call_dealloc(self);
        Py_DECREF(type);
    }
}

static PyObject *
core_make_call_type(PyObject *module, PyObject *mixin)
{
    static PyType_Slot slots[] = {
        {Py_tp_doc, "A call's storage in the compiled core, whichever half starts it: the "
                    "common fields in C, the rare ones as in recorder.Call (class "
                    "defaults of recorder.RareFields)."},
        {Py_tp_dealloc, (void *)CompiledCall_dealloc},
        {Py_tp_traverse, (void *)CompiledCall_traverse},
        {Py_tp_clear, (void *)Call_clear},
        {0, NULL},
    };
    static PyType_Spec spec = {
        .name = "autotrace.record.compiled.CompiledCall",
        .basicsize = 0,  /* Call's */
        .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
        .slots = slots,
    };
    if (!PyType_Check(mixin) || ((PyTypeObject *)mixin)->tp_basicsize !=
                                PyBaseObject_Type.tp_basicsize) {
        PyErr_SetString(PyExc_TypeError, "make_call_type: a class with __slots__ = ()");
        return NULL;
    }
    PyObject *bases = PyTuple_Pack(2, (PyObject *)&Call_Type, mixin);
    if (bases == NULL)
        return NULL;
    PyObject *type = PyType_FromSpecWithBases(&spec, bases);
    Py_DECREF(bases);
    return type;
}

/* -- Counts: a bucket count array ------------------------------------------------- */

/* metrics.Bins.counts when the extension loads: a fixed-size array of C integers that
   Python indexes, assigns and iterates like the list it replaces, and that the C finish
   increments in place, with no allocation (an int object per count cost ~250
   instructions a call). */
typedef struct {
    PyObject_VAR_HEAD
    long long items[1];
} CountsObject;

static PyTypeObject Counts_Type;

static PyObject *
Counts_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_ssize_t n;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "Counts(n) takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "n:Counts", &n))
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "Counts(n): n must be >= 0");
        return NULL;
    }
    return type->tp_alloc(type, n);  /* zeroed */
}

static Py_ssize_t
Counts_length(CountsObject *self)
{
    return Py_SIZE(self);
}

static PyObject *
Counts_item(CountsObject *self, Py_ssize_t i)
{
    if (i < 0 || i >= Py_SIZE(self)) {
        PyErr_SetString(PyExc_IndexError, "Counts index out of range");
        return NULL;
    }
    return PyLong_FromLongLong(self->items[i]);
}

static int
Counts_ass_item(CountsObject *self, Py_ssize_t i, PyObject *value)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "Counts items cannot be deleted");
        return -1;
    }
    if (i < 0 || i >= Py_SIZE(self)) {
        PyErr_SetString(PyExc_IndexError, "Counts assignment index out of range");
        return -1;
    }
    long long count = PyLong_AsLongLong(value);
    if (count == -1 && PyErr_Occurred())
        return -1;
    self->items[i] = count;
    return 0;
}

static PyObject *
Counts_repr(CountsObject *self)
{
    PyObject *list = PySequence_List((PyObject *)self);
    if (list == NULL)
        return NULL;
    PyObject *out = PyUnicode_FromFormat("Counts(%R)", list);
    Py_DECREF(list);
    return out;
}

static PySequenceMethods Counts_as_sequence = {
    .sq_length = (lenfunc)Counts_length,
    .sq_item = (ssizeargfunc)Counts_item,
    .sq_ass_item = (ssizeobjargproc)Counts_ass_item,
};

static PyTypeObject Counts_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "autotrace.record._core.Counts",
    .tp_doc = "Counts(n): n bucket counts (C integers), indexed and iterated like a list.",
    .tp_basicsize = offsetof(CountsObject, items),
    .tp_itemsize = sizeof(long long),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Counts_new,
    .tp_repr = (reprfunc)Counts_repr,
    .tp_as_sequence = &Counts_as_sequence,
};

/* -- Bins: the per-function counts of metrics.py, counted here for calls that end on
   the C path ------------------------------------------------------------------------ */

/* The fields of metrics.Bins and metrics.FunctionStats (their base when the extension
   loads; a Python class with the same slots otherwise). Python reads and writes them
   as attributes; the C finish counts a successful call in them with no Python code
   (metrics on, no profile, not hot): metrics.Aggregates.finished, compiled. */
#define MAX_BUCKETS 64  /* thresholds kept as C integers up to this many */

typedef struct {
    PyObject_HEAD
    PyObject *grid, *thresholds, *counts, *exemplars, *name, *errors;
    long long sum_ns, low_ns, high_ns, calls, failures, total_ns, own_ns, max_ns;
    /* `thresholds` as C integers (set with it); -1: too many, or not integers */
    Py_ssize_t n_thresholds;
    long long threshold_ns[MAX_BUCKETS];
} BinsObject;

static PyObject *
Bins_get_thresholds(BinsObject *self, void *closure)
{
    if (self->thresholds == NULL) {
        PyErr_SetString(PyExc_AttributeError, "thresholds");
        return NULL;
    }
    return Py_NewRef(self->thresholds);
}

static int
Bins_set_thresholds(BinsObject *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "thresholds cannot be deleted");
        return -1;
    }
    Py_ssize_t n = -1;
    if (PyTuple_Check(value) && PyTuple_GET_SIZE(value) <= MAX_BUCKETS) {
        n = PyTuple_GET_SIZE(value);
        for (Py_ssize_t i = 0; i < n; i++) {
            long long bound = PyLong_AsLongLong(PyTuple_GET_ITEM(value, i));
            if (bound == -1 && PyErr_Occurred()) {
                PyErr_Clear();
                n = -1;
                break;
            }
            self->threshold_ns[i] = bound;
        }
    }
    self->n_thresholds = n;
    Py_XSETREF(self->thresholds, Py_NewRef(value));
    return 0;
}

static PyGetSetDef Bins_getset[] = {
    {"thresholds", (getter)Bins_get_thresholds, (setter)Bins_set_thresholds,
     "The grid's thresholds (ns), also kept as C integers.", NULL},
    {NULL}
};

static int
Bins_traverse(BinsObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->grid);
    Py_VISIT(self->thresholds);
    Py_VISIT(self->counts);
    Py_VISIT(self->exemplars);
    Py_VISIT(self->name);
    Py_VISIT(self->errors);
    return 0;
}

static int
Bins_clear(BinsObject *self)
{
    Py_CLEAR(self->grid);
    Py_CLEAR(self->thresholds);
    Py_CLEAR(self->counts);
    Py_CLEAR(self->exemplars);
    Py_CLEAR(self->name);
    Py_CLEAR(self->errors);
    return 0;
}

static void
Bins_dealloc(BinsObject *self)
{
    PyObject_GC_UnTrack(self);
    Bins_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef Bins_members[] = {
    {"grid", T_OBJECT_EX, offsetof(BinsObject, grid), 0, NULL},
    {"counts", T_OBJECT_EX, offsetof(BinsObject, counts), 0, NULL},
    {"exemplars", T_OBJECT_EX, offsetof(BinsObject, exemplars), 0, NULL},
    {"name", T_OBJECT_EX, offsetof(BinsObject, name), 0, NULL},
    {"errors", T_OBJECT_EX, offsetof(BinsObject, errors), 0, NULL},
    {"sum_ns", T_LONGLONG, offsetof(BinsObject, sum_ns), 0, NULL},
    {"low_ns", T_LONGLONG, offsetof(BinsObject, low_ns), 0, NULL},
    {"high_ns", T_LONGLONG, offsetof(BinsObject, high_ns), 0, NULL},
    {"calls", T_LONGLONG, offsetof(BinsObject, calls), 0, NULL},
    {"failures", T_LONGLONG, offsetof(BinsObject, failures), 0, NULL},
    {"total_ns", T_LONGLONG, offsetof(BinsObject, total_ns), 0, NULL},
    {"own_ns", T_LONGLONG, offsetof(BinsObject, own_ns), 0, NULL},
    {"max_ns", T_LONGLONG, offsetof(BinsObject, max_ns), 0, NULL},
    {NULL}
};

static PyTypeObject Bins_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "autotrace.record._core.Bins",
    .tp_doc = "The fields of metrics.Bins, countable from C.",
    .tp_basicsize = sizeof(BinsObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Bins_dealloc,
    .tp_traverse = (traverseproc)Bins_traverse,
    .tp_clear = (inquiry)Bins_clear,
    .tp_members = Bins_members,
    .tp_getset = Bins_getset,
};

/* Count one successful call of `duration` ns in `table[info]`: 1 counted; 0 not here
   (no stats yet, or not countable from C: Python counts it); -1 an error. As in
   Aggregates.finished, a collection takes the counts whole: nothing here allocates
   or calls out between reading the Counts in place and the last store, so no other
   thread (and no finaliser) runs in between. */
static int
count_call(PyObject *table, PyObject *info, long long duration)
{
    PyObject *found = PyDict_GetItemWithError(table, info);  /* borrowed */
    if (found == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyObject_TypeCheck(found, &Bins_Type))
        return 0;
    BinsObject *bins = (BinsObject *)found;
    PyObject *counts = bins->counts;
    Py_ssize_t low = 0, high = bins->n_thresholds;
    if (high < 0 || counts == NULL || !Py_IS_TYPE(counts, &Counts_Type) ||
        Py_SIZE(counts) != high + 1)
        return 0;
    while (low < high) {  /* bisect_left(thresholds, duration) */
        Py_ssize_t mid = (low + high) / 2;
        if (bins->threshold_ns[mid] < duration)
            low = mid + 1;
        else
            high = mid;
    }
    ((CountsObject *)counts)->items[low] += 1;
    bins->sum_ns += duration;
    if (duration < bins->low_ns)
        bins->low_ns = duration;
    if (duration > bins->high_ns)
        bins->high_ns = duration;
    bins->calls += 1;
    return 1;
}

/* -- Core -------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    char active, dormant, own_time, require_parent, pending, keep_errors, spans, timed,
        no_span_rules, capture_args;
    long long min_ns, max_depth;
    PyObject *tracer, *stats, *pending_cache;
    PyObject *counts;  /* Aggregates.by_info when the C finish may count calls, or None */
} CoreObject;

static PyTypeObject Core_Type;

static int
Core_traverse(CoreObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->tracer);
    Py_VISIT(self->stats);
    Py_VISIT(self->pending_cache);
    Py_VISIT(self->counts);
    return 0;
}

static int
Core_clear(CoreObject *self)
{
    Py_CLEAR(self->tracer);
    Py_CLEAR(self->stats);
    Py_CLEAR(self->pending_cache);
    Py_CLEAR(self->counts);
    return 0;
}

static void
Core_dealloc(CoreObject *self)
{
    PyObject_GC_UnTrack(self);
    Core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The Python method, for every call off the fast path. */
static PyObject *
call_python(PyObject *method, PyObject *self, PyObject *const *args, Py_ssize_t nargsf,
            PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *stack[8];
    if (total + 1 > 8) {
        PyErr_SetString(PyExc_TypeError, "too many arguments");
        return NULL;
    }
    stack[0] = self;
    for (Py_ssize_t i = 0; i < total; i++)
        stack[i + 1] = args[i];
    return PyObject_Vectorcall(method, stack, nargs + 1, kwnames);
}

/* ---- The current-call store: one Chain per context, not a ContextVar set per call ----

   recorder._current holds, in each context, a Chain whose `call` is the innermost
   traced call running there. A call's start and end write that field; the ContextVar
   is set only when the context has no chain of its own that is safe to write.

   What must hold is the ContextVar's meaning: a context copied while a call runs
   (an asyncio task created in it, copy_context().run in a thread) keeps seeing that
   call, whatever the original context does next. A copy shares the original's map of
   variables (CPython copies no map until one of them sets a variable), so:
   - a chain is written in place only when its owner is the current context, the map
     is the one seen when the chain was last synced, and nobody else holds that map
     (its reference count is the context's and the chain's: no copy was made since);
   - otherwise the chain is frozen (copies keep it as it is) and the context gets a new
     chain, set once through the ContextVar.
   The map is held by the chain (a strong reference, so its address cannot be reused);
   sets of other variables by the core itself (the OpenTelemetry context of a pending
   call) keep the chain in sync when nothing copied the map meanwhile.

   The field read is `ctx_vars` of CPython's PyContext, whose layout is the same from
   3.10 to 3.15 and is checked when the module loads; if it ever differs, every write
   sets the ContextVar (`chains_ok` 0), as the pure core does. */

typedef struct {
    PyObject_HEAD
    PyObject *ctx_prev;
    PyObject *ctx_vars;
} ContextLayout;  /* the head of CPython's struct _pycontextobject */

#define CONTEXT_VARS(ctx) (((ContextLayout *)(ctx))->ctx_vars)

static int chains_ok;

typedef struct {
    PyObject_HEAD
    PyObject *call;   /* the innermost traced call of its context (or None) */
    void *owner;      /* the context it is written in; NULL: frozen (compared only) */
    PyObject *vars;   /* the owner's map when last synced, or NULL */
    PyObject *otel;   /* borrowed: OpenTelemetry's variable's value in `vars` (a map is
                         never changed: the same map, the same value), or NULL: not
                         read yet. Reset wherever `vars` changes. */
} ChainObject;

/* The chain last read from a context whose map it holds, borrowed: Chain_dealloc
   forgets it, so it keeps nothing alive (a context's values die when they did before)
   and is never read after its free. While a thread's context still has the map the
   chain holds (alive as long as the chain), recorder._current's value there is that
   chain: a map never changes, and chain->vars is always a map in which the variable
   holds the chain. chain_value then reads it with no ContextVar lookup (~60
   instructions a call). */
#ifndef Py_GIL_DISABLED
static ChainObject *last_chain;
#endif

/* Whether `ctx` has the map `chain` holds (either may be NULL: no): there the
   current-call variable holds the chain, and OpenTelemetry's holds chain->otel once
   read. What every shortcut past a ContextVar read checks first. */
static inline int
chain_holds_map(ChainObject *chain, PyObject *ctx)
{
    return chain != NULL && chain->vars != NULL && ctx != NULL &&
           CONTEXT_VARS(ctx) == chain->vars;
}

/* OpenTelemetry's variable's value where `ctx` is current, as `chain` read it
   (borrowed), or NULL: not known without a read (otel_value). */
static inline PyObject *
chain_otel(ChainObject *chain, PyObject *ctx)
{
    return chain_holds_map(chain, ctx) ? chain->otel : NULL;
}

static int
Chain_traverse(ChainObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->call);
    Py_VISIT(self->vars);
    return 0;
}

static int
Chain_clear(ChainObject *self)
{
    Py_CLEAR(self->call);
    self->otel = NULL;
    Py_CLEAR(self->vars);
    return 0;
}

static void
Chain_dealloc(ChainObject *self)
{
#ifndef Py_GIL_DISABLED
    if (last_chain == self)
        last_chain = NULL;
#endif
    PyObject_GC_UnTrack(self);
    Chain_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Chain_get_call(ChainObject *self, void *closure)
{
    return Py_NewRef(self->call);
}

static PyGetSetDef Chain_getset[] = {
    {"call", (getter)Chain_get_call, NULL, "The innermost traced call of its context.",
     NULL},
    {NULL}
};

static PyTypeObject Chain_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "autotrace.record._core.Chain",
    .tp_basicsize = sizeof(ChainObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The innermost traced call of one context (see _core.c).",
    .tp_traverse = (traverseproc)Chain_traverse,
    .tp_clear = (inquiry)Chain_clear,
    .tp_dealloc = (destructor)Chain_dealloc,
    .tp_getset = Chain_getset,
};

/* Forget the cached chain (the variable it was read from is replaced). */
static void
forget_last_chain(void)
{
#ifndef Py_GIL_DISABLED
    last_chain = NULL;
#endif
}

/* This context's value of recorder._current (new reference), and the context. `ts`:
   this thread's state (a callback reads it once and hands it down). */
static PyObject *
chain_value(PyThreadState *ts, PyObject **ctx)
{
    PyObject *value = NULL;
#ifndef Py_GIL_DISABLED
    if (chain_holds_map(last_chain, ts->context)) {
        *ctx = ts->context;
        return Py_NewRef(last_chain);
    }
#endif
    if (PyContextVar_Get(current_var, Py_None, &value) < 0)
        return NULL;
    *ctx = ts->context;  /* made by the read if it was not yet */
#ifndef Py_GIL_DISABLED
    if (Py_IS_TYPE(value, &Chain_Type) && chain_holds_map((ChainObject *)value, *ctx))
        last_chain = (ChainObject *)value;  /* borrowed (above) */
#endif
    return value;
}

static int
chain_in_sync(ChainObject *chain, PyObject *ctx)
{
    return chain->owner == (void *)ctx && chain_holds_map(chain, ctx) &&
           Py_REFCNT(chain->vars) == 2;
}

/* The innermost traced call here (new reference): None, a Call; and in `*chain` (if
   not NULL) this context's Chain (new reference), or NULL. */
static PyObject *
current_call_in(PyThreadState *ts, ChainObject **chain)
{
    PyObject *ctx;
    PyObject *value = chain_value(ts, &ctx);
    if (chain != NULL)
        *chain = NULL;
    if (value == NULL || !Py_IS_TYPE(value, &Chain_Type))
        return value;
    PyObject *call = Py_NewRef(((ChainObject *)value)->call);
    if (chain != NULL)
        *chain = (ChainObject *)value;
    else
        Py_DECREF(value);
    return call;
}

static PyObject *
current_call(void)
{
    return current_call_in(PyThreadState_Get(), NULL);
}

/* Write `call` in `chain`, which is in sync with this context; `*written` (if not
   NULL): the chain (new reference). */
static void
chain_write(ChainObject *chain, PyObject *call, PyObject **written)
{
    PyObject *old = chain->call;
    chain->call = Py_NewRef(call);
    if (written != NULL)
        *written = Py_NewRef(chain);
    Py_DECREF(old);  /* may run a finaliser: the chain is already written */
}

/* Make `call` the innermost traced call here. `hint`: a chain this context was seen
   with (borrowed, or NULL); while it is still this context's and in sync, it is written
   with no read of the ContextVar (~100 instructions): the map it holds is the
   context's own, and that map holds it. `*written` (if not NULL): the chain that holds
   `call` now and may serve as the next hint (new reference), or NULL. */
static int
set_current_call_at(PyThreadState *ts, PyObject *call, ChainObject *hint,
                    PyObject **written)
{
    PyObject *ctx;
    if (written != NULL)
        *written = NULL;
    if (hint != NULL && chain_in_sync(hint, ts->context)) {
        chain_write(hint, call, written);
        return 0;
    }
    if (current_var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the current-call store is not set up");
        return -1;
    }
    if (!chains_ok) {
        PyObject *token = PyContextVar_Set(current_var, call);
        Py_XDECREF(token);
        return token == NULL ? -1 : 0;
    }
    PyObject *value = chain_value(ts, &ctx);
    if (value == NULL)
        return -1;
    if (Py_IS_TYPE(value, &Chain_Type)) {
        ChainObject *chain = (ChainObject *)value;
        if (chain_in_sync(chain, ctx)) {
            chain_write(chain, call, written);
            Py_DECREF(value);
            return 0;
        }
        if (chain->owner == (void *)ctx) {  /* copied, or the map moved on: freeze it */
            chain->owner = NULL;
            chain->otel = NULL;
            Py_CLEAR(chain->vars);
        }
    }
    Py_DECREF(value);
    ChainObject *chain = PyObject_GC_New(ChainObject, &Chain_Type);
    if (chain == NULL)
        return -1;
    chain->call = Py_NewRef(call);
    chain->owner = NULL;
    chain->vars = NULL;
    chain->otel = NULL;
    PyObject_GC_Track(chain);
    PyObject *token = PyContextVar_Set(current_var, (PyObject *)chain);
    if (token != NULL) {
        /* the map is taken before the token goes: freeing the token may free the old
           chain and run a finaliser, which may set variables (a map without this
           chain) */
        ctx = ts->context;
        if (ctx != NULL && Py_REFCNT(CONTEXT_VARS(ctx)) == 1) {
            chain->owner = (void *)ctx;
            chain->vars = Py_NewRef(CONTEXT_VARS(ctx));
            if (written != NULL)
                *written = Py_NewRef(chain);
        }
        Py_DECREF(token);
    }
    Py_DECREF(chain);
    return token == NULL ? -1 : 0;
}

static int
set_current_call(PyObject *call)
{
    return set_current_call_at(PyThreadState_Get(), call, NULL, NULL);
}

/* This context's chain if it is in sync (borrowed from the map), else NULL. */
static ChainObject *
synced_chain(PyThreadState *ts, PyObject **ctx)
{
    *ctx = NULL;
    if (!chains_ok || current_var == NULL)
        return NULL;
    PyObject *value = chain_value(ts, ctx);
    if (value == NULL) {
        PyErr_Clear();
        return NULL;
    }
    Py_DECREF(value);  /* the map holds it */
    if (!Py_IS_TYPE(value, &Chain_Type) || !chain_in_sync((ChainObject *)value, *ctx))
        return NULL;
    return (ChainObject *)value;
}

/* After the core's own set of another variable (OpenTelemetry's, to `otel`; NULL: a
   reset): the chain stays in sync if nothing copied the map meanwhile (a finaliser,
   during the set). */
static void
chain_resync(PyThreadState *ts, ChainObject *chain, PyObject *ctx, PyObject *otel)
{
    if (chain == NULL || ts->context != ctx)
        return;
    PyObject *old = chain->vars, *now = CONTEXT_VARS(ctx);
    if (old != NULL && Py_REFCNT(old) == 1 && Py_REFCNT(now) == 1 &&
        chain->owner == (void *)ctx) {  /* (NULL: frozen by a finaliser during the set) */
        chain->vars = Py_NewRef(now);
        chain->otel = otel;  /* the new map holds it */
        Py_DECREF(old);
    }
}

/* OpenTelemetry's variable's value where `ctx` is current (new reference; NULL with no
   error when there is no such variable), read from `chain` (borrowed, or NULL) while
   the context's map is the one the chain holds: a variable that was never set misses
   the ContextVar's own cache at every read and costs a map lookup (~100). */
static PyObject *
otel_value(PyThreadState *ts, ChainObject *chain, PyObject *ctx)
{
    PyObject *raw = NULL;
    if (otel_var == NULL)
        return NULL;
    PyObject *known = chain_otel(chain, ctx);
    if (known != NULL)
        return Py_NewRef(known);
    if (PyContextVar_Get(otel_var, NULL, &raw) < 0)
        return NULL;
    if (raw != NULL && ts->context == ctx && chain_holds_map(chain, ctx))
        chain->otel = raw;  /* borrowed: that map, or the variable (its default), holds it */
    return raw;
}

/* The innermost traced call here (new reference) and, in `*raw`, OpenTelemetry's
   context (new reference, or NULL: no such variable), with one read of each variable;
   in `*chain_out` (if not NULL) this context's Chain (new reference), or NULL. NULL
   with an error. */
static PyObject *
current_call_and_otel_in(PyThreadState *ts, PyObject **raw, ChainObject **chain_out)
{
    PyObject *ctx;
    *raw = NULL;
    if (chain_out != NULL)
        *chain_out = NULL;
    PyObject *value = chain_value(ts, &ctx);
    if (value == NULL)
        return NULL;
    ChainObject *chain = Py_IS_TYPE(value, &Chain_Type) ? (ChainObject *)value : NULL;
    *raw = otel_value(ts, chain, ctx);
    if (*raw == NULL && PyErr_Occurred()) {
        Py_DECREF(value);
        return NULL;
    }
    PyObject *call = Py_NewRef(chain != NULL ? chain->call : value);
    if (chain_out != NULL && chain != NULL)
        *chain_out = chain;  /* the reference chain_value gave */
    else
        Py_DECREF(value);
    return call;
}

static PyObject *
current_call_and_otel(PyObject **raw)
{
    return current_call_and_otel_in(PyThreadState_Get(), raw, NULL);
}

/* var.set(value) (token NULL: the new token) or var.reset(token) (None), keeping this
   context's chain in sync; a new reference, or NULL with an error. */
static PyObject *
var_synced(PyThreadState *ts, PyObject *var, PyObject *value, PyObject *token)
{
    PyObject *ctx, *result;
    ChainObject *chain = synced_chain(ts, &ctx);
    Py_XINCREF(chain);
    if (token == NULL)
        result = PyContextVar_Set(var, value);
    else
        result = PyContextVar_Reset(var, token) < 0 ? NULL : Py_NewRef(Py_None);
    if (result != NULL)
        chain_resync(ts, chain, ctx, var == otel_var && token == NULL ? value : NULL);
    Py_XDECREF(chain);
    return result;
}

static PyObject *
set_var_synced(PyThreadState *ts, PyObject *var, PyObject *value)
{
    return var_synced(ts, var, value, NULL);
}

static int
reset_var_synced(PyThreadState *ts, PyObject *var, PyObject *token)
{
    PyObject *done = var_synced(ts, var, NULL, token);
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

/* Whether this interpreter's contexts have the layout read above: a new context's
   map is a "hamt". */
static int
check_context_layout(void)
{
    PyObject *ctx = PyContext_New();
    if (ctx == NULL)
        return -1;
    PyObject *vars = CONTEXT_VARS(ctx);
    int ok = vars != NULL && strcmp(Py_TYPE(vars)->tp_name, "hamt") == 0 &&
             Py_REFCNT(vars) >= 1;
    Py_DECREF(ctx);
    return ok;
}

/* The OpenTelemetry context current here (new reference), or NULL with no error
 * when the runtime context is not the ContextVar one. */
static PyObject *
otel_context(void)
{
    PyObject *ctx = NULL;
    if (otel_var == NULL)
        return NULL;
    if (PyContextVar_Get(otel_var, NULL, &ctx) < 0)
        return NULL;
    return ctx;
}

/* ---- Shown, not set: a pending call's context without a ContextVar set per call ----

   A pending call at the top of its chain must be current for OpenTelemetry: code it
   calls that asks for the current span (an instrumented library, a hand-made span)
   must find the call's PendingSpan, and make it real. Setting and resetting the
   OpenTelemetry ContextVar for that cost ~3,200 instructions a call, half of a dropped
   call. Instead, the call records the variable's value as it starts (`lazy_base`) and
   the context its body runs in (`run_ctx`, with its PendingSpan current), and
   OpenTelemetry's `get_current()` is answered by `otel_current` (compiled.py installs
   it as the runtime context's method): the innermost traced call's `run_ctx` while
   the variable still holds that call's `lazy_base`, else the variable's value. So:
   - anything attached inside the call (a foreign span, baggage) is seen as set, and
     detached, the call's context shows again;
   - a context copied inside the call keeps seeing it, as it keeps the chain;
   - calls nested in it find its run_ctx current, as if it had been set, and inherit
     its `lazy_base`.
   - a generator or coroutine resumed where the variable still holds its lazy_base is
     shown again; resumed elsewhere, it sets its context for that step (lazy_base is
     never re-based: a context copied in an earlier step keeps seeing it). A step
     that left a context attached has it undone when it suspends;
   - the program attaching the very value a call is shown over (a context captured
     outside, attached again inside) turns that call into one that sets its context
     (`pin_shown`, from the runtime context's attach), so the program's context shows.
   Every call sets the variable, as before, when the runtime context is not this one
   (`shown_on`), and a call the Python methods start always does. */

/* The answer of shown_on while OpenTelemetry's namespace is unchanged (-1: ask the
   dict). A dict watcher (3.12+) forgets it at any change of that namespace: the lookup
   cost ~100-230 instructions at every top-level start and every resumption. Without a
   watcher (3.10, 3.11, or none left: an interpreter has 8) the dict is asked each time. */
static int shown_known = -1;
static int shown_watcher = -1;

#if PY_VERSION_HEX >= 0x030C0000
static int
shown_forget(PyDict_WatchEvent event, PyObject *dict, PyObject *key, PyObject *new_value)
{
    shown_known = -1;
    return 0;
}
#endif

/* Whether OpenTelemetry's get_current() is otel_current now (nobody replaced it). */
static int
shown_on(void)
{
    if (shown_known >= 0)
        return shown_known;
    if (shown_runtime == NULL || otel_globals == NULL)
        return 0;
    /* a str key: the lookup cannot fail, and an exception in flight is left alone */
    int on = PyDict_GetItemWithError(otel_globals, str_runtime_context) == shown_runtime;
    if (shown_watcher >= 0)
        shown_known = on;
    return on;
}

/* The context current for OpenTelemetry given the ContextVar's value `raw` and the
   innermost traced call `call` (borrowed in and out). */
static PyObject *
shown_context(PyObject *raw, PyObject *call)
{
    if (raw != NULL && IS_CALL(call) &&
        ((CallObject *)call)->lazy_base == raw)
        return ((CallObject *)call)->run_ctx;
    return raw;
}

/* Whether OpenTelemetry's ContextVar holds `value` now: 1 or 0; -1 with an error. With
   no such variable (another runtime context), 1: there is nothing to set or undo.
   `hint`: a chain this context was seen with (borrowed, or NULL): its copy of the
   variable is read while it holds this context's map (otel_value). */
static int
var_holds(PyThreadState *ts, PyObject *value, ChainObject *hint)
{
    if (otel_var == NULL)
        return 1;
    PyObject *raw = chain_otel(hint, ts->context);  /* no reference taken */
    if (raw != NULL)
        return raw == value;
    if (hint != NULL) {
        raw = otel_value(ts, hint, ts->context);
        if (raw == NULL && PyErr_Occurred())
            return -1;
    }
    else if (current_var != NULL) {
        PyObject *call = current_call_and_otel_in(ts, &raw, NULL);  /* the chain's copy */
        if (call == NULL)
            return -1;
        Py_DECREF(call);
    }
    else if (PyContextVar_Get(otel_var, NULL, &raw) < 0)
        return -1;
    Py_XDECREF(raw);  /* only compared */
    return raw == value;
}

/* A call whose body runs in `ctx` while the variable holds `raw`: shown, not set.
   `unshow`: it undoes what its body leaves attached (it would have reset a token). */
static void
show_context(CallObject *call, PyObject *raw, int unshow)
{
    Py_INCREF(raw);
    Py_XSETREF(call->lazy_base, raw);
    call->unshow = (char)unshow;
}

/* The call that showed its context ends: a context its body attached and left
   attached is undone, as the reset of a token set at its start would (and as
   OpenTelemetry's start_as_current_span does), so that no stale PendingSpan outlives
   the chain it stands for. 0, or -1 with an error. */
static int
unshow_context(PyThreadState *ts, CallObject *call, ChainObject *hint)
{
    int holds = var_holds(ts, call->lazy_base, hint);
    if (holds != 0)
        return holds < 0 ? -1 : 0;
    PyObject *token = set_var_synced(ts, otel_var, call->lazy_base);
    Py_XDECREF(token);
    return token == NULL ? -1 : 0;
}

#define SLOW ((PyObject *)1)

/* Formatter.frame_values, compiled: the values of `info`'s parameters in `frame` (a
   generator's, as it starts), `missing_value` for an unbound one, in `*values` (a new
   list). PyFrame_GetVar reads the frame's own slots: no f_locals snapshot is made
   (3.12: a dict of every local), and no Python frame runs (~5,000 instructions a
   generator's call). 1: read; 0: not here (Python reads them); -1: an error. */
static int
frame_values(PyObject *info, PyObject *frame, PyObject **values)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (missing_value == NULL || !PyFrame_Check(frame) || PyErr_Occurred())
        return 0;
    PyObject *names = PyObject_GetAttr(info, str_param_names);
    if (names == NULL || !PyTuple_CheckExact(names)) {
        Py_XDECREF(names);
        PyErr_Clear();
        return 0;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    PyObject *list = PyList_New(n);
    if (list == NULL) {
        Py_DECREF(names);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *value = PyFrame_GetVar((PyFrameObject *)frame, PyTuple_GET_ITEM(names, i));
        if (value == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_NameError)) {
                Py_DECREF(list);
                Py_DECREF(names);
                return -1;
            }
            PyErr_Clear();  /* unbound (f_locals would not hold it) */
            value = Py_NewRef(missing_value);
        }
        PyList_SET_ITEM(list, i, value);
    }
    Py_DECREF(names);
    *values = list;
    return 1;
#else
    return 0;  /* no sys.monitoring: no compiled caller either */
#endif
}

/* The frame argument of a monitoring call whose frame object is not made at its start
   (start_in_frame): core_start_fast marks the call `frame_later`, the Python start gets
   the frame object (made then). */
#define FRAME_LATER Py_Ellipsis

/* A generator's call under a PendingSpan that is current already attaches that context
   anyway (recorder.py: "generators re-attach it at each resume, maybe elsewhere"). */
static int
attach_run_context(PyThreadState *ts, CallObject *call)
{
    PyObject *token = set_var_synced(ts, otel_var, call->run_ctx);
    if (token == NULL)
        return -1;
    Py_SETREF(call->token, token);
    return 0;
}

/* The fast path of Recorder.start: a call refused, a pending call started, or a call
 * only counted (spans off: Recorder._unrecorded); SLOW
 * when the Python method must decide (nothing has been changed then). `suspends`: a
 * generator's or coroutine's call. Its arguments are references until it is kept, as
 * for a plain call (wrapt), or read from its frame now (monitoring: its locals change
 * as it runs), by frame_values (in C; where it cannot, the Python `_frame_values`), as
 * Recorder._arguments_at_start does. */
static PyObject *
core_start_fast(CoreObject *self, PyThreadState *ts, PyObject *info, PyObject *instance,
                PyObject *args, PyObject *kwargs, PyObject *frame, int suspends)
{
    PyObject *raw = NULL, *ctx = NULL, *parent = NULL, *run_ctx = NULL;
    ChainObject *chain = NULL;  /* this context's, as read first: written at the end */
    CallObject *call = NULL;
    if (otel_var == NULL || current_var == NULL || call_type == NULL)
        return SLOW;
    if (self->require_parent) {
        raw = otel_context();
        if (raw == NULL || !PyDict_Check(raw))
            goto slow;
        PyObject *span = PyDict_GetItemWithError(raw, span_key);  /* borrowed */
        if (span == NULL && PyErr_Occurred())
            goto error;
        if (span == NULL || span == invalid_span) {
            /* no call shows a context over this one: each had a parent span in it */
            if (self->stats == NULL || self->stats == Py_None || !self->active || busy) {
                Py_DECREF(raw);
                Py_RETURN_NONE;
            }
            goto slow;
        }
        if ((PyObject *)Py_TYPE(span) != pending_span_type) {
            /* a real span: is its context valid? Python asks it, unless a pending call
               shows its own (a PendingSpan's) over it */
            parent = current_call_in(ts, NULL);
            if (parent == NULL)
                goto error;
            if (shown_context(raw, parent) == raw)
                goto slow;
        }
    }
    if (!self->active || busy || in_collection()) {
        Py_XDECREF(raw);
        Py_XDECREF(parent);
        Py_RETURN_NONE;
    }
    if (parent == NULL) {
        parent = raw == NULL ? current_call_and_otel_in(ts, &raw, &chain)
                             : current_call_in(ts, &chain);
        if (parent == NULL)
            goto error;
    }
    if (self->no_span_rules && !self->spans) {
        /* Recorder._unrecorded: spans off, the call is only counted (metrics); current,
         * for its children's depth, with nothing attached to the OpenTelemetry context */
        if (self->stats == NULL || self->stats == Py_None) {
            Py_XDECREF(raw);
            Py_XDECREF(chain);
            Py_DECREF(parent);
            Py_RETURN_NONE;
        }
        if (parent != Py_None && !IS_CALL(parent))
            goto slow;
        call = new_call((PyTypeObject *)call_type, info, parent,
                        parent == Py_None ? 1 : ((CallObject *)parent)->depth + 1,
                        Py_None, NULL, Py_None);
        if (call == NULL)
            goto error;
        call->start_ns = now_ns();
        if (set_current_call_at(ts, (PyObject *)call, chain, &call->chain) < 0)
            goto error;
        Py_XDECREF(raw);
        Py_XDECREF(chain);
        Py_DECREF(parent);
        return (PyObject *)call;
    }
    if (self->no_span_rules || !self->pending || self->tracer == NULL ||
        self->tracer == Py_None)
        goto slow;
    if (raw == NULL) {
        raw = otel_context();
        if (raw == NULL || !PyDict_Check(raw))
            goto slow;
    }
    ctx = Py_NewRef(shown_context(raw, parent));
    /* Not suppressed, with no lookup (~100 instructions): an empty context, or the
       context the parent's body runs in (its run_ctx: the context it started in, where
       the suppression was looked up, with its span added; or that context itself, when
       a PendingSpan was current already). */
    PyObject *suppressed = NULL;
    if (PyDict_GET_SIZE(ctx) != 0 &&
        !(IS_CALL(parent) && ctx == (((CallObject *)parent)->run_ctx != Py_None
                                     ? ((CallObject *)parent)->run_ctx
                                     : ((CallObject *)parent)->parent_ctx))) {
        suppressed = PyDict_GetItemWithError(ctx, suppress_key);  /* borrowed */
        if (suppressed == NULL && PyErr_Occurred())
            goto error;
    }
    if (suppressed != NULL) {
        int truth = PyObject_IsTrue(suppressed);
        if (truth < 0)
            goto error;
        if (truth) {
            Py_DECREF(raw);
            Py_DECREF(ctx);
            Py_XDECREF(chain);
            Py_DECREF(parent);
            Py_RETURN_NONE;
        }
    }
    long long depth = 1;
    if (parent != Py_None) {
        if (!IS_CALL(parent))
            goto slow;
        depth = ((CallObject *)parent)->depth + 1;
        if (depth > self->max_depth)
            goto slow;
    }
    if (frame == Py_None)
        call = new_call((PyTypeObject *)call_type, info, parent, depth, instance, args,
                        kwargs);
    else {
        call = new_call((PyTypeObject *)call_type, info, parent, depth, Py_None, NULL,
                        Py_None);
        if (call != NULL && self->capture_args) {
            if (suspends) {
                PyObject *values = NULL;
                int read = frame_values(info, frame, &values);
                if (read == 0)
                    values = PyObject_CallMethodObjArgs(
                        (PyObject *)self, str_frame_values, info, frame, NULL);
                if (values == NULL)
                    goto error;  /* nothing changed yet but this call */
                if (values == Py_None)
                    Py_DECREF(values);
                else
                    Py_XSETREF(call->values, values);
            }
            else if (frame == FRAME_LATER)
                call->frame_later = 1;  /* made when it ends, if kept (finish_call) */
            else {
                Py_INCREF(frame);
                Py_SETREF(call->frame, frame);  /* read when the call ends, if kept */
            }
        }
    }
    if (call == NULL)
        goto error;
    call->start_ns = now_ns();
    Py_INCREF(ctx);
    Py_SETREF(call->parent_ctx, ctx);
    if (parent != Py_None && ctx == ((CallObject *)parent)->run_ctx)
        run_ctx = Py_NewRef(Py_None);  /* the parent's PendingSpan is current already */
    else {
        PyObject *cache = self->pending_cache;
        if (cache != NULL && PyTuple_Check(cache) && PyTuple_GET_SIZE(cache) == 2 &&
            PyTuple_GET_ITEM(cache, 0) == ctx) {
            run_ctx = PyTuple_GET_ITEM(cache, 1);
            Py_INCREF(run_ctx);
        }
        else {
            run_ctx = PyObject_CallMethodOneArg((PyObject *)self, str_pending_context, ctx);
            if (run_ctx == NULL)
                goto error;
        }
    }
    if (run_ctx == Py_None) {  /* a PendingSpan is current: the body runs in ctx */
        call->under_pending = 1;
        Py_INCREF(ctx);
        Py_SETREF(call->run_ctx, ctx);
        if (suspends) {  /* shown at each resume, maybe elsewhere */
            if (shown_on())
                show_context(call, raw, 1);
            else if (attach_run_context(ts, call) < 0)
                goto error;
        }
        else if (ctx != raw)
            show_context(call, raw, 0);  /* shown by an enclosing call: shown here too */
    }
    else {
        Py_INCREF(run_ctx);
        Py_SETREF(call->run_ctx, run_ctx);
        if (shown_on())
            show_context(call, raw, 1);
        else {
            PyObject *token = set_var_synced(ts, otel_var, run_ctx);
            if (token == NULL)
                goto error;
            Py_SETREF(call->token, token);
        }
    }
    Py_CLEAR(run_ctx);
    if (set_current_call_at(ts, (PyObject *)call, chain, &call->chain) < 0)
        goto error;
    Py_DECREF(raw);
    Py_DECREF(ctx);
    Py_XDECREF(chain);
    Py_DECREF(parent);
    return (PyObject *)call;
slow:
    Py_XDECREF(raw);
    Py_XDECREF(ctx);
    Py_XDECREF(chain);
    Py_XDECREF(parent);
    return SLOW;
error:
    Py_XDECREF(raw);
    Py_XDECREF(ctx);
    Py_XDECREF(chain);
    Py_XDECREF(parent);
    Py_XDECREF(run_ctx);
    Py_XDECREF(call);
    return NULL;
}

/* start(info, instance, args, kwargs, frame=None, suspends=False) */
static PyObject *
Core_start(CoreObject *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL && nargs >= 4 && nargs <= 6 &&
        (nargs < 6 || args[5] == Py_False || args[5] == Py_True)) {
        PyObject *frame = nargs >= 5 ? args[4] : Py_None;
        PyObject *result = core_start_fast(self, PyThreadState_Get(), args[0], args[1],
                                           args[2], args[3], frame,
                                           nargs == 6 && args[5] == Py_True);
        if (result != SLOW)
            return result;
    }
    return call_python(py_start, (PyObject *)self, args, nargsf, kwnames);
}

/* Make the caller's context current again, as Recorder.finish does first: a finaliser
 * that runs meanwhile (any allocation) must find the caller current, not this call. */
static inline int
restore_context(PyThreadState *ts, CallObject *call)
{
    ChainObject *hint = (ChainObject *)call->chain;  /* taken: no cycle with it is left */
    call->chain = NULL;
    if (call->token != Py_None) {
        PyObject *token = call->token;
        Py_INCREF(Py_None);
        call->token = Py_None;
        if (reset_var_synced(ts, otel_var, token) < 0)
            report_failure("detach", NULL);  /* finished in another context */
        Py_DECREF(token);
    }
    else if (call->lazy_base != NULL && call->unshow && unshow_context(ts, call, hint) < 0)
        report_failure("detach", NULL);
    int done = set_current_call_at(ts, call->saved, hint, NULL);
    Py_XDECREF(hint);
    return done;
}

/* The fast path of Recorder.finish: a pending call that is dropped, or a call counted
 * with spans off. 1: done; 0: the
 * Python method decides, nothing changed; 2: the Python method decides, the context
 * restored already; -1: an error. */
static int
core_finish_fast(CoreObject *self, PyThreadState *ts, PyObject *call_obj, int outcome,
                 PyObject *value)
{
    if (!IS_CALL(call_obj) || outcome == ABANDONED ||
        in_collection() || otel_var == NULL)
        return 0;
    CallObject *call = (CallObject *)call_obj;
    if (restore_context(ts, call) < 0)
        return -1;
    long long end_ns = 0;
    if (self->timed) {  /* metrics: counted here when nothing else needs timing */
        if (self->counts == NULL || !PyDict_Check(self->counts) || call->counted ||
            call->depth == -1 || call->generation != generation ||
            (outcome == RAISED &&
             PyObject_TypeCheck(value, (PyTypeObject *)PyExc_Exception)))
            return 2;
        end_ns = now_ns();
        int counted = count_call(self->counts, call->info, end_ns - call->start_ns);
        if (counted < 0) {
            report_failure("aggregate", call->info);
            return 2;
        }
        if (counted == 0)
            return 2;
        call->counted = 1;
        if (!self->spans && call->span == Py_None)
            return 1;  /* spans off: counted is all there is to do (Recorder.finish) */
    }
    if (!self->pending || call->generation != generation ||
        call->span != Py_None || call->depth == -1)
        return 2;
    if (call->dict != NULL && PyDict_GET_SIZE(call->dict) != 0)
        return 2;  /* failures held, a kept child, ...: the Python method */
    if ((end_ns ? end_ns : now_ns()) - call->start_ns >= self->min_ns)
        return 2;
    if (outcome == RAISED && self->keep_errors &&
        PyObject_TypeCheck(value, (PyTypeObject *)PyExc_Exception))
        return 2;
    /* dropped: forget the arguments (no allocation from the decision to here) */
    call->closed = 1;
    PyObject *instance = call->instance, *args = call->args, *kwargs = call->kwargs,
             *frame = call->frame, *values = call->values;
    Py_INCREF(Py_None);
    Py_INCREF(Py_None);
    Py_INCREF(Py_None);
    Py_INCREF(Py_None);
    call->instance = call->args = call->kwargs = call->frame = Py_None;
    call->values = NULL;
    Py_XDECREF(instance);  /* may run a finaliser: the call is closed already */
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    Py_XDECREF(frame);
    Py_XDECREF(values);
    return 1;
}

static PyObject *
Core_finish(CoreObject *self, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL && nargs == 3 && PyLong_CheckExact(args[1])) {
        int done = core_finish_fast(self, PyThreadState_Get(), args[0],
                                    (int)PyLong_AsLong(args[1]), args[2]);
        if (done < 0)
            return NULL;
        if (done == 1)
            Py_RETURN_NONE;
        if (done == 2) {
            PyObject *stack[] = {(PyObject *)self, args[0], args[1], args[2], Py_True};
            return PyObject_Vectorcall(py_finish, stack, 5, NULL);
        }
    }
    return call_python(py_finish, (PyObject *)self, args, nargsf, kwnames);
}

/* From C (the wrapper, the callbacks): start, never raising an Exception. */
static PyObject *
start_call(CoreObject *self, PyThreadState *ts, PyObject *info, PyObject *instance,
           PyObject *args, PyObject *kwargs, PyObject *frame, int suspends, PyObject *what)
{
    PyObject *call = core_start_fast(self, ts, info, instance, args, kwargs, frame,
                                     suspends);
    if (call == SLOW) {
        if (frame == FRAME_LATER) {  /* the event's frame, still current */
            frame = (PyObject *)PyEval_GetFrame();
            if (frame == NULL)
                frame = Py_None;
        }
        PyObject *stack[] = {(PyObject *)self, info, instance, args, kwargs, frame,
                             suspends ? Py_True : Py_False};
        call = PyObject_Vectorcall(py_start, stack, 7, NULL);
    }
    if (call == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return NULL;  /* KeyboardInterrupt and friends go on, as in Python */
        report_failure("start", what);
        Py_RETURN_NONE;
    }
    return call;
}

/* From C: finish, keeping the exception in flight (the caller fetched it). */
static void
finish_call(CoreObject *self, PyThreadState *ts, PyObject *call, int outcome,
            PyObject *value)
{
    int done = core_finish_fast(self, ts, call, outcome, value);
    if ((done == 0 || done == 2) && outcome != ABANDONED && IS_CALL(call) &&
        ((CallObject *)call)->frame_later) {
        /* Python finishes it and may keep it: its arguments are read from its frame
           object, made now (PY_RETURN, PY_UNWIND: the call's frame is the current one) */
        CallObject *c = (CallObject *)call;
        PyObject *frame = (PyObject *)PyEval_GetFrame();
        c->frame_later = 0;
        if (frame != NULL && !c->closed)
            Py_SETREF(c->frame, Py_NewRef(frame));
    }
    if (done == 0 || done == 2) {
        PyObject *code = PyLong_FromLong(outcome);
        if (code != NULL) {
            PyObject *stack[] = {(PyObject *)self, call, code, value,
                                 done == 2 ? Py_True : Py_False};
            PyObject *res = PyObject_Vectorcall(py_finish, stack, 5, NULL);
            Py_DECREF(code);
            if (res != NULL) {
                Py_DECREF(res);
                return;
            }
        }
        done = -1;
    }
    if (done < 0)
        report_failure("finish", NULL);
}

/* Recorder.suspend and Recorder.resume, compiled: a generator's or coroutine's body
 * yields (the call stays open, no longer current) or runs again, maybe in another
 * context (current there). 1: done; 0: the Python method must do it (own time kept,
 * a call of the pure core, no OpenTelemetry ContextVar); -1: an error. */
static int
core_suspend_fast(CoreObject *self, PyObject *call_obj)
{
    if (!IS_CALL(call_obj) || self->own_time || otel_var == NULL)
        return 0;
    if (in_collection())
        return 1;  /* not made current at resume either (recorder.py, gh-148891) */
    return restore_context(PyThreadState_Get(), (CallObject *)call_obj) < 0 ? -1 : 1;
}

static int
core_resume_fast(CoreObject *self, PyObject *call_obj)
{
    if (!IS_CALL(call_obj) || self->own_time || otel_var == NULL)
        return 0;
    if (in_collection())
        return 1;  /* the collector resumes it to close it */
    CallObject *call = (CallObject *)call_obj;
    ChainObject *chain;
    PyThreadState *ts = PyThreadState_Get();
    PyObject *saved = current_call_in(ts, &chain);
    if (saved == NULL)
        return -1;
    Py_XSETREF(call->saved, saved);
    Py_CLEAR(call->chain);
    int failed = set_current_call_at(ts, call_obj, chain, &call->chain) < 0;
    Py_XDECREF(chain);
    if (failed)
        return -1;
    if (call->run_ctx != Py_None) {
        if (call->lazy_base != NULL && shown_on()) {
            int holds = var_holds(ts, call->lazy_base, (ChainObject *)call->chain);
            if (holds < 0)
                return -1;
            if (holds)
                return 1;  /* resumed where it started: shown again */
        }
        /* resumed elsewhere: set for this step. Its lazy_base stays: a context copied
           in an earlier step must keep seeing it */
        PyObject *token = set_var_synced(ts, otel_var, call->run_ctx);
        if (token == NULL)
            return -1;
        Py_XSETREF(call->token, token);
    }
    return 1;
}

/* suspend(call) / resume(call): the fast path, else the Python method. Never raises an
 * Exception: a failure is logged once and the body runs on (as the backends' callers
 * of the Python methods do). */
static PyObject *
step_call(CoreObject *self, PyObject *call, int resume)
{
    int done = resume ? core_resume_fast(self, call) : core_suspend_fast(self, call);
    if (done == 0) {
        PyObject *stack[] = {(PyObject *)self, call};
        PyObject *res = PyObject_Vectorcall(resume ? py_resume : py_suspend, stack, 2, NULL);
        Py_XDECREF(res);
        done = res == NULL ? -1 : 1;
    }
    if (done < 0) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return NULL;  /* KeyboardInterrupt and friends go on */
        report_failure(resume ? "resume" : "suspend", NULL);
    }
    Py_RETURN_NONE;
}

static PyObject *
Core_suspend(CoreObject *self, PyObject *call)
{
    return step_call(self, call, 0);
}

static PyObject *
Core_resume(CoreObject *self, PyObject *call)
{
    return step_call(self, call, 1);
}

static PyMethodDef Core_methods[] = {
    {"start", (PyCFunction)(void (*)(void))Core_start, METH_FASTCALL | METH_KEYWORDS,
     "A traced call starts (Recorder.start)."},
    {"finish", (PyCFunction)(void (*)(void))Core_finish, METH_FASTCALL | METH_KEYWORDS,
     "A traced call ended (Recorder.finish)."},
    {"suspend", (PyCFunction)Core_suspend, METH_O,
     "A traced generator or coroutine yielded (Recorder.suspend)."},
    {"resume", (PyCFunction)Core_resume, METH_O,
     "A traced generator or coroutine runs again (Recorder.resume)."},
    {NULL}
};

static PyMemberDef Core_members[] = {
    {"active", T_BOOL, offsetof(CoreObject, active), 0, NULL},
    {"dormant", T_BOOL, offsetof(CoreObject, dormant), 0, NULL},
    {"own_time", T_BOOL, offsetof(CoreObject, own_time), 0, NULL},
    {"require_parent", T_BOOL, offsetof(CoreObject, require_parent), 0, NULL},
    {"pending", T_BOOL, offsetof(CoreObject, pending), 0, NULL},
    {"keep_errors", T_BOOL, offsetof(CoreObject, keep_errors), 0, NULL},
    {"spans", T_BOOL, offsetof(CoreObject, spans), 0, NULL},
    {"timed", T_BOOL, offsetof(CoreObject, timed), 0, NULL},
    {"_no_span_rules", T_BOOL, offsetof(CoreObject, no_span_rules), 0, NULL},
    {"capture_args", T_BOOL, offsetof(CoreObject, capture_args), 0, NULL},
    {"min_ns", T_LONGLONG, offsetof(CoreObject, min_ns), 0, NULL},
    {"max_depth", T_LONGLONG, offsetof(CoreObject, max_depth), 0, NULL},
    {"tracer", T_OBJECT, offsetof(CoreObject, tracer), 0, NULL},
    {"stats", T_OBJECT, offsetof(CoreObject, stats), 0, NULL},
    {"_pending_cache", T_OBJECT, offsetof(CoreObject, pending_cache), 0, NULL},
    {"_counts", T_OBJECT, offsetof(CoreObject, counts), 0, NULL},
    {NULL}
};

static PyTypeObject Core_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "autotrace.record._core.Core",
    .tp_doc = "The recorder's per-call path, compiled (see compiled.CompiledRecorder).",
    .tp_basicsize = sizeof(CoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_traverse = (traverseproc)Core_traverse,
    .tp_clear = (inquiry)Core_clear,
    .tp_methods = Core_methods,
    .tp_members = Core_members,
};

/* -- Local: the per-thread busy flag --------------------------------------------------- */

typedef struct {
    PyObject_HEAD
} LocalObject;

static PyObject *
Local_get_busy(PyObject *self, void *closure)
{
    return PyBool_FromLong(busy);
}

static int
Local_set_busy(PyObject *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "busy cannot be deleted");
        return -1;
    }
    int truth = PyObject_IsTrue(value);
    if (truth < 0)
        return -1;
    busy = truth;
    return 0;
}

static PyGetSetDef Local_getset[] = {
    {"busy", Local_get_busy, Local_set_busy, "autotrace is at work on this thread", NULL},
    {NULL}
};

static PyTypeObject Local_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "autotrace.record._core.Local",
    .tp_doc = "Per-thread flags of the recorder (as threading.local, read from C).",
    .tp_basicsize = sizeof(LocalObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_getset = Local_getset,
};

/* -- FunctionCall: the wrapt wrapper of a plain function ------------------------------- */

/* What FunctionCall keeps for the description: a def's (function, module, qualname,
   implicit first), so that no partial and its tuple are made per def as a module runs. */
#define FUNCTION_CALL_ARGS 4

typedef struct {
    PyObject_HEAD
    CoreObject *core;
    PyObject *info;      /* NULL until the first call describes the function */
    PyObject *describe;  /* describe(*args) makes info; both let go of once it has */
    PyObject *args[FUNCTION_CALL_ARGS];
    Py_ssize_t nargs;
    vectorcallfunc vectorcall;
} FunctionCallObject;

static int
FunctionCall_traverse(FunctionCallObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->core);
    Py_VISIT(self->info);
    Py_VISIT(self->describe);
    for (Py_ssize_t i = 0; i < self->nargs; i++)
        Py_VISIT(self->args[i]);
    return 0;
}

/* Let go of what describes the function (it is described, or the wrapper goes). */
static void
FunctionCall_clear_describe(FunctionCallObject *self)
{
    Py_CLEAR(self->describe);
    Py_ssize_t n = self->nargs;
    self->nargs = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        Py_CLEAR(self->args[i]);
}

static int
FunctionCall_clear(FunctionCallObject *self)
{
    Py_CLEAR(self->core);
    Py_CLEAR(self->info);
    FunctionCall_clear_describe(self);
    return 0;
}

static void
FunctionCall_dealloc(FunctionCallObject *self)
{
    PyObject_GC_UnTrack(self);
    FunctionCall_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Fetch the exception in flight as one normalised object (with its traceback). */
static PyObject *
fetch_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

static void
restore_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyObject *tb = PyException_GetTraceback(exc);
    PyErr_Restore((PyObject *)Py_TYPE(exc), exc, tb);
    Py_INCREF(Py_TYPE(exc));
#endif
}

/* wrapper(wrapped, instance, args, kwargs), called by wrapt's FunctionWrapper */
static PyObject *
FunctionCall_vectorcall(FunctionCallObject *self, PyObject *const *argv, size_t nargsf,
                        PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 4 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "wrapper(wrapped, instance, args, kwargs)");
        return NULL;
    }
    PyObject *wrapped = argv[0], *instance = argv[1], *args = argv[2], *kwargs = argv[3];
    if (instance == unbound)
        instance = Py_None;
    CoreObject *core = self->core;
    PyThreadState *ts = PyThreadState_Get();
    PyObject *call = NULL;
    if (!PyTuple_Check(args) || (kwargs != Py_None && !PyDict_Check(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "wrapper(wrapped, instance, args, kwargs)");
        return NULL;
    }
    if (!core->dormant) {  /* no provider yet: not even the lazy description */
        /* describe is NULL once info is made, or if the collector cleared this wrapper */
        if (self->info == NULL && self->describe != NULL) {
            PyObject *info = PyObject_Vectorcall(self->describe, self->args, self->nargs,
                                                 NULL);
            if (info == NULL) {  /* untraced this time; described again at the next call */
                if (!PyErr_ExceptionMatches(PyExc_Exception))
                    return NULL;
                report_failure("start", wrapped);
            }
            else {
                self->info = info;
                FunctionCall_clear_describe(self);
            }
        }
        if (self->info != NULL) {
            call = start_call(core, ts, self->info, instance, args, kwargs, Py_None, 0,
                              wrapped);
            if (call == NULL)
                return NULL;
            if (call == Py_None)
                Py_CLEAR(call);
        }
    }
    PyObject *result = PyObject_Call(wrapped, args,
                                     (kwargs != Py_None && PyDict_GET_SIZE(kwargs)) ? kwargs
                                                                                   : NULL);
    if (call != NULL) {
        if (result == NULL) {
            PyObject *exc = fetch_exception();
            finish_call(core, ts, call, RAISED, exc ? exc : Py_None);
            restore_exception(exc);
        }
        else
            finish_call(core, ts, call, RETURNED, result);
        Py_DECREF(call);
    }
    return result;
}

/* A FunctionCall of `type` with `n` (<= FUNCTION_CALL_ARGS) description arguments. */
static PyObject *
function_call_make(PyTypeObject *type, CoreObject *core, PyObject *describe,
                   PyObject *const *args, Py_ssize_t n)
{
    FunctionCallObject *self = (FunctionCallObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->core = (CoreObject *)Py_NewRef(core);
    self->describe = Py_NewRef(describe);
    for (Py_ssize_t i = 0; i < n; i++)
        self->args[i] = Py_NewRef(args[i]);
    self->nargs = n;
    self->vectorcall = (vectorcallfunc)FunctionCall_vectorcall;
    return (PyObject *)self;
}

static PyObject *
FunctionCall_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_ssize_t n = PyTuple_GET_SIZE(args) - 2;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "FunctionCall() takes no keyword arguments");
        return NULL;
    }
    if (n < 0 || n > FUNCTION_CALL_ARGS) {
        PyErr_Format(PyExc_TypeError, "FunctionCall(core, describe, *args): at most %d args",
                     FUNCTION_CALL_ARGS);
        return NULL;
    }
    PyObject *core = PyTuple_GET_ITEM(args, 0);
    if (!PyObject_TypeCheck(core, &Core_Type)) {
        PyErr_SetString(PyExc_TypeError, "FunctionCall(core, ...): core must be a Core");
        return NULL;
    }
    return function_call_make(type, (CoreObject *)core, PyTuple_GET_ITEM(args, 1),
                              &PyTuple_GET_ITEM(args, 2), n);
}

static PyTypeObject FunctionCall_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "autotrace.record._core.FunctionCall",
    .tp_doc = "FunctionCall(core, describe, *args): the wrapt wrapper of a plain traced "
              "function; describe(*args) is called on its first call.",
    .tp_basicsize = sizeof(FunctionCallObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = FunctionCall_new,
    .tp_dealloc = (destructor)FunctionCall_dealloc,
    .tp_traverse = (traverseproc)FunctionCall_traverse,
    .tp_clear = (inquiry)FunctionCall_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(FunctionCallObject, vectorcall),
};

/* -- Definer: the decorator of a rewritten def (wrapt) --------------------------------- */

/* wrapt/main.py's `function` / `method` while a wrapt backend runs on this core: the
   common case of WraptBackend.wrap_defined in C, so that no Python frame runs per def
   as a traced module's body runs. A plain function (not a generator or coroutine, not
   a closure's `<locals>` def, not one that looks at the stack: stack.inspects_stack's
   rules) gets its proxy as wrappers.plain_proxy_maker's `make` makes it, appended to
   the backend's list of proxies made as modules ran. Anything else, and any failure,
   is handed to wrap_defined itself (the reference), which logs what it must. */
typedef struct {
    PyObject_HEAD
    PyObject *fallback;        /* backend.wrap_defined */
    CoreObject *core;          /* the recorder: its `active` and the wrappers' core */
    PyObject *describe;        /* recorder.describe_function */
    PyTypeObject *proxy_type;  /* wrappers.TracedPlainFunction */
    PyTypeObject *init_type;   /* the wrapt type whose __init__ takes the binding */
    PyObject *defined;         /* the backend's list of proxies made as modules ran */
    PyObject *name_of;         /* names.namespace_module_name */
    PyObject *stack_names;     /* stack.STACK_NAMES */
    PyObject *implicit_first;  /* Py_True in a class body */
    PyObject *last_globals;    /* the namespace of the last def and its module's name */
    PyObject *last_module;
    Py_ssize_t made;           /* proxies made here (the backend's `matched` adds them) */
    vectorcallfunc vectorcall;
} DefinerObject;

static PyObject *str_stack, *str_inspect, *str_stacklevel, *str_locals_marker;
static PyObject *str_staticmethod_binding;

/* stack.inspects_stack(code), for a code object: 1 yes, 0 no, -1 error. */
static int
looks_at_stack(DefinerObject *self, PyCodeObject *code)
{
    PyObject *names = code->co_names, *consts = code->co_consts;
    if (!PyTuple_Check(names) || !PyTuple_Check(consts))
        return 1;
    int stack = 0, inspect = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        int found = PySet_Contains(self->stack_names, name);
        if (found != 0)
            return found;
        if (PyUnicode_CheckExact(name)) {
            stack |= PyUnicode_Compare(name, str_stack) == 0;
            inspect |= PyUnicode_Compare(name, str_inspect) == 0;
        }
    }
    if (stack && inspect)
        return 1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(consts); i++) {
        PyObject *item = PyTuple_GET_ITEM(consts, i);
        if (!PyTuple_CheckExact(item))
            continue;
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(item); j++) {
            PyObject *inner = PyTuple_GET_ITEM(item, j);
            if (!PyUnicode_Check(inner))
                continue;
            if (!PyUnicode_CheckExact(inner))
                return 1;  /* a str subclass compares as it likes: the reference decides */
            if (PyUnicode_Compare(inner, str_stacklevel) == 0)
                return 1;
        }
    }
    return 0;
}

/* The proxy of `func`, or NULL with an exception set; `module` is its module's name. */
static PyObject *
Definer_make(DefinerObject *self, PyObject *func, PyObject *module, PyObject *qualname)
{
    PyObject *args[FUNCTION_CALL_ARGS] = {func, module, qualname, self->implicit_first};
    PyObject *wrapper = function_call_make(&FunctionCall_Type, self->core, self->describe,
                                           args, FUNCTION_CALL_ARGS);
    if (wrapper == NULL)
        return NULL;
    PyObject *proxy = self->proxy_type->tp_new(self->proxy_type, empty_tuple, NULL);
    PyObject *init = NULL;
    if (proxy == NULL
            || (init = PyTuple_Pack(5, func, unbound, wrapper, Py_None,
                                    str_staticmethod_binding)) == NULL
            || self->init_type->tp_init(proxy, init, NULL) < 0
            || PyList_Append(self->defined, proxy) < 0)
        Py_CLEAR(proxy);
    Py_XDECREF(init);
    Py_DECREF(wrapper);
    return proxy;
}

/* The reference: WraptBackend.wrap_defined(func, implicit_first). */
static PyObject *
Definer_fallback(DefinerObject *self, PyObject *func)
{
    PyObject *call[2] = {func, self->implicit_first};
    return PyObject_Vectorcall(self->fallback, call, 2, NULL);
}

static PyObject *
Definer_vectorcall(DefinerObject *self, PyObject *const *args, size_t nargsf,
                   PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "the tracing decorator takes one function");
        return NULL;
    }
    PyObject *func = args[0];
    if (!Py_IS_TYPE(func, &PyFunction_Type) || !self->core->active)
        return Py_NewRef(func);  /* as wrap_defined */
    PyFunctionObject *function = (PyFunctionObject *)func;
    PyObject *qualname = function->func_qualname, *globals = function->func_globals;
    PyCodeObject *code = (PyCodeObject *)function->func_code;
    if (!PyCode_Check(code)
            || (code->co_flags & (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR))
            || qualname == NULL || !PyUnicode_CheckExact(qualname) || globals == NULL)
        return Definer_fallback(self, func);
    /* owned: the name lookup below runs Python code, which could set __qualname__ */
    Py_INCREF(qualname);
    PyObject *module = NULL, *proxy = NULL;
    Py_ssize_t local = PyUnicode_Find(qualname, str_locals_marker, 0,
                                      PyUnicode_GET_LENGTH(qualname), 1);
    if (local == -2)
        goto failed;
    if (local >= 0)
        goto fallback;  /* a closure's def: a proxy per outer call, none kept */
    int stack = looks_at_stack(self, code);
    if (stack < 0)
        goto failed;
    if (stack)
        goto fallback;  /* runs unwrapped; wrap_defined says so in the debug log */
    if (globals == self->last_globals && self->last_module != NULL)
        module = Py_NewRef(self->last_module);
    else {
        module = PyObject_CallOneArg(self->name_of, globals);
        if (module == NULL)
            goto failed;
        if (!PyUnicode_CheckExact(module))
            goto fallback;
        PyObject *old_globals = self->last_globals, *old_module = self->last_module;
        self->last_globals = Py_NewRef(globals);  /* both fields first, then let go */
        self->last_module = Py_NewRef(module);
        Py_XDECREF(old_globals);
        Py_XDECREF(old_module);
    }
    proxy = Definer_make(self, func, module, qualname);
    if (proxy == NULL)
        goto failed;
    self->made++;
    Py_DECREF(module);
    Py_DECREF(qualname);
    return proxy;
failed:
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        Py_XDECREF(module);
        Py_DECREF(qualname);
        return NULL;  /* as wrap_defined: only an Exception is caught */
    }
    PyErr_Clear();  /* wrap_defined tries again, and logs a failure */
fallback:
    Py_XDECREF(module);
    Py_DECREF(qualname);
    return Definer_fallback(self, func);
}

static int
Definer_traverse(DefinerObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->fallback);
    Py_VISIT(self->core);
    Py_VISIT(self->describe);
    Py_VISIT(self->proxy_type);
    Py_VISIT(self->init_type);
    Py_VISIT(self->defined);
    Py_VISIT(self->name_of);
    Py_VISIT(self->stack_names);
    Py_VISIT(self->last_globals);
    Py_VISIT(self->last_module);
    return 0;
}

static int
Definer_clear(DefinerObject *self)
{
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->core);
    Py_CLEAR(self->describe);
    Py_CLEAR(self->proxy_type);
    Py_CLEAR(self->init_type);
    Py_CLEAR(self->defined);
    Py_CLEAR(self->name_of);
    Py_CLEAR(self->stack_names);
    Py_CLEAR(self->implicit_first);
    Py_CLEAR(self->last_globals);
    Py_CLEAR(self->last_module);
    return 0;
}

static void
Definer_dealloc(DefinerObject *self)
{
    PyObject_GC_UnTrack(self);
    Definer_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Definer_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *fallback, *core, *describe, *proxy_type, *init_type, *defined, *name_of;
    PyObject *stack_names;
    int implicit_first;
    if ((kwds != NULL && PyDict_GET_SIZE(kwds))
            || !PyArg_ParseTuple(args, "OO!OO!O!O!OO!p:Definer", &fallback, &Core_Type, &core,
                                 &describe, &PyType_Type, &proxy_type, &PyType_Type,
                                 &init_type, &PyList_Type, &defined, &name_of,
                                 &PyFrozenSet_Type, &stack_names, &implicit_first))
        return NULL;
    if (((PyTypeObject *)proxy_type)->tp_new == NULL
            || ((PyTypeObject *)init_type)->tp_init == NULL
            || !PyType_IsSubtype((PyTypeObject *)proxy_type, (PyTypeObject *)init_type)) {
        PyErr_SetString(PyExc_TypeError, "Definer: the proxy type must derive from the "
                        "initialiser's, and both make instances");
        return NULL;
    }
    DefinerObject *self = (DefinerObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->fallback = Py_NewRef(fallback);
    self->core = (CoreObject *)Py_NewRef(core);
    self->describe = Py_NewRef(describe);
    self->proxy_type = (PyTypeObject *)Py_NewRef(proxy_type);
    self->init_type = (PyTypeObject *)Py_NewRef(init_type);
    self->defined = Py_NewRef(defined);
    self->name_of = Py_NewRef(name_of);
    self->stack_names = Py_NewRef(stack_names);
    self->implicit_first = Py_NewRef(implicit_first ? Py_True : Py_False);
    self->vectorcall = (vectorcallfunc)Definer_vectorcall;
    return (PyObject *)self;
}

static PyMemberDef Definer_members[] = {
    {"made", T_PYSSIZET, offsetof(DefinerObject, made), READONLY,
     "Proxies made here, not through wrap_defined."},
    {NULL}
};

static PyTypeObject Definer_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "autotrace.record._core.Definer",
    .tp_doc = "Definer(wrap_defined, core, describe_function, proxy_type, init_type, "
              "defined, namespace_module_name, stack_names, implicit_first): the "
              "decorator of a rewritten def, WraptBackend.wrap_defined's common case.",
    .tp_basicsize = sizeof(DefinerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = Definer_new,
    .tp_dealloc = (destructor)Definer_dealloc,
    .tp_traverse = (traverseproc)Definer_traverse,
    .tp_clear = (inquiry)Definer_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(DefinerObject, vectorcall),
    .tp_members = Definer_members,
};

/* -- Running: the table of running traced frames ------------------------------------ */

/* id(frame) -> (call, code) for every traced call running or suspended, shared by the
   C callbacks and the backend's Python ones (which see a mapping with the few methods
   of a dict they use). An open-addressing table keyed by the frame's address: no int
   key, tuple or dict entry made and freed per call. A frame's entry goes at its
   return or unwind (or when a suspended frame is released), so an address is reused
   only after its entry went. Deleted slots are marked and reused; the table is
   rebuilt when marks and entries fill half of it. Every change to the table is made
   before a reference it held is released (a finaliser may run then, and start or end
   traced calls: the table may change under a caller that still holds a slot). */
#define RUNNING_GONE ((void *)1)

typedef struct {
    void *frame;  /* NULL: never used; RUNNING_GONE: deleted */
    PyObject *call, *code;
} RunningSlot;

typedef struct {
    PyObject_HEAD
    RunningSlot *table;
    Py_ssize_t size;    /* a power of two, or 0 */
    Py_ssize_t used;    /* entries */
    Py_ssize_t filled;  /* entries and deleted slots */
} RunningObject;

static PyTypeObject Running_Type;

/* The slot of `table` (`size`: a power of two, with empty slots) that holds `frame`,
   or else the first free one of its probe: a deleted one, or the empty one that ends
   it. Linear probing from its address, as known_slot. */
static RunningSlot *
running_slot(RunningSlot *table, Py_ssize_t size, void *frame)
{
    size_t mask = (size_t)size - 1;
    size_t i = (((size_t)frame) >> 4) & mask;
    RunningSlot *deleted = NULL;
    while (table[i].frame != NULL) {
        if (table[i].frame == frame)
            return &table[i];
        if (table[i].frame == RUNNING_GONE && deleted == NULL)
            deleted = &table[i];
        i = (i + 1) & mask;
    }
    return deleted != NULL ? deleted : &table[i];
}

static RunningSlot *
running_find(RunningObject *self, void *frame)
{
    if (self->size == 0)
        return NULL;
    RunningSlot *slot = running_slot(self->table, self->size, frame);
    return slot->frame == frame ? slot : NULL;
}

/* Rebuild the table at `size` entries (no reference changes): 0, or -1. */
static int
running_rebuild(RunningObject *self, Py_ssize_t size)
{
    RunningSlot *table = PyMem_Calloc((size_t)size, sizeof(RunningSlot));
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t j = 0; j < self->size; j++) {
        RunningSlot *old = &self->table[j];
        if (old->frame != NULL && old->frame != RUNNING_GONE)
            *running_slot(table, size, old->frame) = *old;
    }
    PyMem_Free(self->table);
    self->table = table;
    self->size = size;
    self->filled = self->used;
    return 0;
}

/* Enter (call, code) for `frame`, replacing an entry it had: 0, or -1 (nothing changed). */
static int
running_put(RunningObject *self, void *frame, PyObject *call, PyObject *code)
{
    if ((self->filled + 1) * 2 > self->size) {  /* room first: then one probe */
        Py_ssize_t size = self->size ? self->size : 64;
        while ((self->used + 1) * 4 > size)
            size *= 2;  /* at most a quarter full after a rebuild */
        if (running_rebuild(self, size) < 0)
            return -1;
    }
    RunningSlot *slot = running_slot(self->table, self->size, frame);
    if (slot->frame == frame) {
        PyObject *old_call = slot->call, *old_code = slot->code;
        slot->call = Py_NewRef(call);
        slot->code = Py_NewRef(code);
        Py_DECREF(old_call);
        Py_DECREF(old_code);
        return 0;
    }
    if (slot->frame == NULL)
        self->filled++;
    slot->frame = frame;
    slot->call = Py_NewRef(call);
    slot->code = Py_NewRef(code);
    self->used++;
    return 0;
}

/* Take `slot`'s entry out; its two references go to the caller. */
static void
running_take(RunningObject *self, RunningSlot *slot, PyObject **call, PyObject **code)
{
    *call = slot->call;
    *code = slot->code;
    slot->frame = RUNNING_GONE;
    slot->call = slot->code = NULL;
    self->used--;
}

/* The frame address of a Python key (an int from id()), in `*frame`: 1; 0: no frame
   has that address (the marks of an empty or a deleted slot), absent; -1: not an
   address (an exception). */
static int
running_key(PyObject *key, void **frame)
{
    *frame = PyLong_AsVoidPtr(key);
    if (*frame == NULL && PyErr_Occurred())
        return -1;
    return *frame != NULL && *frame != RUNNING_GONE;
}

/* The slot of a Python key in `*slot` (NULL: absent): 0, or -1 with an exception. */
static int
running_lookup(RunningObject *self, PyObject *key, RunningSlot **slot)
{
    void *frame;
    int valid = running_key(key, &frame);
    *slot = valid == 1 ? running_find(self, frame) : NULL;
    return valid < 0 ? -1 : 0;
}

/* A (call, code) tuple that takes over both references (released if it cannot be made).
   The caller holds them before the tuple is made: making it may run a finaliser that
   takes a slot's entry out and releases what the slot held. */
static PyObject *
running_pair(PyObject *call, PyObject *code)
{
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) {
        Py_DECREF(call);
        Py_DECREF(code);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, call);
    PyTuple_SET_ITEM(pair, 1, code);
    return pair;
}

static PyObject *
Running_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if ((args != NULL && PyTuple_GET_SIZE(args) != 0) ||
        (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Running() takes no arguments");
        return NULL;
    }
    return type->tp_alloc(type, 0);
}

static int
Running_traverse(RunningObject *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < self->size; i++) {
        Py_VISIT(self->table[i].call);
        Py_VISIT(self->table[i].code);
    }
    return 0;
}

static int
Running_clear(RunningObject *self)
{
    RunningSlot *table = self->table;
    Py_ssize_t size = self->size;
    self->table = NULL;  /* emptied before any reference goes (a finaliser may run) */
    self->size = self->used = self->filled = 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        Py_XDECREF(table[i].call);
        Py_XDECREF(table[i].code);
    }
    PyMem_Free(table);
    return 0;
}

static void
Running_dealloc(RunningObject *self)
{
    PyObject_GC_UnTrack(self);
    Running_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t
Running_length(RunningObject *self)
{
    return self->used;
}

static PyObject *
Running_subscript(RunningObject *self, PyObject *key)
{
    RunningSlot *slot;
    if (running_lookup(self, key, &slot) < 0)
        return NULL;
    if (slot == NULL) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return running_pair(Py_NewRef(slot->call), Py_NewRef(slot->code));
}

/* self[key] = (call, code); del self[key] */
static int
Running_ass_subscript(RunningObject *self, PyObject *key, PyObject *value)
{
    void *frame;
    int valid = running_key(key, &frame);
    if (valid < 0)
        return -1;
    if (value == NULL) {
        RunningSlot *slot = valid ? running_find(self, frame) : NULL;
        if (slot == NULL) {
            PyErr_SetObject(PyExc_KeyError, key);
            return -1;
        }
        PyObject *call, *code;
        running_take(self, slot, &call, &code);
        Py_DECREF(call);
        Py_DECREF(code);
        return 0;
    }
    if (!PyTuple_Check(value) || PyTuple_GET_SIZE(value) != 2) {
        PyErr_SetString(PyExc_TypeError, "a running entry is a (call, code) pair");
        return -1;
    }
    if (!valid) {
        PyErr_SetObject(PyExc_KeyError, key);  /* no frame has this address */
        return -1;
    }
    return running_put(self, frame, PyTuple_GET_ITEM(value, 0), PyTuple_GET_ITEM(value, 1));
}

static int
Running_contains(RunningObject *self, PyObject *key)
{
    RunningSlot *slot;
    if (running_lookup(self, key, &slot) < 0)
        return -1;
    return slot != NULL;
}

/* get(key, default=None) */
static PyObject *
Running_get(RunningObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(key, default=None)");
        return NULL;
    }
    RunningSlot *slot;
    if (running_lookup(self, args[0], &slot) < 0)
        return NULL;
    if (slot == NULL)
        return Py_NewRef(nargs == 2 ? args[1] : Py_None);
    return running_pair(Py_NewRef(slot->call), Py_NewRef(slot->code));
}

/* pop(key[, default]) */
static PyObject *
Running_pop(RunningObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "pop(key[, default])");
        return NULL;
    }
    RunningSlot *slot;
    if (running_lookup(self, args[0], &slot) < 0)
        return NULL;
    if (slot == NULL) {
        if (nargs == 2)
            return Py_NewRef(args[1]);
        PyErr_SetObject(PyExc_KeyError, args[0]);
        return NULL;
    }
    PyObject *call, *code;
    running_take(self, slot, &call, &code);
    return running_pair(call, code);
}

/* values(): a list of (call, code), copied out before any object is made (making one
   may run a finaliser that changes the table) */
static PyObject *
Running_values(RunningObject *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t n = self->used, k = 0;
    RunningSlot *copy = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(RunningSlot));
    if (copy == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < self->size && k < n; i++) {
        RunningSlot *slot = &self->table[i];
        if (slot->frame == NULL || slot->frame == RUNNING_GONE)
            continue;
        copy[k].call = Py_NewRef(slot->call);
        copy[k].code = Py_NewRef(slot->code);
        k++;
    }
    PyObject *list = PyList_New(k);
    for (Py_ssize_t i = 0; i < k; i++) {
        if (list != NULL) {
            PyObject *pair = running_pair(Py_NewRef(copy[i].call),
                                          Py_NewRef(copy[i].code));
            if (pair == NULL)
                Py_CLEAR(list);
            else
                PyList_SET_ITEM(list, i, pair);
        }
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        Py_DECREF(copy[i].call);
        Py_DECREF(copy[i].code);
    }
    PyMem_Free(copy);
    return list;
}

static PyObject *
Running_clear_method(RunningObject *self, PyObject *Py_UNUSED(ignored))
{
    Running_clear(self);
    Py_RETURN_NONE;
}

static PyMethodDef Running_methods[] = {
    {"get", (PyCFunction)(void (*)(void))Running_get, METH_FASTCALL,
     "get(key, default=None): the (call, code) of frame id `key`."},
    {"pop", (PyCFunction)(void (*)(void))Running_pop, METH_FASTCALL,
     "pop(key[, default]): take the (call, code) of frame id `key` out."},
    {"values", (PyCFunction)Running_values, METH_NOARGS, "A list of every (call, code)."},
    {"clear", (PyCFunction)Running_clear_method, METH_NOARGS, "Forget every entry."},
    {NULL}
};

static PyMappingMethods Running_as_mapping = {
    .mp_length = (lenfunc)Running_length,
    .mp_subscript = (binaryfunc)Running_subscript,
    .mp_ass_subscript = (objobjargproc)Running_ass_subscript,
};

static PySequenceMethods Running_as_sequence = {
    .sq_contains = (objobjproc)Running_contains,
};

static PyTypeObject Running_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "autotrace.record._core.Running",
    .tp_doc = "Running(): frame address -> (call, code) of each running traced frame.",
    .tp_basicsize = sizeof(RunningObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Running_new,
    .tp_dealloc = (destructor)Running_dealloc,
    .tp_traverse = (traverseproc)Running_traverse,
    .tp_clear = (inquiry)Running_clear,
    .tp_methods = Running_methods,
    .tp_as_mapping = &Running_as_mapping,
    .tp_as_sequence = &Running_as_sequence,
};

/* -- Monitor: the sys.monitoring callbacks ----------------------------------------- */

typedef struct {
    PyObject *code, *info;  /* strong references; code NULL: an empty slot */
    int suspends;
} KnownCode;

typedef struct {
    PyObject_HEAD
    CoreObject *core;
    PyObject *backend;  /* its _describe_first (first calls), _frame_released (sentinels) */
    PyObject *traced;   /* id(code) -> code: the selected code objects */
    RunningObject *calls;  /* id(frame) -> (call, code), shared with the backend */
    /* Described code objects, found by address (each held, so its address stays its
       own): an open-addressing table, no int key made and compared per call as in a
       dict keyed by id(code). Filled from `traced` once a code's info is known;
       entries are never removed (the Monitor goes with the installation). */
    KnownCode *known;
    Py_ssize_t known_size;  /* a power of two, or 0 */
    Py_ssize_t known_used;
} MonitorObject;

/* The slot of `table` (`size`: a power of two, at most half full) that holds `code`,
   or the empty one where it would go: linear probing from its address. */
static KnownCode *
known_slot(KnownCode *table, Py_ssize_t size, PyObject *code)
{
    size_t mask = (size_t)size - 1;
    size_t i = (((size_t)code) >> 4) & mask;
    while (table[i].code != NULL && table[i].code != code)
        i = (i + 1) & mask;
    return &table[i];
}

static KnownCode *
known_find(MonitorObject *self, PyObject *code)
{
    if (self->known_size == 0)
        return NULL;
    KnownCode *slot = known_slot(self->known, self->known_size, code);
    return slot->code == code ? slot : NULL;
}

/* Add a described code object: 0, or -1 with an exception (nothing changed). */
static int
known_add(MonitorObject *self, PyObject *code, PyObject *info, int suspends)
{
    if (known_find(self, code) != NULL)
        return 0;
    if ((self->known_used + 1) * 2 > self->known_size) {  /* at most half full */
        Py_ssize_t size = self->known_size ? self->known_size * 2 : 64;
        KnownCode *table = PyMem_Calloc((size_t)size, sizeof(KnownCode));
        if (table == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t j = 0; j < self->known_size; j++) {
            if (self->known[j].code != NULL)
                *known_slot(table, size, self->known[j].code) = self->known[j];
        }
        PyMem_Free(self->known);
        self->known = table;
        self->known_size = size;
    }
    KnownCode *slot = known_slot(self->known, self->known_size, code);
    slot->code = Py_NewRef(code);
    slot->info = Py_NewRef(info);
    slot->suspends = suspends;
    self->known_used++;
    return 0;
}

static int
Monitor_traverse(MonitorObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->core);
    Py_VISIT(self->backend);
    Py_VISIT(self->traced);
    Py_VISIT(self->calls);
    for (Py_ssize_t i = 0; i < self->known_size; i++) {
        Py_VISIT(self->known[i].code);
        Py_VISIT(self->known[i].info);
    }
    return 0;
}

static int
Monitor_clear(MonitorObject *self)
{
    Py_CLEAR(self->core);
    Py_CLEAR(self->backend);
    Py_CLEAR(self->traced);
    Py_CLEAR(self->calls);
    KnownCode *known = self->known;
    Py_ssize_t size = self->known_size;
    self->known = NULL;  /* emptied before any reference goes (a finaliser may run) */
    self->known_size = self->known_used = 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        Py_XDECREF(known[i].code);
        Py_XDECREF(known[i].info);
    }
    PyMem_Free(known);
    return 0;
}

static void
Monitor_dealloc(MonitorObject *self)
{
    PyObject_GC_UnTrack(self);
    Monitor_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Monitor_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *core, *backend, *traced;
    if (!PyArg_ParseTuple(args, "O!OO!:Monitor", &Core_Type, &core, &backend,
                          &PyDict_Type, &traced))
        return NULL;
    RunningObject *calls = (RunningObject *)Running_Type.tp_alloc(&Running_Type, 0);
    if (calls == NULL)
        return NULL;
    MonitorObject *self = (MonitorObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(calls);
        return NULL;
    }
    Py_INCREF(core);
    self->core = (CoreObject *)core;
    Py_INCREF(backend);
    self->backend = backend;
    Py_INCREF(traced);
    self->traced = traced;
    self->calls = calls;
    return (PyObject *)self;
}

/* The interpreter frame running an event of `code`, as an address, or NULL when the
   frame running is another code's (a shim frame: events fired through the C API).
   Only compared and used as the running table's key: no frame object is made (that
   made and freed one per call, ~500 instructions). A generator's or coroutine's
   interpreter frame lives in its object, so its address is the same at every step. */
static void *
event_frame(PyThreadState *ts, PyObject *code)
{
#if PY_VERSION_HEX >= 0x030D0000
    struct _PyInterpreterFrame *frame = ts->current_frame;
#elif PY_VERSION_HEX >= 0x030C0000
    struct _PyInterpreterFrame *frame = ts->cframe->current_frame;
#else
    PyFrameObject *frame = PyEval_GetFrame();  /* no sys.monitoring before 3.12 */
#endif
    if (frame == NULL)
        return NULL;
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *frame_code = PyUnstable_InterpreterFrame_GetCode(frame);
#else
    PyObject *frame_code = (PyObject *)PyFrame_GetCode(frame);
#endif
    Py_XDECREF(frame_code);  /* only compared */
    return frame_code == code ? (void *)frame : NULL;
}

/* The frame object of the event's frame (borrowed; made if it was not yet), for what
   reads it: a generator's arguments and sentinel, the Python methods. */
static PyObject *
event_frame_object(void)
{
    return (PyObject *)PyEval_GetFrame();
}

/* A monitoring callback's own failure: logged once; KeyboardInterrupt and friends go
   on (NULL). */
static PyObject *
monitor_failed(const char *kind, PyObject *code)
{
    if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_Exception))
        return NULL;
    report_failure(kind, code);
    Py_RETURN_NONE;
}

/* -- FrameSentinel: backend._FrameSentinel, compiled ------------------------------- */

/* Lives in a suspending frame's f_trace; ends its span when the frame goes if no event
   did (3.13.0 sends none when a handler-less generator is closed, gh-140373, and no
   version sends events while a callback runs). Only then does Python run. */
typedef struct {
    PyObject_HEAD
    PyObject *backend;
    void *key;  /* its frame's key in `calls` (made a Python int only if Python needs it) */
    RunningObject *calls;
} SentinelObject;

static PyObject *
Sentinel_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    Py_RETURN_NONE;  /* only ever called if a legacy tracer starts later */
}

static void
Sentinel_dealloc(SentinelObject *self)
{
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    if (running_find(self->calls, self->key) != NULL) {  /* no event ended it */
        PyObject *key = PyLong_FromVoidPtr(self->key);
        PyObject *res = key == NULL ? NULL :
            PyObject_CallMethodOneArg(self->backend, str_frame_released, key);
        Py_XDECREF(res);
        Py_XDECREF(key);
    }
    PyErr_Clear();  /* _frame_released logs its own failures */
    PyErr_Restore(exc_type, exc_value, exc_tb);
    Py_DECREF(self->backend);
    Py_DECREF(self->calls);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject Sentinel_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "autotrace.record._core.FrameSentinel",
    .tp_doc = "In a suspending frame's f_trace: ends its span when the frame goes.",
    .tp_basicsize = sizeof(SentinelObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_call = Sentinel_call,
    .tp_dealloc = (destructor)Sentinel_dealloc,
};

/* Put a sentinel in a suspending frame's f_trace, unless a tracer uses it: 0, or -1. */
static int
watch_frame(MonitorObject *self, PyObject *frame, void *key)
{
    PyObject *f_trace = PyObject_GetAttr(frame, str_f_trace);
    if (f_trace == NULL)
        return -1;
    int failed = 0;
    if (f_trace == Py_None) {
#if PY_VERSION_HEX >= 0x030C0000
        /* what sys.gettrace() returns, without calling it (~250 instructions) */
        PyObject *tracer = Py_XNewRef(PyThreadState_Get()->c_traceobj);
        if (tracer == NULL)
            tracer = Py_NewRef(Py_None);
#else
        PyObject *tracer = PyObject_CallNoArgs(sys_gettrace);
#endif
        if (tracer == NULL)
            failed = 1;
        else if (tracer == Py_None) {
            SentinelObject *sentinel = PyObject_New(SentinelObject, &Sentinel_Type);
            if (sentinel == NULL)
                failed = 1;
            else {
                sentinel->backend = Py_NewRef(self->backend);
                sentinel->calls = (RunningObject *)Py_NewRef(self->calls);
                sentinel->key = key;
                failed = PyObject_SetAttr(frame, str_f_trace, (PyObject *)sentinel) < 0;
                Py_DECREF(sentinel);
            }
        }
        Py_XDECREF(tracer);
    }
    Py_DECREF(f_trace);
    return failed ? -1 : 0;
}

/* A described function's call starts: backend._on_start, compiled. A generator's or
   coroutine's (`suspends`) frame also gets a sentinel. None, or NULL: an error. */
static PyObject *
start_in_frame(MonitorObject *self, PyObject *code, PyObject *info, int suspends)
{
    PyThreadState *ts = PyThreadState_Get();
    void *key = event_frame(ts, code);
    if (key == NULL)  /* a shim frame (events fired by the C API) */
        Py_RETURN_NONE;
    PyObject *frame = FRAME_LATER;  /* a plain call's frame object: made if it is kept */
    if (suspends && (frame = event_frame_object()) == NULL)
        Py_RETURN_NONE;
    PyObject *call = start_call(self->core, ts, info, Py_None, empty_tuple, Py_None, frame,
                                suspends, code);
    if (call == NULL || call == Py_None)
        return call;
    int failed = running_put(self->calls, key, call, code) < 0;
    Py_DECREF(call);
    if (!failed && suspends) {
        failed = watch_frame(self, frame, key) < 0;
    }
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

/* on_start(code, offset): PY_START */
static PyObject *
Monitor_on_start(MonitorObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2)
        Py_RETURN_NONE;
    PyObject *code = args[0], *result = NULL;
    KnownCode *known = known_find(self, code);
    if (known != NULL) {
        PyObject *info = Py_NewRef(known->info);  /* the table may grow meanwhile */
        result = start_in_frame(self, code, info, known->suspends);
        Py_DECREF(info);
        if (result == NULL)
            goto failed;
        return result;
    }
    PyObject *key = PyLong_FromVoidPtr(code);
    if (key == NULL)
        goto failed;
    PyObject *entry = PyDict_GetItemWithError(self->traced, key);  /* borrowed */
    Py_DECREF(key);
    if (entry == NULL) {
        if (PyErr_Occurred())
            goto failed;
        Py_RETURN_NONE;
    }
    if (entry != code || !PyCode_Check(code))
        Py_RETURN_NONE;  /* another code object at a freed one's address */
    /* the first call: described by the backend (None: opted out after it was selected) */
    int suspends = (((PyCodeObject *)code)->co_flags
                    & (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR)) != 0;
    PyObject *described = PyObject_CallMethodOneArg(self->backend, str_describe_first, code);
    if (described == NULL)
        goto failed;
    if (described == Py_None)
        return described;
    if (known_add(self, code, described, suspends) == 0)
        result = start_in_frame(self, code, described, suspends);
    Py_DECREF(described);
    if (result == NULL)
        goto failed;
    return result;
failed:
    return monitor_failed("monitoring:start", code);
}

/* The call running in this event's frame (new reference), taken out of the table if
   `pop`; None if there is none or it is another code object's; NULL: an error. */
static PyObject *
frame_call(MonitorObject *self, PyThreadState *ts, PyObject *code, int pop)
{
    if (self->calls->used == 0)
        Py_RETURN_NONE;  /* no call running anywhere (refused, not traced): no frame */
    void *frame = event_frame(ts, code);
    if (frame == NULL)
        Py_RETURN_NONE;
    RunningSlot *slot = running_find(self->calls, frame);
    if (slot == NULL)
        Py_RETURN_NONE;
    if (!pop)
        return Py_NewRef(slot->code == code ? slot->call : Py_None);
    PyObject *call, *entry_code;
    running_take(self->calls, slot, &call, &entry_code);
    if (entry_code != code)
        Py_SETREF(call, Py_NewRef(Py_None));
    Py_DECREF(entry_code);  /* the table is consistent already: a finaliser may run */
    return call;
}

/* The call running in this event's frame ends (PY_RETURN, PY_UNWIND). */
static PyObject *
monitor_end(MonitorObject *self, PyObject *code, int outcome, PyObject *value)
{
    PyThreadState *ts = PyThreadState_Get();
    PyObject *call = frame_call(self, ts, code, 1);
    if (call == NULL)
        return monitor_failed(outcome == RAISED ? "monitoring:unwind" : "monitoring:return",
                              code);
    if (call != Py_None)
        finish_call(self->core, ts, call, outcome, value);
    Py_DECREF(call);
    Py_RETURN_NONE;
}

/* on_return(code, offset, retval): PY_RETURN */
static PyObject *
Monitor_on_return(MonitorObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3)
        Py_RETURN_NONE;
    return monitor_end(self, args[0], RETURNED, args[2]);
}

/* PY_YIELD / PY_RESUME of a traced generator or coroutine: backend._on_yield and
   _on_resume, compiled (the same table, the same rules). */
static PyObject *
monitor_step(MonitorObject *self, PyObject *code, int resume)
{
    const char *kind = resume ? "monitoring:resume" : "monitoring:yield";
    PyObject *call = frame_call(self, PyThreadState_Get(), code, 0);
    if (call == NULL)
        return monitor_failed(kind, code);
    PyObject *result = call == Py_None ? Py_NewRef(Py_None)
                                       : step_call(self->core, call, resume);
    Py_DECREF(call);
    return result;  /* None, or NULL: a KeyboardInterrupt and friends go on */
}

/* on_yield(code, offset, value): PY_YIELD */
static PyObject *
Monitor_on_yield(MonitorObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3)
        Py_RETURN_NONE;
    return monitor_step(self, args[0], 0);
}

/* on_resume(code, offset): PY_RESUME */
static PyObject *
Monitor_on_resume(MonitorObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2)
        Py_RETURN_NONE;
    return monitor_step(self, args[0], 1);
}

/* on_throw(code, offset, exc): PY_THROW, a global event before 3.15 (never DISABLE):
   a traced generator's or coroutine's frame runs again, as at PY_RESUME. */
static PyObject *
Monitor_on_throw(MonitorObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || known_find(self, args[0]) == NULL)
        Py_RETURN_NONE;  /* not described: none of it can be running */
    return monitor_step(self, args[0], 1);
}

/* on_unwind(code, offset, exc): PY_UNWIND, a global event before 3.15 (never DISABLE):
   a traced call ends by an exception. */
static PyObject *
Monitor_on_unwind(MonitorObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || known_find(self, args[0]) == NULL)
        Py_RETURN_NONE;  /* not described: none of it can be running */
    return monitor_end(self, args[0], RAISED, args[2]);
}

static PyMemberDef Monitor_members[] = {
    {"calls", T_OBJECT_EX, offsetof(MonitorObject, calls), READONLY,
     "frame address -> (call, code) of each running traced frame (the backend's "
     "_calls; keys are interpreter frames' addresses, not id(frame object))."},
    {NULL}
};

static PyMethodDef Monitor_methods[] = {
    {"on_start", (PyCFunction)(void (*)(void))Monitor_on_start, METH_FASTCALL,
     "PY_START of a traced code object."},
    {"on_return", (PyCFunction)(void (*)(void))Monitor_on_return, METH_FASTCALL,
     "PY_RETURN of a traced code object."},
    {"on_yield", (PyCFunction)(void (*)(void))Monitor_on_yield, METH_FASTCALL,
     "PY_YIELD of a traced generator or coroutine."},
    {"on_resume", (PyCFunction)(void (*)(void))Monitor_on_resume, METH_FASTCALL,
     "PY_RESUME of a traced generator or coroutine."},
    {"on_throw", (PyCFunction)(void (*)(void))Monitor_on_throw, METH_FASTCALL,
     "PY_THROW (global before 3.15)."},
    {"on_unwind", (PyCFunction)(void (*)(void))Monitor_on_unwind, METH_FASTCALL,
     "PY_UNWIND (global before 3.15)."},
    {NULL}
};

static PyTypeObject Monitor_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "autotrace.record._core.Monitor",
    .tp_doc = "Monitor(core, backend, traced): sys.monitoring callbacks.",
    .tp_basicsize = sizeof(MonitorObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Monitor_new,
    .tp_dealloc = (destructor)Monitor_dealloc,
    .tp_traverse = (traverseproc)Monitor_traverse,
    .tp_clear = (inquiry)Monitor_clear,
    .tp_methods = Monitor_methods,
    .tp_members = Monitor_members,
};

/* -- module ------------------------------------------------------------------------- */

static PyObject *
core_setup(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"current", "otel", "suppress_key", "span_key", "invalid_span",
                            "pending_span", "call_type", "start", "finish", "suspend",
                            "resume", "report", "missing", NULL};
    PyObject *o[12], *missing = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOOOOOOO|O:setup", names, &o[0], &o[1],
                                     &o[2], &o[3], &o[4], &o[5], &o[6], &o[7], &o[8], &o[9],
                                     &o[10], &o[11], &missing))
        return NULL;
    if (!PyType_Check(o[6]) || !PyType_IsSubtype((PyTypeObject *)o[6], &Call_Type)) {
        PyErr_SetString(PyExc_TypeError, "call_type must subclass _core.Call");
        return NULL;
    }
    if (o[6] != call_type)
        call_free_drain();  /* kept for the old type */
    PyObject **slots[] = {&current_var, &otel_var, &suppress_key, &span_key, &invalid_span,
                          &pending_span_type, &call_type, &py_start, &py_finish,
                          &py_suspend, &py_resume, &report};
    for (int i = 0; i < 12; i++) {
        PyObject *v = o[i] == Py_None && i == 1 ? NULL : o[i];  /* otel None: no fast path */
        Py_XINCREF(v);
        Py_XSETREF(*slots[i], v);
    }
    Py_XINCREF(missing);
    Py_XSETREF(missing_value, missing);  /* NULL: generators' arguments read in Python */
    forget_last_chain();  /* maybe read from another variable */
    Py_RETURN_NONE;
}

static PyObject *
core_set_generation(PyObject *module, PyObject *arg)
{
    long long value = PyLong_AsLongLong(arg);
    if (value == -1 && PyErr_Occurred())
        return NULL;
    generation = value;
    Py_RETURN_NONE;
}

static PyObject *
core_set_collecting(PyObject *module, PyObject *arg)
{
    unsigned long value = PyLong_AsUnsignedLong(arg);
    if (value == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    collecting = value;
    Py_RETURN_NONE;
}

/* How deep this thread's recursion counter is: on < 3.12 it counts C calls too (the
   wrapt proxy's, the C path's), which sys._getframe cannot see. -1 on 3.12+, where the
   limit counts Python frames only. */
static PyObject *
core_recursion_depth(PyObject *module, PyObject *unused)
{
#if PY_VERSION_HEX >= 0x030C0000
    /* Python frames only, as the limit counts them from 3.12 (and sys._getframe walks
       them): what the pure core finds by raising a ValueError at each drain */
    PyThreadState *tstate = PyThreadState_Get();
    return PyLong_FromLong((long)(tstate->py_recursion_limit - tstate->py_recursion_remaining));
#elif PY_VERSION_HEX >= 0x030B0000
    PyThreadState *tstate = PyThreadState_Get();
    return PyLong_FromLong((long)(tstate->recursion_limit - tstate->recursion_remaining));
#else
    return PyLong_FromLong((long)PyThreadState_Get()->recursion_depth);
#endif
}

/* frame_values(info, frame): Formatter.frame_values, compiled (frame_values above), or
   None where it cannot be read here (before 3.12, not a frame, no param_names). */
static PyObject *
core_frame_values(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *values = NULL;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "frame_values(info, frame)");
        return NULL;
    }
    int read = frame_values(args[0], args[1], &values);
    if (read < 0)
        return NULL;
    return read ? values : Py_NewRef(Py_None);
}

static PyObject *
core_set_collection_markers(PyObject *module, PyObject *args)
{
    PyObject *first, *last, *idle, *namespace;
    if (!PyArg_ParseTuple(args, "OOOO!", &first, &last, &idle, &PyDict_Type, &namespace))
        return NULL;
    Py_INCREF(first);
    Py_INCREF(last);
    Py_INCREF(idle);
    Py_INCREF(namespace);
    Py_XSETREF(gc_first, first);
    Py_XSETREF(gc_last, last);
    Py_XSETREF(gc_idle, idle);
    Py_XSETREF(gc_namespace, namespace);
    Py_RETURN_NONE;
}

/* gc.callbacks' first (< 3.12; recorder.py): at "start", the collecting thread is noted
   and then the first marker moved, in one C call. When the marker was a C method and
   the thread was noted by the Python callback after it, a thread switch at that
   callback's first bytecode let another thread run with the marker moved and a
   previous collection's thread noted: if that was its own, its calls went untraced. */
static PyObject *
core_gc_first(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "gc_first(phase, info)");
        return NULL;
    }
    if (gc_first == NULL)
        Py_RETURN_NONE;
    if (PyUnicode_Check(args[0]) && PyUnicode_Compare(args[0], str_start) == 0) {
        collecting = PyThread_get_thread_ident();
        if (gc_namespace != NULL) {
            PyObject *ident = PyLong_FromUnsignedLong(collecting);
            if (ident == NULL || PyDict_SetItem(gc_namespace, str_collecting, ident) < 0)
                PyErr_Clear();  /* the C field is noted; the marker must move anyway */
            Py_XDECREF(ident);
        }
    }
    return PyObject_CallMethodOneArg(gc_first, str_move_to_end, args[0]);
}

static PyObject *
core_current_call(PyObject *module, PyObject *unused)
{
    if (current_var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the current-call store is not set up");
        return NULL;
    }
    return current_call();
}

static PyObject *
core_set_current_call(PyObject *module, PyObject *call)
{
    if (set_current_call(call) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* wrappers.TracedFunction.__get__ / TracedPlainFunction.__get__ without a Python
   frame. Fetched from its class (instance None) the proxy of a function is itself;
   otherwise a plain function's proxy gives a bound method of itself, and wrapt binds
   the others (`wrapt_get`: wrapt.FunctionWrapper's own __get__). */
static PyObject *wrapt_get, *str_self_binding, *str_function;

static PyObject *
bind_proxy(PyObject *const *args, Py_ssize_t nargs, int plain)
{
    if (nargs < 2 || nargs > 3 || wrapt_get == NULL) {
        PyErr_SetString(PyExc_TypeError, "__get__(self, instance, owner=None)");
        return NULL;
    }
    PyObject *self = args[0], *instance = args[1];
    if (plain)  /* a bound method of the proxy, as a function binds */
        return instance == Py_None ? Py_NewRef(self) : PyMethod_New(self, instance);
    if (instance == Py_None) {
        PyObject *binding = PyObject_GetAttr(self, str_self_binding);
        if (binding == NULL)
            return NULL;
        int same = PyUnicode_Check(binding) &&
                   PyUnicode_Compare(binding, str_function) == 0;
        Py_DECREF(binding);
        if (same)
            return Py_NewRef(self);
    }
    return PyObject_Vectorcall(wrapt_get, args, nargs, NULL);
}

static PyObject *
core_get_method(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return bind_proxy(args, nargs, 0);
}

static PyObject *
core_get_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return bind_proxy(args, nargs, 1);
}

static PyObject *
core_use_wrapt_get(PyObject *module, PyObject *get)
{
    Py_XSETREF(wrapt_get, Py_NewRef(get));
    Py_RETURN_NONE;
}

static PyObject *
core_use_store(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyContextVar_CheckExact(args[0]) ||
        (args[1] != Py_None && !PyContextVar_CheckExact(args[1]))) {
        PyErr_SetString(PyExc_TypeError, "use_store(current, otel): ContextVars "
                        "(otel: or None)");
        return NULL;
    }
    Py_XSETREF(current_var, Py_NewRef(args[0]));
    forget_last_chain();  /* read from the old variable */
    if (args[1] != Py_None)  /* the same variable setup() gets (compiled.py) */
        Py_XSETREF(otel_var, Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

/* The OpenTelemetry context's var.set / var.reset for the Python paths, keeping this
   context's chain in sync (an eager span, a generator's resume: no new chain). */
static PyObject *
core_attach(PyObject *module, PyObject *value)
{
    if (otel_var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "no OpenTelemetry ContextVar");
        return NULL;
    }
    return set_var_synced(PyThreadState_Get(), otel_var, value);
}

static PyObject *
core_detach(PyObject *module, PyObject *token)
{
    if (otel_var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "no OpenTelemetry ContextVar");
        return NULL;
    }
    return var_synced(PyThreadState_Get(), otel_var, NULL, token);
}

/* OpenTelemetry's get_current(), for the runtime context compiled.py installs: the
   ContextVar's value, or the context a traced call shows over it ("Shown, not set"). */
static PyObject *
core_otel_current(PyObject *module, PyObject *unused)
{
    PyObject *raw = NULL;
    if (otel_var == NULL || current_var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "no OpenTelemetry ContextVar");
        return NULL;
    }
    PyObject *call = current_call_and_otel(&raw);
    if (call == NULL)
        return NULL;
    if (raw == NULL) {  /* as var.get() with no default */
        Py_DECREF(call);
        PyErr_SetObject(PyExc_LookupError, otel_var);
        return NULL;
    }
    PyObject *shown = Py_NewRef(shown_context(raw, call));
    Py_DECREF(call);
    Py_DECREF(raw);
    return shown;
}

/* pin_shown(context): OpenTelemetry's attach(context) is about to run. If `context` is
   the value under which the innermost call is shown (a context captured outside it and
   attached again inside), the variable would hold it and the call would still show
   over it, where the program attached its own context. The call turns into one that
   sets its context, as the pure core's does: set now (a token, reset when it ends or
   suspends) and no longer shown, so the program's attach and detach act as set. */
static PyObject *
core_pin_shown(PyObject *module, PyObject *context)
{
    if (otel_var == NULL || current_var == NULL)
        Py_RETURN_NONE;
    PyObject *call_obj = current_call();
    if (call_obj == NULL)
        return NULL;
    if (!IS_CALL(call_obj) || ((CallObject *)call_obj)->lazy_base != context ||
        ((CallObject *)call_obj)->token != Py_None) {
        Py_DECREF(call_obj);
        Py_RETURN_NONE;
    }
    CallObject *call = (CallObject *)call_obj;
    int holds = var_holds(PyThreadState_Get(), call->lazy_base, NULL);
    if (holds < 0) {
        Py_DECREF(call_obj);
        return NULL;
    }
    if (!holds || call->run_ctx == Py_None) {
        Py_DECREF(call_obj);
        Py_RETURN_NONE;
    }
    PyObject *token = set_var_synced(PyThreadState_Get(), otel_var, call->run_ctx);
    if (token == NULL) {
        Py_DECREF(call_obj);
        return NULL;
    }
    Py_SETREF(call->token, token);  /* reset when it ends or suspends, as a set call's */
    Py_CLEAR(call->lazy_base);  /* set from now on: the program's context shows as set */
    Py_DECREF(call_obj);
    Py_RETURN_NONE;
}

/* show_through(runtime, namespace): OpenTelemetry's get_current() is otel_current while
   namespace["_RUNTIME_CONTEXT"] is runtime. Once per process (compiled.py). */
static PyObject *
core_show_through(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "show_through(runtime, namespace)");
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030C0000
    if (shown_watcher >= 0 && otel_globals != NULL && otel_globals != args[1] &&
        PyDict_Unwatch(shown_watcher, otel_globals) < 0)
        PyErr_Clear();
    if (shown_watcher < 0 && (shown_watcher = PyDict_AddWatcher(shown_forget)) < 0)
        PyErr_Clear();  /* none left: shown_on asks the dict each time */
    if (shown_watcher >= 0 && PyDict_Watch(shown_watcher, args[1]) < 0) {
        PyErr_Clear();
        if (PyDict_ClearWatcher(shown_watcher) < 0)
            PyErr_Clear();
        shown_watcher = -1;
    }
#endif
    Py_XSETREF(shown_runtime, Py_NewRef(args[0]));
    Py_XSETREF(otel_globals, Py_NewRef(args[1]));
    shown_known = -1;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"otel_current", core_otel_current, METH_NOARGS,
     "OpenTelemetry's current context, with a pending call's shown (see _core.c)."},
    {"pin_shown", core_pin_shown, METH_O,
     "Before OpenTelemetry's attach(context): the shown call's context set if context "
     "is its base."},
    {"show_through", (PyCFunction)(void (*)(void))core_show_through, METH_FASTCALL,
     "The runtime context whose get_current is otel_current, and its module namespace."},
    {"get_method", (PyCFunction)(void (*)(void))core_get_method, METH_FASTCALL,
     "TracedFunction.__get__, compiled."},
    {"get_plain", (PyCFunction)(void (*)(void))core_get_plain, METH_FASTCALL,
     "TracedPlainFunction.__get__, compiled."},
    {"use_wrapt_get", core_use_wrapt_get, METH_O,
     "wrapt.FunctionWrapper.__get__, which the compiled __get__ hands binding to."},
    {"current_call", core_current_call, METH_NOARGS,
     "The innermost traced call here (recorder._current, through its chain)."},
    {"set_current_call", core_set_current_call, METH_O,
     "Make a call the innermost traced call here."},
    {"use_store", (PyCFunction)(void (*)(void))core_use_store, METH_FASTCALL,
     "The ContextVars of the chains (recorder._current) and of OpenTelemetry's context."},
    {"attach", core_attach, METH_O, "OpenTelemetry's var.set, the chain kept in sync."},
    {"detach", core_detach, METH_O, "OpenTelemetry's var.reset, the chain kept in sync."},
    {"make_call_type", core_make_call_type, METH_O,
     "The compiled core's call type: Call with a mixin's class defaults."},
    {"setup", (PyCFunction)(void (*)(void))core_setup, METH_VARARGS | METH_KEYWORDS,
     "Hand over the objects the fast path uses (compiled.py, once)."},
    {"set_generation", core_set_generation, METH_O, "The fork generation (after a fork)."},
    {"gc_first", (PyCFunction)(void (*)(void))core_gc_first, METH_FASTCALL,
     "gc.callbacks' first (< 3.12): the collecting thread noted, then the marker moved."},
    {"set_collecting", core_set_collecting, METH_O,
     "The thread ident running a garbage collection, or 0 (< 3.12)."},
    {"recursion_depth", core_recursion_depth, METH_NOARGS,
     "This thread's recursion depth as the limit counts it."},
    {"frame_values", (PyCFunction)(void (*)(void))core_frame_values, METH_FASTCALL,
     "A frame's values of info.param_names (Formatter.frame_values), or None."},
    {"set_collection_markers", core_set_collection_markers, METH_VARARGS,
     "The collector's phase markers and their idle state (< 3.12)."},
    {NULL}
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "autotrace.record._core",
    "The compiled per-call path of the recorder (see _core.c).", -1, module_methods,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    PyTypeObject *types[] = {&Call_Type, &Core_Type, &Local_Type, &FunctionCall_Type,
                             &Monitor_Type, &Chain_Type, &Bins_Type, &Counts_Type,
                             &Sentinel_Type, &Running_Type, &Definer_Type};
    const char *type_names[] = {"Call", "Core", "Local", "FunctionCall", "Monitor",
                                "Chain", "Bins", "Counts", "FrameSentinel", "Running",
                                "Definer"};
    PyObject *module = PyModule_Create(&core_module);
    if (module == NULL)
        return NULL;
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) goto fail;
    if ((empty_tuple = PyTuple_New(0)) == NULL)
        goto fail;
    INTERN(str_pending_context, "_pending_context")
    INTERN(str_param_names, "param_names")
    INTERN(str_runtime_context, "_RUNTIME_CONTEXT")
    INTERN(str_move_to_end, "move_to_end")
    INTERN(str_start, "start")
    INTERN(str_collecting, "_collecting")
    INTERN(str_describe_first, "_describe_first")
    INTERN(str_frame_values, "_frame_values")
    INTERN(str_f_trace, "f_trace")
    INTERN(str_frame_released, "_frame_released")
    INTERN(str_self_binding, "_self_binding")
    INTERN(str_function, "function")
    INTERN(str_stack, "stack")
    INTERN(str_inspect, "inspect")
    INTERN(str_stacklevel, "stacklevel")
    INTERN(str_locals_marker, "<locals>")
    INTERN(str_staticmethod_binding, "staticmethod")
#undef INTERN
    sys_gettrace = PySys_GetObject("gettrace");  /* borrowed */
    if (sys_gettrace == NULL) {
        PyErr_SetString(PyExc_ImportError, "no sys.gettrace");
        goto fail;
    }
    Py_INCREF(sys_gettrace);
    unbound = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    if (unbound == NULL || PyModule_AddObjectRef(module, "UNBOUND", unbound) < 0)
        goto fail;
    chains_ok = check_context_layout();
    if (chains_ok < 0)
        goto fail;
    if (PyModule_AddIntConstant(module, "CHAINS", chains_ok) < 0)
        goto fail;
    if (PyModule_AddIntConstant(module, "INTERFACE", INTERFACE) < 0)
        goto fail;
    if (autotrace_monitoring_add(module) < 0)
        goto fail;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyType_Ready(types[i]) < 0)
            goto fail;
        Py_INCREF(types[i]);
        if (PyModule_AddObject(module, type_names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            goto fail;
        }
    }
#ifdef Py_GIL_DISABLED
    PyUnstable_Module_SetGIL(module, Py_MOD_GIL_USED);
#endif
    return module;
fail:
    Py_DECREF(module);
    return NULL;
}
