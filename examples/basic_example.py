"""Run: python examples/basic_example.py

Traces every function and method of ``shop`` (this folder) and prints each
span as it ends: name, parent, arguments, return value, errors.
"""

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import autotrace


def one_line(span: ReadableSpan) -> str:
    attrs = dict(span.attributes or {})
    parent = f" parent={span.parent.span_id:016x}" if span.parent else ""
    args = {k.split(".")[3]: v for k, v in attrs.items()
            if k.startswith("code.function.parameters.")}
    result = attrs.get("code.function.return.value", "-")
    status = f"  !! {span.status.description}" if span.status.description else ""
    return (f"span {span.context.span_id:016x}{parent}  {span.name}({args}) -> {result}"
            f"{status}\n")


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(formatter=one_line)))

autotrace.install(patterns=["shop"], tracer_provider=provider)  # before shop is imported

import shop  # noqa: E402  (imported after install on purpose)

print("checkout total:", shop.checkout("ada", card_token="tok_live_123"))
