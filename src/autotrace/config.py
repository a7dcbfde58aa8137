"""User configuration: one table of options, validated once at ``install()``.

``OPTIONS`` is the single source of truth: the ``OTEL_PYTHON_AUTOTRACE_*``
variables, the ``autotrace`` command's flags, the ``opentelemetry-instrument``
flags and the configuration file's keys are derived from it; the ``Config``
fields and ``install()``'s keywords are written out for type checkers and held
to it by tests/test_options.py (as are README and the docs).
Every value comes from an explicit ``install()`` argument, else from its
environment variable (which the command's flags set), else from the
configuration file (``configfile``: ``[tool.autotrace]`` or ``autotrace.toml``),
else from the default. A bad value fails here, before anything is installed,
with a message naming the value and the fix in the syntax of the surface it
came from (Python keyword, variable, flag or TOML key); the rest of autotrace
may trust a ``Config``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import configfile
from .configfile import ConfigFile, ConfigFileError
from .describe.redaction import DETECTOR_NAMES
from .errors import InstallError

ENV_PREFIX = "OTEL_PYTHON_AUTOTRACE_"
BACKENDS = ("wrapt", "monitoring", "auto")
CORES = ("auto", "compiled", "python")
INSTRUMENTATIONS = ("on", "distro", "off")

#: Parameter names and dict keys matching any of these (case-insensitive
#: ``re.search``) are recorded as ``[REDACTED]``; so are ``name=value`` pairs inside
#: rendered text. Compared with Sentry's default denylist: its names are all caught
#: (``mysql_pwd``, ``csrftoken``, ``connect.sid``, ``PHPSESSID``, ``set_cookie``, ...)
#: but ``x_forwarded_for``, which is personal data rather than a secret, and ``symfony``.
DEFAULT_REDACT: tuple[str, ...] = (
    "password",
    "passwd",
    "passphrase",
    "(?<![a-z0-9])(?:pass|pwd)(?![a-z0-9_])",  # db_pass, mysql_pwd, PWD=; not pass_through
    "secret",
    "token",
    "api[-_]?key",
    "access[-_]?key",
    "auth(?!or(?!i[sz]))",  # auth, Authorization, authorise; not author, authority
    "credential",
    "(?<![a-z0-9])creds?(?![a-z0-9])",  # creds, db_cred; not credit
    "private[-_]?key",
    "cookie",
    "session",
    "sess[-_]?id",  # PHPSESSID
    "(?<![a-z0-9])sid(?![a-z0-9])",  # connect.sid; not side
    "[cx]srf",
    "jwt",
)

DEFAULT_MAX_VALUE_LENGTH = 256
_MIN_VALUE_LENGTH = 16

# A pattern is a dotted name made of identifier characters, glob wildcards
# (* ? [...]) and the ``<locals>``/``<lambda>`` markers CPython puts in qualnames.
_PATTERN_CHARS = re.compile(r"[\w.*?\[\]!<>\-]+")  # \w: identifiers may be non-ASCII
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")

_DURATION = re.compile(r"(?P<number>[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)(?P<unit>[a-zµ]*)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}


# -- surfaces: where a value was given, and how to write it there ------------------------

class Surface:
    """The Python API: ``name=value``."""

    kind = "api"
    #: Values come typed (a bool, an int, a list), not as text to split and convert.
    typed = True

    def name(self, option: Option) -> str:
        return option.name

    def show(self, option: Option, value: Any) -> str:
        """``value`` as given, in this surface's syntax."""
        return f"{option.name}={value!r}"

    def example(self, option: Option) -> str:
        return f"{option.name}={option.api_example}"

    def example_value(self, option: Option, text: str) -> str:
        """``text`` given for ``option`` on this surface (``patterns='myapp.db'``)."""
        return f"{option.name}={text!r}"

    def switch(self, option: Option, on: bool) -> str:
        """A boolean option set to ``on`` (``spans=False``)."""
        return f"{option.name}={on}"


class EnvSurface(Surface):
    """An environment variable: ``VAR=value``."""

    kind = "env"
    typed = False

    def name(self, option: Option) -> str:
        return option.env

    def show(self, option: Option, value: Any) -> str:
        return f"{option.env}={_shell_word(value)}"

    def example(self, option: Option) -> str:
        return f"{option.env}={option.text_example}"

    def example_value(self, option: Option, text: str) -> str:
        return f"{option.env}={_quote(text)}"

    def switch(self, option: Option, on: bool) -> str:
        return f"{option.env}={'true' if on else 'false'}"


