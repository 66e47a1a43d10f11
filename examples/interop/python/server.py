"""gRPC's interop server in Python (grpcio), for Keel's interop tests:
``server.py --port N [--use_tls=false] [--host 127.0.0.1]``.

Serves grpc.testing.TestService until SIGTERM or Ctrl-C. ``--port 0`` takes
a free port; the line ``interop server listening on HOST:PORT`` on stdout
says which, once the server accepts connections.

CompressedRequest (``expect_compressed``) is accepted and not checked:
grpcio does not tell a handler whether a request arrived compressed.
"""

import argparse
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

import stubs

empty_pb2, messages_pb2, test_pb2, test_pb2_grpc = stubs.load()

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"
CODES = {code.value[0]: code for code in grpc.StatusCode}


def payload(kind, size, context):
    if kind != messages_pb2.COMPRESSABLE:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "payload type %d is not supported" % kind)
    return messages_pb2.Payload(type=kind, body=b"\0" * size)


def echo_metadata(context):
    """Echo Metadata: the initial key back in the headers, the trailing key
    in the trailers."""
    received = dict(context.invocation_metadata())
    if ECHO_INITIAL in received:
        context.send_initial_metadata(((ECHO_INITIAL, received[ECHO_INITIAL]),))
    if ECHO_TRAILING in received:
        context.set_trailing_metadata(((ECHO_TRAILING, received[ECHO_TRAILING]),))


def echo_status(request, context):
    """Echo Status: end the call with the status the client asked for."""
    if request.HasField("response_status") and request.response_status.code != 0:
        code = CODES.get(request.response_status.code, grpc.StatusCode.UNKNOWN)
        context.abort(code, request.response_status.message)


def responses(request, context):
    """One response per ResponseParameters, each after its interval, and
    compressed when it asks (CompressedResponse)."""
    if any(p.compressed.value for p in request.response_parameters):
        context.set_compression(grpc.Compression.Gzip)
    for parameters in request.response_parameters:
        if parameters.interval_us > 0:
            time.sleep(parameters.interval_us / 1e6)
        if parameters.HasField("compressed") and not parameters.compressed.value:
            context.disable_next_message_compression()
        body = payload(request.response_type, parameters.size, context)
        yield messages_pb2.StreamingOutputCallResponse(payload=body)


class TestService(test_pb2_grpc.TestServiceServicer):
    """Every method but UnimplementedCall, which the base class answers
    UNIMPLEMENTED."""

    def EmptyCall(self, request, context):
        return empty_pb2.Empty()

    def UnaryCall(self, request, context):
        echo_metadata(context)
        echo_status(request, context)
        if request.HasField("response_compressed"):
            context.set_compression(
                grpc.Compression.Gzip if request.response_compressed.value else grpc.Compression.NoCompression
            )
        body = payload(request.response_type, request.response_size, context)
        return messages_pb2.SimpleResponse(payload=body)

    def StreamingOutputCall(self, request, context):
        echo_metadata(context)
        yield from responses(request, context)
        echo_status(request, context)

    def StreamingInputCall(self, request_iterator, context):
        total = sum(len(r.payload.body) for r in request_iterator)
        return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=total)

    def FullDuplexCall(self, request_iterator, context):
        echo_metadata(context)
        for request in request_iterator:
            echo_status(request, context)
            yield from responses(request, context)

    def HalfDuplexCall(self, request_iterator, context):
        echo_metadata(context)
        requests = list(request_iterator)
        for request in requests:
            echo_status(request, context)
            yield from responses(request, context)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--use_tls", type=stubs.parse_bool, default=False)
    args = parser.parse_args()
    if args.use_tls:
        parser.error("--use_tls=true: this server speaks plaintext only")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    test_pb2_grpc.add_TestServiceServicer_to_server(TestService(), server)
    port = server.add_insecure_port("%s:%d" % (args.host, args.port))
    if port == 0:
        print("interop server: cannot listen on %s:%d" % (args.host, args.port), file=sys.stderr)
        sys.exit(1)
    server.start()
    print("interop server listening on %s:%d" % (args.host, port), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=2).wait()


if __name__ == "__main__":
    main()
