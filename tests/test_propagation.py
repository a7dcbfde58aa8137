"""One trace across processes: real subprocesses, real multiprocessing, a real collector.

Every process runs under the ``autotrace`` command's bootstrap and exports to
the same collector (rotel); the test then checks that all spans share one
trace id and that each process's root span has the span that was current in
its parent as its parent.
"""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

import pytest

from .clihelp import AUTOTRACE, clean_env, run, write
from .collector import CollectedSpan, Collector, collector

pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")

__all__ = ["collector"]  # the fixture

START_METHODS = multiprocessing.get_all_start_methods()

TOP = '''
import subprocess
import sys

def parent(method):
    subprocess.run([sys.executable, "child.py", method], check=True)
    return method

print("top", parent(sys.argv[1]), flush=True)
'''

CHILD = '''
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import work

def child(method):
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as pool:
        squares = pool.map(work.square, [1, 2, 3])
        late = pool.apply_async(work.square, (4,)).get(timeout=60)
    with ProcessPoolExecutor(2, mp_context=ctx) as executor:
        cubes = list(executor.map(work.cube, [1, 2]))
        cubes.append(executor.submit(work.cube, 3).result(timeout=60))
    process = ctx.Process(target=work.alone, args=(5,))
    process.start()
    process.join(60)
    return squares, late, cubes, process.exitcode

if __name__ == "__main__":
    print("child", child(sys.argv[1]), flush=True)
'''

WORK = '''
def square(x):
    return x * x

def cube(x):
    return x ** 3

def alone(x):
    return -x
'''


def one(spans: list[CollectedSpan], name: str) -> CollectedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, sorted(s.name for s in spans)
    return found[0]


def write_tree(tmp_path: Path) -> None:
    write(tmp_path, "top.py", TOP)
    write(tmp_path, "child.py", CHILD)
    write(tmp_path, "work.py", WORK)


def env_for(collector: Collector, **extra: str) -> dict[str, str]:
    return clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_endpoint,
                     OTEL_BSP_SCHEDULE_DELAY="50", **extra)


EXPECTED_NAMES = ["alone", "child", "cube", "cube", "cube", "parent",
                  "square", "square", "square", "square"]


@pytest.mark.parametrize("method", START_METHODS)
def test_parent_subprocess_and_pool_workers_make_one_trace(
        tmp_path: Path, collector: Collector, method: str) -> None:
    write_tree(tmp_path)
    out = run([*AUTOTRACE, "-p", "top,child,work", "--exporter", "otlp",
               sys.executable, "top.py", method], tmp_path, env=env_for(collector))
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"child ([1, 4, 9], 16, [1, 8, 27], 0)\ntop {method}\n"
    assert out.stderr == ""
    spans = collector.wait_for(len(EXPECTED_NAMES))
    assert sorted(s.name for s in spans) == EXPECTED_NAMES
    parent, child = one(spans, "parent"), one(spans, "child")
    assert parent.parent_id == ""
    assert child.parent_id == parent.span_id  # across subprocess.run
    for span in spans:
        if span.name in ("square", "cube", "alone"):  # across pool, executor and Process
            assert span.parent_id == child.span_id, (span.name, method)
    assert {s.trace_id for s in spans} == {parent.trace_id}
    assert one(spans, "alone").attributes["code.function.parameters.x.value"] == 5


GIVEN_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
GIVEN_PARENT = "00f067aa0ba902b7"
GIVEN = f"00-{GIVEN_TRACE}-{GIVEN_PARENT}-01"

EXPLICIT = '''
import os
import subprocess
import sys

def spawn(env):
    return subprocess.run([sys.executable, "leaf.py"], env=env, check=True)

def parent():
    spawn(dict(os.environ, TRACEPARENT="''' + GIVEN + '''"))  # the program's own: kept
    spawn(None)                     # inherited environment: the current span
    spawn(dict(os.environ))         # explicit copy: the current span too

parent()
'''

LEAF = '''
import os

def leaf():
    return os.environ.get("TRACEPARENT")

print(leaf(), flush=True)
'''


def test_a_traceparent_set_by_the_program_is_kept(tmp_path: Path,
                                                  collector: Collector) -> None:
    write(tmp_path, "app.py", EXPLICIT)
    write(tmp_path, "leaf.py", LEAF)
    out = run([*AUTOTRACE, "-p", "app,leaf", "--exporter", "otlp", sys.executable, "app.py"],
              tmp_path, env=env_for(collector))
    assert out.returncode == 0, out.stderr
    spans = collector.wait_for(6)
    assert sorted(s.name for s in spans) == ["leaf"] * 3 + ["parent", "spawn", "spawn", "spawn"]
    parent = one(spans, "parent")
    spawns = [s for s in spans if s.name == "spawn"]
    leaves = [s for s in spans if s.name == "leaf"]
    printed = out.stdout.splitlines()
    assert printed[0] == GIVEN
    given_leaf = [s for s in leaves if s.trace_id == GIVEN_TRACE]
    assert len(given_leaf) == 1 and given_leaf[0].parent_id == GIVEN_PARENT
    ours = [s for s in leaves if s.trace_id == parent.trace_id]
    assert len(ours) == 2
    assert len({s.parent_id for s in ours}) == 2
    assert {s.parent_id for s in ours} <= {s.span_id for s in spawns}
    for line in printed[1:]:  # each child saw the span current when it was started
        assert line.startswith(f"00-{parent.trace_id}-")
        assert line.split("-")[2] in {s.span_id for s in spawns}
    assert {s.parent_id for s in ours} == {line.split("-")[2] for line in printed[1:]}