class FlagSurface(Surface):
    """A command-line flag of the ``autotrace`` command: ``--flag value``."""

    kind = "cli"
    typed = False

    def name(self, option: Option) -> str:
        if option.short:
            return f"{option.short}/{option.flag}"
        return option.flag or option.env

    def show(self, option: Option, value: Any) -> str:
        return f"{option.short or option.flag} {_shell_word(value)}"

    def example(self, option: Option) -> str:
        return f"{option.short or option.flag} {option.text_example}"

    def example_value(self, option: Option, text: str) -> str:
        return f"{option.short or option.flag} {_quote(text)}"

    def switch(self, option: Option, on: bool) -> str:
        if not option.flag:
            return super().switch(option, on)
        return option.flag if on else f"--no-{option.flag[2:]}"


class FileSurface(Surface):
    """A key of the configuration file: ``name = value`` in TOML, values typed."""

    kind = "file"

    def __init__(self, where: str) -> None:
        self.where = where  # the file (and table), as ConfigFile.where names it

    def name(self, option: Option) -> str:
        return f"{option.name} in {self.where}"

    def show(self, option: Option, value: Any) -> str:
        return f"{option.name} = {_toml(value)} in {self.where}"

    def example(self, option: Option) -> str:
        return f"{option.name} = {_toml(_literal(option.api_example))}"

    def example_value(self, option: Option, text: str) -> str:
        listed = isinstance(option.default, tuple) or option.parse in _LIST_PARSERS
        return f"{option.name} = {_toml([text] if listed else text)}"

    def switch(self, option: Option, on: bool) -> str:
        return f"{option.name} = {_toml(on)}"


FILE_SYNTAX = FileSurface("")  # examples only: they name no file


def _literal(text: str) -> Any:
    """An ``api_example`` (Python source such as ``['myapp']``) as its value."""
    import ast

    return ast.literal_eval(text)


