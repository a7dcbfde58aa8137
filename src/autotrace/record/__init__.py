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
* ``compiled`` (with ``_core.c``, loaded by ``accel``): the same recorder with its
  per-call path in C; ``make_recorder`` picks it by the ``core`` option;
* ``ids``, ``globalprovider``: private span ids, and waking up when the program
  sets its tracer provider.
"""

from ..config import Config
from ..describe.function import Formatter
from . import accel
from .contract import ABANDONED, RAISED, RETURNED, Core
from .recorder import Recorder


def make_recorder(config: Config, formatter: Formatter) -> Recorder:
    """The recorder of the ``core`` option (``compiled`` is refused at ``install()``
    where the extension did not load): ``auto`` means compiled where it is built."""
    if config.core != "python" and accel.extension is not None:
        from .compiled import CompiledRecorder

        return CompiledRecorder(config, formatter)
    return Recorder(config, formatter)


def core_name(recorder: Recorder) -> str:
    """``compiled`` or ``python``: what ``autotrace --version`` and the debug log say."""
    return str(getattr(recorder, "core_name", "python"))


__all__ = ["ABANDONED", "RAISED", "RETURNED", "Core", "Recorder", "core_name",
           "make_recorder"]
