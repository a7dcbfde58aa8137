"""Per-function aggregates of every traced call, and the metrics output built on them.

The recorder hands each finished call (span or not: dropped by ``min_duration``,
outside a parent, below ``max_depth``, suppressed as hot, or with spans off) to
``Aggregates.finished``: a few integer updates and one ``deque.append`` of the
duration, no OpenTelemetry call. An SDK ``Histogram.record()`` costs several
microseconds; the hot path must not pay it.

Exactness: the OpenTelemetry API has no way to hand a pre-aggregated histogram
to a provider, so each function's exact durations (nanoseconds) wait in a
bounded buffer, and are handed to the real ``autotrace.function.duration``
histogram when the provider collects: an observable instrument's callback
(``autotrace.function.calls``, the number of calls per function, monotonic)
runs at each collection, which the SDK does on its export interval, on
``force_flush`` and on ``shutdown``. The first duration of each batch goes
through ``Histogram.record()``, so the provider's own views pick the stream,
its buckets and its aggregation; the rest of the batch is added to those very
aggregations at once (``_SdkBatch``) where they are the SDK's explicit-bucket
histograms (the default), or replayed one ``record()`` each otherwise (another
provider, another aggregation, an SDK whose internals differ). Once a
collection has shown a function's buckets (one explicit-bucket stream, or
several with the same boundaries), its later calls are no longer buffered:
they are counted in those buckets in-process (``bisect_left``, the sum, min and
max, as the SDK's ``aggregate()`` does, in integer nanoseconds), and each
collection merges the counts. No lock per call: a call's updates make no call
out, so under the GIL another thread (a collection) never sees half of them.
Either way the provider ends with what one ``record()`` per call would have
given it: counts, bucket counts, min and max exactly, and the sum up to float
rounding (added per batch rather than per call). Exemplars are not offered:
the durations are handed over in a context of their own (``_replay_context``),
never the current one, where a trace-based exemplar filter would ask a pending
call for its span and so keep it. A ``record()`` costs about 20 us; a batched
value under 1 us; an aggregated call nothing at collection. A buffer holds at
most ``BUFFER_LIMIT`` durations per function (~36 bytes each), which only
matters before the first collection or for a provider that is not the SDK's:
beyond it the oldest are lost (logged once, with the number) and the histogram
is short by that many. The calls counter and the profile are exact regardless.
After ``os.fork`` the child starts with empty buffers and aggregates: the parent
reports what happened before the fork.
"""

from __future__ import annotations

import math
import os
import threading
from bisect import bisect_left
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
#: Nanoseconds longer than any call (146 years): the empty minimum, and the threshold of
#: a bucket bound beyond any call.
LONGER_THAN_ANY_CALL = 1 << 62

_live: list[Aggregates] = []


def _after_fork_in_child() -> None:
    for aggregates in _live:
        aggregates.reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class FunctionStats:
    """What is known of one traced function's calls (its successful ones; failures are
    counted here and timed per exception type in ``failed``)."""

    __slots__ = ("bounds", "calls", "counts", "drained", "durations", "failed", "failures",
                 "high_ns", "low_ns", "max_ns", "name", "own_ns", "sum_ns", "thresholds",
                 "total_ns")

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
        # Once the provider's buckets for this function are known (``bounds``, seconds),
        # the successful calls are aggregated here instead of buffered: the bucket
        # counts, the sum, min and max since the last collection, all in nanoseconds.
        # ``thresholds[i]`` is the longest duration (ns) whose value in seconds the SDK
        # would count at or below ``bounds[i]``, so ``bisect_left(thresholds, ns)``
        # picks the bucket ``bisect_left(bounds, ns / 1e9)`` would, with no float work.
        self.bounds: tuple[float, ...] | None = None
        self.thresholds: tuple[int, ...] = ()
        self.counts: list[int] = []
        self.sum_ns = 0
        self.low_ns = LONGER_THAN_ANY_CALL
        self.high_ns = -1


