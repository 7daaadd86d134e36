"""A real OTLP/HTTP trace receiver: decodes each POST to /v1/traces with the
official definitions (the PyPI package `opentelemetry-proto`) and writes
every span as one JSON line to the file named by OTLP_OUT (or nowhere
when it is unset: the bench's collector that accepts and discards).

    python otlp_receiver.py PORT

tests/telemetry.rs reads the lines; bench/run.sh runs it without OTLP_OUT.
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

OUT = os.environ.get("OTLP_OUT")
LOCK = threading.Lock()


def any_value(value):
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind in ("array_value", "kvlist_value", "bytes_value"):
        return str(getattr(value, kind))
    return getattr(value, kind)


def attributes(pairs):
    return {pair.key: any_value(pair.value) for pair in pairs}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.path != "/v1/traces":
            self.answer(404, b"")
            return
        if self.headers.get("Content-Type") != "application/x-protobuf":
            self.answer(415, b"")
            return
        request = ExportTraceServiceRequest.FromString(body)
        lines = []
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    lines.append(
                        json.dumps(
                            {
                                "resource": resource,
                                "scope": scope_spans.scope.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex(),
                                "trace_state": span.trace_state,
                                "flags": span.flags,
                                "name": span.name,
                                "kind": span.kind,
                                "start": span.start_time_unix_nano,
                                "end": span.end_time_unix_nano,
                                "status_code": span.status.code,
                                "attributes": attributes(span.attributes),
                            }
                        )
                    )
        if OUT:
            with LOCK, open(OUT, "a", encoding="utf-8") as out:
                for line in lines:
                    out.write(line + "\n")
        self.answer(200, ExportTraceServiceResponse().SerializeToString())

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()
