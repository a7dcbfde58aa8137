"""The compiled core (``record/_core.c``): chosen, refused and checked like every option,
exact with references and exceptions, flat in memory.

Behaviour is tested against both cores by every test that installs through the
``traced`` fixture (``core`` parameter); this file holds what only the compiled
core can get wrong: reference counts, the exception in flight, memory over
millions of calls, and how the choice is made.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import autotrace
from autotrace.record import accel

from .conftest import Traced

compiled_only = pytest.mark.skipif(accel.extension is None,
                                   reason=f"compiled core not here: {accel.why_not}")

MODULE = """
import time

class Boom(Exception):
    pass

def add(a, b):
    return a + b

def fail(value):
    raise Boom(value)

def slow(x):
    time.sleep(0.002)
    return add(x, 1)

def catch(value):
    try:
        fail(value)
    except Boom as exc:
        return exc

def tree(n):
    return [add(i, i) for i in range(n)]
"""


def _run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=full, timeout=120)


def test_the_default_core_is_compiled_where_it_is_built(traced: Traced) -> None:
    installation = autotrace.install([traced.modules.prefix + "*"],
                                     tracer_provider=traced.provider)
    try:
        assert installation.core == ("compiled" if accel.extension is not None else "python")
        assert f"core={installation.core!r}" in repr(installation)
    finally:
        installation.uninstall()


def test_an_unknown_core_names_the_accepted_ones() -> None:
    with pytest.raises(ValueError) as raised:
        autotrace.install(["nothing_here"], core="fast")
    message = str(raised.value)
    assert "'fast'" in message and "compiled" in message and "python" in message
    done = _run("import autotrace; autotrace.install(['x'])",
                {"OTEL_PYTHON_AUTOTRACE_CORE": "fast"})
    assert done.returncode != 0
    assert "OTEL_PYTHON_AUTOTRACE_CORE" in done.stderr and "compiled" in done.stderr


def test_compiled_where_it_is_not_loaded_fails_at_install_saying_how_to_build_it() -> None:
    # The variable keeps the extension from loading: the process is as one without it.
    done = _run("""
        import autotrace
        from autotrace.record import accel
        assert accel.extension is None, accel.extension
        try:
            autotrace.install(['x'], core='compiled')
        except autotrace.InstallError as exc:
            print(exc)
        else:
            raise SystemExit('installed')
    """, {"OTEL_PYTHON_AUTOTRACE_CORE": "python"})
    assert done.returncode == 0, done.stderr
    assert "core='compiled'" in done.stdout and "compiler" in done.stdout
    assert "OTEL_PYTHON_AUTOTRACE_CORE=python" in done.stdout  # why it is not loaded


def test_the_command_refuses_a_core_it_cannot_run_with_status_2(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text("print('ran')\n")
    done = subprocess.run([sys.executable, "-m", "autotrace", "--core", "fast", "-p", "app",
                           sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--core" in done.stderr and "compiled" in done.stderr
    assert "ran" not in done.stdout


def test_the_pure_core_runs_alone_when_asked() -> None:
    done = _run("""
        import sys, autotrace
        from opentelemetry.sdk.trace import TracerProvider
        inst = autotrace.install(['x'], tracer_provider=TracerProvider())
        print(inst.core, 'autotrace.record._core' in sys.modules)
    """, {"OTEL_PYTHON_AUTOTRACE_CORE": "python"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["python", "False"]


@compiled_only
@pytest.mark.parametrize("policy", [{"min_duration": 0.05}, {}, {"min_duration": 0.05,
                                                               "metrics": True},
                                    {"spans": False, "metrics": True}])
def test_reference_counts_are_balanced(traced: Traced, policy: dict[str, object]) -> None:
    """Arguments, results and raised exceptions hold as many references after 2,000
    calls as before: nothing leaks, nothing is freed twice."""
    if traced.core != "compiled":
        pytest.skip("the pure core's references are Python's own")
    mod = traced.load("refs", MODULE, **policy)
    arg, other = object(), object()
    result_holder = []

    class Value:
        def __add__(self, other: object) -> object:
            return result

    result = object()
    value = Value()
    mod.add(value, other)  # first call: the description is made once
    gc.collect()
    before = [sys.getrefcount(o) for o in (arg, other, value, result)]
    for _ in range(2000):
        result_holder.append(mod.add(value, other))
        try:
            mod.fail(arg)
        except mod.Boom:
            pass
    result_holder.clear()
    traced.installation.uninstall()  # type: ignore[union-attr]
    gc.collect()
    after = [sys.getrefcount(o) for o in (arg, other, value, result)]
    assert after == before


@compiled_only
def test_bucket_counts_behave_as_the_list_they_replace() -> None:
    """``_core.Counts`` (what the compiled finish increments in place) is read and
    written by the metrics code as a list: indexing, ``+=``, negative indices,
    iteration, ``sum``, ``list``; out of range and wrong values fail as a list's do."""
    counts = accel.extension.Counts(4)
    as_list = [0] * 4
    for seq in (counts, as_list):
        seq[2] += 1
        seq[2] += 5
        seq[-1] += 2
    assert list(counts) == as_list == [0, 0, 6, 2]
    assert len(counts) == 4 and sum(counts) == 8 and list(enumerate(counts))[2] == (2, 6)
    assert repr(counts) == "Counts([0, 0, 6, 2])"
    with pytest.raises(IndexError):
        counts[4]
    with pytest.raises(IndexError):
        counts[-5] = 1
    with pytest.raises(TypeError):
        counts[0] = "1"
    with pytest.raises(TypeError):
        del counts[0]
    with pytest.raises(OverflowError):
        counts[0] = 2**64
    with pytest.raises(ValueError):
        accel.extension.Counts(-1)
    assert list(counts) == [0, 0, 6, 2]  # nothing changed by the failures
    assert list(accel.extension.Counts(0)) == []