def test_the_command_joins_a_trace_given_in_its_environment(tmp_path: Path,
                                                            collector: Collector) -> None:
    write(tmp_path, "leaf.py", LEAF)
    out = run([*AUTOTRACE, "-p", "leaf", "--exporter", "otlp", sys.executable, "leaf.py"],
              tmp_path, env=env_for(collector, TRACEPARENT=GIVEN))
    assert (out.returncode, out.stdout) == (0, GIVEN + "\n"), out.stderr
    (leaf,) = collector.wait_for(1)
    assert (leaf.trace_id, leaf.parent_id) == (GIVEN_TRACE, GIVEN_PARENT)


OS_LEVEL = '''
import os
import subprocess
import sys

def with_spawnv():
    return os.spawnv(os.P_WAIT, sys.executable, [sys.executable, "leaf.py"])

def with_posix_spawn():
    pid = os.posix_spawn(sys.executable, [sys.executable, "leaf.py"], os.environ)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

def with_exec():
    pid = os.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "leaf.py"])
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

def not_python():
    return subprocess.run(["sh", "-c", "echo sh $TRACEPARENT"], check=True)

def main():
    with_spawnv()
    with_posix_spawn()
    with_exec()
    not_python()

main()
'''


def test_os_level_process_creation_and_non_python_children(tmp_path: Path,
                                                           collector: Collector) -> None:
    write(tmp_path, "app.py", OS_LEVEL)
    write(tmp_path, "leaf.py", LEAF)
    out = run([*AUTOTRACE, "-p", "app,leaf", "--exporter", "otlp", sys.executable, "app.py"],
              tmp_path, env=env_for(collector))
    assert out.returncode == 0, out.stderr
    spans = collector.wait_for(8)
    assert sorted(s.name for s in spans) == ["leaf"] * 3 + [
        "main", "not_python", "with_exec", "with_posix_spawn", "with_spawnv"]
    main = one(spans, "main")
    assert {s.trace_id for s in spans} == {main.trace_id}
    starters = {one(spans, name).span_id: name
                for name in ("with_spawnv", "with_posix_spawn", "with_exec")}
    leaves = [s for s in spans if s.name == "leaf"]
    assert sorted(starters[s.parent_id] for s in leaves) == sorted(starters.values())
    assert f"sh 00-{main.trace_id}-{one(spans, 'not_python').span_id}-" in out.stdout


def test_no_propagate_leaves_children_alone(tmp_path: Path, collector: Collector) -> None:
    write(tmp_path, "app.py", "\n".join(line for line in EXPLICIT.splitlines()
                                         if "the program's own" not in line))
    write(tmp_path, "leaf.py", LEAF)
    out = run([*AUTOTRACE, "-p", "app,leaf", "--no-propagate", "--exporter", "otlp",
               sys.executable, "app.py"], tmp_path, env=env_for(collector))
    assert out.returncode == 0, out.stderr
    assert out.stdout == "None\nNone\n"
    spans = collector.wait_for(5)
    assert sorted(s.name for s in spans) == ["leaf", "leaf", "parent", "spawn", "spawn"]
    leaves = [s for s in spans if s.name == "leaf"]
    assert [s.parent_id for s in leaves] == ["", ""]
    assert one(spans, "parent").trace_id not in {s.trace_id for s in leaves}


OTEL_INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"


@pytest.mark.skipif(not OTEL_INSTRUMENT.exists(), reason="opentelemetry-instrument not installed")
def test_opentelemetry_instrument_children_join_the_trace_too(
        tmp_path: Path, collector: Collector) -> None:
    pytest.importorskip("opentelemetry.distro")
    write_tree(tmp_path)
    env = env_for(collector, OTEL_TRACES_EXPORTER="otlp", OTEL_METRICS_EXPORTER="none",
                  OTEL_LOGS_EXPORTER="none", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    out = run([str(OTEL_INSTRUMENT), "--autotrace_patterns", "top,child,work",
               sys.executable, "top.py", "spawn"], tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    spans = collector.wait_for(len(EXPECTED_NAMES))
    assert sorted(s.name for s in spans) == EXPECTED_NAMES
    parent, child = one(spans, "parent"), one(spans, "child")
    assert parent.parent_id == "" and child.parent_id == parent.span_id
    assert {s.parent_id for s in spans if s.name in ("square", "cube", "alone")} == {
        child.span_id}
    assert {s.trace_id for s in spans} == {parent.trace_id}
