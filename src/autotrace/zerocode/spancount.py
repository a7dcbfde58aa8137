"""One line at exit when a run under the ``autotrace`` command made very many spans.

A span processor in the command's own provider counts autotrace's spans per
function (``code.function.name``); past ``SPAN_NOTICE_LIMIT`` spans in one
process, exit names the five functions that made most of them and the flags
that would cut them. Counting is a dict update per span (a span costs ~15 µs).
"""

from __future__ import annotations

import atexit
import threading
from typing import Any, TextIO

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

SPAN_NOTICE_LIMIT = 100_000
_TOP = 5


class SpanCounter(SpanProcessor):
    def __init__(self, stream: TextIO, limit: int = SPAN_NOTICE_LIMIT) -> None:
        self._stream = stream
        self._limit = limit
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.total = 0
        atexit.register(self.report)

    def on_end(self, span: ReadableSpan) -> None:
        scope = span.instrumentation_scope
        if scope is None or scope.name != "autotrace":
            return
        name = str((span.attributes or {}).get("code.function.name", span.name))
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + 1
            self.total += 1

    def message(self) -> str | None:
        if self.total <= self._limit:
            return None
        top = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))[:_TOP]
        names = ", ".join(f"{name} ({count:,})" for name, count in top)
        return (f"autotrace: this run made {self.total:,} spans; the most came from {names}. "
                f"To cut them: --min-duration 1ms (keep only slower calls), --suppress-hot "
                f"(stop spans of small hot functions), or --exclude {top[0][0]}")

    def report(self) -> None:
        try:
            text = self.message()
            if text:
                self._stream.write(text + "\n")
                self._stream.flush()
        except Exception:  # a closed stream at exit: nothing to say it on
            pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass
