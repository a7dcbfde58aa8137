"""``--exporter trace-file``: the spans as a Chrome Trace Event JSON file, for a timeline.

The file (``--trace-file PATH``, ``OTEL_PYTHON_AUTOTRACE_TRACE_FILE``; default
``autotrace-trace.json`` in the working directory) opens in Perfetto
(``autotrace view PATH``), ``chrome://tracing`` and speedscope:

* one complete event (``"ph": "X"``, microsecond ``ts``/``dur``) per span,
  its attributes, ids and status as ``args``; a failed span gets
  ``"cname": "terrible"`` (red) and ``args.error``;
* one track (``tid``) per thread, and one per asyncio task (named after the
  task and its thread), so that tasks overlapping in time do not collide;
  the process is named after ``OTEL_SERVICE_NAME`` or the program;
* one file per process: the first process of the command writes PATH, every
  other one (children, fork and spawn workers) ``STEM.PID.SUFFIX`` beside it;
* at most ``MAX_EVENTS`` spans per process: past that they are counted, not
  kept, the file says so (an instant event and ``otherData``), and one line
  goes to stderr;
* written at exit and on ``force_flush`` (when there is something new) to a
  temporary file in the same directory, then renamed over PATH: a crash never
  leaves a half-written or emptied file.

The thread and task of a span are noted when it starts (``on_start`` runs in
the thread that starts it); autotrace's span attributes are not changed.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import weakref
from collections.abc import Mapping
from typing import Any, TextIO

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from .._log import logger
from ..config import ENV_PREFIX, OPTIONS_BY_NAME
from .exporter_env import exporter_names

ENV_TRACE_FILE = OPTIONS_BY_NAME["trace_file"].env
#: Set by the command (its pid is the program's after ``exec``): that process
#: writes the file itself, every other one a file with its pid in the name.
ENV_ROOT_PID = ENV_PREFIX + "TRACE_FILE_ROOT_PID"
DEFAULT_TRACE_FILE = "autotrace-trace.json"
#: Spans kept per process (``OTEL_PYTHON_AUTOTRACE_TRACE_FILE_MAX_SPANS``); more are
#: counted and reported, not written. A span with short arguments takes ~340 bytes:
#: 200,000 make ~70 MB.
MAX_EVENTS = 200_000
ENV_MAX_SPANS = ENV_PREFIX + "TRACE_FILE_MAX_SPANS"
#: ``tid`` of the first asyncio task track: above any Linux thread id (pid_max <= 2**22),
#: within the 32 bits viewers expect.
TASK_TID_BASE = 1 << 30


def prepare_trace_file(env: dict[str, str], source: str) -> str | None:
    """For the command: make the path absolute (children may ``chdir``), check its folder,
    name this process the file's owner. A message naming the fix, or None."""
    if "trace-file" not in exporter_names(env):
        return None
    raw = env.get(ENV_TRACE_FILE, "").strip() or DEFAULT_TRACE_FILE
    path = os.path.abspath(os.path.expanduser(raw))
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        return f"{source}={raw!r} is a directory; give a file name, e.g. {source} trace.json"
    if not os.path.isdir(folder):
        return f"{source}={raw!r}: the folder {folder} does not exist; create it first"
    if not os.access(folder, os.W_OK):
        return f"{source}={raw!r}: the folder {folder} is not writable; choose another path"
    limit = env.get(ENV_MAX_SPANS, "").strip()
    if limit and (not limit.isdigit() or int(limit) < 1):
        return f"{ENV_MAX_SPANS}={limit!r} is not a positive whole number, e.g. 100000"
    env[ENV_TRACE_FILE] = path
    env[ENV_ROOT_PID] = str(os.getpid())
    return None


def path_for(base: str, pid: int, root_pid: str | None) -> str:
    """``base`` for the command's own process, ``stem.PID.suffix`` for every other one."""
    if root_pid == str(pid):
        return base
    stem, suffix = os.path.splitext(base)
    return f"{stem}.{pid}{suffix or '.json'}"


def trace_file_processor(environ: Mapping[str, str], stream: TextIO) -> TraceFileProcessor:
    base = os.path.abspath(environ.get(ENV_TRACE_FILE, "").strip() or DEFAULT_TRACE_FILE)
    root = environ.get(ENV_ROOT_PID)
    if not root:  # not started by the command: the first process that gets here owns it
        root = str(os.getpid())
        os.environ[ENV_ROOT_PID] = root
    limit = environ.get(ENV_MAX_SPANS, "").strip()
    return TraceFileProcessor(base, root, stream,
                              service=environ.get("OTEL_SERVICE_NAME", "").strip(),
                              max_events=int(limit) if limit.isdigit() and int(limit) > 0
                              else MAX_EVENTS)


