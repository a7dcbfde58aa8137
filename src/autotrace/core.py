"""``install()`` and ``uninstall()``: wire config -> selection -> backend -> formatter.

One installation is active at a time. Configuration errors are raised before
anything changes; an unexpected failure while instrumenting is logged, undone
and leaves the program untraced rather than broken.
"""

from __future__ import annotations

import atexit
import sys
import threading
from collections.abc import Callable, Sequence
from functools import partial
from types import CodeType

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from ._log import log_once, logger
from .backends import Backend, create_backend
from .config import Config, backend_refusal, make_config, resolve_backend
from .configfile import ConfigFileError
from .describe.function import Formatter
from .errors import InstallError
from .loading.source import compile_source
from .record import Recorder, accel, core_name, make_recorder
from .selection import Selector


def compiled_core_refusal(config: Config) -> str | None:
    """Why ``core='compiled'`` cannot run here (the extension did not load), or None:
    asked for by name, it never falls back silently."""
    if config.core != "compiled" or accel.extension is not None:
        return None
    return ("core='compiled' (OTEL_PYTHON_AUTOTRACE_CORE=compiled, --core compiled) cannot "
            f"run here, because {accel.why_not}. Build it by reinstalling with a C compiler "
            "and the Python headers present (e.g. apt install gcc python3-dev, then pip "
            "install --force-reinstall --no-binary otel-autotrace otel-autotrace), or use "
            "core='auto' (OTEL_PYTHON_AUTOTRACE_CORE=auto, --core auto)")


class Installation:
    """An active (or finished) installation; ``uninstall()`` undoes it."""

    def __init__(self, config: Config, backend: Backend, recorder: Recorder) -> None:
        self.config = config
        self.backend = backend.name
        #: The per-call path: ``compiled`` (C) or ``python`` (the reference).
        self.core = core_name(recorder)
        self._backend = backend
        self._recorder = recorder
        #: Made by the ``autotrace`` command's bootstrap: an explicit ``install()``
        #: in the program replaces it instead of failing.
        self.replaceable = False
        self._at_exit: Callable[[], None] | None = None  # the profile, if asked for

    @property
    def active(self) -> bool:
        return self._recorder.active

    @property
    def matched(self) -> int:
        """How many functions the patterns have selected and instrumented so far."""
        return int(getattr(self._backend, "matched", 0))

    def uninstall(self) -> None:
        """Restore every original, remove the hooks; escaped wrappers pass through."""
        global _active
        with _lock:
            if not self._recorder.active:
                return
            self._recorder.active = False
            if self._at_exit is not None:
                atexit.unregister(self._at_exit)
            try:
                self._backend.stop()
            except Exception:
                log_once("stop", "autotrace: error while uninstalling")
            self._recorder.drain()  # kept calls still queued (ended inside an export)
            if _active is self:
                _active = None

    def __repr__(self) -> str:
        state = "active" if self.active else "uninstalled"
        return (f"<autotrace.Installation {state} backend={self.backend!r} core={self.core!r} "
                f"patterns={list(self.config.patterns)!r}>")


_lock = threading.RLock()
_active: Installation | None = None


