/* The monitoring backend's registration of a module's plain functions, compiled: the twin
 * of `MonitoringBackend.instrument`'s loops (monitoring.py) for the case that is most of
 * every module, a function defined by a plain `def` at the top level.
 *
 * It runs once per def as a traced module is imported, where the Python loops cost about
 * 12,000 instructions a def (discovery, selection, the backend's checks, two dict stores
 * and sys.monitoring.set_local_events). It is built into the compiled core's extension
 * (`autotrace.record._core`, see setup.py) and used only where that core runs; the
 * Python loops stay the reference and handle everything this file hands back.
 *
 *   register_plain(namespace, real, module, traced, modules, opted_out, set_local_events,
 *                  tool, events) -> (rest, added, failed)
 *
 * The caller asks only for a module whose every name is selected (`Selector.whole`).
 * A namespace entry is registered here when all of these hold, which is exactly when the
 * Python loops would register its code alone and nothing else for it:
 *   - its value is exactly a function (`FunctionType`), its key an exact str that does not
 *     start with "__" (dunders are decided in Python, `names.untraced_dunder`);
 *   - it is the module's own: `__module__` is the exact str `real`, `__qualname__` is the
 *     key, and `co_filename` does not start with "<" (`discovery._is_generated`);
 *   - its `__dict__` is empty: no `__wrapped__` (a decorator's wrapper) and no
 *     `no_trace` mark;
 *   - its code is a plain function's: optimised, not a generator or coroutine (those also
 *     need suspend events), named without "<" (`_SKIPPED_NAMES`), and defines no code of
 *     its own (nested functions are selected one by one: `MonitoringBackend._select_tree`),
 *     and its id is not a key of `opted_out` (`optout.opted_out_code_ids`: the code of a
 *     function `no_trace` marked, which Python then checks by identity).
 * Such code is stored as `traced[id(code)] = code` and `modules[id(code)] = module`
 * unless it is there already, and, when `set_local_events` is not None (the recorder is
 * not dormant), gets `set_local_events(tool, code, events)`. Every other entry comes back
 * in `rest` as a `(key, value)` pair, in the namespace's order, for the Python loops;
 * `added` lists the codes newly stored (the caller counts them, and gives them events if
 * the recorder woke meanwhile), and `failed` those `set_local_events` refused (the caller
 * tries again and logs them, as `MonitoringBackend._watch`). An error (memory) after the
 * first store leaves the codes stored so far without events.
 *
 * No user code runs here: only exact types are read, through their C fields. The namespace
 * is copied first, so a finalizer run by an allocation cannot change it under the loop.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX >= 0x030C0000  /* sys.monitoring */

#define CO_SUSPENDS (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR)

static int
starts_with(PyObject *text, Py_UCS4 first, Py_UCS4 second)
{
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    if (length < 1 || PyUnicode_READ_CHAR(text, 0) != first)
        return 0;
    return second == 0 || (length >= 2 && PyUnicode_READ_CHAR(text, 1) == second);
}

/* The code of a plain leaf function the module defines at `key` (borrowed), or NULL:
   the rules of the header, in order of cost. Never sets an exception. */
static PyCodeObject *
plain_leaf_code(PyObject *key, PyObject *value, PyObject *real, PyObject *opted_out)
{
    if (!Py_IS_TYPE(value, &PyFunction_Type) || !PyUnicode_CheckExact(key)
            || starts_with(key, '_', '_'))
        return NULL;
    PyFunctionObject *func = (PyFunctionObject *)value;
    PyObject *owner = func->func_module;
    if (owner == NULL || !PyUnicode_CheckExact(owner)
            || (owner != real && PyUnicode_Compare(owner, real) != 0))
        return NULL;
    PyObject *qualname = func->func_qualname;
    if (qualname == NULL || !PyUnicode_CheckExact(qualname)
            || (qualname != key && PyUnicode_Compare(qualname, key) != 0))
        return NULL;
    if (func->func_dict != NULL && PyDict_GET_SIZE(func->func_dict) != 0)
        return NULL;
    if (!PyCode_Check(func->func_code))
        return NULL;
    PyCodeObject *code = (PyCodeObject *)func->func_code;
    if (!(code->co_flags & CO_OPTIMIZED) || (code->co_flags & CO_SUSPENDS))
        return NULL;
    if (!PyUnicode_Check(code->co_filename) || starts_with(code->co_filename, '<', 0)
            || !PyUnicode_Check(code->co_name) || starts_with(code->co_name, '<', 0))
        return NULL;
    PyObject *consts = code->co_consts;
    if (!PyTuple_Check(consts))
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(consts); i++) {
        if (PyCode_Check(PyTuple_GET_ITEM(consts, i)))
            return NULL;
    }
    if (PyDict_GET_SIZE(opted_out) != 0) {  /* some code is marked (most programs: none) */
        PyObject *id = PyLong_FromVoidPtr(code);
        int marked = id == NULL ? -1 : PyDict_Contains(opted_out, id);
        Py_XDECREF(id);
        if (marked != 0) {  /* marked, or no answer: Python decides */
            PyErr_Clear();
            return NULL;
        }
    }
    return code;
}

