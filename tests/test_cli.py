"""The ``autotrace`` command, run for real: scripts, ``-m``, children, exit codes, bad options."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .clihelp import AUTOTRACE, clean_env, run, tree_lines, write

APP = '''
import sys

class Repo:
    def save(self, item, token="secret-value"):
        return len(item)

def helper(x):
    if x == 3:
        raise ValueError("three is bad")
    return x * 2

def main(n):
    total = 0
    for i in range(n):
        try:
            total += helper(i)
        except ValueError:
            pass
    Repo().save([1, 2, 3])
    return total

if __name__ == "__main__":
    print("result", main(int(sys.argv[1])))
    sys.exit(int(sys.argv[2]))
'''


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return write(tmp_path, "app.py", APP)


def test_a_script_prints_its_call_tree_and_keeps_its_output(app: Path, backend: str) -> None:
    out = run([*AUTOTRACE, "-p", "app", "--backend", backend, sys.executable, "app.py", "5",
               "3"], app.parent)
    native = run([sys.executable, "app.py", "5", "3"], app.parent)
    assert out.returncode == native.returncode == 3
    assert out.stdout == native.stdout == "result 14\n"
    assert re.search(r"^autotrace: trace [0-9a-f]{32} \(7 spans, [\d.]+ m?s\)$", out.stderr,
                     re.M), out.stderr
    lines = tree_lines(out.stderr)
    assert lines[0].startswith("  main(n=5) -> 14  ")
    assert [line.split("  ")[2] for line in lines[1:]] == [
        "helper(x=0) -> 0", "helper(x=1) -> 2", "helper(x=2) -> 4", "helper(x=3)",
        "helper(x=4) -> 8", "Repo.save(item=[1, 2, 3], token=[REDACTED]) -> 3"]
    failed = [line for line in lines if "!!" in line]
    assert len(failed) == 1
    assert failed[0].startswith("    helper(x=3)  ")
    assert failed[0].endswith("  !! ValueError: three is bad")


def test_stdin_and_stdout_pass_through_untouched(tmp_path: Path) -> None:
    write(tmp_path, "echo.py", '''
        import sys
        def shout(text):
            return text.upper()
        sys.stdout.write(shout(sys.stdin.read()))
        sys.stdout.buffer.write(bytes(range(256)))
    ''')
    data = "line one\nline two\n" * 1000
    traced = subprocess.run([*AUTOTRACE, "-p", "echo", sys.executable, "echo.py"], cwd=tmp_path,
                            env=clean_env(), input=data.encode(), capture_output=True,
                            timeout=120)
    native = subprocess.run([sys.executable, "echo.py"], cwd=tmp_path, env=clean_env(),
                            input=data.encode(), capture_output=True, timeout=120)
    assert traced.returncode == native.returncode == 0
    assert traced.stdout == native.stdout
    assert "  shout(text='line one\\nline two" in traced.stderr.decode()


def test_an_uncaught_exception_reads_as_without_autotrace(app: Path, tmp_path: Path) -> None:
    write(tmp_path, "crash.py", '''
        def parse(text):
            return int(text)
        parse("x")
    ''')
    traced = run([*AUTOTRACE, "-p", "crash", sys.executable, "crash.py"], tmp_path)
    native = run([sys.executable, "crash.py"], tmp_path)
    assert traced.returncode == native.returncode == 1
    assert "  parse(text='x')  " in traced.stderr
    assert "!! ValueError: invalid literal for int() with base 10: 'x'" in traced.stderr
    trace_start = traced.stderr.index("Traceback (most recent call last):")
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', traced.stderr[trace_start:])
    native_frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', native.stderr)
    # Same frames, same line numbers; only the wrapper's own frame is added.
    assert [f for f in frames if "autotrace" not in f[0]] == native_frames
    assert frames[0] == native_frames[0]
    assert traced.stderr.rstrip().endswith(native.stderr.rstrip().splitlines()[-1])


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_keyboard_interrupt_ends_the_process_as_without_autotrace(tmp_path: Path) -> None:
    write(tmp_path, "stop.py", '''
        import atexit
        atexit.register(print, "atexit ran")
        def work():
            raise KeyboardInterrupt
        work()
    ''')
    traced = run([*AUTOTRACE, "-p", "stop", sys.executable, "stop.py"], tmp_path)
    native = run([sys.executable, "stop.py"], tmp_path)
    assert native.returncode == -signal.SIGINT
    assert traced.returncode == native.returncode
    assert traced.stdout == native.stdout == "atexit ran\n"
    assert "  work()  " in traced.stderr
    assert traced.stderr.rstrip().endswith("KeyboardInterrupt")


def test_python_dash_m_traces_the_module_run_as_main(tmp_path: Path, backend: str) -> None:
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/helpers.py", "def double(x):\n    return x * 2\n")
    write(tmp_path, "pkg/main.py", '''
        from pkg import helpers
        def run(n):
            return helpers.double(n)
        if __name__ == "__main__":
            print(run(21))
    ''')
    out = run([*AUTOTRACE, "-p", "pkg", "--backend", backend, sys.executable, "-m",
               "pkg.main"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "42\n"
    lines = tree_lines(out.stderr)
    assert lines[0].startswith("  run(n=21) -> 42  ")
    assert lines[1].startswith("    double(x=21) -> 42  ")


@pytest.mark.parametrize("how", ["script", "-m", "-c"])
def test_the_main_script_audit_hook_is_added_only_where_a_script_runs(
        tmp_path: Path, how: str) -> None:
    """An audit hook costs every audited call (``sys._getframe`` at each monitoring
    event) and cannot be removed: none for ``-m`` and ``-c``."""
    probe = (
        "import sys\n"
        "m = sys.modules.get('autotrace.loading.mainscript')\n"
        "print(bool(m and m._registered))\n")
    write(tmp_path, "probe.py", probe)
    command = {"script": ["probe.py"], "-m": ["-m", "probe"], "-c": ["-c", probe]}[how]
    out = run([*AUTOTRACE, "-p", "probe", sys.executable, *command], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ("True\n" if how == "script" else "False\n")


def test_child_processes_are_traced_too(tmp_path: Path) -> None:
    write(tmp_path, "workers.py", '''
        def square(x):
            return x * x
    ''')
    write(tmp_path, "child.py", '''
        def child_work(x):
            return x + 1
        print("child", child_work(1))
    ''')
    write(tmp_path, "parent.py", '''
        import multiprocessing
        import subprocess
        import sys
        import workers

        def start_child():
            return subprocess.run([sys.executable, "child.py"]).returncode

        if __name__ == "__main__":
            print("child status", start_child())
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                print("pool", pool.map(workers.square, [3]))
    ''')
    out = run([*AUTOTRACE, "-p", "parent,child,workers", sys.executable, "parent.py"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "child 2\nchild status 0\npool [9]\n"
    lines = tree_lines(out.stderr)
    assert any(line.startswith("  child_work(x=1) -> 2  ") for line in lines), out.stderr
    assert any(line.startswith("  start_child() -> 0  ") for line in lines), out.stderr
    assert any(line.startswith("  square(x=3) -> 9  ") for line in lines), out.stderr


def test_an_existing_sitecustomize_still_runs(tmp_path: Path, app: Path) -> None:
    write(tmp_path, "site-dir/sitecustomize.py", '''
        import sys
        sys.stdout.write("user sitecustomize ran\\n")
        sys.user_sitecustomize_marker = True
    ''')
    write(tmp_path, "check.py", '''
        import sys
        import sitecustomize
        def marker():
            return getattr(sys, "user_sitecustomize_marker", False)
        print("marker", marker(), sitecustomize.__file__.endswith("site-dir/sitecustomize.py"))
    ''')
    env = clean_env(PYTHONPATH=str(tmp_path / "site-dir"))
    # -I: the command's own interpreter would run that sitecustomize as well.
    out = run([sys.executable, "-I", "-m", "autotrace", "-p", "check", sys.executable,
               "check.py"], tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "user sitecustomize ran\nmarker True True\n"
    assert any(line.startswith("  marker() -> True") for line in tree_lines(out.stderr))


def test_a_failing_sitecustomize_is_reported_as_python_would(tmp_path: Path) -> None:
    write(tmp_path, "site-dir/sitecustomize.py", "raise RuntimeError('broken site')\n")
    write(tmp_path, "ok.py", "def f():\n    return 1\nprint(f())\n")
    env = clean_env(PYTHONPATH=str(tmp_path / "site-dir"))
    traced = run([*AUTOTRACE, "-p", "ok", sys.executable, "ok.py"], tmp_path, env=env)
    native = run([sys.executable, "ok.py"], tmp_path, env=env)
    assert traced.returncode == native.returncode == 0
    assert traced.stdout == native.stdout == "1\n"
    assert native.stderr in traced.stderr


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["--exporter", "bogus"], {}, ["--exporter", "'console', 'otlp', 'trace-file', 'none'"]),
    (["--backend", "fast"], {}, ["--backend", "'wrapt'", "'monitoring'", "'auto'"]),
    (["-p", "my app"], {}, ["-p/--patterns", "whitespace"]),
    (["-p", "app", "--exclude", "a..b"], {}, ["--exclude", "empty dotted part"]),
    ([], {}, ["-p/--patterns", "OTEL_PYTHON_AUTOTRACE_PATTERNS"]),
    (["-p", "app"], {"OTEL_PYTHON_AUTOTRACE_CAPTURE_ARGS": "maybe"},
     ["OTEL_PYTHON_AUTOTRACE_CAPTURE_ARGS", "true or false"]),
    (["-p", "app"], {"OTEL_PYTHON_AUTOTRACE_BACKEND": "fast"},
     ["OTEL_PYTHON_AUTOTRACE_BACKEND", "'wrapt'"]),
    (["-p", "app"], {"OTEL_TRACES_EXPORTER": "nosuch"},
     ["OTEL_TRACES_EXPORTER", "console, otlp, trace-file, none"]),
    (["-p", "app"], {"OTEL_PYTHON_AUTOTRACE_PROPAGATE": "maybe"},
     ["OTEL_PYTHON_AUTOTRACE_PROPAGATE", "'maybe'", "true or false"]),
    (["-p", "app", "--exporter", "trace-file", "--trace-file", "no/such/dir/t.json"], {},
     ["--trace-file", "'no/such/dir/t.json'", "does not exist"]),
    (["--capture-args=yes"], {}, ["--capture-args"]),
])
def test_bad_options_exit_2_before_the_program_starts(tmp_path: Path, args: list[str],
                                                      env: dict[str, str],
                                                      expected: list[str]) -> None:
    write(tmp_path, "app.py", "open('ran', 'w').close()\n")
    out = run([*AUTOTRACE, *args, sys.executable, "app.py"], tmp_path, env=clean_env(**env))
    assert out.returncode == 2
    for text in expected:
        assert text in out.stderr
    assert out.stdout == ""
    assert not (tmp_path / "ran").exists()


def test_no_command_and_unknown_command(tmp_path: Path) -> None:
    out = run([*AUTOTRACE, "-p", "app"], tmp_path)
    assert out.returncode == 2
    assert "COMMAND" in out.stderr
    out = run([*AUTOTRACE, "-p", "app", "no-such-command-autotrace"], tmp_path)
    assert out.returncode == 127
    assert "no-such-command-autotrace: command not found" in out.stderr


def test_the_console_script_is_installed(tmp_path: Path, app: Path) -> None:
    script = Path(sys.executable).parent / ("autotrace.exe" if sys.platform == "win32"
                                            else "autotrace")
    if not script.exists():
        pytest.skip("package not installed with its console script")
    out = run([str(script), "-p", "app", sys.executable, "app.py", "2", "0"], app.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "result 2\n"
    assert tree_lines(out.stderr)[0].startswith("  main(n=2) -> 2  ")


def test_console_exporter_writes_json_to_stderr(app: Path) -> None:
    out = run([*AUTOTRACE, "-p", "app", "--exporter", "console", sys.executable, "app.py", "2",
               "0"], app.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "result 2\n"
    assert '"name": "helper"' in out.stderr
    assert '"code.function.parameters.x.value": 1' in out.stderr
    assert "autotrace: trace" not in out.stderr


@pytest.mark.parametrize("env", [{"OTEL_TRACES_EXPORTER": "none"}, {"OTEL_SDK_DISABLED": "true"}])
def test_no_output_when_asked_for_none(app: Path, env: dict[str, str]) -> None:
    out = run([*AUTOTRACE, "-p", "app", sys.executable, "app.py", "2", "0"], app.parent,
              env=clean_env(**env))
    assert out.returncode == 0
    assert out.stdout == "result 2\n"
    assert out.stderr == ""


def test_options_reach_the_program_as_settings(app: Path) -> None:
    out = run([*AUTOTRACE, "-p", "app", "--exclude", "app.helper", "--no-capture-args",
               "--no-capture-return", sys.executable, "app.py", "2", "0"], app.parent)
    assert out.returncode == 0, out.stderr
    lines = tree_lines(out.stderr)
    assert lines[0].startswith("  main()  ")
    assert lines[1].startswith("    Repo.save()  ")
    assert len(lines) == 2


def test_a_program_with_its_own_provider_gets_the_spans(tmp_path: Path) -> None:
    write(tmp_path, "own.py", '''
        import atexit
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

        def work(x):
            return x + 1

        atexit.register(lambda: print(sorted(s.name for s in exporter.get_finished_spans())))
        work(1)
    ''')
    out = run([*AUTOTRACE, "-p", "own", sys.executable, "own.py"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "['work']\n"
    assert out.stderr == ""


def test_a_program_that_installs_autotrace_itself_replaces_the_command_s(tmp_path: Path) -> None:
    """The program's explicit install() wins over the command's; no RuntimeError."""
    write(tmp_path, "selfinstall.py", '''
        import autotrace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        inst = autotrace.install(["mylib"], tracer_provider=provider)
        import mylib
        print("value", mylib.twice(4), "patterns", list(inst.config.patterns))
        print("spans", [s.name for s in exporter.get_finished_spans()])
    ''')
    write(tmp_path, "mylib.py", "def twice(x):\n    return 2 * x\n")
    out = run([*AUTOTRACE, "-p", "selfinstall", sys.executable, "selfinstall.py"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "value 8 patterns ['mylib']" in out.stdout
    assert "spans ['twice']" in out.stdout
    assert "RuntimeError" not in out.stderr


SEEDED = '''
    import random
    import sys

    def f():
        return 1

    random.seed(42)
    f()
    print(random.random())
'''
OWN_PROVIDER = '''
    import sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(
        out=sys.stderr, formatter=lambda s: f"trace {s.context.trace_id:032x}\\n")))
    trace.set_tracer_provider(provider)
'''


@pytest.mark.parametrize("own_provider", [False, True])
def test_the_command_leaves_a_seeded_random_sequence_alone(tmp_path: Path, backend: str,
                                                           own_provider: bool) -> None:
    """Span ids come from a private generator, also through the command's fallback
    provider and in the program's own provider; runs of a seeded program get new ids."""
    source = (OWN_PROVIDER if own_provider else "") + SEEDED
    write(tmp_path, "seedtest.py", source)
    plain = run([sys.executable, "seedtest.py"], tmp_path)
    assert plain.returncode == 0, plain.stderr
    traces = []
    for _ in range(2):
        out = run([*AUTOTRACE, "-p", "seedtest", "--backend", backend, sys.executable,
                   "seedtest.py"], tmp_path)
        assert out.returncode == 0, out.stderr
        assert out.stdout == plain.stdout  # 0.6394267984578837
        found = re.findall(r"trace ([0-9a-f]{32})", out.stderr)
        assert len(found) == 1, out.stderr
        traces.append(found[0])
    assert traces[0] != traces[1]


