"""Per-function aggregates of every traced call, and the metrics output built on them.

The recorder hands each finished call (span or not: dropped by ``min_duration``,
outside a parent, below ``max_depth``, suppressed as hot, or with spans off) to
``Aggregates.finished``: a bucket index (``bisect_left`` on a precomputed tuple
of integer nanoseconds) and a few integer updates on plain per-function data,
no OpenTelemetry call (an SDK ``Histogram.record()`` costs ~20 us). Memory is
functions x buckets, whatever the number of calls.

**The buckets are known before the first call.** Calls are counted in a
``Grid``: the union of the bucket boundaries of every explicit-bucket stream the
provider's views and readers give ``autotrace.function.duration``, read from the
SDK when autotrace is installed (the SDK's defaults, a user's ``View``, a
reader's preferred aggregation), so each stream's buckets are sums of ours and
its counts are exact. If the provider is not known yet (the API's proxy, before
``set_meter_provider``), calls are counted in the SDK's default boundaries; a
collection that finds other boundaries refines the grid (the calls counted
before that are in approximate buckets: logged once, with the fix).

**The hand-over.** OpenTelemetry's way to give a provider pre-aggregated data is a
``MetricProducer`` registered on a reader; the Python SDK has none (1.45;
opentelemetry-python#4768, #5419 open), and even where it exists the user
constructs the readers, so a library cannot add itself, and a producer bypasses
the user's views and temporality. The metrics API has no observable histogram
and no weighted ``record()``. So autotrace hands its counts to the SDK's own
aggregations at each collection, from an observable instrument's callback
(``autotrace.function.calls``, which the SDK runs at every collection of every
reader, before it aggregates): where a stream is the SDK's explicit-bucket
histogram, the grid's counts are added to its buckets, its sum, min and max
under its lock (``_SdkBatch``), so the SDK's views, temporality (delta or
cumulative, per reader) and export apply unchanged, at a cost per function and
bucket, not per call. The first time an attribute set is seen, its smallest
duration goes through the public ``record()`` first, which makes the SDK create
the aggregations its views call for. This relies on SDK internals: only types
known exactly are touched, anything else (another provider, an exponential or
sum aggregation in a view) gets one ``record()`` per call rebuilt from the
buckets (count, sum, min and max exact, values inside a bucket approximate),
and ``tests/test_metrics.py`` holds the merge to ``record()`` value for value.

**Exemplars.** A kept call (one with a span) is remembered per bucket
(``Aggregates.kept``: duration, end time, span context; the latest wins, as in
the SDK's ``AlignedHistogramBucketExemplarReservoir``) and offered to each
aggregation's own reservoir at the hand-over, through the provider's own
exemplar filter (``OTEL_METRICS_EXEMPLAR_FILTER``: ``trace_based``, the default,
offers sampled spans only; ``always_on`` every kept call; ``always_off`` none),
evaluated on a context holding the kept call's span, never the current one
(where a trace-based filter would ask a pending call for its span and so keep
it). Calls without a span offer no exemplar.

**Threads.** No lock per call: from loading a function's ``counts`` to its last
update nothing calls out, so under the GIL another thread (a collection) never
runs in between; a collection takes and resets the counts in the same way.
After ``os.fork`` the child starts with empty aggregates.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable
from time import time_ns
from typing import TYPE_CHECKING, Any, ClassVar

from .._log import log_once
from .._version import __version__
from ..describe.function import FunctionInfo
from ..describe.values import qualified_type_name
from . import accel

METER_NAME = "autotrace"
DURATION_METRIC = "autotrace.function.duration"
CALLS_METRIC = "autotrace.function.calls"
FUNCTION_KEY = "code.function.name"
ERROR_KEY = "error.type"
#: Nanoseconds longer than any call (146 years): the empty minimum, and the threshold of
#: a bucket bound beyond any call.
LONGER_THAN_ANY_CALL = 1 << 62
#: The SDK's boundaries for a histogram with no view (``opentelemetry-sdk``'s
#: ``_DEFAULT_EXPLICIT_BUCKET_HISTOGRAM_AGGREGATION_BOUNDARIES``, read from it when present).
SDK_DEFAULT_BOUNDS = (0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0,
                      2500.0, 5000.0, 7500.0, 10000.0)

_live: list[Aggregates] = []


def _after_fork_in_child() -> None:
    _Instruments._lock = threading.Lock()
    for aggregates in _live:
        aggregates.reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Grid:
    """Bucket boundaries calls are counted in (seconds), and the same as integer
    nanoseconds: ``thresholds[i]`` is the longest duration whose value in seconds the SDK
    counts at or below ``bounds[i]``, so ``bisect_left(thresholds, ns)`` picks the bucket
    ``bisect_left(bounds, ns / 1e9)`` would, with no float work per call."""

    __slots__ = ("bounds", "maps", "thresholds")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(sorted(set(bounds)))
        self.thresholds = tuple(_threshold_ns(bound) for bound in self.bounds)
        #: target boundaries -> the target bucket of each of ours, None: not covered
        self.maps: dict[tuple[float, ...], list[int] | None] = {}

    def covers(self, boundaries: Iterable[float]) -> bool:
        return set(boundaries) <= set(self.bounds)

    def merge_map(self, boundaries: tuple[float, ...], high: float) -> list[int]:
        """For each of our buckets, the bucket of ``boundaries`` that holds it: exact when
        ``covers(boundaries)``; else the one holding its upper bound or ``high`` (the
        longest call), whichever is less (approximate)."""
        try:
            found = self.maps[boundaries]
        except KeyError:
            found = self.maps[boundaries] = (
                [*(bisect_left(boundaries, bound) for bound in self.bounds), len(boundaries)]
                if self.covers(boundaries) else None)
        if found is None:
            return [bisect_left(boundaries, min(bound, high))
                    for bound in (*self.bounds, high)]
        return found


class _Fields:
    """The fields of ``Bins`` and ``FunctionStats`` when the extension is not loaded;
    with it, ``_core.Bins`` has the same ones in C, where the compiled finish counts a
    call (``Aggregates.finished`` for a successful call, with metrics and no profile);
    ``counts`` is then a ``_core.Counts`` (``new_counts``)."""

    __slots__ = ("calls", "counts", "errors", "exemplars", "failures", "grid", "high_ns",
                 "low_ns", "max_ns", "name", "own_ns", "sum_ns", "thresholds", "total_ns")

    calls: int
    counts: list[int]
    errors: dict[str, Bins]
    exemplars: dict[int, tuple[int, int, Any]]
    failures: int
    grid: Grid
    high_ns: int
    low_ns: int
    max_ns: int
    name: str
    own_ns: int
    sum_ns: int
    thresholds: tuple[int, ...]
    total_ns: int


if TYPE_CHECKING:
    _BinsBase = _Fields
else:
    _BinsBase = accel.extension.Bins if accel.extension is not None else _Fields


def _list_counts(n: int) -> list[int]:
    return [0] * n


#: A new ``Bins.counts`` of ``n`` buckets: with the extension, ``_core.Counts`` (C
#: integers that Python indexes like a list and the compiled finish increments in place,
#: with no int object made per call); else a list.
new_counts: Callable[[int], list[int]] = (
    accel.extension.Counts if accel.extension is not None else _list_counts)


class Bins(_BinsBase):
    """The durations (ns) of one attribute set's calls since the last hand-over, counted
    in ``grid``'s buckets; and the latest kept call of each bucket (exemplars)."""

    __slots__ = ()

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.thresholds = grid.thresholds
        self.counts = new_counts(len(grid.bounds) + 1)
        self.sum_ns = 0
        self.low_ns = LONGER_THAN_ANY_CALL
        self.high_ns = -1
        #: bucket index -> (duration ns, end time ns, span context) of a kept call
        self.exemplars: dict[int, tuple[int, int, Any]] = {}


