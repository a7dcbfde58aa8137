"""What a span says: name, kind, scope, code attributes, arguments, return value, errors."""

from __future__ import annotations

import dataclasses
import gc
import weakref
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

import autotrace
from autotrace.config import make_config
from autotrace.describe.function import Formatter

from .conftest import Traced

SOURCE = '''
import dataclasses, enum, collections

class Color(enum.Enum):
    RED = 1

Point = collections.namedtuple("Point", "x y")

@dataclasses.dataclass
class Item:
    name: str
    qty: int = 1

class Opaque:
    def __repr__(self):
        raise AssertionError("a user __repr__ must not run by default")

class Repo:
    def save(self, item, retries=3, *rest, flag=False, **extra):
        return {"ok": True, "item": item}

    @classmethod
    def create(cls, size):
        return cls()

    @staticmethod
    def check(a, /, b):
        return a + b

def plain(a, b=2):
    return a + b

def decorated_deco(f):
    return f

@decorated_deco
def decorated(x):
    return x

def values(*args, **kwargs):
    return None

def login(user, password, api_key=None, **extra):
    return "token-123"

def get_secret():
    return "s3cr3t"
'''


def test_name_kind_scope_and_code_attributes(traced: Traced) -> None:
    mod = traced.load("mod", SOURCE)
    mod.Repo().save("x")
    mod.decorated(1)
    span = traced.span("Repo.save")
    assert span.kind is SpanKind.INTERNAL
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "autotrace"
    assert span.instrumentation_scope.version == autotrace.__version__
    attrs = traced.attrs("Repo.save")
    assert attrs["code.function.name"] == f"{mod.__name__}.Repo.save"
    assert attrs["code.file.path"] == mod.__file__
    assert attrs["code.line.number"] == mod.Repo.save.__code__.co_firstlineno
    # the def line, not the decorator line
    assert traced.attrs("decorated")["code.line.number"] == \
        mod.decorated.__code__.co_firstlineno + 1


def test_arguments_bound_with_defaults_and_no_self_or_cls(traced: Traced) -> None:
    mod = traced.load("mod", SOURCE)
    mod.Repo().save("x", 5, "r1", "r2", flag=True, color="red")
    mod.Repo.create(3)
    mod.Repo.check(1, b=2)
    mod.plain(1)
    assert traced.args("Repo.save") == {
        "item": "x", "retries": 5, "rest": "('r1', 'r2')", "flag": True,
        "extra": "{'color': 'red'}",
    }
    assert traced.args("Repo.create") == {"size": 3}
    assert traced.args("Repo.check") == {"a": 1, "b": 2}
    assert traced.args("plain") == {"a": 1, "b": 2}
    assert traced.attrs("plain")["code.function.return.value"] == 3
    assert traced.attrs("Repo.save")["code.function.return.value"] == \
        "{'ok': True, 'item': 'x'}"


def test_method_called_unbound_through_the_class_dict(traced: Traced) -> None:
    mod = traced.load("mod", SOURCE)
    raw = vars(mod.Repo)["save"]
    assert raw(mod.Repo(), "x", 7) == {"ok": True, "item": "x"}
    assert traced.args("Repo.save") == {"item": "x", "retries": 7, "rest": "()",
                                        "flag": False, "extra": "{}"}


def test_empty_varargs_are_recorded_under_their_names(traced: Traced) -> None:
    mod = traced.load("mod", SOURCE)
    mod.values()
    assert traced.args("values") == {"args": "()", "kwargs": "{}"}


