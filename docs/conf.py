"""Sphinx configuration of autotrace's documentation site.

Why Sphinx + MyST Markdown + furo: Sphinx is the generator most Python projects'
documentation is built with (CPython, pytest, coverage.py's cousins, the OpenTelemetry
Python SDK), and its ``autodoc`` reads the API reference from the docstrings, so it
cannot drift from the code; MyST lets the pages be the same Markdown as README (the
content moved from there without being rewritten in reStructuredText, and GitHub
renders it too); furo is a maintained, accessible theme with light and dark modes and
no JavaScript framework. The options page is generated from ``config.OPTIONS`` by the
local extension ``_ext/autotrace_options.py``. CI builds with ``-W --keep-going``
(``.ci/run``): a warning (a broken link, a heading out of order, a docstring autodoc
cannot parse) fails the build.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

from autotrace import __version__  # noqa: E402  (the installed package, as users get it)

project = "autotrace"
author = "the autotrace authors"
copyright = "the autotrace authors"
release = __version__
version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "autotrace_options",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_ext"]
root_doc = "index"

myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3  # `page.md#a-heading` links, as on GitHub

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True

html_theme = "furo"
html_title = f"autotrace {release}"
html_static_path: list[str] = []
