"""autotrace's environment variables, for ``opentelemetry-instrument``.

Registered as an ``opentelemetry_environment_variables`` entry point: every
``OTEL_*`` name here becomes an option of ``opentelemetry-instrument`` with
the ``OTEL_``/``OTEL_PYTHON_`` prefix dropped and lower-cased, so
``--autotrace_patterns=myapp`` sets ``OTEL_PYTHON_AUTOTRACE_PATTERNS``. The
names come from ``autotrace.config.OPTIONS`` (those the command alone reads,
such as the trace file, are left out).

``opentelemetry-instrument`` adds each as a bare ``add_argument(flag)``: no help,
and a value always required. When this module is loaded by its ``run()`` (the
only place that loads this entry point group), ``adopt_parser`` gives the
parser's ``add_argument`` our help texts and lets a boolean flag be given bare
(``--autotrace_require_parent``) as well as with a value
(``--autotrace_require_parent true``): the bare form is rewritten in ``sys.argv``
to ``--autotrace_require_parent=true`` before the parser reads it. Anything
unexpected leaves the parser as it is.
"""

from __future__ import annotations

import argparse
import os
import sys
from types import FrameType
from typing import Any

from ..config import FALSE_WORDS, OPTIONS, TRUE_WORDS, Option

#: The options ``opentelemetry-instrument`` offers, by its flag.
OFFERED: dict[str, Option] = {option.instrument_flag: option for option in OPTIONS
                              if option.env_var and option.otel_instrument}

globals().update({option.env: option.env for option in OFFERED.values()})
OTEL_PYTHON_AUTOTRACE_PATTERNS = "OTEL_PYTHON_AUTOTRACE_PATTERNS"  # the one others import

_RUN_FILE = os.path.join("auto_instrumentation", "__init__.py")


def _help(option: Option) -> str:
    default = option.default
    if isinstance(default, tuple):
        default = ",".join(default) or "none"
    if option.is_bool:
        return f"{option.help} (true/false; bare: true; default: {str(default).lower()})"
    return f"{option.help} (default: {default})"


def bare_booleans(argv: list[str]) -> list[str]:
    """``argv`` (an ``opentelemetry-instrument`` command line) with each of our boolean
    flags given bare, or followed by a separate true/false word, as ``--flag=value``.

    Only the options before the command are looked at; every other option of
    ``opentelemetry-instrument`` takes exactly one value (``--help``/``--version`` none)."""
    out = list(argv[:1])
    i = 1
    while i < len(argv):
        token = argv[i]
        if token == "--" or not token.startswith("-"):
            break
        option = OFFERED.get(token)
        if option is not None and option.is_bool:
            following = argv[i + 1].strip().lower() if i + 1 < len(argv) else ""
            if following in TRUE_WORDS or following in FALSE_WORDS:
                out.append(f"{token}={argv[i + 1]}")
                i += 2
            else:
                out.append(f"{token}=true")
                i += 1
            continue
        takes_value = "=" not in token and token not in ("-h", "--help", "--version")
        out.extend(argv[i:i + 2] if takes_value else [token])
        i += 2 if takes_value else 1
    out.extend(argv[i:])
    return out


def _instrument_parser(frame: FrameType | None) -> argparse.ArgumentParser | None:
    """The parser of ``opentelemetry-instrument``'s ``run()`` loading us, if that is who."""
    for _ in range(40):  # importlib's frames, an import hook's
        if frame is None:
            return None
        code = frame.f_code
        if code.co_name == "run" and code.co_filename.endswith(_RUN_FILE):
            parser = frame.f_locals.get("parser")
            return parser if isinstance(parser, argparse.ArgumentParser) else None
        frame = frame.f_back
    return None


def adopt_parser(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Help texts for our flags, bare booleans: see the module's docstring."""
    plain = parser.add_argument

    def add_argument(*names: Any, **kwargs: Any) -> Any:
        option = OFFERED.get(names[0]) if len(names) == 1 else None
        if option is not None and set(kwargs) <= {"required"}:
            kwargs["help"] = _help(option)
            kwargs["metavar"] = ("{true,false}" if option.is_bool else
                                 "{" + ",".join(option.choices) + "}" if option.choices
                                 else option.name.upper())
        return plain(*names, **kwargs)

    parser.add_argument = add_argument  # type: ignore[method-assign]
    argv[:] = bare_booleans(argv)


def _adopt() -> None:
    try:
        parser = _instrument_parser(sys._getframe(1))
        if parser is not None:
            adopt_parser(parser, sys.argv)
    except Exception:  # the flags still work, without help texts
        pass


_adopt()