class FunctionStats(Bins):
    """What is known of one traced function's calls: its successful ones are counted in
    the inherited bins, its failures in ``errors`` (per exception type), and the times
    the profile shows."""

    __slots__ = ()

    def __init__(self, name: str, grid: Grid) -> None:
        super().__init__(grid)
        self.name = name
        self.calls = 0
        self.failures = 0
        self.total_ns = 0
        self.own_ns = 0
        self.max_ns = 0
        self.errors: dict[str, Bins] = {}


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
        self._instruments: _Instruments | None = None
        self.grid = Grid(_sdk_default_bounds())
        if metrics:
            self._instruments = _Instruments.attach(self, meter_provider)
            if self._instruments is not None:
                bounds = _SdkBatch.stream_bounds(self._instruments.histogram)
                if bounds is not None:
                    self.grid = Grid(bounds)
        _live.append(self)

    def reset(self) -> None:
        self.by_info.clear()  # the same dict: the compiled core holds it (``_counts``)
        self._lock = threading.RLock()

    # -- the hot path ------------------------------------------------------------------

    def stats(self, info: FunctionInfo) -> FunctionStats:
        with self._lock:
            stats = self.by_info.get(info)
            if stats is None:
                stats = self.by_info[info] = FunctionStats(info.qualified_name, self.grid)
            return stats

    def finished(self, info: FunctionInfo, duration: int, own_ns: int, failed: Any) -> None:
        """One call of ``info`` took ``duration`` ns, ``own_ns`` of them running its own
        body (not suspended, not in traced children; 0 without the profile);
        ``failed``: the exception it raised, or None."""
        stats = self.by_info.get(info)
        if stats is None:
            stats = self.stats(info)
        if failed is None:
            if self.metrics:
                # The index first: ``bisect_left`` is a call, after which the GIL may run
                # a collection that swaps ``counts``. From loading ``counts`` to the last
                # store nothing calls out, so the call is wholly in what a collection
                # takes, or wholly in what it leaves.
                index = bisect_left(stats.thresholds, duration)
                stats.counts[index] += 1
                stats.sum_ns += duration
                if duration < stats.low_ns:
                    stats.low_ns = duration
                if duration > stats.high_ns:
                    stats.high_ns = duration
        else:
            self._failed(stats, duration, failed)
        stats.calls += 1
        if self.profile:
            stats.total_ns += duration
            stats.own_ns += own_ns
            if duration > stats.max_ns:
                stats.max_ns = duration

    def _failed(self, stats: FunctionStats, duration: int, failed: BaseException) -> None:
        """A call that raised: counted in the bins of its exception type (out of line:
        keeps ``finished`` short for the usual call)."""
        stats.failures += 1
        if self.metrics:
            error = qualified_type_name(type(failed))
            bins = stats.errors.get(error)
            if bins is None:
                with self._lock:
                    bins = stats.errors.get(error)
                    if bins is None:
                        bins = stats.errors[error] = Bins(stats.grid)
            index = bisect_left(bins.thresholds, duration)  # before loading ``counts``
            bins.counts[index] += 1
            bins.sum_ns += duration
            if duration < bins.low_ns:
                bins.low_ns = duration
            if duration > bins.high_ns:
                bins.high_ns = duration

    def kept(self, info: FunctionInfo, duration: int, span: Any, failed: Any) -> None:
        """A call already counted by ``finished`` was kept as ``span``: remember it as the
        exemplar of its bucket (the latest kept call of each bucket wins)."""
        if not self.metrics:
            return
        try:
            stats = self.by_info.get(info)
            if stats is None:
                return
            bins: Bins | None = stats
            if failed is not None and isinstance(failed, Exception):  # as ``finished``
                bins = stats.errors.get(qualified_type_name(type(failed)))
                if bins is None:
                    return
            assert bins is not None
            context = span.get_span_context()
            if not context.is_valid:
                return
            exemplar = (duration, time_ns(), context)
            bins.exemplars[bisect_left(bins.thresholds, duration)] = exemplar
        except Exception:
            log_once("exemplar", "autotrace: could not keep a call of %s as an exemplar",
                     info.span_name)

    # -- collection (the SDK's thread) -------------------------------------------------

    def collect(self, histogram: Any, calls: dict[tuple[tuple[str, str], ...], int]) -> None:
        """Hand what was counted since the last collection to ``histogram``'s provider,
        and add each function's number of calls to ``calls``."""
        grid = self.grid
        if self.metrics:
            bounds = _SdkBatch.stream_bounds(histogram)
            if bounds is not None and not grid.covers(bounds):
                grid = self.grid = Grid((*grid.bounds, *bounds))
                if any(stats.calls for stats in list(self.by_info.values())):
                    log_once("metrics-regrid", "autotrace: the meter provider's views give "
                             "%s other bucket boundaries than it had when autotrace was "
                             "installed; the calls counted before now are in approximate "
                             "buckets (count, sum, min and max exact). Set the meter "
                             "provider before autotrace.install(), or pass meter_provider=",
                             DURATION_METRIC, exc_info=False)
        for stats in list(self.by_info.values()):
            attrs = {FUNCTION_KEY: stats.name}
            key = ((FUNCTION_KEY, stats.name),)
            calls[key] = calls.get(key, 0) + stats.calls
            if not self.metrics:
                continue
            _hand_over(histogram, stats, attrs, grid)
            for error, bins in list(stats.errors.items()):
                _hand_over(histogram, bins, {**attrs, ERROR_KEY: error}, grid)


