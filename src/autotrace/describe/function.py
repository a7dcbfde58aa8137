"""What a span says: its name and attributes, computed the same for every backend.

Backends decide *when* a traced call starts and ends; they hand this module
either the call's ``(instance, args, kwargs)`` (wrapt) or the callee frame's
locals (sys.monitoring). Per-function work (names, attribute keys, which
parameters are secret, the ``def`` line) happens once in ``FunctionInfo``, so
the per-call work is rendering the values and nothing else.
"""

from __future__ import annotations

import inspect
import linecache
import re
import sys
from collections.abc import Mapping, Sequence
from types import CodeType, FrameType, FunctionType
from typing import Any, Callable, Protocol

from opentelemetry.semconv.attributes.code_attributes import (
    CODE_FILE_PATH,
    CODE_FUNCTION_NAME,
    CODE_LINE_NUMBER,
)

from .redaction import compile_value_patterns
from .values import (
    REDACTED,
    AttributeValue,
    Renderer,
    compile_redaction,
    not_a_secret,
)

PARAMETER_KEY = "code.function.parameters.{}.value"
RETURN_KEY = "code.function.return.value"

_POSITIONAL = 0
_KEYWORD_ONLY = 1
_VAR_POSITIONAL = 2
_VAR_KEYWORD = 3
_MISSING = object()
_IMPLICIT_NAMES = ("self", "cls")
CO_OPTIMIZED = inspect.CO_OPTIMIZED
_CO_VARARGS = inspect.CO_VARARGS
_CO_VARKEYWORDS = inspect.CO_VARKEYWORDS


class Param:
    """One parameter: its name, attribute key, and whether its value is secret."""

    __slots__ = ("default", "key", "kind", "name", "posonly", "secret")

    def __init__(self, name: str, kind: int, default: Any, secret: bool,
                 posonly: bool = False) -> None:
        self.name = name
        self.key = PARAMETER_KEY.format(name)
        self.kind = kind
        self.default = default
        self.secret = secret
        self.posonly = posonly


class FunctionInfo:
    """Everything about one traced function that does not change between calls."""

    __slots__ = (
        "implicit_first",
        "keyword_only",
        "param_names",
        "params",
        "positional",
        "qualified_name",
        "secret_return",
        "span_name",
        "static_attributes",
        "var_keyword",
        "var_positional",
    )

    def __init__(self, span_name: str, static_attributes: dict[str, AttributeValue],
                 params: list[Param], implicit_first: bool, secret_return: bool) -> None:
        self.span_name = span_name
        self.static_attributes = static_attributes
        #: ``module.qualname`` (metrics, the profile, the hot-function counts)
        self.qualified_name = str(static_attributes.get(CODE_FUNCTION_NAME, span_name))
        self.params = tuple(params)
        #: the names ``frame_values`` reads (the compiled core reads them in C)
        self.param_names = tuple(p.name for p in params)
        self.implicit_first = implicit_first
        self.secret_return = secret_return
        self.positional = tuple(p for p in params if p.kind == _POSITIONAL)
        self.keyword_only = tuple(p for p in params if p.kind == _KEYWORD_ONLY)
        self.var_positional = next((p for p in params if p.kind == _VAR_POSITIONAL), None)
        self.var_keyword = next((p for p in params if p.kind == _VAR_KEYWORD), None)


def def_line(code: CodeType) -> int:
    """The ``def`` line: ``co_firstlineno`` points at the first decorator."""
    first = code.co_firstlineno
    line = linecache.getline(code.co_filename, first)
    if not line.lstrip().startswith("@"):
        return first
    pattern = re.compile(r"\s*(async\s+)?def\s+" + re.escape(code.co_name) + r"\b")
    for lineno in range(first + 1, first + 50):
        text = linecache.getline(code.co_filename, lineno)
        if not text:
            break
        if pattern.match(text):
            return lineno
    return first


def code_of(func: Any) -> CodeType | None:
    """The code object behind a function, following ``__wrapped__`` and ``__func__``."""
    seen = 0
    while func is not None and seen < 32:
        code = getattr(func, "__code__", None)
        if isinstance(code, CodeType):
            return code
        func = getattr(func, "__wrapped__", None) or getattr(func, "__func__", None)
        seen += 1
    return None


