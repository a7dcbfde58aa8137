"""The options page, generated from ``autotrace.config.OPTIONS`` so it cannot drift.

``options_markdown()`` writes one Markdown table, a row per option, a column per entry
of ``COLUMNS``: a new way of giving an option (a config-file key, say) is one more
``Column``. The ``autotrace-options`` directive parses that table where it stands in a
page. Importing this module needs no Sphinx (only ``setup()`` does), so the tests read
the same table the site shows (``tests/test_options.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autotrace import config
from autotrace.config import OPTIONS, Option


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[Option], str]


def _code(text: str) -> str:
    return f"`{text}`"


def _seconds(value: float) -> str:
    """A duration default as a user writes it: ``100us``, ``1ms``, ``2s``."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if value >= scale:
            return f"{value / scale:g}{unit}"
    return f"{value:g}s"


def _name(option: Option) -> str:
    return _code(option.name) + ("" if option.api else " (command only)")


def _env(option: Option) -> str:
    return _code(option.env) if option.env_var else "—"


def _flag(option: Option) -> str:
    if option.flag is None:
        return "—"
    flags = [option.short, option.flag] if option.short else [option.flag]
    if option.is_bool:
        flags.append(f"--no-{option.flag[2:]}")
    return ", ".join(_code(flag) for flag in flags if flag)


#: What each parser accepts, in a few words; a parser missing here fails the docs test.
TYPES: dict[str, Callable[[Option], str]] = {
    "parse_patterns": lambda o: "name patterns (list of str)",
    "parse_backend": lambda o: "one of " + ", ".join(_code(c) for c in o.choices),
    "parse_choice": lambda o: "one of " + ", ".join(_code(c) for c in o.choices),
    "parse_bool": lambda o: "bool",
    "parse_int": lambda o: "int" + (f" (>= {o.minimum:g})" if o.minimum is not None else ""),
    "parse_regexes": lambda o: "regexes (list of str)",
    "parse_detectors": lambda o: "detector names (list of str), or `all`",
    "parse_duration": lambda o: "duration (`5ms`, `250us`, `1.5s`)",
    "parse_text": lambda o: "str",
    "parse_provider": lambda o: "object (Python only)",
}


def _default(option: Option) -> str:
    value: Any = option.default
    if option.required:
        return "required"
    if value is config.DEFAULT_REDACT:
        return "`autotrace.DEFAULT_REDACT`"
    if value is None:
        return "the global provider" if option.parse is config.parse_provider else "off"
    if value == ():
        return "none"
    if isinstance(value, bool):
        return _code(str(value).lower())
    if option.parse is config.parse_duration:
        return _code(_seconds(value))
    return _code(str(value))


def _type_default(option: Option) -> str:
    return f"{TYPES[option.parse.__name__](option)}; default {_default(option)}"


def _help(option: Option) -> str:
    return option.help.replace("|", "\\|")


COLUMNS: list[Column] = [
    Column("option (`install()` keyword)", _name),
    Column("environment variable", _env),
    Column("`autotrace` flag", _flag),
    Column("type, default", _type_default),
    Column("meaning", _help),
]


def options_markdown(columns: list[Column] | None = None) -> str:
    """The options table, as Markdown (GitHub table syntax, which MyST reads)."""
    columns = COLUMNS if columns is None else columns
    lines = ["| " + " | ".join(c.header for c in columns) + " |",
             "| " + " | ".join("---" for _ in columns) + " |"]
    for option in OPTIONS:
        lines.append("| " + " | ".join(c.cell(option) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def setup(app: Any) -> dict[str, Any]:
    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx.util.docutils import SphinxDirective

    class OptionsTable(SphinxDirective):
        """``autotrace-options``: the table above, parsed in the page that holds it."""

        def run(self) -> list[nodes.Node]:
            self.env.note_dependency(config.__file__)  # rebuilt when the table changes
            container = nodes.container(classes=["autotrace-options"])
            source = self.get_source_info()[0]
            lines = StringList(options_markdown().splitlines(), source=source)
            self.state.nested_parse(lines, self.content_offset, container)
            return [container]

    app.add_directive("autotrace-options", OptionsTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
