"""The one interface between a backend and the recorder core: all a backend may use.

A backend (``backends/``) decides *when* a traced call starts, suspends, resumes
and ends, and says so here; the core decides everything else (the clock, the
chain of calls per thread and task, the policies, spans, metrics, the profile).
Any core that implements ``Core`` can stand behind either backend; today that is
``recorder.Recorder``, the pure-Python reference.

What a backend can rely on:

* **Nothing here raises into the program.** ``start`` returns None when the call
  is to run untraced (spans of this kind off, no parent under ``require_parent``,
  autotrace itself at work on this thread, an SDK export running); every other
  method swallows and logs its own faults.
* **One handle per call.** ``start`` returns an opaque handle; the backend passes
  it back unchanged, exactly once to ``finish``, and to ``suspend``/``resume``
  around each suspension of a generator or coroutine. It never reads it.
* **Any thread, any time.** ``finish`` may come from another thread than ``start``
  (a generator resumed elsewhere), from a garbage-collector finaliser
  (``ABANDONED``), or while the core is already at work on this thread: the core
  never waits on a lock there (``recorder`` module docstring, "Re-entry").
* **Cheap flags.** ``active`` (False after ``uninstall()``), ``dormant`` (no tracer
  yet and nothing to aggregate: pass calls through without starting them) and
  ``own_time`` (generators and coroutines report every suspension, even when the
  backend could otherwise skip them) are plain attributes, read per call.
* **Descriptions are made once per function**, by ``describe_function`` (wrapt:
  the function object) or ``describe_code`` (monitoring: the code object), and
  handed to ``start`` for every call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import CodeType, FrameType
from typing import Any, Protocol

from ..describe.function import FunctionInfo

#: How a call ended (``Core.finish``): it returned a value, raised an exception, or
#: was abandoned (a suspended generator or coroutine that vanished without an event).
RETURNED, RAISED, ABANDONED = 0, 1, 2

class Core(Protocol):
    """The recorder core, as a backend sees it (module docstring)."""

    active: bool
    dormant: bool
    own_time: bool

    def start(self, info: FunctionInfo, instance: Any, args: tuple[Any, ...],
              kwargs: Mapping[str, Any] | None, frame: FrameType | None = None,
              suspends: bool = False) -> Any:
        """A traced call starts: a handle to pass back, or None (run it untraced).

        Arguments come either from the call (``instance, args, kwargs``: wrapt) or
        from the callee's ``frame``, which has just started (monitoring).
        ``suspends``: a generator or coroutine, which will suspend and resume."""
        ...

    def finish(self, call: Any, outcome: int, value: Any) -> None:
        """The call ended: ``RETURNED`` ``value``, ``RAISED`` ``value`` (the exception),
        or ``ABANDONED`` (``value`` None; may come from a finaliser)."""
        ...

    def suspend(self, call: Any) -> None:
        """The body yielded or awaited: the call stays open but is no longer current."""
        ...

    def resume(self, call: Any) -> None:
        """The body runs again, maybe on another thread or task."""
        ...

    def on_ready(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when a dormant core gets a tracer (turn events back on)."""
        ...

    def describe_function(self, func: Callable[..., Any], module: str, qualname: str,
                          implicit_first: bool) -> FunctionInfo:
        """Once per wrapped function: what its spans say (``implicit_first``: a method
        whose first parameter is bound, so it is not an argument attribute)."""
        ...

    def describe_code(self, code: CodeType, module: str, qualname: str) -> FunctionInfo:
        """Once per monitored code object: what its spans say."""
        ...

    def compiled_wrapper(self, describe: Callable[..., FunctionInfo], *args: Any) -> Any:
        """wrapt: a wrapper for a plain function that is a C callable (the same contract
        as the backend's own, with ``describe(*args)`` called on the first call; at most
        four args), or None: the core has no compiled path, use the Python wrapper."""
        ...

    def compiled_callbacks(self, backend: Any, traced: dict[int, CodeType]) -> Any:
        """sys.monitoring: an object whose ``on_start`` / ``on_return`` / ``on_yield`` /
        ``on_resume`` are C callbacks for PY_START / PY_RETURN / PY_YIELD / PY_RESUME,
        sharing the backend's ``traced`` table (``id(code) -> code``: the selected code
        objects). A code object's first call asks ``backend._describe_first(code)`` for
        its description (None: not traced after all). Its ``calls`` is the table of
        running frames (``id(frame) -> (call, code)``, with a dict's ``get``, ``pop``,
        ``values``, ``clear``, item assignment and ``in``), which the backend's Python
        callbacks then use; or None."""
        ...