/* Store `code` in both tables unless it is there: 1 stored, 0 there already, -1 error. */
static int
store(PyObject *traced, PyObject *modules, PyObject *module, PyCodeObject *code)
{
    PyObject *key = PyLong_FromVoidPtr(code);
    if (key == NULL)
        return -1;
    PyObject *there = PyDict_GetItemWithError(traced, key);  /* borrowed */
    int result = 0;
    if (there == (PyObject *)code)
        result = 0;
    else if (there == NULL && PyErr_Occurred())
        result = -1;
    else if (PyDict_SetItem(traced, key, (PyObject *)code) < 0
             || PyDict_SetItem(modules, key, module) < 0)
        result = -1;
    else
        result = 1;
    Py_DECREF(key);
    return result;
}

static PyObject *
register_plain(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "register_plain takes 9 arguments");
        return NULL;
    }
    PyObject *namespace = args[0], *real = args[1], *module = args[2];
    PyObject *traced = args[3], *modules = args[4], *opted_out = args[5];
    PyObject *set_events = args[6];
    if (!PyDict_Check(namespace) || !PyUnicode_CheckExact(real)
            || !PyDict_CheckExact(traced) || !PyDict_CheckExact(modules)
            || !PyDict_CheckExact(opted_out)) {
        PyErr_SetString(PyExc_TypeError, "register_plain(dict, str, module, dict, dict, "
                        "dict, set_local_events or None, tool, events)");
        return NULL;
    }
    PyObject *copy = NULL, *rest = NULL, *leaves = NULL, *added = NULL, *failed = NULL;
    PyObject *result = NULL;
    PyObject *call[3] = {args[7], NULL, args[8]};
    Py_ssize_t count = 0;
    if ((copy = PyDict_Copy(namespace)) == NULL || (rest = PyList_New(0)) == NULL
            || (leaves = PyList_New(0)) == NULL || (added = PyList_New(0)) == NULL
            || (failed = PyList_New(0)) == NULL)
        goto done;
    /* 1. Sort the entries. This allocates objects the collector tracks (the pairs), so a
       collection, and any finalizer, may run here: nothing is stored yet. */
    Py_ssize_t position = 0;
    PyObject *key, *value;  /* borrowed from the copy, which this function owns */
    while (PyDict_Next(copy, &position, &key, &value)) {
        PyCodeObject *code = plain_leaf_code(key, value, real, opted_out);
        PyObject *pair = code != NULL ? NULL : PyTuple_Pack(2, key, value);
        if (code != NULL ? PyList_Append(leaves, (PyObject *)code) < 0
                : (pair == NULL || PyList_Append(rest, pair) < 0)) {
            Py_XDECREF(pair);
            goto done;
        }
        Py_XDECREF(pair);
    }
    /* 2. Store them. Ints, dict entries and list slots only: no collection, no Python
       code, so under the GIL no other thread sees half of it (the backend's lock guards
       the same stores in Python). */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(leaves); i++) {
        PyCodeObject *code = (PyCodeObject *)PyList_GET_ITEM(leaves, i);
        int stored = store(traced, modules, module, code);
        if (stored < 0 || (stored && PyList_Append(added, (PyObject *)code) < 0))
            goto done;
    }
    count = PyList_GET_SIZE(added);
    if (set_events != Py_None) {  /* 3. after every store, as MonitoringBackend._register */
        for (Py_ssize_t i = 0; i < count; i++) {
            call[1] = PyList_GET_ITEM(added, i);
            PyObject *none = PyObject_Vectorcall(set_events, call, 3, NULL);
            if (none != NULL) {
                Py_DECREF(none);
                continue;
            }
            PyErr_Clear();  /* the caller tries again and logs it, naming the function */
            if (PyList_Append(failed, call[1]) < 0)
                goto done;
        }
    }
    result = PyTuple_Pack(3, rest, added, failed);
done:
    Py_XDECREF(copy);
    Py_XDECREF(rest);
    Py_XDECREF(leaves);
    Py_XDECREF(added);
    Py_XDECREF(failed);
    return result;
}

static PyMethodDef monitoring_methods[] = {
    {"register_plain", (PyCFunction)(void (*)(void))register_plain, METH_FASTCALL,
     "A module's plain top-level functions registered with sys.monitoring "
     "(backends/_monitoring.c)."},
    {NULL}
};

#endif

/* Called by the extension's init (record/_core.c): adds this file's functions, if any. */
int
autotrace_monitoring_add(PyObject *module)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyModule_AddFunctions(module, monitoring_methods);
#else
    (void)module;
    return 0;
#endif
}
