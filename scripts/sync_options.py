"""Write the lines that ``autotrace.config.OPTIONS`` implies: ``Config``'s fields and
``install()``'s keywords.

A new option is one row in ``OPTIONS``; then ``python scripts/sync_options.py`` writes
its ``Config`` field (config.py), its ``install()`` keyword and the argument passing it
on (core.py), between the ``# -- generated from`` and ``# -- end of generated lines --``
comments: real annotated parameters, which type checkers and editors see, that cannot
drift from the table. ``--check`` (run by tests/test_options.py) only says which file is
stale. Variables, flags, ``opentelemetry-instrument`` flags and file keys need no
generated code: they are derived from the table when autotrace runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from autotrace import config  # noqa: E402
from autotrace.config import API_OPTIONS, Option, parse_duration  # noqa: E402

CONFIG_PY = ROOT / "src" / "autotrace" / "config.py"
CORE_PY = ROOT / "src" / "autotrace" / "core.py"
START = "# -- generated from"
END = "# -- end of generated lines --"
WIDTH = 100


def _default(option: Option) -> str:
    """The default as source: a ``DEFAULT_*`` constant's name where there is one."""
    for name, value in vars(config).items():
        if (name.startswith("DEFAULT_") and type(value) is type(option.default)
                and value == option.default):
            return name
    return json.dumps(option.default) if isinstance(option.default, str) else repr(
        option.default)


def config_fields() -> list[str]:
    lines = []
    for option in API_OPTIONS:
        line = f"    {option.name}: {option.config_hint}"
        if not option.required:
            line += f" = {_default(option)}"
        if option.parse is parse_duration:
            line += "  # seconds"
        lines.append(line)
    return lines


def install_keywords() -> list[str]:
    """The first option (``patterns``) may be given by position; the others by name."""
    lines = []
    for index, option in enumerate(API_OPTIONS):
        lines.append(f"    {option.name}: {option.api_hint} = None,")
        if index == 0:
            lines.append("    *,")
    return lines


def make_config_arguments(indent: str = " " * 12) -> list[str]:
    words = [f"{API_OPTIONS[0].name},"] + [f"{option.name}={option.name}," for option in
                                           API_OPTIONS[1:]]
    lines: list[str] = []
    line = indent
    for word in words:
        if line != indent and len(line) + 1 + len(word) > WIDTH:
            lines.append(line)
            line = indent
        line += word if line == indent else " " + word
    lines.append(line)
    return lines


def replace_blocks(text: str, blocks: list[list[str]]) -> str:
    out: list[str] = []
    pending = list(blocks)
    inside = False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if inside:
            if stripped == END:
                out.append(line)
                inside = False
            continue
        out.append(line)
        if stripped.startswith(START):
            if not pending:
                raise SystemExit(f"more generated blocks than expected: {line!r}")
            out.extend(generated + "\n" for generated in pending.pop(0))
            inside = True
    if pending or inside:
        raise SystemExit("a generated block or its end comment is missing")
    return "".join(out)


def expected() -> dict[Path, str]:
    """Each file as the table implies it."""
    return {
        CONFIG_PY: replace_blocks(CONFIG_PY.read_text(encoding="utf-8"), [config_fields()]),
        CORE_PY: replace_blocks(CORE_PY.read_text(encoding="utf-8"),
                                [install_keywords(), make_config_arguments()]),
    }


def stale() -> list[Path]:
    return [path for path, text in expected().items()
            if path.read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only report the files that differ (exit status 1)")
    args = parser.parse_args(argv)
    if args.check:
        paths = stale()
        for path in paths:
            print(f"{path.relative_to(ROOT)} is not what config.OPTIONS implies; "
                  "run python scripts/sync_options.py")
        return 1 if paths else 0
    for path, text in expected().items():
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