def _toml(value: Any) -> str:
    """``value`` in TOML syntax (for messages): literal strings keep regexes readable."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if "'" not in value and "\n" not in value:
            return f"'{value}'"
        import json

        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return repr(value)


def _quote(text: str) -> str:
    """``text`` as one shell word (only error messages need it: shlex is imported then)."""
    import shlex

    return shlex.quote(text)


def _shell_word(value: Any) -> str:
    """A value as it was given, quoted (valid shell syntax, and shows spaces)."""
    return repr(str(value))


API = Surface()
ENV = EnvSurface()
FLAG = FlagSurface()


# -- the parsers: (option, raw value, surface) -> validated value -----------------------

def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _strings(option: Option, value: Any, where: Surface) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(_split(value)) if not where.typed else (value,)
    if isinstance(value, (bytes, bytearray)) or not isinstance(value, Sequence):
        raise TypeError(f"{where.show(option, value)} must be a string or a list of strings, "
                        f"e.g. {where.example(option)}")
    for item in value:
        if not isinstance(item, str):
            raise TypeError(f"{where.name(option)} contains {item!r} ({type(item).__name__}); "
                            f"every entry must be a string, e.g. {where.example(option)}")
    return tuple(value)


def parse_patterns(option: Option, value: Any, where: Surface) -> tuple[str, ...]:
    items = _strings(option, value, where)
    if not items and option.required:
        raise ValueError(f"{where.name(option)} is empty; give at least one pattern, "
                         f"e.g. {where.example(option)}")
    for item in items:
        check_pattern(item, option, where)
    return items


def check_pattern(pattern: str, option: Option, where: Surface) -> None:
    """Reject what cannot be a dotted-name glob, saying what to write instead (in the
    syntax of the surface it was given on)."""
    name = where.name(option)
    dotted = where.example_value(option, "myapp.db")
    if not pattern:
        raise ValueError(f"{name} contains an empty string; remove it or name a module, "
                         f"e.g. {where.example(option)}")
    if any(ch.isspace() for ch in pattern):
        raise ValueError(f"{name} entry {pattern!r} contains whitespace; patterns are dotted "
                         f"names (strip the spaces), e.g. {dotted}")
    if "," in pattern:  # only through the API: variables and flags split at commas
        parts = [part.strip() for part in pattern.split(",") if part.strip()]
        listed = (f"{option.name} = {_toml(parts)}" if where.kind == "file" else
                  f"{option.name}={parts!r}")
        fix = (f"pass separate patterns as a list: {listed}" if parts else
               f"name a module, e.g. {where.example(option)}")
        raise ValueError(f"{name} entry {pattern!r} contains a comma; {fix}")
    if not _PATTERN_CHARS.fullmatch(pattern):
        raise ValueError(f"{name} entry {pattern!r} has characters that cannot occur in a "
                         "qualified name; use dotted names with * ? [] wildcards, e.g. "
                         f"{where.example_value(option, 'myapp.*.save')}")
    if "" in pattern.split("."):
        raise ValueError(f"{name} entry {pattern!r} has an empty dotted part (no leading, "
                         f"trailing or double dots), e.g. {dotted}")
    if _unclosed_bracket(pattern):
        raise ValueError(f"{name} entry {pattern!r} has a '[' without its ']'; close the "
                         f"character set, e.g. {where.example_value(option, 'myapp.v[12]')}, "
                         "or remove the '['")


def _unclosed_bracket(pattern: str) -> bool:
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            start = i + 1
            if start < len(pattern) and pattern[start] == "!":
                start += 1
            end = pattern.find("]", start + 1)
            if end < 0:
                return True
            i = end
        i += 1
    return False


def parse_choice(option: Option, value: Any, where: Surface) -> str:
    text = value.strip().lower() if isinstance(value, str) and not where.typed else value
    if not isinstance(text, str) or text not in option.choices:
        raise ValueError(f"{where.show(option, value)} is not a {option.name}; use one of "
                         + ", ".join(repr(c) for c in option.choices))
    return text


def parse_backend(option: Option, value: Any, where: Surface) -> str:
    """A backend name that can run on this interpreter (``auto`` always can)."""
    name = parse_choice(option, value, where)
    refusal = backend_refusal(name, where)
    if refusal is not None:
        raise InstallError(refusal)
    if name == "monitoring" and sys.version_info < (3, 12):
        running = ".".join(str(part) for part in sys.version_info[:3])
        raise RuntimeError(
            f"{where.show(option, value)} needs Python 3.12 or newer (sys.monitoring, "
            f"PEP 669); this is Python {running}. Use {where.example_value(option, 'wrapt')}, "
            f"or {where.example_value(option, 'auto')} to pick the best one available")
    return name


def wrapt_extension_missing(environ: Mapping[str, str] = os.environ) -> str | None:
    """Why wrapt's compiled proxies cannot be used here (a clause), or None.

    The wrapt backend subclasses them and reads their C slots (``wrappers._TARGET``);
    wrapt's pure-Python classes keep the target elsewhere, and nothing would be
    traced. Asked at install, so it imports no wrapt: an imported wrapt is asked
    directly, else ``WRAPT_DISABLE_EXTENSIONS`` is read as wrapt reads it (any
    non-empty value) and wrapt's package is searched for the extension file."""
    imported = sys.modules.get("wrapt")
    if imported is not None:
        proxy = getattr(imported, "FunctionWrapper", None)
        if proxy is None or any("__wrapped__" in vars(k) for k in proxy.__mro__):
            return None
        return "wrapt uses its pure-Python proxies in this process"
    if environ.get("WRAPT_DISABLE_EXTENSIONS"):
        return "WRAPT_DISABLE_EXTENSIONS is set, so wrapt uses its pure-Python proxies"
    try:
        spec = importlib.util.find_spec("wrapt")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return "wrapt is not installed"
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for folder in spec.submodule_search_locations or ():
        try:
            names = os.listdir(folder)
        except OSError:
            return None  # not a folder (a zip): wrapt itself decides when imported
        if any(name.startswith("_wrappers.") and name.endswith(suffixes) for name in names):
            return None
    return "wrapt was installed without its C extension (no wrapt._wrappers module)"


def backend_refusal(name: str, where: Surface = API,
                    environ: Mapping[str, str] = os.environ) -> str | None:
    """Why the backend ``name`` (``auto`` resolved or not) cannot run here, in the syntax
    of ``where``; None if it can. The wrapt backend needs wrapt's compiled proxies
    (``wrapt_extension_missing``); with wrapt's pure-Python ones it would
    trace nothing."""
    if resolve_backend(name) != "wrapt":
        return None
    why = wrapt_extension_missing(environ)
    if why is None:
        return None
    option = OPTIONS_BY_NAME["backend"]
    instead = (f"use {where.example_value(option, 'monitoring')}"
               if sys.version_info >= (3, 12) else
               "run Python 3.12 or newer, where the monitoring backend needs no wrapt")
    return (f"the wrapt backend ({where.show(option, name)}) needs wrapt's C extension, "
            f"but {why}. Unset WRAPT_DISABLE_EXTENSIONS, or reinstall wrapt with its "
            f"extension (pip install --force-reinstall wrapt; a C compiler where no wheel "
            f"exists), or {instead}")


