"""gRPC's interop client in Python (grpcio), for Keel's interop tests:
``client.py --server_host HOST --server_port PORT --test_case NAME
[--use_tls=false]``. Exits 0 when the case passed, 1 with a message on
stderr when it failed, 2 on bad flags.

Like the Keel client, client_compressed_unary treats its first call as the
feature probe the description calls it: a server that answers it OK does
not implement CompressedRequest, which is reported and the case goes on.
Whether a response came compressed (server_compressed_unary) is not
visible through grpcio's Python API; the case checks the calls succeed.
"""

import argparse
import queue
import sys

import grpc

import stubs

empty_pb2, messages_pb2, test_pb2, test_pb2_grpc = stubs.load()

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"
INITIAL_VALUE = "test_initial_metadata_value"
TRAILING_VALUE = b"\xab\xab\xab"
TIMEOUT = 20


class CaseFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CaseFailed(message)


def zeros(size):
    return messages_pb2.Payload(body=b"\0" * size)


def check_payload(payload, size, what):
    check(len(payload.body) == size, "%s: payload body of %d bytes, expected %d" % (what, len(payload.body), size))
    check(payload.body == b"\0" * size, "%s: payload body is not all zeros" % what)


def expect_status(call, code, what, message=None):
    """Runs call() and checks that it fails with code (and message)."""
    try:
        call()
    except grpc.RpcError as e:
        check(e.code() == code, "%s: %s (%r), expected %s" % (what, e.code(), e.details(), code))
        if message is not None:
            check(e.details() == message, "%s: status message %r, expected %r" % (what, e.details(), message))
        return
    raise CaseFailed("%s: succeeded, expected %s" % (what, code))


class Pipe:
    """Requests handed to a streaming call one at a time."""

    def __init__(self):
        self._queue = queue.Queue()

    def add(self, request):
        self._queue.put(request)

    def close(self):
        self._queue.put(None)

    def __iter__(self):
        return self

    def __next__(self):
        request = self._queue.get()
        if request is None:
            raise StopIteration
        return request


def large_request(**fields):
    return messages_pb2.SimpleRequest(response_size=314159, payload=zeros(271828), **fields)


def output_request(size, payload):
    return messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=size)], payload=zeros(payload)
    )


def empty_unary(stub, channel):
    response = stub.EmptyCall(empty_pb2.Empty(), timeout=TIMEOUT)
    check(response is not None, "EmptyCall: no response")


def large_unary(stub, channel):
    response = stub.UnaryCall(large_request(), timeout=TIMEOUT)
    check_payload(response.payload, 314159, "UnaryCall")


def client_compressed_unary(stub, channel):
    probe = large_request(expect_compressed=messages_pb2.BoolValue(value=True))
    try:
        stub.UnaryCall(probe, timeout=TIMEOUT)
        print(
            "client_compressed_unary: the server answered the uncompressed probe OK: it does not "
            "check expect_compressed (CompressedRequest); going on with the compressed calls",
            file=sys.stderr,
        )
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, "the probe: %s (%r)" % (e.code(), e.details()))
    response = stub.UnaryCall(probe, timeout=TIMEOUT, compression=grpc.Compression.Gzip)
    check_payload(response.payload, 314159, "UnaryCall compressed")
    plain = large_request(expect_compressed=messages_pb2.BoolValue(value=False))
    response = stub.UnaryCall(plain, timeout=TIMEOUT, compression=grpc.Compression.NoCompression)
    check_payload(response.payload, 314159, "UnaryCall uncompressed")


def server_compressed_unary(stub, channel):
    for compressed in (True, False):
        request = large_request(response_compressed=messages_pb2.BoolValue(value=compressed))
        response = stub.UnaryCall(request, timeout=TIMEOUT)
        check_payload(response.payload, 314159, "UnaryCall with response_compressed %s" % compressed)


def client_streaming(stub, channel):
    requests = (messages_pb2.StreamingInputCallRequest(payload=zeros(n)) for n in (27182, 8, 1828, 45904))
    response = stub.StreamingInputCall(requests, timeout=TIMEOUT)
    check(
        response.aggregated_payload_size == 74922,
        "aggregated_payload_size %d, expected 74922" % response.aggregated_payload_size,
    )


def server_streaming(stub, channel):
    sizes = (31415, 9, 2653, 58979)
    request = messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=n) for n in sizes]
    )
    responses = list(stub.StreamingOutputCall(request, timeout=TIMEOUT))
    check(len(responses) == len(sizes), "%d responses, expected %d" % (len(responses), len(sizes)))
    for i, (response, size) in enumerate(zip(responses, sizes)):
        check_payload(response.payload, size, "response %d" % i)


def ping_pong(stub, channel):
    pipe = Pipe()
    responses = stub.FullDuplexCall(pipe, timeout=TIMEOUT)
    try:
        for i, (size, payload) in enumerate(((31415, 27182), (9, 8), (2653, 1828), (58979, 45904))):
            pipe.add(output_request(size, payload))
            check_payload(next(responses).payload, size, "ping %d" % i)
    finally:
        pipe.close()
    rest = list(responses)
    check(not rest, "%d responses more than asked for" % len(rest))
    check(responses.code() == grpc.StatusCode.OK, "FullDuplexCall ended with %s" % responses.code())


def empty_stream(stub, channel):
    responses = list(stub.FullDuplexCall(iter(()), timeout=TIMEOUT))
    check(not responses, "%d responses to no request" % len(responses))


