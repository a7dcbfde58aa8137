"""The exceptions autotrace raises to its caller, on the ground floor so that any
module may raise them without importing the one that catches them."""


class InstallError(RuntimeError):
    """autotrace cannot be installed in this process as configured."""