def parse_bool(option: Option, value: Any, where: Surface) -> bool:
    if where.typed:
        if not isinstance(value, bool):
            words = ("True or False" if where.kind == "api" else
                     "true or false (a TOML boolean: no quotes)")
            raise TypeError(f"{where.show(option, value)} must be {words}")
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{where.show(option, value)} is not a boolean; use true or false")


def parse_int(option: Option, value: Any, where: Surface) -> int:
    if where.typed:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where.show(option, value)} must be an integer, "
                            f"e.g. {where.example(option)}")
        number = value
    else:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError(f"{where.show(option, value)} is not an integer; use e.g. "
                             f"{where.example(option)}") from None
    if option.minimum is not None and number < option.minimum:
        shown = f"{option.name}={number}" if where.kind == "api" else where.show(
            option, number) if where.kind == "file" else (
            f"{where.name(option)}={number}" if where.kind == "env" else
            f"{option.short or option.flag} {number}")
        raise ValueError(f"{shown} is too small; use an integer >= "
                         f"{option.minimum:g}, e.g. {where.example(option)}")
    return number


def parse_duration(option: Option, value: Any, where: Surface) -> float:
    """Seconds. API: a number of seconds or a string with a unit; variables and flags: a
    string with a unit, a bare number meaning milliseconds (as OpenTelemetry's own);
    the file: a string with a unit (a bare number there would be read either way)."""
    accepted = ("a duration such as '5ms', '250us' or '1.5s' (units ns, us, ms, s"
                + ("; a bare number is seconds)" if where.kind == "api" else
                   "; a string with its unit)" if where.kind == "file" else
                   "; a bare number is milliseconds)"))
    if where.kind == "file":
        bare = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
        if not isinstance(value, str) or (bare is not None and not bare["unit"]):
            raise TypeError(f"{where.show(option, value)} must be {accepted}, "
                            f"e.g. {where.example(option)}")
    if where.kind == "api" and not isinstance(value, str):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{where.show(option, value)} must be {accepted}")
        seconds = float(value)
    else:
        text = str(value)
        match = _DURATION.fullmatch(text.strip() if not where.typed else text)
        if match is None:
            raise ValueError(f"{where.show(option, value)} is not {accepted}")
        unit = match["unit"]
        if unit and unit not in _UNITS:
            raise ValueError(f"{where.show(option, value)} has an unknown unit {unit!r}; use "
                             f"{accepted}")
        number = float(match["number"])
        if not unit:
            unit = "s" if where.kind == "api" else "ms"
        seconds = number * _UNITS[unit]
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"{where.show(option, value)} must be a positive duration, "
                         f"e.g. {where.example(option)}; leave it unset for no limit")
    return seconds


def _separators(text: str) -> Iterator[tuple[str, bool]]:
    """Each character of ``text``, and whether it separates two regexes: a comma that is
    not escaped (``\\,``) nor inside ``{m,n}``, ``[...]`` or ``(...)``."""
    depth = 0
    escaped = False
    for ch in text:
        separates = False
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in "{[(":
            depth += 1
        elif ch in "}])" and depth:
            depth -= 1
        elif ch == "," and not depth:
            separates = True
        yield ch, separates


def _split_regexes(raw: str) -> list[str]:
    """Comma-separated regexes; a comma inside ``{m,n}``, ``[...]`` or ``(...)`` or
    escaped (``\\,``) belongs to its regex."""
    parts: list[str] = []
    current: list[str] = []
    for ch, separates in _separators(raw):
        if separates:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def parse_regexes(option: Option, value: Any, where: Surface) -> tuple[str, ...]:
    items = (tuple(_split_regexes(value)) if isinstance(value, str) and not where.typed
             else _strings(option, value, where))
    for expr in items:
        try:
            compiled = re.compile(expr)
        except re.error as exc:
            raise ValueError(
                f"{where.name(option)} entry {expr!r} is not a valid regular expression "
                f"({exc}); fix or escape it (re.escape)") from None
        if option.name == "redact_values" and compiled.search("") is not None:
            raise ValueError(
                f"{where.name(option)} entry {expr!r} matches the empty string, so it would "
                "mark every position of every value; make it match at least one character, "
                f"e.g. {where.example_value(option, expr.rstrip('*?') + '+')}")
    return items