class Aggregates:
    """Per-function aggregates (``FunctionInfo`` -> ``FunctionStats``) and the meter."""

    def __init__(self, metrics: bool, profile: bool, meter_provider: Any) -> None:
        self.metrics = metrics
        #: Keep the times the profile shows (total, own, max): not needed by metrics.
        self.profile = profile
        self.by_info: dict[FunctionInfo, FunctionStats] = {}
        #: Reentrant: taken on a function's first call, where a finaliser that ends
        #: another function's first call may run (allocation) on this same thread.
        self._lock = threading.RLock()
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
        self._lock = threading.RLock()

    # -- the hot path ------------------------------------------------------------------

    def stats(self, info: FunctionInfo) -> FunctionStats:
        with self._lock:
            stats = self.by_info.get(info)
            if stats is None:
                stats = self.by_info[info] = FunctionStats(info.qualified_name)
            return stats

    def finished(self, info: FunctionInfo, duration: int, own_ns: int, failed: Any) -> None:
        """One call of ``info`` took ``duration`` ns, ``own_ns`` of them running its own
        body (not suspended, not in traced children; 0 without the profile);
        ``failed``: the exception it raised, or None."""
        stats = self.by_info.get(info)
        if stats is None:
            stats = self.stats(info)
        if failed is None:
            if stats.bounds is not None:  # metrics, buckets known: what aggregate() does
                index = bisect_left(stats.thresholds, duration)
                # From loading ``counts`` to the last store below nothing calls out, so
                # no other thread runs in between (the GIL switches threads only at
                # calls and backward jumps): a collection swapping ``counts`` never
                # misses this call's increment.
                stats.counts[index] += 1
                stats.sum_ns += duration
                if duration < stats.low_ns:
                    stats.low_ns = duration
                if duration > stats.high_ns:
                    stats.high_ns = duration
            elif self.metrics:  # until the first collection has shown the buckets
                stats.durations.append(duration)
        else:
            stats.failures += 1
            if self.metrics:
                stats.failed.append((duration, qualified_type_name(type(failed))))
        stats.calls += 1  # after the append: a collection never counts it as lost
        if self.profile:
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
                observations.append(Observation(stats.calls, attrs, _replay_context()))
        except Exception:
            log_once("metrics-collect", "autotrace: could not hand the call durations to "
                     "the meter provider")
        return observations

    @staticmethod
    def _replay(histogram: Any, stats: FunctionStats, attrs: dict[str, str]) -> int:
        values = [duration / 1e9 for duration in _drain(stats.durations)]
        by_error: dict[str, list[float]] = {}
        for duration, error in _drain(stats.failed):
            by_error.setdefault(error, []).append(duration / 1e9)
        handed = len(values)
        if values:
            targets = _hand_over(histogram, values, attrs)
            if stats.bounds is None:
                _learn_bounds(stats, targets)
        if stats.bounds is not None:
            handed += _hand_over_counts(histogram, stats, attrs)
        for error, errors in by_error.items():
            _hand_over(histogram, errors, {**attrs, ERROR_KEY: error})
            handed += len(errors)
        return handed


_REPLAY_CONTEXT: Any = None


def _replay_context() -> Any:
    """The context durations are handed over in: not the current one, where a trace-based
    exemplar filter would ask a pending call for its span and so keep it (nor empty,
    which the SDK replaces with the current one)."""
    global _REPLAY_CONTEXT
    if _REPLAY_CONTEXT is None:
        from opentelemetry.context import Context

        _REPLAY_CONTEXT = Context({"autotrace.metrics-hand-over": True})
    return _REPLAY_CONTEXT


def _learn_bounds(stats: FunctionStats, targets: list[Any] | None) -> None:
    """From now on aggregate ``stats``'s calls in the SDK's buckets, if all the
    aggregations its stream feeds have the same ones."""
    if targets and all(t._boundaries == targets[0]._boundaries for t in targets):
        bounds = tuple(targets[0]._boundaries)
        stats.thresholds = tuple(_threshold_ns(bound) for bound in bounds)
        stats.counts = [0] * (len(bounds) + 1)
        stats.bounds = bounds


def _threshold_ns(bound: float) -> int:
    """The largest duration ``ns`` (nanoseconds) with ``ns / 1e9 <= bound``. Division is
    correctly rounded, hence monotonic, so every shorter duration is at or below
    ``bound`` in seconds and every longer one above it."""
    if math.isnan(bound) or bound >= LONGER_THAN_ANY_CALL / 1e9:
        return LONGER_THAN_ANY_CALL
    if bound < 0:
        return -1
    ns = math.floor(bound * 1e9)
    while ns / 1e9 > bound:
        ns -= 1
    while (ns + 1) / 1e9 <= bound:
        ns += 1
    return ns


def _hand_over_counts(histogram: Any, stats: FunctionStats, attrs: dict[str, str]) -> int:
    """Hand over the calls aggregated since the last collection; how many."""
    fresh, empty = [0] * len(stats.counts), LONGER_THAN_ANY_CALL
    # No call in these two lines, so no thread switch: a call's updates (``finished``)
    # are all in what is taken, or all in what is left.
    counts, total_ns, low_ns, high_ns = stats.counts, stats.sum_ns, stats.low_ns, stats.high_ns
    stats.counts, stats.sum_ns, stats.low_ns, stats.high_ns = fresh, 0, empty, -1
    count = sum(counts)
    if not count:
        return 0
    total, low, high = total_ns / 1e9, low_ns / 1e9, high_ns / 1e9
    targets = _SdkBatch.targets(histogram, attrs)
    if targets:
        for aggregation in targets:
            _SdkBatch.merge(aggregation, counts, total, low, high)
        return count
    # The aggregations went away (not seen with the SDK): the count, the sum, min and
    # max stay exact; the buckets become approximate. Back to buffering.
    log_once("metrics-merge", "autotrace: could not add aggregated call durations to the "
             "meter provider's histograms; they are recorded approximately")
    stats.bounds = None
    record, context = histogram.record, _replay_context()
    record(low, attrs, context)
    if count > 1:
        record(high, attrs, context)
    if count > 2:
        rest = (total - low - high) / (count - 2)
        for _ in range(count - 2):
            record(rest, attrs, context)
    return count


