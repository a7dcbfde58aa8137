"""autotrace: OpenTelemetry spans for your own functions, selected by name patterns.

    import autotrace
    autotrace.install(patterns=["myapp"])   # before myapp is imported
    import myapp                             # matching functions now make spans
"""

from ._version import __version__
from .config import DEFAULT_REDACT, Config
from .core import Installation, active_installation, install, uninstall
from .errors import InstallError
from .selection import no_trace

__all__ = [
    "DEFAULT_REDACT",
    "Config",
    "InstallError",
    "Installation",
    "__version__",
    "active_installation",
    "install",
    "no_trace",
    "uninstall",
]
