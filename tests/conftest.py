"""Shared fixtures: a real SDK with an in-memory exporter, real modules on disk, both backends.

Every behavioural test takes the ``backend`` fixture, so it runs once per
backend available on the interpreter (``monitoring`` needs 3.12+); those that
install through ``traced`` also run once per core (``compiled`` where the
extension is built, and ``python``, the reference). Tests that call
``install()`` themselves get the default core; CI also runs the whole suite
with ``OTEL_PYTHON_AUTOTRACE_CORE=python``. Modules
under test are written to a temp dir and imported for real; each test gets
unique module names so nothing leaks between tests through ``sys.modules``.
"""

from __future__ import annotations

import importlib
import itertools
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import autotrace
from autotrace.record import accel

BACKENDS = ["wrapt"] + (["monitoring"] if sys.version_info >= (3, 12) else [])
CORES = (["compiled"] if accel.extension is not None else []) + ["python"]

_counter = itertools.count()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=CORES)
def core(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp


@pytest.fixture(autouse=True)
def _clean_install() -> Iterator[None]:
    yield
    autotrace.uninstall()


class Modules:
    """Writes modules/packages into a sys.path entry of their own, with unique names."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = f"atm{next(_counter)}_"
        self.created: list[str] = []

    def name(self, base: str) -> str:
        return self.prefix + base

    def write(self, relpath: str, source: str) -> Path:
        """Write ``relpath`` (``{p}`` in paths and source is the unique prefix)."""
        relpath = relpath.replace("{p}", self.prefix)
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).replace("{p}", self.prefix))
        importlib.invalidate_caches()
        return path

    def module(self, base: str, source: str) -> str:
        self.write(f"{self.prefix}{base}.py", source)
        name = self.name(base)
        self.created.append(name)
        return name

    def package(self, base: str, files: dict[str, str]) -> str:
        for rel, source in files.items():
            self.write(f"{self.prefix}{base}/{rel}", source)
        name = self.name(base)
        self.created.append(name)
        return name

    def cleanup(self) -> None:
        for mod in list(sys.modules):
            if mod.startswith(self.prefix):
                del sys.modules[mod]


@pytest.fixture
def modules(tmp_path: Path) -> Iterator[Modules]:
    root = tmp_path / "mods"
    root.mkdir()
    sys.path.insert(0, str(root))
    mods = Modules(root)
    try:
        yield mods
    finally:
        sys.path.remove(str(root))
        mods.cleanup()


class Traced:
    """install() + import for one test, with helpers to read the spans back."""

    def __init__(self, modules: Modules, exporter: InMemorySpanExporter,
                 provider: TracerProvider, backend: str, core: str = "auto") -> None:
        self.modules = modules
        self.exporter = exporter
        self.provider = provider
        self.backend = backend
        self.core = core
        self.installation: autotrace.Installation | None = None

    def install(self, patterns: Any = None, **kwargs: Any) -> autotrace.Installation:
        if patterns is None:
            patterns = [self.modules.prefix + "*"]
        kwargs.setdefault("tracer_provider", self.provider)
        kwargs.setdefault("backend", self.backend)
        kwargs.setdefault("core", self.core)
        self.installation = autotrace.install(patterns, **kwargs)
        return self.installation

    def load(self, base: str, source: str, **install_kwargs: Any) -> Any:
        """Write module ``base``, install with a pattern selecting it, import it."""
        name = self.modules.module(base, source)
        if self.installation is None:
            self.install(**install_kwargs)
        return importlib.import_module(name)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def names(self) -> list[str]:
        return [s.name for s in self.spans()]

    def span(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, f"expected one span {name!r}, got {self.names()}"
        return found[0]

    def attrs(self, name: str) -> dict[str, Any]:
        return dict(self.span(name).attributes or {})

    def args(self, name: str) -> dict[str, Any]:
        prefix, suffix = "code.function.parameters.", ".value"
        return {k[len(prefix):-len(suffix)]: v for k, v in self.attrs(name).items()
                if k.startswith(prefix)}

    def clear(self) -> None:
        self.exporter.clear()


@pytest.fixture
def traced(modules: Modules, exporter: InMemorySpanExporter, provider: TracerProvider,
           backend: str, core: str) -> Traced:
    return Traced(modules, exporter, provider, backend, core)


def parent_name(spans: list[ReadableSpan], span: ReadableSpan) -> str | None:
    if span.parent is None:
        return None
    for other in spans:
        if other.context.span_id == span.parent.span_id:
            return other.name
    return "<outside>"


Factory = Callable[..., Any]