def parse_detectors(option: Option, value: Any, where: Surface) -> tuple[str, ...]:
    """Names of built-in value detectors (``describe.redaction.DETECTORS``), or ``all``."""
    items = _strings(option, value, where)
    for item in items:
        if item != "all" and item not in DETECTOR_NAMES:
            raise ValueError(
                f"{where.name(option)} entry {item!r} is not a value detector; use any of "
                + ", ".join(DETECTOR_NAMES) + ", or all")
    return items


_LIST_PARSERS = (parse_patterns, parse_regexes, parse_detectors)


def _join_regexes(items: Sequence[str]) -> str:
    """``items`` as one comma-separated text that ``_split_regexes`` splits back into them
    (a comma it would split at is escaped: ``\\,`` matches a comma, as ``,`` does)."""
    return ",".join("".join("\\" + ch if separates else ch
                            for ch, separates in _separators(item)) for item in items)


def parse_text(option: Option, value: Any, where: Surface) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where.show(option, value)} is empty; give e.g. "
                         f"{where.example(option)}")
    return value.strip()


def parse_provider(option: Option, value: Any, where: Surface) -> Any:
    if isinstance(value, type):
        raise TypeError(f"{option.name}={value!r} is a class; pass an instance, e.g. "
                        f"{option.name}={option.api_example}, or None for the global one")
    if not hasattr(value, option.provider_method):
        raise TypeError(f"{option.name}={value!r} is not a {option.api_example[:-2]}; pass "
                        f"an OpenTelemetry {option.api_example[:-2]} or None for the global one")
    return value


#: parser -> (what install() accepts, what Config holds): the annotations written out
#: by scripts/sync_options.py.
_HINTS: dict[Callable[..., Any], tuple[str, str]] = {
    parse_patterns: ("str | Sequence[str]", "tuple[str, ...]"),
    parse_regexes: ("str | Sequence[str]", "tuple[str, ...]"),
    parse_detectors: ("str | Sequence[str]", "tuple[str, ...]"),
    parse_bool: ("bool", "bool"),
    parse_int: ("int", "int"),
    parse_duration: ("float | str", "float"),
    parse_choice: ("str", "str"),
    parse_backend: ("str", "str"),
    parse_text: ("str", "str"),
}


# -- the table ------------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    """One setting, and every way of giving it."""

    name: str  # the install() keyword and the Config field
    parse: Callable[[Option, Any, Surface], Any]
    default: Any
    help: str
    api_example: str
    text_example: str
    #: The ``autotrace`` flag; booleans get ``--x/--no-x``; None: no flag (variable only).
    flag: str | None = None
    short: str | None = None
    env_var: bool = True  # False: only the Python API can give it (objects)
    #: False: a setting of the ``autotrace`` command's runtime (variable and flags only).
    api: bool = True
    required: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    provider_method: str = ""
    #: False: not offered by ``opentelemetry-instrument`` (a setting only the command reads).
    otel_instrument: bool = True

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def instrument_flag(self) -> str:
        """The ``opentelemetry-instrument`` flag derived from the variable."""
        return "--" + self.env[len("OTEL_PYTHON_"):].lower()

    @property
    def is_bool(self) -> bool:
        return self.parse is parse_bool

    @property
    def api_hint(self) -> str:
        """The ``install()`` keyword's annotation: what a caller may pass."""
        if self.parse is parse_provider:
            return f"{self.api_example.removesuffix('()')} | None"
        return self._hints[0] + " | None"

    @property
    def config_hint(self) -> str:
        """The ``Config`` field's annotation: what the rest of autotrace gets."""
        if self.parse is parse_provider:
            return "Any"
        return self._hints[1] + (" | None" if self.default is None else "")

    @property
    def _hints(self) -> tuple[str, str]:
        hints = _HINTS.get(self.parse)
        if hints is None:
            raise KeyError(f"option {self.name}: add its parser {self.parse.__name__} to "
                           "config._HINTS (what install() accepts, what Config holds)")
        return hints


