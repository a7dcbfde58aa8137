"""Run a third-party test suite plain or under autotrace, and record what happened.

Used by ``scripts/third_party_suites.py`` in one of two ways, in a fresh process
whose working directory is the unpacked sdist:

* ``python -m pytest -p autotrace_suite_harness ...``: a pytest plugin;
* ``python -m autotrace_suite_harness [unittest args]``: ``python -m unittest``.

Importing this module installs autotrace (when asked to) *before* the library
under test is imported: pytest imports ``-p`` plugins before it collects
anything, and the unittest runner imports the tests after this module ran.
Spans go to a real SDK ``TracerProvider`` through a ``SimpleSpanProcessor``
whose exporter counts them. At the end a JSON report is written: every test
id with its outcome(s), the span count, the files the library was imported
from, and autotrace's own warnings.

Configured by environment variables:

``AUTOTRACE_SUITE_BACKEND``  ``wrapt`` / ``monitoring``; empty: run plain
``AUTOTRACE_SUITE_PATTERNS`` comma-separated patterns (the library's top package)
``AUTOTRACE_SUITE_ROOT``     the unpacked sdist; the library must come from there
``AUTOTRACE_SUITE_REPORT``   where to write the JSON report
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections.abc import Sequence
from typing import Any

ENV_BACKEND = "AUTOTRACE_SUITE_BACKEND"
ENV_PATTERNS = "AUTOTRACE_SUITE_PATTERNS"
ENV_ROOT = "AUTOTRACE_SUITE_ROOT"
ENV_REPORT = "AUTOTRACE_SUITE_REPORT"

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class _State:
    def __init__(self) -> None:
        self.backend = os.environ.get(ENV_BACKEND, "")
        self.patterns = [p for p in os.environ.get(ENV_PATTERNS, "").split(",") if p]
        self.root = os.path.realpath(os.environ.get(ENV_ROOT, os.getcwd()))
        self.report = os.environ.get(ENV_REPORT, "")
        self.outcomes: dict[str, list[str]] = {}
        self.subtests: dict[str, int] = {}
        self.preimported: list[str] = []
        self.warnings: list[str] = []
        self.exporter: Any = None
        self.provider: Any = None
        self.installation: Any = None
        self.finished = False
        self.lock = threading.Lock()

    def record(self, key: str, outcome: str) -> None:
        key = _ADDRESS.sub(" at 0x?", key)
        with self.lock:
            self.outcomes.setdefault(key, []).append(outcome)

    def subtest_key(self, parent: str) -> str:
        """Subtests are keyed by their rank within the test: their descriptions may
        hold random data or object addresses that differ from run to run."""
        with self.lock:
            rank = self.subtests[parent] = self.subtests.get(parent, 0) + 1
        return f"{parent} [subtest {rank}]"

    def tops(self) -> set[str]:
        return {p.split(".", 1)[0] for p in self.patterns}


class _WarningsHandler(logging.Handler):
    def __init__(self, state: _State) -> None:
        super().__init__(logging.WARNING)
        self.state = state

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.state.warnings.append(record.getMessage())
        except Exception:
            pass


def _start() -> _State:
    state = _State()
    if not state.backend:
        return state
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    import autotrace

    class CountingExporter(SpanExporter):
        """Counts exported spans; thread-safe (suites may start threads)."""

        def __init__(self) -> None:
            self.count = 0
            self.names: dict[str, int] = {}
            self._lock = threading.Lock()

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            with self._lock:
                self.count += len(spans)
                for span in spans:
                    name = (span.attributes or {}).get("code.function.name", span.name)
                    self.names[name] = self.names.get(name, 0) + 1
            return SpanExportResult.SUCCESS

    tops = state.tops()
    state.preimported = sorted(m for m in sys.modules if m.split(".", 1)[0] in tops)
    logging.getLogger("autotrace").addHandler(_WarningsHandler(state))
    state.exporter = CountingExporter()
    state.provider = TracerProvider()
    state.provider.add_span_processor(SimpleSpanProcessor(state.exporter))
    state.installation = autotrace.install(state.patterns, backend=state.backend,
                                           tracer_provider=state.provider)
    return state


_STATE = _start()


def finish(exit_status: int) -> None:
    """Write the report (once)."""
    state = _STATE
    if state.finished:
        return
    state.finished = True
    spans = 0
    names: dict[str, int] = {}
    if state.provider is not None:
        state.provider.force_flush()
        spans = state.exporter.count
        names = dict(state.exporter.names)
    tops = state.tops()
    files: dict[str, str] = {}
    for name, module in list(sys.modules.items()):
        if name.split(".", 1)[0] in tops:
            path = getattr(module, "__file__", None)
            if isinstance(path, str):
                files[name] = os.path.realpath(path)
    outside = sorted(n for n, p in files.items() if not p.startswith(state.root + os.sep))
    report = {
        "backend": state.backend or "plain",
        "python": sys.version.split()[0],
        "exit_status": exit_status,
        "outcomes": state.outcomes,
        "spans": spans,
        "spans_by_function": names,
        "library_modules": len(files),
        "modules_outside_root": outside,
        "preimported": state.preimported,
        "autotrace_warnings": state.warnings,
        "installed": state.installation is not None and bool(state.installation.active),
    }
    if state.report:
        with open(state.report, "w", encoding="utf-8") as fh:
            json.dump(report, fh)


# -- pytest plugin ------------------------------------------------------------------------


def _pytest_key(report: Any) -> str:
    key = str(report.nodeid)
    if getattr(report, "context", None) is not None:  # pytest's SubtestReport
        return _STATE.subtest_key(key)
    return key


def pytest_runtest_logreport(report: Any) -> None:
    if report.when == "call":
        if report.passed:
            outcome = "passed"
        elif report.skipped:
            outcome = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        else:
            outcome = "failed"
    elif report.failed:
        outcome = "error"
    elif report.skipped:
        outcome = "skipped"
    else:
        return
    _STATE.record(_pytest_key(report), outcome)


def pytest_sessionfinish(session: Any, exitstatus: Any) -> None:
    finish(int(exitstatus))


# -- unittest runner ----------------------------------------------------------------------


def _run_unittest(argv: list[str]) -> int:
    import unittest

    record = _STATE.record

    class RecordingResult(unittest.TextTestResult):
        def addSuccess(self, test: unittest.TestCase) -> None:
            record(test.id(), "passed")
            super().addSuccess(test)

        def addFailure(self, test: unittest.TestCase, err: Any) -> None:
            record(test.id(), "failed")
            super().addFailure(test, err)

        def addError(self, test: unittest.TestCase, err: Any) -> None:
            record(test.id(), "error")
            super().addError(test, err)

        def addSkip(self, test: unittest.TestCase, reason: str) -> None:
            record(test.id(), "skipped")
            super().addSkip(test, reason)

        def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
            record(test.id(), "xfailed")
            super().addExpectedFailure(test, err)

        def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
            record(test.id(), "failed")
            super().addUnexpectedSuccess(test)

        def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase,
                       err: Any) -> None:
            if err is None:
                outcome = "passed"
            elif issubclass(err[0], test.failureException):
                outcome = "failed"
            else:
                outcome = "error"
            record(_STATE.subtest_key(test.id()), outcome)
            super().addSubTest(test, subtest, err)

    runner = unittest.TextTestRunner(resultclass=RecordingResult,  # type: ignore[arg-type]
                                     verbosity=1)
    program = unittest.main(module=None, argv=["python -m unittest", *argv],
                            testRunner=runner, exit=False)
    status = 0 if program.result.wasSuccessful() else 1
    finish(status)
    return status


if __name__ == "__main__":
    sys.exit(_run_unittest(sys.argv[1:]))