def _drain(buffer: deque[Any]) -> list[Any]:
    """What ``buffer`` holds now, taken out; calls keep appending meanwhile."""
    out = []
    while True:
        try:
            out.append(buffer.popleft())
        except IndexError:
            return out


def _hand_over(histogram: Any, values: list[float], attrs: dict[str, str]) -> list[Any] | None:
    """Give ``values`` to ``histogram`` as if each had been recorded; the SDK aggregations
    they went to (None: not known, recorded one by one)."""
    if not values:
        return None
    context = _replay_context()
    histogram.record(values[0], attrs, context)  # the provider's views decide where it goes
    targets = _SdkBatch.targets(histogram, attrs)
    rest = values[1:]
    if targets is None:
        record = histogram.record
        for value in rest:
            record(value, attrs, context)
    elif rest:
        for aggregation in targets:
            _SdkBatch.add(aggregation, rest)
    return targets


_FIELDS = ("_lock", "_value", "_get_empty_bucket_counts", "_boundaries", "_sum",
           "_record_min_max", "_min", "_max")


class _SdkBatch:
    """Adds many values at once to the OpenTelemetry SDK's explicit-bucket histogram
    aggregations, doing what ``aggregate()`` does per value (sum in order, min,
    max, ``bisect_left`` bucket) under the aggregation's lock, without the SDK's
    per-value work (a measurement object, attribute hashing, exemplar filtering).
    It relies on SDK internals, so it is used only where every piece is exactly
    the SDK class it knows; anything else goes through ``record()``. Tested
    against ``record()`` for the same values (``tests/test_metrics.py``)."""

    _classes: tuple[Any, ...] | None = None

    @classmethod
    def _sdk(cls) -> tuple[Any, ...] | tuple[()]:
        if cls._classes is None:
            try:
                from opentelemetry.sdk.metrics._internal import (
                    _view_instrument_match as matches,
                )
                from opentelemetry.sdk.metrics._internal import aggregation, instrument
                from opentelemetry.sdk.metrics._internal import (
                    measurement_consumer as consumer,
                )

                cls._classes = (instrument._Histogram,
                                consumer.SynchronousMeasurementConsumer,
                                aggregation._ExplicitBucketHistogramAggregation,
                                aggregation._DropAggregation,
                                getattr(matches, "_hash_attributes", None))
            except Exception:
                cls._classes = ()
        return cls._classes

    @classmethod
    def targets(cls, histogram: Any, attrs: dict[str, str]) -> list[Any] | None:
        """The SDK aggregations ``record(value, attrs)`` just fed, or None (not the SDK,
        or not only explicit-bucket histograms there)."""
        known = cls._sdk()
        if not known:
            return None
        histogram_class, consumer_class, bucket_class, drop_class, hash_attributes = known
        try:
            real = histogram
            if type(real) is not histogram_class:  # the API's proxy of the global provider
                real = getattr(real, "_real_instrument", None)
                if type(real) is not histogram_class:
                    return None
            consumer = real._measurement_consumer
            if type(consumer) is not consumer_class:
                return None
            found = []
            for storage in consumer._reader_storages.values():
                for match in storage._get_or_init_view_instrument_match(real):
                    keys = match._view._attribute_keys
                    picked = attrs if keys is None else {
                        k: v for k, v in attrs.items() if k in keys}
                    key = (frozenset(picked.items()) if hash_attributes is None
                           else hash_attributes(picked))
                    aggregation = match._attributes_aggregation.get(key)
                    if type(aggregation) is drop_class:
                        continue
                    if (type(aggregation) is not bucket_class
                            or dict(aggregation._attributes or {}) != picked
                            or not all(hasattr(aggregation, name) for name in _FIELDS)):
                        return None
                    found.append(aggregation)
            return found
        except Exception:
            return None

    @staticmethod
    def merge(aggregation: Any, counts: list[int], total: float, low: float,
              high: float) -> None:
        """Add values already counted in ``aggregation``'s own buckets."""
        with aggregation._lock:
            if aggregation._value is None:
                aggregation._value = aggregation._get_empty_bucket_counts()
            value = aggregation._value
            for index, count in enumerate(counts):
                if count:
                    value[index] += count
            aggregation._sum += total
            if aggregation._record_min_max:
                aggregation._min = min(aggregation._min, low)
                aggregation._max = max(aggregation._max, high)

    @staticmethod
    def add(aggregation: Any, values: list[float]) -> None:
        with aggregation._lock:
            if aggregation._value is None:
                aggregation._value = aggregation._get_empty_bucket_counts()
            counts = aggregation._value
            bounds = aggregation._boundaries
            total = aggregation._sum
            for value in values:
                total += value
                counts[bisect_left(bounds, value)] += 1
            aggregation._sum = total
            if aggregation._record_min_max:
                aggregation._min = min(aggregation._min, min(values))
                aggregation._max = max(aggregation._max, max(values))