OPTIONS: tuple[Option, ...] = (
    Option("patterns", parse_patterns, (), "name patterns of the functions to trace "
           "(comma-separated)", "['myapp']", "myapp", flag="--patterns", short="-p",
           required=True),
    Option("exclude", parse_patterns, (), "name patterns never traced (comma-separated)",
           "['myapp.vendored']", "myapp.vendored", flag="--exclude"),
    Option("backend", parse_backend, "wrapt", "how calls are seen: wrapt, monitoring (3.12+) "
           "or auto", "'auto'", "auto", flag="--backend", choices=BACKENDS),
    Option("core", parse_choice, "auto", "the per-call path: compiled (C), python (the "
           "reference) or auto (compiled where it is built)", "'python'", "python",
           flag="--core", choices=CORES),
    Option("capture_args", parse_bool, True, "record arguments", "False", "false",
           flag="--capture-args"),
    Option("capture_return", parse_bool, True, "record return values", "False", "false",
           flag="--capture-return"),
    Option("repr_objects", parse_bool, False, "render any object with its own repr()",
           "True", "true", flag="--repr-objects"),
    Option("max_value_length", parse_int, DEFAULT_MAX_VALUE_LENGTH,
           "longest string attribute", "256", "256", flag="--max-value-length",
           minimum=_MIN_VALUE_LENGTH),
    Option("redact", parse_regexes, DEFAULT_REDACT, "regexes of secret parameter names and "
           "dict keys (comma-separated)", "['password']", "password,pin",
           flag="--redact"),
    Option("redact_values", parse_regexes, (), "regexes of secret values, replaced wherever "
           "they occur in a rendered value (group 1 only, if the regex has one; "
           "comma-separated)", "[r'acct-\\d{8}']", "acct-[0-9]{8}", flag="--redact-values"),
    Option("redact_disable", parse_detectors, (), "built-in value detectors to switch off, "
           "by name, or all (comma-separated)", "['jwt']", "jwt,named_pairs",
           flag="--redact-disable"),
    Option("min_duration", parse_duration, None, "calls shorter than this make no span, "
           "decided when the call ends (unless it raised, or a kept or foreign span is "
           "inside it)", "'1ms'", "1ms", flag="--min-duration"),
    Option("keep_errors", parse_bool, True, "with min_duration: keep a call whose exception "
           "escaped its traced caller, however short, with its chain", "False", "false",
           flag="--keep-errors"),
    Option("keep_handled_errors", parse_bool, False, "with keep_errors: also keep a short "
           "call whose exception a traced caller handled (else counted on that caller)",
           "True", "true", flag="--keep-handled-errors"),
    Option("require_parent", parse_bool, False, "trace only calls that start while a valid "
           "span is current (a request, a job)", "True", "true", flag="--require-parent"),
    Option("max_depth", parse_int, None, "at most this many autotrace spans nested in one "
           "chain; deeper calls make none", "20", "20", flag="--max-depth", minimum=1),
    Option("propagate", parse_bool, True, "command only: child processes and pool tasks "
           "join the current trace (TRACEPARENT)", "False", "false", flag="--propagate",
           api=False),
    Option("trace_file", parse_text, "autotrace-trace.json", "command only, with --exporter "
           "trace-file: where the Chrome trace JSON goes (children add their pid)",
           "'trace.json'", "trace.json", flag="--trace-file", api=False,
           otel_instrument=False),
    Option("instrumentations", parse_choice, "on", "command only: on: load the installed "
           "OpenTelemetry instrumentations (as opentelemetry-instrument) into autotrace's "
           "provider; distro: also run the distro's configurator; off: none", "'off'", "off",
           flag="--instrumentations", api=False, choices=INSTRUMENTATIONS,
           otel_instrument=False),
    Option("spans", parse_bool, True, "make spans (off: metrics or the profile only)",
           "False", "false", flag="--spans"),
    Option("metrics", parse_bool, False, "a histogram autotrace.function.duration of every "
           "traced call, span or not", "True", "true", flag="--metrics"),
    Option("suppress_hot", parse_bool, False, "once a function has made hot_calls spans "
           "with a median under hot_duration, its later calls make none (still counted; "
           "failures still do)", "True", "true", flag="--suppress-hot"),
    Option("hot_calls", parse_int, 1000, "with suppress_hot: spans a function makes before "
           "it may be found hot", "1000", "1000", flag="--hot-calls", minimum=1),
    Option("hot_duration", parse_duration, 100e-6, "with suppress_hot: a median span "
           "duration under this is hot", "'100us'", "100us", flag="--hot-duration"),
    Option("profile", parse_bool, False, "at exit, a table on stderr of the traced "
           "functions by total time", "True", "true", flag="--profile"),
    Option("tracer_provider", parse_provider, None, "the TracerProvider (default: the "
           "global one, looked up lazily)", "TracerProvider()", "", env_var=False,
           provider_method="get_tracer"),
    Option("meter_provider", parse_provider, None, "with metrics: the MeterProvider "
           "(default: the global one, looked up lazily)", "MeterProvider()", "",
           env_var=False, provider_method="get_meter"),
)

