"""Record: what is kept of each traced call, behind one small interface.

``contract`` is the whole interface a backend sees (``Core``). Backends only
report that a traced call started (``Recorder.start`` with the
call's arguments, or with the callee's frame) and that it
ended (``Recorder.finish`` with an outcome: returned, raised, or abandoned by
a generator that vanished without an event); generators and coroutines also
report ``suspend``/``resume``. Everything else is decided here, in one place:

* ``recorder``: the ``Recorder`` and its per-call ``Call``; the re-entry guard,
  fork safety, deferred ends, and the policies (``min_duration``,
  ``keep_errors``, ``require_parent``, ``max_depth``) that decide, mostly when
  a call *ends*, whether it becomes a span;
* ``spans``: the span output: finding the tracer, the placeholder that stands
  in the context for a call not yet kept, recording failures;
* ``ids``, ``globalprovider``: private span ids, and waking up when the program
  sets its tracer provider.
"""

from .contract import ABANDONED, RAISED, RETURNED, Core
from .recorder import Recorder

__all__ = ["ABANDONED", "RAISED", "RETURNED", "Core", "Recorder"]
