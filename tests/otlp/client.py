"""A real W3C (or B3) client: the OpenTelemetry Python SDK starts a client
span and its propagator injects the context into an HTTP request sent with
urllib. Prints one JSON line: the span's trace and span ids (hex), the
status, and the response body.

    python client.py URL [--propagator tracecontext|b3|b3multi] [--unsampled] [--header 'NAME: VALUE']
"""

import argparse
import json
import urllib.error
import urllib.request

from opentelemetry import trace
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--propagator", default="tracecontext", choices=["tracecontext", "b3", "b3multi"])
    p.add_argument("--unsampled", action="store_true")
    p.add_argument("--header", action="append", default=[], help="NAME: VALUE, sent as well")
    args = p.parse_args()
    provider = TracerProvider(sampler=ALWAYS_OFF if args.unsampled else ALWAYS_ON)
    tracer = provider.get_tracer("weft-tests-client")
    propagator = {
        "tracecontext": TraceContextTextMapPropagator(),
        "b3": B3SingleFormat(),
        "b3multi": B3MultiFormat(),
    }[args.propagator]
    with tracer.start_as_current_span("client-request", kind=trace.SpanKind.CLIENT) as span:
        headers = {}
        propagator.inject(headers)
        extra = dict(h.split(":", 1) for h in args.header)
        req = urllib.request.Request(args.url, headers={**{k.strip(): v.strip() for k, v in extra.items()}, **headers})
        try:
            with urllib.request.urlopen(req, timeout=10) as rsp:
                status, body = rsp.status, rsp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read().decode("utf-8", "replace")
        ctx = span.get_span_context()
        print(json.dumps({
            "trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x"),
            "sent": headers, "status": status, "body": body,
        }), flush=True)


if __name__ == "__main__":
    main()