OPTIONS_BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}
#: The ``install()`` keywords and ``Config`` fields.
API_OPTIONS: tuple[Option, ...] = tuple(option for option in OPTIONS if option.api)


@dataclass(frozen=True)
class Config:
    """The validated settings of one installation (fields: ``OPTIONS``, in order)."""

    # -- generated from OPTIONS by scripts/sync_options.py: edit the table, then run it --
    patterns: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    backend: str = "wrapt"
    core: str = "auto"
    capture_args: bool = True
    capture_return: bool = True
    repr_objects: bool = False
    max_value_length: int = DEFAULT_MAX_VALUE_LENGTH
    redact: tuple[str, ...] = DEFAULT_REDACT
    redact_values: tuple[str, ...] = ()
    redact_disable: tuple[str, ...] = ()
    min_duration: float | None = None  # seconds
    keep_errors: bool = True
    keep_handled_errors: bool = False
    require_parent: bool = False
    max_depth: int | None = None
    spans: bool = True
    metrics: bool = False
    suppress_hot: bool = False
    hot_calls: int = 1000
    hot_duration: float = 0.0001  # seconds
    profile: bool = False
    tracer_provider: Any = None
    meter_provider: Any = None
    # -- end of generated lines --


#: The keys of the configuration file: every option but the objects (the providers).
FILE_OPTIONS: tuple[Option, ...] = tuple(option for option in OPTIONS if option.env_var)


def read_settings(found: ConfigFile) -> tuple[dict[str, Any], FileSurface]:
    """The file's settings by option name, validated; each error names the file, the key
    and the accepted forms, in TOML (``ConfigFileError``)."""
    where = FileSurface(found.where)
    settings: dict[str, Any] = {}
    for key, value in found.table.items():
        option = OPTIONS_BY_NAME.get(key)
        if option is None or not option.env_var:
            raise ConfigFileError(_unknown_key(key, found.where))
        try:
            settings[key] = option.parse(option, value, where)
        except (ValueError, TypeError, RuntimeError) as exc:  # RuntimeError: a backend
            raise ConfigFileError(str(exc)) from None
    return settings, where


