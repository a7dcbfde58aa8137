"""Span and trace ids that leave the program's ``random`` module alone.

The SDK's default ``RandomIdGenerator`` draws from the ``random`` module's
global generator, so every span autotrace starts would advance the program's
own random sequence: a program that calls ``random.seed(42)`` and then a traced
function would see different "random" numbers with tracing on (found by
more-itertools' test suite, whose doctests print seeded random values).
autotrace's tracer therefore draws its ids from a private generator, seeded
from the OS and re-seeded in a forked child (as ``random`` itself is), so that
parent and child never share ids. A generator the user configured is kept.
"""

from __future__ import annotations

import os
import random
from typing import Any

from opentelemetry import trace

# Not imported from the SDK: importing ``opentelemetry.sdk.trace`` costs tens of ms at
# the start of every process the command runs, before any span is needed.
_SDK_DEFAULT = ("opentelemetry.sdk.trace.id_generator", "RandomIdGenerator")


class PrivateRandomIdGenerator:
    """The SDK's ``RandomIdGenerator`` with its own ``random.Random`` instead of the global
    one (an ``IdGenerator`` by its two methods; the SDK checks no type)."""

    def __init__(self) -> None:
        self._random = random.Random()
        self._bits = self._random.getrandbits

    def reseed(self) -> None:
        self._random.seed()

    def is_trace_id_random(self) -> bool:  # IdGenerator's (W3C trace-context level 2)
        return True

    def generate_span_id(self) -> int:
        span_id = self._bits(64)
        while span_id == trace.INVALID_SPAN_ID:
            span_id = self._bits(64)
        return span_id

    def generate_trace_id(self) -> int:
        trace_id = self._bits(128)
        while trace_id == trace.INVALID_TRACE_ID:
            trace_id = self._bits(128)
        return trace_id


PRIVATE_IDS = PrivateRandomIdGenerator()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=PRIVATE_IDS.reseed)


def use_private_ids(tracer: Any) -> None:
    """Give an SDK tracer that uses the default id generator the private one."""
    try:
        kind = type(getattr(tracer, "id_generator", None))
        if (kind.__module__, kind.__qualname__) == _SDK_DEFAULT:
            tracer.id_generator = PRIVATE_IDS
    except Exception:  # a read-only or exotic tracer: keep its ids
        pass