def test_values_are_native_or_bounded_text(traced: Traced) -> None:
    mod = traced.load("mod", SOURCE, max_value_length=32)
    big = 2**70
    mod.values(True, 7, 2.5, "s" * 100, big, -(2**63), None, b"\x00b",
               mod.Color.RED, mod.Point(1, 2), mod.Item("a"), mod.Opaque(),
               [1, [2, [3, [4, [5, [6]]]]]], list(range(10**6)))
    rendered = traced.args("values")["args"]
    assert isinstance(rendered, str) and len(rendered) <= 32
    traced.clear()
    for value, expected in [
        (True, True), (7, 7), (2.5, 2.5), (-(2**63), -(2**63)), (2**63 - 1, 2**63 - 1),
        (big, str(big)), ("s" * 100, "s" * 31 + "…"), (None, "None"), (b"\x00b", "b'\\x00b'"),
        (mod.Color.RED, "Color.RED"), (mod.Point(1, 2), "Point(x=1, y=2)"),
        (mod.Item("a"), "Item(name='a', qty=1)"), (mod.Opaque(), f"<{mod.__name__}.Opaque object>"),
        ({"a": [1, 2]}, "{'a': [1, 2]}"), ((1,), "(1,)"), (set(), "set()"),
    ]:
        traced.clear()
        mod.login(value, "pw")
        assert traced.args("login")["user"] == expected, value


def test_each_class_shows_as_itself_when_another_took_its_address() -> None:
    """How a class's instances show is remembered per class (``values._SHAPES``, by
    ``id``): a class that dies and a new one made at its address must each show as
    themselves, and being remembered must not keep a class alive."""
    renderer = Formatter(make_config(["x"], environ={})).renderer
    addresses = []
    gc.collect()
    gc.disable()  # the classes stay young: a young collection frees each (a full one is slow)
    try:
        _classes_come_and_go(renderer, addresses)
    finally:
        gc.enable()
    assert len(set(addresses)) < len(addresses)  # addresses were reused: the case is met
    from autotrace.describe import values
    assert all(ref() is not None for ref, _ in values._SHAPES.values())  # dead ones went


def test_a_dataclass_inside_itself_or_too_deep_shows_as_an_object_every_time() -> None:
    """The remembered shape of a dataclass (``values._SHAPES``) keeps the first time's
    limits: a cycle, and nesting past the depth limit, end in ``<module.Class object>``."""
    renderer = Formatter(make_config(["x"], environ={})).renderer

    @dataclasses.dataclass
    class Node:
        v: int
        nxt: object = None

    loop = Node(1)
    loop.nxt = loop
    deep = Node(0, Node(1, Node(2, Node(3, Node(4)))))
    shown = f"<{__name__}.{Node.__qualname__} object>"
    for _ in range(2):  # found, then remembered
        assert renderer.text(loop) == f"Node(v=1, nxt={shown})"
        assert renderer.text(deep) == (
            f"Node(v=0, nxt=Node(v=1, nxt=Node(v=2, nxt=Node(v=3, nxt={shown}))))")


def _classes_come_and_go(renderer: Any, addresses: list[int]) -> None:
    for i in range(200):
        cls: type
        if i % 2:
            cls = dataclasses.make_dataclass(
                f"D{i}", [("x", int), ("hidden", int, dataclasses.field(repr=False))])
            value, expected = cls(i, 0), f"D{i}(x={i})"
        else:
            cls = type(f"P{i}", (), {"__module__": "m"})
            value, expected = cls(), f"<m.P{i} object>"
        for _ in range(2):  # the first time found, the second remembered
            assert renderer.text(value) == expected
        addresses.append(id(cls))
        alive = weakref.ref(cls)
        del cls, value
        gc.collect(0)
        assert alive() is None


def test_huge_and_nested_values_stay_bounded(traced: Traced) -> None:
    mod = traced.load("mod", SOURCE)
    nested: list[object] = []
    nested.append(nested)
    mod.login(list(range(10**6)), "pw", extra_deep=[[[[[[[1]]]]]]], cyc=nested)
    args = traced.args("login")
    assert len(args["user"]) <= 256 and args["user"].startswith("[0, 1, 2")
    assert args["user"].endswith("…") or args["user"].endswith("...]")
    assert len(args["extra"]) <= 256


def test_repr_objects_opt_in_and_raising_repr_never_escapes(traced: Traced) -> None:
    mod = traced.load("mod", SOURCE + '''
class Nice:
    def __repr__(self): return "Nice!"
''', repr_objects=True)
    assert mod.login(mod.Nice(), "pw") == "token-123"
    assert traced.args("login")["user"] == "Nice!"
    traced.clear()
    assert mod.login(mod.Opaque(), "pw") == "token-123"
    assert "repr failed: AssertionError" in traced.args("login")["user"]


