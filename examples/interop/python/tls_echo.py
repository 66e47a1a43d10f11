"""Calls Keel's echo service over gRPC with TLS, as any grpcio client would.

Usage: tls_echo.py HOST:PORT CA_PEM MESSAGE [CLIENT_CERT_PEM CLIENT_KEY_PEM]

The request and response are example.EchoRequest / EchoResponse (field 1,
a string), encoded by hand: no generated code is needed for one field.
Prints the echoed message; exits 1 with the gRPC status on failure.
"""

import sys

import grpc


def encode(message: str) -> bytes:
    data = message.encode()
    assert len(data) < 128
    return b"\x0a" + bytes([len(data)]) + data


def decode(payload: bytes) -> str:
    assert payload[0] == 0x0A, payload
    return payload[2 : 2 + payload[1]].decode()


def main() -> int:
    target, ca_path, message = sys.argv[1:4]
    with open(ca_path, "rb") as f:
        roots = f.read()
    cert = key = None
    if len(sys.argv) > 5:
        with open(sys.argv[4], "rb") as f:
            cert = f.read()
        with open(sys.argv[5], "rb") as f:
            key = f.read()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=key, certificate_chain=cert
    )
    with grpc.secure_channel(target, credentials) as channel:
        echo = channel.unary_unary(
            "/example.EchoService/Echo",
            request_serializer=None,
            response_deserializer=None,
        )
        try:
            reply = echo(encode(message), timeout=10)
        except grpc.RpcError as e:
            print(f"{e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    print(decode(reply))
    return 0


if __name__ == "__main__":
    sys.exit(main())