def timeout_on_sleeping_server(stub, channel):
    pipe = Pipe()
    responses = stub.FullDuplexCall(pipe, timeout=0.001)
    pipe.add(messages_pb2.StreamingOutputCallRequest(payload=zeros(27182)))
    try:
        expect_status(lambda: next(responses), grpc.StatusCode.DEADLINE_EXCEEDED, "FullDuplexCall, 1 ms timeout")
    finally:
        pipe.close()


def cancel_after_begin(stub, channel):
    pipe = Pipe()
    future = stub.StreamingInputCall.future(pipe, timeout=TIMEOUT)
    future.cancel()
    check(future.cancelled(), "the call is not cancelled")
    check(future.code() == grpc.StatusCode.CANCELLED, "StreamingInputCall ended with %s" % future.code())
    pipe.close()


def cancel_after_first_response(stub, channel):
    pipe = Pipe()
    responses = stub.FullDuplexCall(pipe, timeout=TIMEOUT)
    pipe.add(output_request(31415, 27182))
    check_payload(next(responses).payload, 31415, "first response")
    responses.cancel()
    try:
        next(responses)
    except grpc.RpcError:
        pass
    except StopIteration:
        pass
    finally:
        pipe.close()
    check(responses.code() == grpc.StatusCode.CANCELLED, "FullDuplexCall ended with %s" % responses.code())


def check_echo(metadata, key, expected, what):
    values = [value for k, value in metadata if k == key]
    check(values == [expected], "%s: %s is %r, expected [%r] (all: %r)" % (what, key, values, expected, metadata))


def custom_metadata(stub, channel):
    metadata = ((ECHO_INITIAL, INITIAL_VALUE), (ECHO_TRAILING, TRAILING_VALUE))
    response, call = stub.UnaryCall.with_call(large_request(), metadata=metadata, timeout=TIMEOUT)
    check_payload(response.payload, 314159, "UnaryCall")
    check_echo(call.initial_metadata(), ECHO_INITIAL, INITIAL_VALUE, "UnaryCall initial metadata")
    check_echo(call.trailing_metadata(), ECHO_TRAILING, TRAILING_VALUE, "UnaryCall trailing metadata")

    responses = stub.FullDuplexCall(iter([output_request(314159, 271828)]), metadata=metadata, timeout=TIMEOUT)
    received = list(responses)
    check(len(received) == 1, "FullDuplexCall: %d responses, expected 1" % len(received))
    check_payload(received[0].payload, 314159, "FullDuplexCall")
    check_echo(responses.initial_metadata(), ECHO_INITIAL, INITIAL_VALUE, "FullDuplexCall initial metadata")
    check_echo(responses.trailing_metadata(), ECHO_TRAILING, TRAILING_VALUE, "FullDuplexCall trailing metadata")


def echo_status(stub, code, message, stream):
    status = messages_pb2.EchoStatus(code=code.value[0], message=message)
    request = messages_pb2.SimpleRequest(response_status=status)
    expect_status(lambda: stub.UnaryCall(request, timeout=TIMEOUT), code, "UnaryCall", message)
    if stream:
        request = messages_pb2.StreamingOutputCallRequest(response_status=status)
        call = lambda: list(stub.FullDuplexCall(iter([request]), timeout=TIMEOUT))  # noqa: E731
        expect_status(call, code, "FullDuplexCall", message)


def status_code_and_message(stub, channel):
    echo_status(stub, grpc.StatusCode.UNKNOWN, "test status message", True)


def special_status_message(stub, channel):
    message = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
    echo_status(stub, grpc.StatusCode.UNKNOWN, message, False)


def unimplemented_method(stub, channel):
    call = lambda: stub.UnimplementedCall(empty_pb2.Empty(), timeout=TIMEOUT)  # noqa: E731
    expect_status(call, grpc.StatusCode.UNIMPLEMENTED, "TestService/UnimplementedCall")


def unimplemented_service(stub, channel):
    other = test_pb2_grpc.UnimplementedServiceStub(channel)
    call = lambda: other.UnimplementedCall(empty_pb2.Empty(), timeout=TIMEOUT)  # noqa: E731
    expect_status(call, grpc.StatusCode.UNIMPLEMENTED, "UnimplementedService/UnimplementedCall")


CASES = {
    f.__name__: f
    for f in (
        empty_unary,
        large_unary,
        client_compressed_unary,
        server_compressed_unary,
        client_streaming,
        server_streaming,
        ping_pong,
        empty_stream,
        timeout_on_sleeping_server,
        cancel_after_begin,
        cancel_after_first_response,
        custom_metadata,
        status_code_and_message,
        special_status_message,
        unimplemented_method,
        unimplemented_service,
    )
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server_host", default="localhost")
    parser.add_argument("--server_port", type=int, required=True)
    parser.add_argument("--test_case", required=True, choices=sorted(CASES))
    parser.add_argument("--server_host_override", default=None)
    parser.add_argument("--use_tls", type=stubs.parse_bool, default=False)
    args = parser.parse_args()
    if args.use_tls:
        parser.error("--use_tls=true: this client speaks plaintext only")
    target = "%s:%d" % (args.server_host, args.server_port)
    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
            CASES[args.test_case](test_pb2_grpc.TestServiceStub(channel), channel)
        except grpc.FutureTimeoutError:
            print("client.py: %s failed: no connection to %s" % (args.test_case, target), file=sys.stderr)
            sys.exit(1)
        except (CaseFailed, grpc.RpcError, StopIteration) as e:
            what = "%s (%r)" % (e.code(), e.details()) if isinstance(e, grpc.RpcError) else repr(e)
            print("client.py: %s failed: %s" % (args.test_case, what), file=sys.stderr)
            sys.exit(1)
    print("client.py: %s passed" % args.test_case)


if __name__ == "__main__":
    main()