def test_secrets_are_redacted_by_name_and_by_dict_key(traced: Traced) -> None:
    mod = traced.load("mod", SOURCE)
    mod.login("bob", "hunter2", api_key="k-1", Session_Id="abc", author="me",
               headers={"Authorization": "Bearer x", "accept": "json"})
    args = traced.args("login")
    assert args["user"] == "bob"
    assert args["password"] == "[REDACTED]" and args["api_key"] == "[REDACTED]"
    extra = args["extra"]
    assert "abc" not in extra and "Bearer" not in extra and "'[REDACTED]'" in extra
    assert "'author': 'me'" in extra and "'accept': 'json'" in extra
    # functions whose name looks secret have their return value redacted too
    assert mod.get_secret() == "s3cr3t"
    assert traced.attrs("get_secret")["code.function.return.value"] == "[REDACTED]"
    assert traced.attrs("login")["code.function.return.value"] == "token-123"


def test_redaction_is_configurable(traced: Traced) -> None:
    mod = traced.load("mod", SOURCE, redact=["^user$"])
    mod.login("bob", "hunter2")
    assert traced.args("login") == {"user": "[REDACTED]", "password": "hunter2",
                                    "api_key": "None", "extra": "{}"}


def test_capture_flags_off(traced: Traced) -> None:
    mod = traced.load("mod", SOURCE, capture_args=False, capture_return=False)
    assert mod.plain(1, 2) == 3
    attrs = traced.attrs("plain")
    assert not [k for k in attrs if k.startswith("code.function.parameters")]
    assert "code.function.return.value" not in attrs
    assert attrs["code.function.name"].endswith(".plain")


ERRORS = '''
import asyncio
class NotFound(Exception):
    pass

def inner(x):
    raise NotFound(f"no item {x}")

def middle(x):
    return inner(x)

def outer(x):
    return middle(x)

def handled():
    try:
        inner(1)
    except NotFound:
        return "recovered"

def reraise_new():
    try:
        inner(2)
    except NotFound as exc:
        raise RuntimeError("wrapped") from exc

def builtin_error():
    return {}["missing"]

def interrupt():
    raise KeyboardInterrupt

def exits():
    raise SystemExit(3)

async def cancelled():
    raise asyncio.CancelledError()

class BadStr(Exception):
    def __str__(self):
        raise ValueError("no str for you")

def bad_str():
    raise BadStr()
'''


def test_exception_status_type_and_one_event_on_the_innermost_span(traced: Traced) -> None:
    mod = traced.load("errors", ERRORS)
    with pytest.raises(mod.NotFound, match="no item 7"):
        mod.outer(7)
    for name in ("inner", "middle", "outer"):
        span = traced.span(name)
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "NotFound: no item 7"
        assert traced.attrs(name)["error.type"] == f"{mod.__name__}.NotFound"
    assert [e.name for e in traced.span("inner").events] == ["exception"]
    event = traced.span("inner").events[0]
    assert event.attributes is not None
    assert event.attributes["exception.type"] == f"{mod.__name__}.NotFound"
    assert event.attributes["exception.message"] == "no item 7"
    assert "raise NotFound" in str(event.attributes["exception.stacktrace"])
    assert not traced.span("middle").events and not traced.span("outer").events


def test_handled_and_chained_exceptions(traced: Traced) -> None:
    mod = traced.load("errors", ERRORS)
    assert mod.handled() == "recovered"
    assert traced.span("handled").status.status_code is StatusCode.UNSET
    traced.clear()
    with pytest.raises(RuntimeError):
        mod.reraise_new()
    span = traced.span("reraise_new")
    assert traced.attrs("reraise_new")["error.type"] == "RuntimeError"  # bare builtin name
    assert [e.name for e in span.events] == ["exception"]  # a new exception: its own event
    traced.clear()
    with pytest.raises(KeyError):
        mod.builtin_error()
    assert traced.attrs("builtin_error")["error.type"] == "KeyError"