@compiled_only
def test_the_running_frames_table_behaves_as_the_dict_it_replaces() -> None:
    """``_core.Running`` (the monitoring backend's ``id(frame) -> (call, code)`` table,
    keyed by address in C) answers the dict methods the Python callbacks use as a dict
    would, through growth and many deletions (reused slots), and holds its entries'
    references exactly."""
    import random

    table, model = accel.extension.Running(), {}
    rng = random.Random(7)
    held = object()
    before = sys.getrefcount(held)
    for step in range(20_000):
        key = 16 * rng.randrange(3_000) + 8  # frame-like addresses, reused often
        action = rng.randrange(4)
        if action == 0:
            table[key] = model[key] = (step, held)
        elif action == 1:
            assert table.pop(key, None) == model.pop(key, None)
        elif action == 2:
            assert table.get(key) == model.get(key)
            assert (key in table) == (key in model)
        elif key in model:
            del table[key], model[key]
        assert len(table) == len(model)
    assert sorted(table.values()) == sorted(model.values())
    assert sys.getrefcount(held) - before == 2 * len(model)  # the model's tuples and the table
    with pytest.raises(KeyError):
        table.pop(8 + 16 * 5_000)
    with pytest.raises(KeyError):
        del table[8 + 16 * 5_000]
    with pytest.raises(TypeError):
        table[8] = ("not a pair",)
    for mark in (0, 1):  # the empty and the deleted slot's marks are no frame's address
        assert table.get(mark) is None and mark not in table
        with pytest.raises(KeyError):
            table[mark] = (0, held)
    table.clear()
    model.clear()
    assert len(table) == 0 and table.values() == [] and sys.getrefcount(held) == before


def test_the_exception_in_flight_is_the_programs_own(traced: Traced) -> None:
    """A raised exception leaves the traced call as the same object, with the same
    traceback entries, context and cause as untraced; no wrapper frame is added."""
    mod = traced.load("inflight", MODULE, min_duration=0.05)
    try:
        mod.fail("x")
    except mod.Boom as exc:
        error = exc
    names = []
    tb = error.__traceback__
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    expected = ["test_the_exception_in_flight_is_the_programs_own", "fail"]
    if traced.core == "python" and traced.backend == "wrapt" and sys.version_info < (3, 11):
        # 3.10 re-raises the traceback the Python wrapper's handler caught, its own entry
        # included (transparency limitation); the compiled wrapper has no frame at all
        expected.insert(1, "traced_call")
    assert names == expected
    caught = mod.catch("y")
    assert isinstance(caught, mod.Boom) and caught.args == ("y",)
    assert sys.exc_info() == (None, None, None)
    # an exception handled around a traced call does not leak into the next statement
    try:
        raise KeyError("outer")
    except KeyError:
        assert mod.add(1, 2) == 3
        assert isinstance(sys.exc_info()[1], KeyError)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_memory_stays_flat_over_many_dropped_calls(tmp_path: Path, core: str) -> None:
    """Two million dropped calls: resident memory grows by less than 8 MiB after the
    first 200,000 (``benchmarks/leak.py`` runs ten million)."""
    (tmp_path / "leakmod.py").write_text(MODULE)
    done = _run(f"""
        import sys, resource, gc
        sys.path.insert(0, {str(tmp_path)!r})
        import autotrace
        from opentelemetry.sdk.trace import TracerProvider
        inst = autotrace.install(['leakmod'], tracer_provider=TracerProvider(),
                                 min_duration=1.0, core={core!r})
        import leakmod
        def rss():
            with open('/proc/self/statm') as f:
                return int(f.read().split()[1]) * resource.getpagesize()
        for i in range(200_000):
            leakmod.add(i, 1)
        try:
            leakmod.fail(1)
        except leakmod.Boom:
            pass
        gc.collect()
        start = rss()
        for i in range(1_800_000):
            leakmod.add(i, 1)
            if i % 1000 == 0:
                try:
                    leakmod.fail(i)
                except leakmod.Boom:
                    pass
        gc.collect()
        print(inst.core, rss() - start)
    """)
    assert done.returncode == 0, done.stderr
    name, growth = done.stdout.split()
    assert name == core
    assert int(growth) < 8 * 1024 * 1024, f"{int(growth) / 1e6:.1f} MB more"


def test_the_version_says_which_core_runs() -> None:
    for env, expected in (({}, "compiled core" if accel.extension is not None
                           else "pure-Python core"),
                          ({"OTEL_PYTHON_AUTOTRACE_CORE": "python"}, "pure-Python core")):
        done = subprocess.run([sys.executable, "-m", "autotrace", "--version"],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, **env})
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout, done.stdout