class _Instruments:
    """autotrace's two instruments on one meter provider, created once per provider (the
    SDK returns the first instrument of a name again, with its first callback), and
    the installations they report (several, after uninstall and install again)."""

    _by_provider: ClassVar[weakref.WeakKeyDictionary[Any, _Instruments]] = (
        weakref.WeakKeyDictionary())
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, provider: Any) -> None:
        meter = provider.get_meter(METER_NAME, __version__)
        self.histogram = meter.create_histogram(
            DURATION_METRIC, unit="s", description="Duration of the calls of a traced function")
        self.aggregates: list[Aggregates] = []
        meter.create_observable_counter(
            CALLS_METRIC, callbacks=[self._collect], unit="{call}",
            description="Calls of a traced function")

    @classmethod
    def attach(cls, aggregates: Aggregates, meter_provider: Any) -> _Instruments | None:
        # The global provider's meter is the API's proxy until the program sets one,
        # then the real one: dormant until then, with no watch of our own.
        from opentelemetry import metrics as metrics_api

        try:
            provider = meter_provider or metrics_api.get_meter_provider()
            with cls._lock:
                try:
                    instruments = cls._by_provider.get(provider)
                except TypeError:  # not weakly referenceable
                    instruments = None
                if instruments is None:
                    instruments = cls(provider)
                    try:
                        cls._by_provider[provider] = instruments
                    except TypeError:
                        pass
                instruments.aggregates.append(aggregates)
            return instruments
        except Exception:
            log_once("meter", "autotrace: could not create the metrics instruments; no "
                     "metrics are recorded")
            return None

    def _collect(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        calls: dict[tuple[tuple[str, str], ...], int] = {}
        for aggregates in list(self.aggregates):
            try:
                aggregates.collect(self.histogram, calls)
            except Exception:
                log_once("metrics-collect", "autotrace: could not hand the call durations "
                         "to the meter provider")
        context = _hand_over_context()
        return [Observation(count, dict(key), context) for key, count in calls.items()]


_HAND_OVER_CONTEXT: Any = None


def _hand_over_context() -> Any:
    """The context durations are handed over in: not the current one, where a trace-based
    exemplar filter would ask a pending call for its span and so keep it (nor empty,
    which the SDK replaces with the current one)."""
    global _HAND_OVER_CONTEXT
    if _HAND_OVER_CONTEXT is None:
        from opentelemetry.context import Context

        _HAND_OVER_CONTEXT = Context({"autotrace.metrics-hand-over": True})
    return _HAND_OVER_CONTEXT


def _sdk_default_bounds() -> tuple[float, ...]:
    try:
        from opentelemetry.sdk.metrics._internal.aggregation import (
            _DEFAULT_EXPLICIT_BUCKET_HISTOGRAM_AGGREGATION_BOUNDARIES as bounds,
        )

        return tuple(float(bound) for bound in bounds)
    except Exception:
        return SDK_DEFAULT_BOUNDS


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


def _take(bins: Bins, grid: Grid) -> tuple[Grid, list[int], int, int, int,
                                           dict[int, tuple[int, int, Any]]]:
    """What ``bins`` counted since the last hand-over, taken out (and counted in ``grid``
    from now on)."""
    exemplars: dict[int, tuple[int, int, Any]] = {}
    fresh, empty = new_counts(len(grid.bounds) + 1), LONGER_THAN_ANY_CALL
    # No call between the loads and the stores, so no thread switch: a call's updates
    # (``finished``) are all in what is taken, or all in what is left.
    counted, counts, sum_ns, low_ns, high_ns, taken = (
        bins.grid, bins.counts, bins.sum_ns, bins.low_ns, bins.high_ns, bins.exemplars)
    bins.counts, bins.sum_ns, bins.low_ns, bins.high_ns, bins.exemplars = (
        fresh, 0, empty, -1, exemplars)
    if counted is not grid:  # the grid was refined: count in the new one from now on
        bins.grid, bins.thresholds = grid, grid.thresholds
    return counted, list(counts), sum_ns, low_ns, high_ns, taken  # a list of our own


def _hand_over(histogram: Any, bins: Bins, attrs: dict[str, str], grid: Grid) -> None:
    """Give the provider what ``bins`` counted since the last collection, as if each call
    had been ``record()``-ed, and its kept calls as exemplars."""
    counted, counts, total_ns, low_ns, high_ns, exemplars = _take(bins, grid)
    count = sum(counts)
    if not count:
        return
    found = _SdkBatch.targets(histogram, attrs)
    if found is None or found.missing:
        # A new attribute set (or a provider that is not the SDK's): the smallest
        # duration through the public path, where the provider's views make the
        # aggregations; the rest is added to them below.
        if not _SdkBatch.consume(histogram, low_ns / 1e9, attrs):
            histogram.record(low_ns / 1e9, attrs, _hand_over_context())
        counts[bisect_left(counted.thresholds, low_ns)] -= 1
        count -= 1
        total_ns -= low_ns
        found = _SdkBatch.targets(histogram, attrs)
        if found is not None and found.missing:
            found = None
    if count:
        if found is None:
            _replay(histogram.record, counted, counts, total_ns, low_ns, high_ns, attrs)
        else:
            for aggregation in found.buckets:
                _SdkBatch.merge(aggregation,
                                counted.merge_map(aggregation._boundaries, high_ns / 1e9),
                                counts, total_ns / 1e9, low_ns / 1e9, high_ns / 1e9)
            for aggregation in found.others:
                _replay(found.aggregate(aggregation), counted, counts, total_ns, low_ns,
                        high_ns, attrs)
    if exemplars and found is not None:
        found.offer(exemplars, attrs)


def _replay(record: Any, grid: Grid, counts: list[int], total_ns: int, low_ns: int,
            high_ns: int, attrs: dict[str, str]) -> None:
    """One ``record(value, attrs, context)`` per call, rebuilt from the buckets: the
    smallest and the largest duration as they were, the others spread evenly inside
    their buckets so that the count, sum, min and max stay exact."""
    log_once("metrics-replay", "autotrace: %s goes to an aggregation autotrace cannot "
             "add its bucket counts to (not the SDK's explicit-bucket histogram); each call "
             "is replayed from approximate values (count, sum, min and max exact), which "
             "costs a record() per call at each collection", DURATION_METRIC, exc_info=False)
    context = _hand_over_context()
    values: list[float] = []
    low, high = low_ns / 1e9, high_ns / 1e9
    n = sum(counts)
    for index, number in enumerate(counts):
        if not number:
            continue
        top = grid.bounds[index] if index < len(grid.bounds) else high
        bottom = grid.bounds[index - 1] if index else low
        top, bottom = min(max(top, low), high), min(max(bottom, low), high)
        values.extend(bottom + (top - bottom) * (i + 1) / (number + 1) for i in range(number))
    if n >= 2:
        values[0], values[-1] = low, high
    elif n == 1:
        values[0] = low if total_ns == low_ns else total_ns / 1e9
    if n > 2:  # move the others toward high (or low) in proportion, so the sum is the sum
        missing = (total_ns / 1e9 - low - high) - sum(values[1:-1])
        room = sum(high - v for v in values[1:-1]) if missing > 0 else sum(
            v - low for v in values[1:-1])
        share = min(abs(missing) / room, 1.0) if room > 0 else 0.0
        for i in range(1, n - 1):
            v = values[i]
            values[i] = v + share * (high - v) if missing > 0 else v - share * (v - low)
    for value in values:
        record(value, attrs, context)


class _Found:
    """Where one attribute set's measurements go in the SDK: its explicit-bucket
    aggregations (merged exactly), other aggregations (replayed), and whether some
    reader has none yet for this attribute set."""

    __slots__ = ("buckets", "filter", "instrument", "missing", "others")

    def __init__(self, instrument: Any, exemplar_filter: Any) -> None:
        self.instrument = instrument
        self.filter = exemplar_filter
        self.buckets: list[Any] = []
        self.others: list[Any] = []
        self.missing = False

    def aggregate(self, aggregation: Any) -> Any:
        """``record(value, attrs, context)`` into ``aggregation`` alone."""
        from opentelemetry.sdk.metrics._internal.measurement import Measurement

        def record(value: float, attrs: dict[str, str], context: Any) -> None:
            aggregation.aggregate(Measurement(value, time_ns(), self.instrument, context,
                                              attrs), False)
        return record

    def offer(self, exemplars: dict[int, tuple[int, int, Any]], attrs: dict[str, str]
              ) -> None:
        """Offer the kept calls to each aggregation's reservoir, as the SDK would have at
        ``record()`` in the kept span's context, through the provider's exemplar filter."""
        if self.filter is None:
            return
        from opentelemetry import trace

        for duration, end_ns, span_context in sorted(exemplars.values(),
                                                     key=lambda kept: kept[1]):
            value = duration / 1e9
            context = trace.set_span_in_context(trace.NonRecordingSpan(span_context),
                                                _hand_over_context())
            if not self.filter.should_sample(value, end_ns, attrs, context):
                continue
            for aggregation in (*self.buckets, *self.others):
                reservoir = getattr(aggregation, "_reservoir", None)
                if reservoir is not None:
                    reservoir.offer(value, end_ns, attrs, context)


class _SdkBatch:
    """Adds counts to the OpenTelemetry SDK's explicit-bucket histogram aggregations,
    doing what ``aggregate()`` does per value (sum, min, max, bucket) under the
    aggregation's lock, without the SDK's per-value work. It relies on SDK internals,
    so it is used only where every piece is exactly the SDK class it knows; anything
    else goes through ``record()``. Tested against ``record()`` for the same values
    (``tests/test_metrics.py``)."""

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
    def _matches(cls, histogram: Any) -> tuple[Any, list[Any]] | None:
        """The SDK histogram behind ``histogram`` and its streams (view matches) in every
        reader, or None (not the SDK's, or not set yet)."""
        known = cls._sdk()
        if not known:
            return None
        histogram_class, consumer_class = known[0], known[1]
        real = histogram
        if type(real) is not histogram_class:  # the API's proxy of the global provider
            real = getattr(real, "_real_instrument", None)
            if type(real) is not histogram_class:
                return None
        consumer = real._measurement_consumer
        if type(consumer) is not consumer_class:
            return None
        matches = []
        for storage in list(consumer._reader_storages.values()):
            matches.extend(storage._get_or_init_view_instrument_match(real))
        return real, matches

    @classmethod
    def stream_bounds(cls, histogram: Any) -> list[float] | None:
        """Every boundary of the explicit-bucket streams ``histogram`` feeds, or None (not
        known: not the SDK's provider, or not set yet)."""
        try:
            found = cls._matches(histogram)
            if found is None:
                return None
            bucket_class = cls._sdk()[2]
            bounds: list[float] = []
            for match in found[1]:
                template: Any = getattr(match, "_aggregation", None)  # made with the match
                if type(template) is bucket_class:
                    bounds.extend(template._boundaries)
                for aggregation in list(match._attributes_aggregation.values()):
                    if type(aggregation) is bucket_class:
                        bounds.extend(aggregation._boundaries)
            return bounds
        except Exception:
            return None

    @classmethod
    def consume(cls, histogram: Any, value: float, attrs: dict[str, str]) -> bool:
        """What ``record(value, attrs)`` does in the SDK, minus the exemplar filter (under
        ``always_on`` it would make a dropped call an exemplar with no trace); False:
        not done (not the SDK's)."""
        try:
            found = cls._matches(histogram)
            if found is None:
                return False
            from opentelemetry.sdk.metrics._internal.measurement import Measurement

            real = found[0]
            measurement = Measurement(value, time_ns(), real, _hand_over_context(), attrs)
            for storage in list(real._measurement_consumer._reader_storages.values()):
                storage.consume_measurement(measurement, False)
            return True
        except Exception:
            return False

    @classmethod
    def targets(cls, histogram: Any, attrs: dict[str, str]) -> _Found | None:
        """The SDK aggregations ``record(value, attrs)`` feeds, or None (not the SDK)."""
        try:
            found = cls._matches(histogram)
            if found is None:
                return None
            real, matches = found
            _, _, bucket_class, drop_class, hash_attributes = cls._sdk()
            sdk_config = getattr(real._measurement_consumer, "_sdk_config", None)
            out = _Found(real, getattr(sdk_config, "exemplar_filter", None))
            for match in matches:
                keys = match._view._attribute_keys
                picked = attrs if keys is None else {
                    k: v for k, v in attrs.items() if k in keys}
                key = (frozenset(picked.items()) if hash_attributes is None
                       else hash_attributes(picked))
                aggregation = match._attributes_aggregation.get(key)
                if aggregation is None:
                    out.missing = True
                elif type(aggregation) is drop_class:
                    continue
                elif dict(aggregation._attributes or {}) != picked:
                    return None
                elif type(aggregation) is bucket_class and all(
                        hasattr(aggregation, name) for name in _FIELDS):
                    out.buckets.append(aggregation)
                else:
                    out.others.append(aggregation)
            return out
        except Exception:
            return None

    @staticmethod
    def merge(aggregation: Any, merge_map: list[int], counts: list[int], total: float,
              low: float, high: float) -> None:
        """Add calls counted in a grid's buckets (``merge_map``: the aggregation's bucket
        of each of them)."""
        with aggregation._lock:
            if aggregation._value is None:
                aggregation._value = aggregation._get_empty_bucket_counts()
            value = aggregation._value
            for index, count in enumerate(counts):
                if count:
                    value[merge_map[index]] += count
            aggregation._sum += total
            if aggregation._record_min_max:
                aggregation._min = min(aggregation._min, low)
                aggregation._max = max(aggregation._max, high)


_FIELDS = ("_lock", "_value", "_get_empty_bucket_counts", "_boundaries", "_sum",
           "_record_min_max", "_min", "_max")