def test_base_exceptions_are_not_errors(traced: Traced) -> None:
    import asyncio
    mod = traced.load("errors", ERRORS)
    with pytest.raises(KeyboardInterrupt):
        mod.interrupt()
    with pytest.raises(SystemExit) as info:
        mod.exits()
    assert info.value.code == 3
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(mod.cancelled())
    for name in ("interrupt", "exits", "cancelled"):
        span = traced.span(name)
        assert span.status.status_code is StatusCode.UNSET
        assert not span.events
        assert span.end_time is not None


def test_exception_whose_str_raises(traced: Traced) -> None:
    mod = traced.load("errors", ERRORS)
    with pytest.raises(mod.BadStr):
        mod.bad_str()
    span = traced.span("bad_str")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "BadStr: <unprintable message>"


def test_exception_identity_and_traceback_preserved(traced: Traced) -> None:
    mod = traced.load("errors", ERRORS)
    with pytest.raises(mod.NotFound) as info:
        mod.outer(1)
    frames = [f.name for f in info.traceback]
    # user frames appear in the same order as untraced; wrapper frames may be interleaved
    user = [f for f in frames if f in ("outer", "middle", "inner")]
    assert user == ["outer", "middle", "inner"]
    assert type(info.value) is mod.NotFound and str(info.value) == "no item 1"


REDACTION = '''
def is_number_token(nl):
    return nl.isdigit()


def is_valid_token(tok):
    return len(tok) == 4


def getApiKey(user):
    return "k-" + user


def refresh_tokens(count):
    return ["t1", "t2"][:count]


def tokenize(text):
    return text.split()


def find_session(sid):
    return None


def login(user, password=None, token=None):
    return {"token": None, "ok": True, "secret": "s"}
'''


def test_a_secret_function_name_hides_arguments_and_result(traced: Traced) -> None:
    """The function's own name, in whole words (``_``/camelCase), hides its parameters and
    its result; bool and None are never hidden."""
    mod = traced.load("redaction", REDACTION)
    assert mod.is_number_token("12") is True
    assert mod.is_valid_token("abcd") is True
    assert mod.getApiKey("bob") == "k-bob"
    assert mod.refresh_tokens(1) == ["t1"]
    assert mod.find_session("s-1") is None
    ret = "code.function.return.value"
    assert traced.attrs("is_number_token")[ret] is True
    assert traced.args("is_number_token") == {"nl": "[REDACTED]"}
    assert traced.attrs("is_valid_token")[ret] is True
    assert traced.args("is_valid_token") == {"tok": "[REDACTED]"}
    assert traced.attrs("getApiKey")[ret] == "[REDACTED]"
    assert traced.args("getApiKey") == {"user": "[REDACTED]"}
    assert traced.attrs("refresh_tokens")[ret] == "[REDACTED]"
    assert traced.attrs("find_session")[ret] == "None"
    assert traced.args("find_session") == {"sid": "[REDACTED]"}


def test_names_that_merely_contain_a_secret_word_keep_their_values(traced: Traced) -> None:
    mod = traced.load("redaction", REDACTION)
    assert mod.tokenize("a b") == ["a", "b"]
    assert traced.attrs("tokenize")["code.function.return.value"] == "['a', 'b']"
    assert traced.args("tokenize") == {"text": "a b"}


def test_secret_parameters_and_keys_holding_none_or_bool_are_shown(traced: Traced) -> None:
    mod = traced.load("redaction", REDACTION)
    mod.login("bob")
    mod.login("bob", "hunter2", token="t")
    first, second = [dict(s.attributes or {}) for s in traced.spans()]
    key = "code.function.parameters.{}.value".format
    assert (first[key("password")], first[key("token")]) == ("None", "None")
    assert (second[key("password")], second[key("token")]) == ("[REDACTED]", "[REDACTED]")
    assert first["code.function.return.value"] == (
        "{'token': None, 'ok': True, 'secret': '[REDACTED]'}")
