"""Per-function aggregates of every traced call, and the metrics output built on them.

The recorder hands each finished call (span or not: dropped by ``min_duration``,
outside a parent, below ``max_depth``, suppressed as hot, or with spans off) to
``Aggregates.finished``: a few integer updates and one ``deque.append`` of the
duration, no OpenTelemetry call. An SDK ``Histogram.record()`` costs several
microseconds; the hot path must not pay it.

Exactness: the OpenTelemetry API has no way to hand a pre-aggregated histogram
to a provider, so each function's exact durations (nanoseconds) wait in a
bounded buffer, and are *replayed* one by one into the real
``autotrace.function.duration`` histogram when the provider collects: an
observable instrument's callback (``autotrace.function.calls``, the number of
calls per function, monotonic) runs at each collection, which the SDK does on
its export interval, on ``force_flush`` and on ``shutdown``. The provider thus
sees exactly the values it would have seen from one ``record()`` per call, with
its own views and buckets: counts, sums, bucket counts, min and max are exact.
The cost moves off the call path to collection time (about one ``record()`` per
call made since the last collection, on the collecting thread). A buffer holds
at most ``BUFFER_LIMIT`` durations per function; a function called more often
than that between two collections loses the oldest ones (logged once, with the
number) and its histogram is short by that many: collect more often
(``OTEL_METRIC_EXPORT_INTERVAL``). The calls counter and the profile are exact
regardless. After ``os.fork`` the child starts with empty buffers and
aggregates: the parent reports what happened before the fork.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterable
from typing import Any

from .._log import log_once
from .._version import __version__
from ..describe.function import FunctionInfo
from ..describe.values import qualified_type_name

METER_NAME = "autotrace"
DURATION_METRIC = "autotrace.function.duration"
CALLS_METRIC = "autotrace.function.calls"
FUNCTION_KEY = "code.function.name"
ERROR_KEY = "error.type"
BUFFER_LIMIT = 1 << 16

_live: list[Aggregates] = []


def _after_fork_in_child() -> None:
    for aggregates in _live:
        aggregates.reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class FunctionStats:
    """What is known of one traced function's calls (its successful ones; failures are
    counted here and timed per exception type in ``failed``)."""

    __slots__ = ("calls", "drained", "durations", "failed", "failures", "max_ns", "name",
                 "own_ns", "total_ns")

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.failures = 0
        self.total_ns = 0
        self.own_ns = 0
        self.max_ns = 0
        self.drained = 0  # durations handed to the SDK (or lost to the buffer bound)
        self.durations: deque[int] = deque(maxlen=BUFFER_LIMIT)  # successful calls
        self.failed: deque[tuple[int, str]] = deque(maxlen=BUFFER_LIMIT)


class Aggregates:
    """Per-function aggregates (``FunctionInfo`` -> ``FunctionStats``) and the meter."""

    def __init__(self, metrics: bool, meter_provider: Any) -> None:
        self.metrics = metrics
        self.by_info: dict[FunctionInfo, FunctionStats] = {}
        self._lock = threading.Lock()
        self._histogram: Any = None
        if metrics:
            self._make_instruments(meter_provider)
        _live.append(self)

    def _make_instruments(self, meter_provider: Any) -> None:
        # The global provider's meter is the API's proxy until the program sets one,
        # then the real one: dormant until then, with no watch of our own.
        from opentelemetry import metrics as metrics_api

        try:
            provider = meter_provider or metrics_api.get_meter_provider()
            meter = provider.get_meter(METER_NAME, __version__)
            self._histogram = meter.create_histogram(
                DURATION_METRIC, unit="s",
                description="Duration of the calls of a traced function")
            meter.create_observable_counter(
                CALLS_METRIC, callbacks=[self._collect], unit="{call}",
                description="Calls of a traced function")
        except Exception:
            log_once("meter", "autotrace: could not create the metrics instruments; no "
                     "metrics are recorded")
            self._histogram = None

    def reset(self) -> None:
        self.by_info = {}
        self._lock = threading.Lock()

    # -- the hot path ------------------------------------------------------------------

    def stats(self, info: FunctionInfo) -> FunctionStats:
        with self._lock:
            stats = self.by_info.get(info)
            if stats is None:
                name = str(info.static_attributes.get(FUNCTION_KEY, info.span_name))
                stats = self.by_info[info] = FunctionStats(name)
            return stats

    def finished(self, info: FunctionInfo, duration: int, own_ns: int, failed: Any) -> None:
        """One call of ``info`` took ``duration`` ns, ``own_ns`` of them running its own
        body (not suspended, not in traced children); ``failed``: the exception it
        raised, or None."""
        stats = self.by_info.get(info)
        if stats is None:
            stats = self.stats(info)
        if failed is None:
            if self.metrics:
                stats.durations.append(duration)
        else:
            stats.failures += 1
            if self.metrics:
                stats.failed.append((duration, qualified_type_name(type(failed))))
        stats.calls += 1  # after the append: a collection never counts it as lost
        stats.total_ns += duration
        stats.own_ns += own_ns
        if duration > stats.max_ns:
            stats.max_ns = duration

    # -- collection (the SDK's thread) -------------------------------------------------

    def _collect(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        observations = []
        try:
            histogram = self._histogram
            for stats in list(self.by_info.values()):
                attrs = {FUNCTION_KEY: stats.name}
                handed = self._replay(histogram, stats, attrs)
                stats.drained += handed
                lost = stats.calls - stats.drained
                if lost > 0 and not stats.durations and not stats.failed:
                    stats.drained += lost
                    log_once("metrics-lost", "autotrace: %d durations of %s were dropped "
                             "(more than %d calls between two metric collections); "
                             "collect more often (OTEL_METRIC_EXPORT_INTERVAL)", lost,
                             stats.name, BUFFER_LIMIT)
                observations.append(Observation(stats.calls, attrs))
        except Exception:
            log_once("metrics-collect", "autotrace: could not hand the call durations to "
                     "the meter provider")
        return observations

    @staticmethod
    def _replay(histogram: Any, stats: FunctionStats, attrs: dict[str, str]) -> int:
        record = histogram.record
        handed = 0
        durations = stats.durations
        while True:
            try:
                duration = durations.popleft()
            except IndexError:
                break
            record(duration / 1e9, attrs)
            handed += 1
        failed = stats.failed
        with_error: dict[str, dict[str, str]] = {}
        while True:
            try:
                duration, error = failed.popleft()
            except IndexError:
                break
            error_attrs = with_error.get(error)
            if error_attrs is None:
                error_attrs = with_error[error] = {**attrs, ERROR_KEY: error}
            record(duration / 1e9, error_attrs)
            handed += 1
        return handed
