"""Zero-code tracing: everything behind ``autotrace COMMAND`` and ``opentelemetry-instrument``.

``cli`` (the command) sets the environment and execs the program; ``bootstrap``
(from ``_bootstrap/sitecustomize.py``) installs autotrace in every process;
``provider`` and ``exporters`` decide where spans go; ``console`` prints the call
tree; ``instrumentor`` and ``environment_variables`` are the entry points of
``opentelemetry-instrument``.
"""

import os

#: Put first on PYTHONPATH by the command; holds only ``sitecustomize.py``. Named here,
#: by the package that holds it, for the command (which adds it) and the
#: instrumentations (which take it out for the processes they start).
BOOTSTRAP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bootstrap")
