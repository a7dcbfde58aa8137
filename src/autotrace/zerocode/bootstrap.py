"""Start-up in each process the ``autotrace`` command runs (called from its ``sitecustomize``).

Everything comes from the environment the command set: the
``OTEL_PYTHON_AUTOTRACE_*`` settings, and the standard OpenTelemetry variables
for where spans go. A bad value prints one line and leaves the process
untraced; the program itself always runs.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys

from .._log import log_once
from ..config import OPTIONS_BY_NAME
from . import BOOTSTRAP_DIR as BOOTSTRAP_DIR


def dump_stacks_on_sigquit() -> None:
    """``kill -QUIT PID`` prints every thread's stack to stderr, then the process quits
    as it always would (the default action runs after the dump): a hung traced program
    can say where it is. Only where SIGQUIT still has its default action; a handler
    the program sets later replaces this one."""
    sigquit = getattr(signal, "SIGQUIT", None)
    if sigquit is None or signal.getsignal(sigquit) is not signal.SIG_DFL:
        return
    try:
        faulthandler.register(sigquit, all_threads=True, chain=True)
    except (OSError, RuntimeError, ValueError):  # no usable stderr, or not the main thread
        pass


def boot() -> None:
    """Install autotrace from the environment, with the command's default output."""
    environ = os.environ
    if not environ.get(OPTIONS_BY_NAME["patterns"].env, "").strip():
        return
    dump_stacks_on_sigquit()
    try:
        from ..core import install
        from ..loading.mainscript import hook_main_script
        from . import propagation
        from .instrumentations import load as load_instrumentations
        from .meters import default_meter_provider
        from .notices import report_if_nothing_matches
        from .provider import default_provider, flush_providers
        from .shutdown import before_signal_death
        from .stderr import open_stderr_copy

        propagate = propagation.enabled(environ)
        # Before the provider: its exit handler must run after the provider's.
        hook_main_script()
        stream = open_stderr_copy()
        provider = default_provider(environ, stream)
        meter_provider = default_meter_provider(environ, stream)
        installation = install(tracer_provider=provider, meter_provider=meter_provider)
        installation.replaceable = True
        report_if_nothing_matches(installation, stream)
        if propagate:  # the parent's context, and TRACEPARENT for this process's children
            propagation.start(environ, getattr(provider, "force_flush", None))
        # After install: an instrumentation imports its library, which may be traced too.
        load_instrumentations(environ, provider, meter_provider)
        before_signal_death(lambda: flush_providers(provider))
    except (ValueError, TypeError, RuntimeError) as exc:
        sys.stderr.write(f"autotrace: {exc}; this process runs untraced\n")
    except Exception:
        log_once("boot", "autotrace: could not start; this process runs untraced")