class Settings(Protocol):
    """What ``Formatter`` reads of the configuration (``config.Config``), named here so
    that describing stays below the configuration that validates its options."""

    @property
    def max_value_length(self) -> int: ...
    @property
    def repr_objects(self) -> bool: ...
    @property
    def redact(self) -> Sequence[str]: ...
    @property
    def redact_values(self) -> Sequence[str]: ...
    @property
    def redact_disable(self) -> Sequence[str]: ...


class Formatter:
    """Builds span names and attributes under one ``Config``."""

    def __init__(self, config: Settings) -> None:
        self.renderer = Renderer(config.max_value_length, config.repr_objects,
                                 compile_redaction(config.redact),
                                 compile_value_patterns(config.redact_values),
                                 config.redact_disable)

    # -- per function -----------------------------------------------------------------

    def _static(self, module: str, qualname: str, code: CodeType | None) -> dict[str, Any]:
        attrs: dict[str, AttributeValue] = {CODE_FUNCTION_NAME: f"{module}.{qualname}"}
        if code is not None:
            attrs[CODE_FILE_PATH] = code.co_filename
            attrs[CODE_LINE_NUMBER] = def_line(code)
        return attrs

    def _param(self, name: str, kind: int, default: Any = _MISSING,
               posonly: bool = False, secret_function: bool = False) -> Param:
        secret = secret_function or self.renderer.is_secret(name)
        return Param(name, kind, default, secret, posonly)

    def describe_function(self, func: Callable[..., Any], module: str, qualname: str,
                          implicit_first: bool) -> FunctionInfo:
        """Describe a callable found by a wrapper; ``implicit_first``: bound self/cls."""
        params: list[Param] = []
        # A secret-looking function name (``check_token``) hides its arguments and result.
        secret_function = self.renderer.is_secret_function(qualname.rsplit(".", 1)[-1])
        try:
            signature = inspect.signature(_without_annotations(func), follow_wrapped=True)
        except (TypeError, ValueError):
            signature = None
        if signature is not None:
            kinds = {
                inspect.Parameter.POSITIONAL_ONLY: _POSITIONAL,
                inspect.Parameter.POSITIONAL_OR_KEYWORD: _POSITIONAL,
                inspect.Parameter.KEYWORD_ONLY: _KEYWORD_ONLY,
                inspect.Parameter.VAR_POSITIONAL: _VAR_POSITIONAL,
                inspect.Parameter.VAR_KEYWORD: _VAR_KEYWORD,
            }
            for p in signature.parameters.values():
                default = _MISSING if p.default is inspect.Parameter.empty else p.default
                params.append(self._param(p.name, kinds[p.kind], default,
                                          p.kind is inspect.Parameter.POSITIONAL_ONLY,
                                          secret_function))
        return FunctionInfo(
            span_name=qualname,
            static_attributes=self._static(module, qualname, code_of(func)),
            params=params,
            implicit_first=implicit_first,
            secret_return=secret_function,
        )

    def describe_code(self, code: CodeType, module: str, qualname: str) -> FunctionInfo:
        """Describe a code object seen by a backend that reads arguments from frames."""
        names = code.co_varnames
        n_pos = code.co_argcount
        n_kw = code.co_kwonlyargcount
        n_posonly = code.co_posonlyargcount
        hide = self.renderer.is_secret_function(code.co_name)
        params = [self._param(n, _POSITIONAL, posonly=i < n_posonly, secret_function=hide)
                  for i, n in enumerate(names[:n_pos])]
        params += [self._param(n, _KEYWORD_ONLY, secret_function=hide)
                   for n in names[n_pos:n_pos + n_kw]]
        index = n_pos + n_kw
        if code.co_flags & _CO_VARARGS:
            params.append(self._param(names[index], _VAR_POSITIONAL, secret_function=hide))
            index += 1
        if code.co_flags & _CO_VARKEYWORDS:
            params.append(self._param(names[index], _VAR_KEYWORD, secret_function=hide))
        return FunctionInfo(
            span_name=qualname,
            static_attributes=self._static(module, qualname, code),
            params=params,
            implicit_first=False,
            secret_return=hide,
        )

    # -- per call -----------------------------------------------------------------------

    def _value(self, param: Param, value: Any) -> AttributeValue:
        if param.secret and not not_a_secret(value):
            return REDACTED
        if param.kind == _VAR_KEYWORD and type(value) is dict:
            return self.renderer.text(value)  # keys are redacted inside
        return self.renderer.attribute(value)

    def call_arguments(self, info: FunctionInfo, instance: Any, args: tuple[Any, ...],
                       kwargs: Mapping[str, Any]) -> dict[str, AttributeValue]:
        """Bind a call's arguments to parameter names, defaults applied."""
        out: dict[str, AttributeValue] = {}
        positional = info.positional
        start = 0
        # A method called through its class dict (``C.__dict__["m"](obj)``) arrives
        # unbound: ``instance`` is None and ``self`` is in ``args``.
        if info.implicit_first and positional and instance is not None:
            first = positional[0]
            if first.name not in _IMPLICIT_NAMES:
                out[first.key] = self._value(first, instance)
            start = 1
        n_args = len(args)
        slots = len(positional) - start
        for i in range(slots):
            param = positional[start + i]
            if i < n_args:
                value = args[i]
            else:
                value = param.default if param.posonly else kwargs.get(param.name, param.default)
                if value is _MISSING:
                    continue
            if i == 0 and start == 0 and param.name in _IMPLICIT_NAMES:
                continue
            out[param.key] = self._value(param, value)
        if info.var_positional is not None:
            out[info.var_positional.key] = self._value(info.var_positional, args[slots:])
        for param in info.keyword_only:
            value = kwargs.get(param.name, param.default)
            if value is not _MISSING:
                out[param.key] = self._value(param, value)
        if info.var_keyword is not None:
            named = {p.name for p in positional[start + min(n_args, slots):] if not p.posonly}
            named.update(p.name for p in info.keyword_only)
            extra = {k: v for k, v in kwargs.items() if k not in named}
            out[info.var_keyword.key] = self._value(info.var_keyword, extra)
        return out

    def frame_values(self, info: FunctionInfo, frame: FrameType) -> list[Any]:
        """The parameters' values in a frame that has just started (not rendered)."""
        f_locals = frame.f_locals
        values = [f_locals.get(param.name, _MISSING) for param in info.params]
        if type(f_locals) is dict and frame.f_code.co_flags & CO_OPTIMIZED:
            # 3.12: a snapshot the frame keeps until it dies; it would pin arguments
            # the body deletes. The body never sees it.
            f_locals.clear()
        return values

    def render_values(self, info: FunctionInfo, values: list[Any]) -> dict[str, AttributeValue]:
        """Attributes for ``frame_values``: every bound parameter but ``self``/``cls``."""
        out: dict[str, AttributeValue] = {}
        for index, (param, value) in enumerate(zip(info.params, values, strict=False)):
            if value is _MISSING:
                continue
            if index == 0 and param.name in _IMPLICIT_NAMES and param.kind == _POSITIONAL:
                continue
            out[param.key] = self._value(param, value)
        return out

    def return_value(self, info: FunctionInfo, value: Any) -> AttributeValue:
        if info.secret_return and not not_a_secret(value):
            return REDACTED
        return self.renderer.attribute(value)


def _without_annotations(func: Callable[..., Any]) -> Callable[..., Any]:
    """What ``inspect.signature`` may read without evaluating annotations.

    From 3.14 annotations are evaluated when asked for (PEP 649), and
    ``inspect.signature`` asks (``annotationlib``'s STRING format too, on 3.15 and
    3.14.x): that would run the user's annotation expressions (side effects, a
    NameError for a name defined later). Only names, kinds and defaults are used,
    so a plain function is described from a copy that has no annotations."""
    if sys.version_info < (3, 14):
        return func  # evaluated when the def ran: reading them runs nothing
    target = inspect.unwrap(func, stop=lambda f: hasattr(f, "__signature__"))
    if type(target) is not FunctionType or hasattr(target, "__signature__"):
        return func
    bare = FunctionType(target.__code__, target.__globals__, target.__name__,
                        target.__defaults__, target.__closure__)
    bare.__kwdefaults__ = target.__kwdefaults__
    return bare
