"""Selection: which functions are traced (name patterns) and where they are found.

``patterns`` answers "is ``module.qualname`` traced?"; ``discovery`` finds the
functions and methods a module defines. Both backends start here.
"""

from .patterns import NEVER_TRACED, Selector, is_opted_out, is_opted_out_code, no_trace

__all__ = ["NEVER_TRACED", "Selector", "is_opted_out", "is_opted_out_code", "no_trace"]
