"""``autotrace [options] COMMAND [ARGS...]``: run a command with tracing in every Python process.

The options become environment variables; the bootstrap directory (a
``sitecustomize`` that starts autotrace, then the one it hides) goes first on
``PYTHONPATH``; then the command replaces this process (``exec``), so its
exit status, signals, stdin and stdout are its own. Every Python process it
starts, children included, loads the bootstrap. Bad options and values stop
here with status 2, before the program starts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

from .._version import __version__
from ..config import (
    ENV,
    FLAG,
    OPTIONS,
    OPTIONS_BY_NAME,
    backend_refusal,
    check_command_settings,
    environment_from_flags,
    file_variables,
    make_config,
)
from ..configfile import ENV_CONFIG, NO_FILE
from ..record import accel
from .bootstrap import BOOTSTRAP_DIR
from .exporters import ENV_EXPORTER, KNOWN_EXPORTERS, check_exporters
from .meters import check_metric_exporters
from .notices import COMMAND_PID
from .stderr import STDERR_ENV, append_to_stderr_file, describe_stderr
from .tracefile import ENV_TRACE_FILE, prepare_trace_file

EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127

_FLAGGED = [option for option in OPTIONS if option.flag]


def _epilog() -> str:
    rows = []
    for option in _FLAGGED:
        flag = str(option.flag)
        if option.is_bool:
            flag = f"--[no-]{flag[2:]}"
        if option.short:
            flag = f"{option.short}/{flag}"
        rows.append(f"  {flag:<26} {option.env}")
    rows.append(f"  {'--exporter':<26} {ENV_EXPORTER} (unset: a call tree per trace on stderr)")
    return ("Each option sets an environment variable, which may be set instead:\n"
            + "\n".join(rows) + "\n" + _EPILOG_TAIL)


_EPILOG_TAIL = """\
What no flag or variable gives comes from [tool.autotrace] in pyproject.toml, or from
autotrace.toml (keys: the options' names with underscores, e.g. max_depth = 20), found
from the current directory upward; OTEL_PYTHON_AUTOTRACE_CONFIG names the file, or none.

The standard OTEL_EXPORTER_OTLP_*, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER and
OTEL_SDK_DISABLED variables apply; with --metrics, OTEL_METRICS_EXPORTER (console,
otlp, none; unset: otlp if spans go there, else console) and
OTEL_METRIC_EXPORT_INTERVAL; a program that configures OpenTelemetry
itself gets autotrace's spans in its own provider.

autotrace view PATH shows a --exporter trace-file file in a local Perfetto UI
(autotrace view --help).

examples:
  autotrace -p myapp python app.py
  autotrace -p myapp --exporter trace-file python app.py && autotrace view autotrace-trace.json
  autotrace -p myapp --exporter otlp python -m myapp.server
  autotrace -p myapp.db,myapp.api --exclude myapp.api.health flask --app myapp run
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotrace", usage="autotrace [options] COMMAND [ARGS...]",
        description="Run COMMAND with OpenTelemetry spans for the functions selected by "
                    "--patterns, in every Python process it starts.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False)
    for option in _FLAGGED:
        assert option.flag is not None
        names = [option.short, option.flag] if option.short else [option.flag]
        default = option.default
        if isinstance(default, tuple):
            default = ",".join(default) or "none"
        help_text = f"{option.help} (default: {default})"
        if option.is_bool:
            parser.add_argument(*names, dest=option.name, default=None,
                                action=argparse.BooleanOptionalAction, help=help_text)
        elif option.choices:
            parser.add_argument(*names, dest=option.name, choices=option.choices,
                                help=help_text)
        else:
            parser.add_argument(*names, dest=option.name, metavar=option.name.upper(),
                                help=help_text)
    parser.add_argument("--exporter", choices=KNOWN_EXPORTERS,
                        help="where spans go (default: a call tree on stderr)")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARGS...]",
                        help="the command to run, e.g. python app.py")
    return parser