def _unknown_key(key: str, where: str) -> str:
    names = [option.name for option in FILE_OPTIONS]
    if key in OPTIONS_BY_NAME:
        return (f"{key} in {where} cannot be set in a file (it is an object): pass "
                f"{API.example(OPTIONS_BY_NAME[key])} to autotrace.install()")
    spelled = key.replace("-", "_").lower()
    if spelled in names:
        return (f"unknown key {key!r} in {where}: write {spelled} (the keys are the "
                "install() keywords, with underscores)")
    import difflib

    close = difflib.get_close_matches(spelled, names, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return (f"unknown key {key!r} in {where}; {hint}the keys are " + ", ".join(names)
            + " (the install() keywords)")


def file_settings(environ: Mapping[str, str]) -> tuple[dict[str, Any], Surface]:
    """The configuration file's settings in force for ``environ`` here (none: ``{}``)."""
    found = configfile.find(environ)
    if found is None:
        return {}, API
    return read_settings(found)


def _given(option: Option, raw: str | None) -> bool:
    """Whether a variable's value ``raw`` gives ``option`` (so the file does not): a
    value, or an empty list ("none")."""
    return raw is not None and (bool(raw.strip()) or option.parse in _LIST_PARSERS)


def make_config(patterns: Any = None, *, environ: Mapping[str, str] | None = None,
                flags: Collection[str] = (), **options: Any) -> Config:
    """Merge arguments over the environment over the configuration file over defaults,
    and validate.

    ``flags``: the options the ``autotrace`` command got as flags (already in
    ``environ``), so that a conflict between options is told in flag syntax."""
    env = os.environ if environ is None else environ
    given_on: dict[str, Surface] = {}
    unknown = set(options) - {option.name for option in API_OPTIONS}
    if unknown:
        names = ", ".join(sorted(unknown))
        raise TypeError(f"unknown autotrace option {names}; the options are "
                        + ", ".join(option.name for option in API_OPTIONS))
    options["patterns"] = patterns
    from_file, in_file = file_settings(env)
    values: dict[str, Any] = {}
    for option in API_OPTIONS:
        given = options.get(option.name)
        if given is not None:
            values[option.name] = option.parse(option, given, API)
            given_on[option.name] = API
            continue
        raw = env.get(option.env) if option.env_var else None
        if raw is not None and raw.strip():
            values[option.name] = option.parse(option, raw, ENV)
            given_on[option.name] = FLAG if option.name in flags else ENV
        elif option.required and raw is not None:  # set, but empty: the variable is wrong
            raise ValueError(f"{option.env} is empty; give at least one pattern, e.g. "
                             f"{ENV.example(option)}, or unset it and pass "
                             f"{API.example(option)} to autotrace.install()")
        elif option.required and option.name not in from_file:
            raise ValueError(
                f"autotrace.install() needs {option.name}: pass "
                f"{API.example(option)}, set {ENV.example(option)} (comma-separated), or "
                f"write {FILE_SYNTAX.example(option)} in {configfile.TABLE} of "
                f"{configfile.PYPROJECT} (or in {configfile.OWN_FILE})")
        elif raw is not None and option.parse in _LIST_PARSERS:
            values[option.name] = ()  # set but empty: explicitly none
        elif option.name in from_file:
            values[option.name] = from_file[option.name]
            given_on[option.name] = in_file
        else:
            values[option.name] = option.default
    if not values["spans"] and not values["metrics"] and not values["profile"]:
        surface = given_on.get("spans", API)
        spans, metrics, profile = (OPTIONS_BY_NAME[name] for name in
                                   ("spans", "metrics", "profile"))
        message = (f"{surface.switch(spans, False)} turns spans off, and with neither "
                   f"{surface.switch(metrics, True)} nor {surface.switch(profile, True)} "
                   f"nothing would be recorded: add one of them, or leave spans on")
        if isinstance(surface, FileSurface):
            raise ConfigFileError(f"{message} (in {surface.where})")
        raise ValueError(message)
    return Config(**values)


def command_setting(name: str, environ: Mapping[str, str]) -> Any:
    """A command-only setting (``api=False``) from its variable, validated, else from the
    configuration file, else the default."""
    option = OPTIONS_BY_NAME[name]
    raw = environ.get(option.env)
    if raw is None or not raw.strip():
        return file_settings(environ)[0].get(name, option.default)
    return option.parse(option, raw, ENV)


def file_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The configuration file's settings that no variable (or flag) in ``environ`` gives,
    as the variables that would give them. The ``autotrace`` command hands them to the
    program with ``OTEL_PYTHON_AUTOTRACE_CONFIG=none``: every process of the run has the
    settings the command checked, whichever directory it runs in."""
    found = configfile.find(environ)
    if found is None:
        return {}
    settings = read_settings(found)[0]
    out: dict[str, str] = {}
    for name, parsed in settings.items():
        option = OPTIONS_BY_NAME[name]
        if _given(option, environ.get(option.env)):
            continue
        raw = found.table[name]
        out[option.env] = (raw.strip() if option.parse is parse_duration
                           else to_text(option, parsed, raw))
    return out


def check_command_settings(environ: Mapping[str, str]) -> None:
    """Raise for a bad value of any command-only variable (the command exits 2)."""
    for option in OPTIONS:
        if not option.api:
            command_setting(option.name, environ)


def environment_from_flags(given: Mapping[str, Any]) -> dict[str, str]:
    """Validate ``autotrace`` flag values (option name -> value) and turn them into the
    variables the bootstrap reads; errors name the flag."""
    out: dict[str, str] = {}
    for name, value in given.items():
        option = OPTIONS_BY_NAME[name]
        parsed = option.parse(option, value, FLAG)
        out[option.env] = to_text(option, parsed, value)
    return out


def to_text(option: Option, parsed: Any, raw: Any) -> str:
    """A validated value as its environment variable would spell it."""
    if option.is_bool:
        return "true" if parsed else "false"
    if option.parse is parse_regexes:
        return _join_regexes(parsed)
    if isinstance(parsed, tuple):
        return ",".join(parsed)
    if option.parse is parse_duration:
        return f"{parsed * 1e3:g}ms"
    return str(raw).strip()


def resolve_backend(name: str) -> str:
    """Turn ``auto`` into the concrete backend for this interpreter."""
    if name == "auto":
        return "monitoring" if sys.version_info >= (3, 12) else "wrapt"
    return name
