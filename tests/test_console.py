"""The command's default output: one readable call tree per trace, bounded whatever the size."""

from __future__ import annotations

import io
import re

from opentelemetry.sdk.trace import TracerProvider

from autotrace.zerocode.console import CallTreeProcessor, Limits

from .conftest import Traced

SOURCE = '''
def step(i):
    if i == 13:
        raise KeyError(i)
    return i

def main(n):
    total = 0
    for i in range(n):
        try:
            total += step(i)
        except KeyError:
            pass
    return total

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
'''


def tree(traced: Traced, limits: Limits | None = None) -> tuple[io.StringIO, CallTreeProcessor,
                                                               TracerProvider]:
    out = io.StringIO()
    processor = CallTreeProcessor(out, limits)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    traced.install(tracer_provider=provider)
    return out, processor, provider


def test_a_small_trace_shows_every_call(traced: Traced) -> None:
    out, _, _ = tree(traced)
    mod = traced.load("small", SOURCE)
    assert mod.main(4) == 6
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"autotrace: trace [0-9a-f]{32} \(5 spans, [\d.]+ m?s\)", lines[0])
    assert [line.rsplit("  ", 1)[0] for line in lines[1:]] == [
        "  main(n=4) -> 6",
        "    step(i=0) -> 0",
        "    step(i=1) -> 1",
        "    step(i=2) -> 2",
        "    step(i=3) -> 3",
    ]
    assert all(re.search(r"  [\d.]+ m?s$", line) for line in lines[1:])


def test_a_5000_span_trace_stays_short_and_keeps_the_failure(traced: Traced) -> None:
    out, _, _ = tree(traced)
    mod = traced.load("big", SOURCE)
    mod.main(5000)
    lines = out.getvalue().splitlines()
    assert "(5,001 spans," in lines[0]
    assert len(lines) == 7
    assert lines[1].startswith("  main(n=5000) -> ")
    assert [line.split("  ")[2] for line in lines[2:5]] == ["step(i=0) -> 0", "step(i=1) -> 1",
                                                           "step(i=2) -> 2"]
    assert lines[5].startswith("    step(i=13)  ")
    assert lines[5].endswith("!! KeyError: 13")
    assert re.fullmatch(r"    \.\.\. 4,996 more step: [\d.]+ m?s in all, 0 failed", lines[6])


def test_deep_recursion_is_cut_to_the_line_limit(traced: Traced) -> None:
    limits = Limits(lines_per_trace=40, max_depth=8)
    out, _, _ = tree(traced, limits)
    mod = traced.load("deep", SOURCE)
    assert mod.fib(14) == 377
    lines = out.getvalue().splitlines()
    assert "(1,219 spans," in lines[0]
    assert len(lines) == 1 + 40 + 1
    assert re.fullmatch(r"  \.\.\. [\d,]+ more spans not shown", lines[-1])
    assert any("deeper spans not shown" in line for line in lines)
    depth = max(len(line) - len(line.lstrip(" ")) for line in lines[1:]) // 2
    assert depth <= limits.max_depth + 2


def test_repeated_root_traces_are_summarised(traced: Traced) -> None:
    out, processor, _ = tree(traced)
    mod = traced.load("loop", SOURCE)
    for i in range(3000):
        try:
            mod.step(i)
        except KeyError:
            pass
    mod.main(2)
    processor.shutdown()
    text = out.getvalue()
    headers = [line for line in text.splitlines() if line.startswith("autotrace: trace")]
    assert len(headers) == 3 + 1 + 1  # 3 steps, the failing one, main
    assert "!! KeyError: 13" in text
    assert re.search(r"^autotrace: \.\.\. 2,996 more traces of step: 2,996 spans, "
                     r"[\d.]+ m?s in all, 0 failed$", text, re.M)
    assert text.splitlines()[-4].startswith("autotrace: trace")  # main, after the summary
    assert text.splitlines()[-5].startswith("autotrace: ... 2,996 more traces of step")
    assert len(text.splitlines()) < 20


def test_output_stops_at_the_total_line_limit(traced: Traced) -> None:
    out, processor, _ = tree(traced, Limits(total_lines=30, repeat=1))
    mod = traced.load("flood", SOURCE)
    for _ in range(200):
        mod.main(1)
        mod.fib(1)
    processor.shutdown()
    lines = out.getvalue().splitlines()
    assert len(lines) <= 31
    assert any("output limit of 30 lines reached" in line for line in lines)
    assert re.fullmatch(r"autotrace: [\d,]+ traces not shown: .*(main|fib) x[\d,]+.*", lines[-1])