class TraceFileProcessor(SpanProcessor):
    """Keeps each ended span as a trace event; writes the file atomically."""

    def __init__(self, base: str, root_pid: str | None, stream: TextIO | None = None,
                 service: str = "", max_events: int = MAX_EVENTS) -> None:
        self.base = base
        self.root_pid = root_pid
        self.stream = stream
        self.service = service
        self.max_events = max_events
        self._lock = threading.Lock()
        self._reset()
        if hasattr(os, "register_at_fork"):
            me = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _call(me, "_reset"))

    def _reset(self) -> None:
        """A new process (or a fork child): its own events and its own file."""
        self._lock = threading.Lock()
        self.pid = os.getpid()
        self.path = path_for(self.base, self.pid, self.root_pid)
        self.events: list[dict[str, Any]] = []
        self.dropped = 0
        self._warned = False
        self._dirty = False
        self._tracks: dict[int, int] = {}  # span id -> tid
        self._threads: dict[int, str] = {}  # tid -> track name
        self._tasks: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._failed_write = False

    # -- SpanProcessor ------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            tid = self._track()
            context = span.get_span_context()
            if context is not None:
                self._tracks[context.span_id] = tid
        except Exception:
            logger.debug("autotrace: trace file: on_start failed", exc_info=True)

    def _track(self) -> int:
        thread = threading.current_thread()
        tid = threading.get_native_id()
        task = _current_task()
        if task is None:
            if tid not in self._threads:
                self._threads[tid] = thread.name
            return tid
        found = self._tasks.get(task)
        if found is None:
            with self._lock:
                found = TASK_TID_BASE + len(self._tasks) + 1
                self._tasks[task] = found
                try:
                    name = task.get_name()
                except Exception:
                    name = "task"
                self._threads[found] = f"{name} (asyncio task in {thread.name})"
        return found

    def on_end(self, span: ReadableSpan) -> None:
        try:
            self._add(span)
        except Exception:
            logger.debug("autotrace: trace file: on_end failed", exc_info=True)

    def _add(self, span: ReadableSpan) -> None:
        context = span.context
        tid = self._tracks.pop(context.span_id, None) if context is not None else None
        if os.getpid() != self.pid:  # a span started before a fork, ended in the child
            return
        if len(self.events) >= self.max_events:
            self.dropped += 1
            self._dirty = True
            if not self._warned:
                self._warned = True
                self._say(f"the trace file keeps at most {self.max_events:,} spans per "
                          f"process; later spans are counted, not written ({self.path})")
            return
        start = span.start_time or 0
        end = span.end_time or start
        args: dict[str, Any] = {key: _plain(value)
                                for key, value in (span.attributes or {}).items()}
        if context is not None:
            args["trace_id"] = f"{context.trace_id:032x}"
            args["span_id"] = f"{context.span_id:016x}"
        if span.parent is not None:
            args["parent_id"] = f"{span.parent.span_id:016x}"
        event: dict[str, Any] = {
            "name": span.name, "cat": "autotrace", "ph": "X",
            "ts": start / 1000, "dur": max(end - start, 0) / 1000,
            "pid": self.pid, "tid": tid if tid is not None else threading.get_native_id(),
            "args": args,
        }
        if span.status.status_code is StatusCode.ERROR:
            args["error"] = span.status.description or "error"
            event["cname"] = "terrible"
        self.events.append(event)
        self._dirty = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if self._dirty:
            return self.write()
        return True

    def shutdown(self) -> None:
        if self._dirty or not os.path.exists(self.path):
            self.write()

    # -- the file ----------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        pid = self.pid
        name = self.service or os.path.basename(sys.argv[0] if sys.argv and sys.argv[0]
                                                else sys.executable)
        meta: list[dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
             "args": {"name": f"{name} (pid {pid})"}},
        ]
        for tid, track in sorted(self._threads.items()):
            meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                         "args": {"name": track}})
        events = list(self.events)
        other: dict[str, Any] = {"producer": "autotrace", "spans": len(events),
                                 "max_spans": self.max_events, "dropped_spans": self.dropped}
        if self.dropped:
            last = max((e["ts"] + e["dur"] for e in events), default=0)
            events.append({"name": f"autotrace: {self.dropped:,} more spans not written "
                                   f"(limit {self.max_events:,} per process)",
                           "ph": "i", "s": "p", "ts": last, "pid": pid, "tid": 0})
        return {"traceEvents": meta + events, "displayTimeUnit": "ms", "otherData": other}

    def write(self) -> bool:
        """Write the file: a temporary file in the same folder, renamed over the path."""
        with self._lock:
            tmp = None
            try:
                self._dirty = False
                document = self.document()
                folder = os.path.dirname(self.path) or "."
                fd, tmp = tempfile.mkstemp(prefix=".autotrace-", suffix=".json.tmp",
                                           dir=folder)
                try:  # mkstemp makes it 0600: keep the mode a plain open() would give
                    mode = os.stat(self.path).st_mode & 0o777
                except OSError:
                    mode = 0o644
                os.chmod(tmp, mode)
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(document, out, separators=(",", ":"), default=str)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, self.path)
                return True
            except Exception as exc:
                if tmp is not None:
                    try:
                        os.unlink(tmp)
                    except OSError:
                        pass
                if not self._failed_write:
                    self._failed_write = True
                    self._say(f"could not write the trace file {self.path} "
                              f"({type(exc).__name__}: {exc})")
                return False

    def _say(self, message: str) -> None:
        try:
            stream = self.stream or sys.stderr
            stream.write(f"autotrace: {message}\n")
            stream.flush()
        except Exception:
            logger.warning("autotrace: %s", message)


def _current_task() -> Any:
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    try:
        if asyncio._get_running_loop() is None:
            return None
        return asyncio.current_task()
    except Exception:
        return None


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def _call(ref: weakref.ref[TraceFileProcessor], method: str) -> None:
    target = ref()
    if target is not None:
        getattr(target, method)()
