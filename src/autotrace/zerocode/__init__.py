"""Zero-code tracing: everything behind ``autotrace COMMAND`` and ``opentelemetry-instrument``.

``cli`` (the command) sets the environment and execs the program; ``bootstrap``
(from ``_bootstrap/sitecustomize.py``) installs autotrace in every process;
``provider`` and ``exporters`` decide where spans go; ``console`` prints the call
tree; ``instrumentor`` and ``environment_variables`` are the entry points of
``opentelemetry-instrument``.
"""