def test_patterns_that_match_nothing_say_so_once_at_exit(tmp_path: Path, backend: str) -> None:
    """issue 13.14: a script's functions are <stem>.<qualname>, so -p __main__ finds none."""
    write(tmp_path, "nomatch.py", '''
        import subprocess, sys

        def main():
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            return 1

        print(main())
    ''')
    out = run([*AUTOTRACE, "-p", "__main__,nomatch_typo", "--backend", backend, sys.executable,
               "nomatch.py"], tmp_path)
    assert out.returncode == 0 and out.stdout == "1\n"
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr  # the child (python -c pass) says nothing
    assert lines[0].startswith("autotrace: the patterns '__main__', 'nomatch_typo' matched no "
                               "function in this run.")
    assert "nomatch.main for main() in nomatch.py" in lines[0]
    assert "mypyc" in lines[0]
    matched = run([*AUTOTRACE, "-p", "nomatch", "--backend", backend, sys.executable,
                   "nomatch.py"], tmp_path)
    assert "matched no function" not in matched.stderr
    assert "  main() -> 1" in matched.stderr


def test_no_false_notice_from_a_parent_whose_children_matched(tmp_path: Path,
                                                              backend: str) -> None:
    """issue 24.2: a gunicorn master or Django's autoreloader parent never imports the app;
    its worker or child does. Nothing is said when any process of the run matched; it is
    said once, by the command's process, when none did."""
    write(tmp_path, "worker.py", "def serve():\n    return 1\n\nserve()\n")
    write(tmp_path, "launcher.py", '''
        import os, subprocess, sys
        subprocess.run([sys.executable, "worker.py"], check=True)   # the autoreloader's way
        pid = os.fork()                                              # gunicorn's way
        if pid == 0:
            import worker
            sys.exit(0)
        os.waitpid(pid, 0)
    ''')
    out = run([*AUTOTRACE, "-p", "worker", "--backend", backend, sys.executable,
               "launcher.py"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "serve() -> 1" in out.stderr
    assert "matched no function" not in out.stderr
    typo = run([*AUTOTRACE, "-p", "wroker", "--backend", backend, sys.executable,
                "launcher.py"], tmp_path)
    assert typo.stderr.count("matched no function") == 1, typo.stderr


CAPTURING_PARENT = '''
    import subprocess, sys

    def square(x):
        return x * x

    def start_child():
        done = subprocess.run([sys.executable, "capchild.py"], capture_output=True, text=True)
        return done.stdout, done.stderr

    out, err = start_child()
    print("child stdout", repr(out))
    print("child stderr", repr(err))
'''
CAPTURED_CHILD = '''
    def child_work(x):
        return x + 1

    print(child_work(1))
'''


@pytest.mark.parametrize("stderr_to", ["pipe", "file"])
def test_a_child_whose_stderr_is_captured_writes_its_tree_to_the_commands_stderr(
        tmp_path: Path, stderr_to: str) -> None:
    """issue 13.16: the child's tree used to land in what its parent captured."""
    write(tmp_path, "capparent.py", CAPTURING_PARENT)
    write(tmp_path, "capchild.py", CAPTURED_CHILD)
    args = [*AUTOTRACE, "-p", "capparent,capchild", sys.executable, "capparent.py"]
    if stderr_to == "pipe":
        out = run(args, tmp_path)
        stdout, stderr = out.stdout, out.stderr
    else:
        log = tmp_path / "stderr.log"
        with open(log, "w") as handle:
            done = subprocess.run(args, cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE,
                                  stderr=handle, text=True, timeout=120)
        stdout, stderr = done.stdout, log.read_text()
    assert "child stdout '2\\n'" in stdout
    assert "child stderr ''" in stdout, stdout
    assert "  child_work(x=1) -> 2  " in stderr, stderr
    assert "  start_child() -> ('2\\n', '')  " in stderr


def test_start_up_imports_neither_the_sdk_nor_wrapt_before_they_are_needed(
        tmp_path: Path) -> None:
    """issue 13.15: every process under the command paid ~0.5 s for imports (the SDK and
    its exporters, wrapt with asyncio) before running; they now wait for the first
    span or the first wrapped function. Pinned by what is imported, not by a timing."""
    probe = ("import sys; print(sorted({m.split('.')[0] + '.' + m.split('.')[1] "
             "if m.startswith('opentelemetry.') else m.split('.')[0] for m in sys.modules "
             "if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter', 'wrapt', "
             "'asyncio', 'decimal'))}))")
    out = run([*AUTOTRACE, "-p", "myapp", sys.executable, "-c", probe], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "[]\n"


def test_spawn_workers_trace_the_main_scripts_functions(tmp_path: Path, backend: str) -> None:
    """A spawn worker re-runs the main script as ``__mp_main__`` (``runpy.run_path``)."""
    if backend == "monitoring":
        pytest.xfail("the monitoring backend does not hook runpy.run_path")
    write(tmp_path, "pool_app.py", '''
        import multiprocessing

        def square(x):
            return x * x

        if __name__ == "__main__":
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                print("pool", pool.map(square, [3]))
    ''')
    out = run([*AUTOTRACE, "-p", "pool_app", "--backend", backend, sys.executable,
               "pool_app.py"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "pool [9]\n"
    assert any(line.startswith("  square(x=3) -> 9  ") for line in tree_lines(out.stderr)), \
        out.stderr
