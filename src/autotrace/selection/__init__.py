"""Selection: which functions are traced, and where they are found.

``Selector`` (``selector``) is the one interface: everyone else asks it. Behind
it each rule has one home: ``patterns`` (the names the patterns select),
``names`` (the names of run modules, the dunders left alone) and ``optout``
(``no_trace`` in its three forms). ``discovery`` finds the functions and
methods a module defines, and asks the selector about each.
"""

from .optout import (
    codes_opted_out,
    is_opted_out,
    is_opted_out_code,
    no_trace,
    opted_out_code_ids,
)
from .patterns import NEVER_TRACED
from .selector import Selector

__all__ = ["NEVER_TRACED", "Selector", "codes_opted_out", "is_opted_out", "is_opted_out_code",
           "no_trace", "opted_out_code_ids"]
