"""A Flask app whose ``/fetch`` route calls an upstream service with ``requests``.

Run it with the ``autotrace`` command, which loads the installed Flask and requests
instrumentations (``pip install 'otel-autotrace[instrument]'
opentelemetry-instrumentation-flask opentelemetry-instrumentation-requests``)::

    cd examples/flask_app
    autotrace -p app python app.py          # a call tree per request on stderr
    curl http://127.0.0.1:5000/fetch

or with ``opentelemetry-instrument``, which exports through the distro::

    opentelemetry-instrument --traces_exporter console --metrics_exporter none \\
        --logs_exporter none --autotrace_patterns app python app.py

One request gives one trace: the Flask SERVER span ``GET /fetch``; the view
``fetch`` under it (on both backends: the script is compiled so that each
selected ``def`` is wrapped as it is defined, before ``@app.route`` registers
it); the app's own functions (``fetch_upstream``, ``summarize``) under the view;
and the requests CLIENT span ``GET`` beneath ``fetch_upstream``, which made the
call.
"""

from __future__ import annotations

import os

import requests
from flask import Flask, jsonify

app = Flask(__name__)

UPSTREAM_URL = os.environ.get("UPSTREAM_URL", "https://www.example.com/")


def fetch_upstream(url: str) -> dict[str, object]:
    """Call the upstream service; requests makes the CLIENT span under this one."""
    response = requests.get(url, timeout=10)
    return {"status": response.status_code, "length": len(response.content)}


def summarize(result: dict[str, object]) -> str:
    return f"upstream answered {result['status']} with {result['length']} bytes"


@app.route("/fetch")
def fetch() -> object:
    result = fetch_upstream(UPSTREAM_URL)
    return jsonify(summary=summarize(result), **result)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