def install(
    # -- generated from config.OPTIONS by scripts/sync_options.py: edit the table, then run it --
    patterns: str | Sequence[str] | None = None,
    *,
    exclude: str | Sequence[str] | None = None,
    backend: str | None = None,
    core: str | None = None,
    capture_args: bool | None = None,
    capture_return: bool | None = None,
    repr_objects: bool | None = None,
    max_value_length: int | None = None,
    redact: str | Sequence[str] | None = None,
    redact_values: str | Sequence[str] | None = None,
    redact_disable: str | Sequence[str] | None = None,
    min_duration: float | str | None = None,
    keep_errors: bool | None = None,
    keep_handled_errors: bool | None = None,
    require_parent: bool | None = None,
    max_depth: int | None = None,
    spans: bool | None = None,
    metrics: bool | None = None,
    suppress_hot: bool | None = None,
    hot_calls: int | None = None,
    hot_duration: float | str | None = None,
    profile: bool | None = None,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    # -- end of generated lines --
) -> Installation:
    """Trace every function whose ``module.qualname`` matches ``patterns``.

    Call it before the traced modules are imported: references taken earlier
    (``from m import f``) keep the untraced function under the wrapt backend.
    Arguments left as ``None`` come from the ``OTEL_PYTHON_AUTOTRACE_*``
    environment variables, else from the configuration file (``[tool.autotrace]``
    in ``pyproject.toml``, or ``autotrace.toml``, found from the current directory
    upward), else from the defaults (``config.OPTIONS``). A bad file raises
    ``InstallError`` naming the file, the key and the accepted forms.
    """
    global _active
    try:
        config = make_config(
            # -- generated from config.OPTIONS by scripts/sync_options.py --
            patterns, exclude=exclude, backend=backend, core=core, capture_args=capture_args,
            capture_return=capture_return, repr_objects=repr_objects,
            max_value_length=max_value_length, redact=redact, redact_values=redact_values,
            redact_disable=redact_disable, min_duration=min_duration, keep_errors=keep_errors,
            keep_handled_errors=keep_handled_errors, require_parent=require_parent,
            max_depth=max_depth, spans=spans, metrics=metrics, suppress_hot=suppress_hot,
            hot_calls=hot_calls, hot_duration=hot_duration, profile=profile,
            tracer_provider=tracer_provider, meter_provider=meter_provider,
            # -- end of generated lines --
        )
    except ConfigFileError as exc:
        raise InstallError(str(exc)) from None
    refusal = (free_threading_refusal() or compiled_core_refusal(config)
               or backend_refusal(config.backend))
    if refusal is not None:
        raise InstallError(refusal)
    with _lock:
        if _active is not None and _active.replaceable:
            logger.debug("autotrace: the program's install() replaces %r", _active)
            _active.uninstall()
        if _active is not None:
            raise RuntimeError(
                f"autotrace is already installed ({_active!r}); call autotrace.uninstall() "
                "before installing again"
            )
        selector = Selector(config)
        recorder = make_recorder(config, Formatter(config))
        chosen = create_backend(resolve_backend(config.backend), selector, recorder)
        installation = Installation(config, chosen, recorder)
        try:
            chosen.start()
        except InstallError:
            recorder.active = False
            chosen.stop()
            raise
        except Exception:
            recorder.active = False
            try:
                chosen.stop()
            finally:
                log_once("start", "autotrace: installing the %s backend failed; the program "
                         "runs untraced", chosen.name)
            return installation
        _active = installation
        # Kept calls a finaliser ended inside an export wait for a safe point; the
        # last one is exit (registered after the provider's shutdown, so it runs first).
        atexit.register(recorder.drain)
        if config.profile and recorder.stats is not None:
            from .record.profile import print_profile

            installation._at_exit = partial(print_profile, recorder.stats)
            atexit.register(installation._at_exit)
        logger.debug("autotrace installed: %r (%s core%s)", installation, installation.core,
                      "" if accel.extension is not None else f": {accel.why_not}")
        return installation


def free_threading_refusal() -> str | None:
    """Why autotrace does not install here, on a free-threaded build (3.13t+) running
    without the GIL; None everywhere else.

    Nothing of autotrace has been tested with callbacks and wrappers running truly in
    parallel (its call tables, the hot-function budget, the metric counts). A
    free-threaded build with the GIL enabled (``PYTHON_GIL=1``, or an extension
    module that enabled it) behaves as the default build and is traced."""
    gil_enabled = getattr(sys, "_is_gil_enabled", None)
    if gil_enabled is None or gil_enabled():
        return None
    return ("autotrace does not run on free-threaded Python with the GIL disabled (not "
            "tested there); start Python with PYTHON_GIL=1 (or -X gil=1) to trace this "
            "program")


def uninstall() -> bool:
    """Undo the active installation; False if there was none."""
    current = _active
    if current is None:
        return False
    current.uninstall()
    return True


def active_installation() -> Installation | None:
    return _active


def compile_main(source: str | bytes, filename: str, module: str = "__main__") -> CodeType:
    """Compile a script about to run as ``module`` so the active backend traces it.

    Without an active installation this is plain ``compile``.
    """
    current = _active
    if current is not None and current.active:
        return current._backend.compile_main(source, filename, module)
    return compile_source(source, filename, module)