def prepare(argv: Sequence[str], environ: Mapping[str, str]
            ) -> tuple[list[str], dict[str, str]]:
    """Parse ``argv`` into the command and its environment; exits 2 on bad input."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        parser.error("a COMMAND to run is required, e.g. autotrace -p myapp python app.py")

    env = dict(environ)
    given = {option.name: getattr(args, option.name) for option in _FLAGGED
             if getattr(args, option.name) is not None}
    try:
        env.update(environment_from_flags(given))
    except (ValueError, TypeError, RuntimeError) as exc:
        parser.error(str(exc))
    if args.exporter is not None:
        env[ENV_EXPORTER] = args.exporter
    try:  # the configuration file: what no flag or variable gives
        from_file = file_variables(env)
    except ValueError as exc:
        parser.error(str(exc))

    patterns = OPTIONS_BY_NAME["patterns"]
    if patterns.env in env and not env[patterns.env].strip():
        parser.error(f"{patterns.env} is empty; give at least one pattern, e.g. "
                     f"{ENV.example(patterns)}, or unset it and pass {FLAG.example(patterns)}")
    if not env.get(patterns.env, "").strip() and patterns.env not in from_file:
        parser.error(f"no patterns: pass {FLAG.name(patterns)} PATTERN[,PATTERN...] (e.g. "
                     f"{FLAG.example(patterns)}), set {ENV.example(patterns)}, or write "
                     f"patterns = ['myapp'] in [tool.autotrace] of pyproject.toml")
    try:
        config = make_config(environ=env, flags=given)
        check_command_settings(env)
    except (ValueError, TypeError, RuntimeError) as exc:  # RuntimeError: backend cannot run
        parser.error(str(exc))
    refusal = backend_refusal(config.backend, FLAG, env)  # the default backend's, too
    if refusal is not None:
        parser.error(refusal)
    # One reading for the whole run: the program and its children get the file's values
    # as variables, and read no file (a child may run in another directory).
    env.update(from_file)
    env[ENV_CONFIG] = NO_FILE
    problem = check_exporters(env, "--exporter" if args.exporter else ENV_EXPORTER)
    if problem:
        parser.error(problem)
    problem = check_metric_exporters(env)
    if problem:
        parser.error(problem)
    problem = prepare_trace_file(env, "--trace-file" if args.trace_file is not None
                                 else "trace_file" if ENV_TRACE_FILE in from_file
                                 else ENV_TRACE_FILE)
    if problem:
        parser.error(problem)

    path = [entry for entry in env.get("PYTHONPATH", "").split(os.pathsep)
            if entry and os.path.abspath(entry) != BOOTSTRAP_DIR]
    env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *path])
    env[COMMAND_PID] = str(os.getpid())  # exec keeps it: the program's own pid
    env[STDERR_ENV] = describe_stderr()  # children's trees go there too
    return command, env


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "view":  # autotrace view PATH (a command named view: -- view)
        from .viewer import main as view

        sys.exit(view(argv[1:]))
    command, env = prepare(argv, os.environ)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    append_to_stderr_file()
    if os.name == "nt":  # no real exec on Windows: wait and pass the status on
        try:
            sys.exit(subprocess.call(command, env=env))
        except FileNotFoundError:
            _fail(EXIT_NOT_FOUND, f"{command[0]}: command not found")
    hint = ""
    if command[0].endswith(".py"):
        hint = f" (to run a script: autotrace [options] python {' '.join(command)})"
    try:
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        _fail(EXIT_NOT_FOUND, f"{command[0]}: command not found{hint}")
    except PermissionError:
        _fail(EXIT_NOT_EXECUTABLE, f"{command[0]}: permission denied{hint}")
    except OSError as exc:
        _fail(EXIT_NOT_EXECUTABLE, f"{command[0]}: {exc.strerror or exc}")


def _fail(status: int, message: str) -> None:
    sys.stderr.write(f"autotrace: {message}\n")
    sys.exit(status)


if __name__ == "__main__":
    main()


def _version() -> str:
    """The version and the core that runs by default here (``--core`` / the variable
    can still choose the pure one)."""
    if accel.extension is not None:
        core = "compiled core (C extension autotrace.record._core)"
    else:
        core = f"pure-Python core ({accel.why_not})"
    return f"autotrace {__version__}, {core}, Python {sys.version.split()[0]}"
