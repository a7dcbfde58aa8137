"""Uninstall restores everything; escaped wrappers pass through; install works again."""

from __future__ import annotations

import importlib
import sys

import pytest

import autotrace

from .conftest import Traced

SOURCE = '''
def f(x):
    return x + 1

class C:
    def m(self):
        return "m"
    @staticmethod
    def s():
        return "s"
    @classmethod
    def c(cls):
        return "c"
    @property
    def p(self):
        return "p"
'''


def test_uninstall_restores_originals_and_removes_the_hook(traced: Traced) -> None:
    name = traced.modules.module("u", SOURCE)
    mod = importlib.import_module(name)
    originals = {k: v for k, v in vars(mod.C).items()}
    original_f = mod.f
    meta_path = list(sys.meta_path)
    inst = traced.install()
    # wrapt replaces the function; sys.monitoring leaves the very same object in place
    assert (mod.f is original_f) is (traced.backend == "monitoring")
    escaped = mod.f
    assert escaped(1) == 2 and traced.names() == ["f"]
    traced.clear()
    inst.uninstall()
    assert not inst.active and autotrace.active_installation() is None
    assert mod.f is original_f
    for key, value in originals.items():
        assert vars(mod.C)[key] is value, key
    assert sys.meta_path == meta_path
    assert escaped(1) == 2 and mod.C().m() == "m" and mod.C().p == "p"
    assert traced.names() == []  # the escaped wrapper passed through


def test_install_uninstall_install(traced: Traced) -> None:
    mod = traced.load("u", SOURCE)
    assert mod.f(1) == 2
    autotrace.uninstall()
    assert mod.f(1) == 2
    traced.installation = None
    traced.install()
    assert mod.f(1) == 2 and mod.C().m() == "m" and mod.C.s() == "s" and mod.C.c() == "c"
    assert traced.names() == ["f", "f", "C.m", "C.s", "C.c"]
    assert autotrace.uninstall() is True
    assert autotrace.uninstall() is False


def test_monitoring_uninstall_frees_the_tool_and_stops_callbacks(traced: Traced) -> None:
    if traced.backend != "monitoring":
        pytest.skip("sys.monitoring only")
    mod = traced.load("u", SOURCE)
    mod.f(1)
    tools = {i: sys.monitoring.get_tool(i) for i in range(6)}
    assert "autotrace" in tools.values()
    autotrace.uninstall()
    assert "autotrace" not in {sys.monitoring.get_tool(i) for i in range(6)}
    traced.clear()
    mod.f(1), mod.C().m()
    assert traced.names() == []
