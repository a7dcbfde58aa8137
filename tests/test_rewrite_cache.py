"""The cache of rewritten code: next to the normal ``.pyc``, under a tag of its own."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

import autotrace

from .conftest import Traced

SOURCE = "def f(x):\n    return x + 1\n\nREGISTRY = [f]\n"


def _cached(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*.autotrace-*.pyc"))


@pytest.fixture(autouse=True)
def _writes_bytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)


def _reimport(name: str) -> object:
    sys.modules.pop(name, None)
    importlib.invalidate_caches()
    return importlib.import_module(name)


def test_rewritten_code_is_cached_and_reused(traced: Traced) -> None:
    if traced.backend != "wrapt":
        pytest.skip("the rewrite belongs to the wrapt backend")
    mod = traced.load("cached", SOURCE)
    cached = _cached(traced.modules.root)
    tag = sys.implementation.cache_tag
    assert len(cached) == 1 and cached[0].startswith(f"{traced.modules.name('cached')}.{tag}")
    stamp = os.stat(next(traced.modules.root.rglob("*.autotrace-*.pyc"))).st_mtime_ns
    again = _reimport(mod.__name__)
    assert again.REGISTRY[0](1) == 2 and traced.names() == ["f"]  # the cached code is rewritten
    assert os.stat(next(traced.modules.root.rglob("*.autotrace-*.pyc"))).st_mtime_ns == stamp


def test_a_changed_source_or_selection_is_rewritten_again(traced: Traced) -> None:
    if traced.backend != "wrapt":
        pytest.skip("the rewrite belongs to the wrapt backend")
    mod = traced.load("cached", SOURCE)
    traced.modules.write(f"{mod.__name__}.py", SOURCE + "\ndef g():\n    return f(0)\n\nR2 = [g]\n")
    again = _reimport(mod.__name__)
    assert again.R2[0]() == 1 and traced.names() == ["f", "g"]
    autotrace.uninstall()
    traced.installation = None
    traced.install([mod.__name__ + ".g"])
    traced.clear()
    again = _reimport(mod.__name__)
    assert again.R2[0]() == 1 and traced.names() == ["g"]  # f not selected: not wrapped
    assert len(_cached(traced.modules.root)) == 2  # one per selection


def test_code_of_another_rewriter_format_is_not_read(traced: Traced,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """An editable install keeps its version while the rewriter changes: the cache tag
    holds the rewriter's format too, so old rewritten code is never run."""
    if traced.backend != "wrapt":
        pytest.skip("the rewrite belongs to the wrapt backend")
    from autotrace.backends.wrapt import cache
    mod = traced.load("cached", SOURCE)
    assert len(_cached(traced.modules.root)) == 1
    monkeypatch.setattr(cache, "FORMAT", cache.FORMAT + 1)
    autotrace.uninstall()
    traced.installation = None
    traced.install()  # the same selection
    traced.clear()
    again = _reimport(mod.__name__)
    assert again.REGISTRY[0](1) == 2 and traced.names() == ["f"]
    assert len(_cached(traced.modules.root)) == 2  # written anew under the new tag


def test_nothing_is_written_where_a_pyc_would_not_be(traced: Traced,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if traced.backend != "wrapt":
        pytest.skip("the rewrite belongs to the wrapt backend")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    mod = traced.load("cached", SOURCE)
    assert mod.REGISTRY[0](1) == 2 and traced.names() == ["f"]
    assert _cached(traced.modules.root) == []


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True,
                    reason="root writes into read-only directories")
def test_a_read_only_tree_is_left_alone(traced: Traced) -> None:
    name = traced.modules.module("readonly", SOURCE)
    traced.modules.root.chmod(0o555)
    try:
        traced.install()
        mod = importlib.import_module(name)
        assert mod.REGISTRY[0](1) == 2 and traced.names() == ["f"]
        assert _cached(traced.modules.root) == []
    finally:
        traced.modules.root.chmod(0o755)


def test_code_rewritten_in_the_previous_form_still_imports(traced: Traced) -> None:
    """A module compiled by an older autotrace (``.traced(False)`` above each def) keeps
    importing and running after an upgrade, under either backend: one span a call."""
    old = '__import__("autotrace.backends.wrapt.main", fromlist=("_",))'
    mod = traced.load("older", f"""
@{old}.traced(False)
def f(x):
    return x + 1

class C:
    @{old}.traced(True)
    def m(self, y):
        return y * 2
""")
    assert mod.f(1) == 2 and mod.C().m(3) == 6
    assert traced.names() == ["f", "C.m"]