def test_a_trace_whose_root_never_ends_prints_at_shutdown(traced: Traced) -> None:
    out, processor, provider = tree(traced)
    mod = traced.load("open", SOURCE)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("outer"):
        mod.step(1)
        assert out.getvalue() == ""
        processor.shutdown()
    text = out.getvalue()
    assert "still open or ended after its root" in text
    assert "  step(i=1) -> 1  " in text


def test_a_closed_stream_never_breaks_the_program(traced: Traced) -> None:
    out, _, _ = tree(traced)
    mod = traced.load("closed", SOURCE)
    out.close()
    assert mod.main(3) == 3
    assert mod.main(3) == 3


VALUES = '''
def ident(value):
    return value


def call(fn, *args):
    return fn(*args)


def style_output(text):
    return "\\x1b[1m" + text + "\\x1b[0m\\tdone"


def nothing(message=None):
    return ""
'''


def test_strings_are_quoted_and_renderings_are_not(traced: Traced) -> None:
    """``x=None`` and ``x='None'`` differ in the tree; an empty string shows as ''."""
    out, _, _ = tree(traced)
    mod = traced.load("quoting", VALUES)
    mod.nothing()
    mod.nothing("None")
    mod.ident([1, "a"])
    mod.ident(3)
    lines = [line.rsplit("  ", 1)[0] for line in out.getvalue().splitlines()
             if line.startswith("  ")]
    assert lines == [
        "  nothing(message=None) -> ''",
        "  nothing(message='None') -> ''",
        "  ident(value=[1, 'a']) -> [1, 'a']",
        "  ident(value=3) -> 3",
    ]


def test_control_characters_never_reach_the_terminal(traced: Traced) -> None:
    out, _, _ = tree(traced)
    mod = traced.load("controls", VALUES)
    mod.style_output("would reformat\tx")
    text = out.getvalue()
    assert not [ch for ch in text if ch != "\n" and (ord(ch) < 0x20 or 0x7f <= ord(ch) < 0xa0)]
    assert ("style_output(text='would reformat\\tx') -> '\\x1b[1mwould reformat\\tx\\x1b[0m"
            in text)


def test_callables_render_by_qualified_name(traced: Traced) -> None:
    """Builtins, lambdas, functions and autotrace's own proxies (a traced function passed
    as an argument) render by name, under both backends."""
    mod = traced.load("callables", VALUES)
    mod.call(len, "ab")
    mod.call(mod.ident, 1)
    mod.call(lambda: 0)
    mod.call([].append, 1)
    name = traced.modules.name("callables")
    rendered = [dict(s.attributes or {}).get("code.function.parameters.fn.value")
                for s in traced.spans() if s.name == "call"]
    assert rendered == ["<built-in function len>", f"<function {name}.ident>",
                        f"<function {__name__}.test_callables_render_by_qualified_name.<locals>"
                        ".<lambda>>", "<built-in method list.append>"]


WIDE = '''
def leaf(i):
    if i == 4321:
        raise KeyError(i)
    return i


def mid(n):
    for i in range(n):
        try:
            leaf(i)
        except KeyError:
            pass
    return n


def root(n):
    mid(n)
    return mid(2)
'''


def test_a_trace_past_the_buffer_keeps_its_ancestors_and_counts(traced: Traced) -> None:
    """issue 13.6: the parents end last; past the buffer they used to be the spans
    dropped, and their children printed at the top level without summary."""
    out, processor, _ = tree(traced, Limits(buffered_spans=500))
    mod = traced.load("wide", WIDE)
    mod.root(6000)
    lines = out.getvalue().splitlines()
    assert "(6,005 spans," in lines[0], lines[0]
    body = [re.sub(r"  [\d.]+ m?s$", "", line) for line in lines[1:]]
    assert body[0] == "  root(n=6000) -> 2"
    assert body[1] == "    mid(n=6000) -> 6000"
    assert body[2:5] == ["      leaf(i=0) -> 0", "      leaf(i=1) -> 1", "      leaf(i=2) -> 2"]
    assert re.fullmatch(r"      leaf\(i=4321\)  [\d.]+ m?s  !! KeyError: 4321", body[5])
    assert re.fullmatch(r"      \.\.\. 5,996 more leaf: [\d.]+ m?s in all, 0 failed", body[6])
    assert body[7] == "    mid(n=2) -> 2"
    assert body[8:10] == ["      leaf(i=0) -> 0", "      leaf(i=1) -> 1"]
    assert len(body) == 10
    assert processor._buffered == 0  # nothing kept once the trace printed
