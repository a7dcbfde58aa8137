"""Faults inside autotrace never reach the traced program; each is logged once."""

from __future__ import annotations

from typing import Any

import pytest

from autotrace import _log

from .conftest import Traced

SOURCE = '''
def traced_fn(x):
    return x + 1

def raises_traced():
    raise ValueError("v")
'''


@pytest.fixture(autouse=True)
def _fresh_log_once() -> None:
    _log._seen.clear()


class _BrokenTracer:
    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tracer exploded")


class _BrokenProvider:
    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        return _BrokenTracer()


def test_internal_failure_never_reaches_user_code(traced: Traced, caplog: Any) -> None:
    """Both backends: a tracer that raises leaves results and exceptions unchanged."""
    mod = traced.load("mod", SOURCE, tracer_provider=_BrokenProvider())
    with caplog.at_level("WARNING", logger="autotrace"):
        for _ in range(3):
            assert mod.traced_fn(1) == 2
            with pytest.raises(ValueError, match="v"):
                mod.raises_traced()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "runs untraced" in warnings[0].getMessage()
