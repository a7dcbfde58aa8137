"""What a Python-level wrapper could change in stack introspection and tracebacks (issue 13).

Each module here is the smallest form of a pattern a third-party suite broke
on: template engines that drop their internal frames by code object, parsers
that probe a callback's arity from the ``TypeError``'s traceback, factories
that name their caller's module, frozen-class checks by identity.
"""

from __future__ import annotations

import pickle
import sys
import traceback
import warnings

import pytest

from .conftest import Traced

TRACEBACKS = '''
INTERNAL = set()

def internal(func):
    INTERNAL.add(func.__code__)
    return func

@internal
def render_helper(x):
    return user_code(x)

def user_code(x):
    raise ValueError(x)

def render(x):
    """Like a template engine: the user's traceback without internal frames."""
    try:
        render_helper(x)
    except ValueError as exc:
        tb = exc.__traceback__
        kept = []
        while tb is not None:
            if tb.tb_frame.f_code not in INTERNAL:
                kept.append(tb.tb_frame.f_code.co_name)
            tb = tb.tb_next
        return kept

def call_action(fn, args):
    """Like pyparsing's parse actions: retry with fewer arguments when the
    TypeError comes from this very call."""
    while True:
        try:
            return fn(*args)
        except TypeError as exc:
            if exc.__traceback__.tb_next is not None or not args:
                raise
            args = args[1:]

def action(toks):
    return toks * 2

def broken_action(a, b, c):
    return len(None)
'''

needs_bare_raise = pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="3.10's bare raise re-raises the traceback its handler caught, wrapper included")


@needs_bare_raise
def test_tracebacks_have_no_wrapper_entries(traced: Traced) -> None:
    mod = traced.load("tbs", TRACEBACKS)
    assert mod.render(1) == ["render", "user_code"]
    assert "render_helper" in traced.names() and "user_code" in traced.names()
    try:
        mod.user_code(2)
    except ValueError as exc:
        names = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
        files = {frame.filename for frame in traceback.extract_tb(exc.__traceback__)}
    assert names == ["test_tracebacks_have_no_wrapper_entries", "user_code"]
    assert not any("autotrace" in f for f in files)


@needs_bare_raise
def test_arity_probing_sees_the_binding_error_at_its_own_call(traced: Traced) -> None:
    mod = traced.load("tbs", TRACEBACKS)
    assert mod.call_action(mod.action, ("s", 1, "toks")) == "tokstoks"
    # wrapt opens a span before the call binds (two failed, one ran); monitoring at the start
    assert traced.names().count("action") == (3 if traced.backend == "wrapt" else 1)
    with pytest.raises(TypeError, match="NoneType"):
        mod.call_action(mod.broken_action, (1, 2, 3))  # a TypeError from inside: re-raised


FRAMES = '''
import sys, warnings

def make_sentinel(name):
    """Like namedtuple and sentinel factories: the class belongs to the caller."""
    cls = type(name, (), {})
    cls.__module__ = sys._getframe(1).f_globals["__name__"]
    return cls

Missing = make_sentinel("Missing")

def caller_name(level=1):
    return sys._getframe(level).f_code.co_name

def who_calls():
    return caller_name()

def old_api():
    warnings.warn("old_api is deprecated", DeprecationWarning, stacklevel=2)
    return 1

def uses_old_api():
    return old_api()

def frozen_setattr(self, name, value):
    raise AttributeError("frozen")

class Frozen:
    __setattr__ = frozen_setattr
    def method(self):
        return 1
'''


def test_stack_inspecting_functions_see_their_real_callers(traced: Traced) -> None:
    mod = traced.load("frames", FRAMES)
    assert mod.Missing.__module__ == mod.__name__
    assert pickle.loads(pickle.dumps(mod.Missing)) is mod.Missing
    assert mod.who_calls() == "who_calls"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert mod.uses_old_api() == 1
    assert caught[0].filename == mod.__file__ and caught[0].lineno == 23
    names = traced.names()
    assert "who_calls" in names and "uses_old_api" in names
    if traced.backend == "wrapt":  # a wrapper's frame would be among theirs: unwrapped
        assert not {"make_sentinel", "caller_name", "old_api"} & set(names)


def test_functions_fetched_from_their_class_keep_identity(traced: Traced) -> None:
    mod = traced.load("frames", FRAMES)
    assert mod.Frozen.method is mod.Frozen.method
    assert mod.Frozen.__setattr__ is mod.frozen_setattr
    obj = mod.Frozen()
    with pytest.raises(AttributeError, match="frozen"):
        obj.x = 1
    assert mod.Frozen.method(obj) == 1 and obj.method() == 1
    assert traced.names().count("Frozen.method") == 2
