"""An OTLP/gRPC trace receiver that is not Weft's: grpcio serving the
official opentelemetry-proto package's TraceServiceServicer. Writes every
received span as one JSON line (ids in hex, attributes flattened) to --out
(or stdout), and prints "listening" once it serves.

    python receiver.py --listen 127.0.0.1:4317 --out spans.jsonl
"""

import argparse
import json
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, out):
        self.out, self.lock = out, threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for rs in request.resource_spans:
                resource = {a.key: value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.out.write(json.dumps({
                            "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(), "name": s.name, "kind": s.kind,
                            "start": s.start_time_unix_nano, "end": s.end_time_unix_nano,
                            "status": s.status.code, "scope": ss.scope.name, "resource": resource,
                            "attributes": {a.key: value(a.value) for a in s.attributes},
                        }) + "\n")
            self.out.flush()
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--out")
    args = p.parse_args()
    out = open(args.out, "a") if args.out else sys.stdout
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(out), server)
    server.add_insecure_port(args.listen)
    server.start()
    print("listening", args.listen, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
