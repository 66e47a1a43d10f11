"""Generates the grpc.testing stubs from Keel's copies of gRPC's interop
protos (examples/proto/grpc/testing) with grpcio-tools, at run time, and
makes them importable as ``grpc.testing.*_pb2`` / ``*_pb2_grpc``.

The generated code lives under ``target/interop-stubs/<hash>/`` of the
workspace (never in the source tree), one directory per content of the
protos and version of grpcio-tools, written to a temporary directory and
renamed into place, so concurrent programs never see half a directory.
"""

import hashlib
import importlib
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
WORKSPACE = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
PROTO_ROOT = os.path.join(WORKSPACE, "examples", "proto")
PROTOS = ["grpc/testing/empty.proto", "grpc/testing/messages.proto", "grpc/testing/test.proto"]


def _key():
    from importlib import metadata

    digest = hashlib.sha256()
    digest.update(metadata.version("grpcio-tools").encode())
    for proto in PROTOS:
        with open(os.path.join(PROTO_ROOT, proto), "rb") as f:
            digest.update(proto.encode() + b"\0" + f.read())
    return digest.hexdigest()[:16]


def _generate(out):
    from grpc_tools import protoc
    import grpc_tools

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = [
        "grpc_tools.protoc",
        "-I" + PROTO_ROOT,
        "-I" + include,
        "--python_out=" + out,
        "--grpc_python_out=" + out,
    ] + [os.path.join(PROTO_ROOT, p) for p in PROTOS]
    if protoc.main(args) != 0:
        raise RuntimeError("grpc_tools.protoc failed on " + ", ".join(PROTOS))


def load():
    """Returns (empty_pb2, messages_pb2, test_pb2, test_pb2_grpc)."""
    base = os.environ.get("KEEL_INTEROP_STUBS") or os.path.join(WORKSPACE, "target", "interop-stubs")
    final = os.path.join(base, _key())
    if not os.path.isdir(final):
        os.makedirs(base, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".staging-", dir=base)
        try:
            _generate(staging)
            try:
                os.rename(staging, final)
            except OSError:
                # Another program put the same stubs in place first.
                if not os.path.isdir(final):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    # The protos' package is grpc.testing, so the generated modules import
    # each other as grpc.testing.*; grpcio owns the grpc package, so its
    # search path gets the generated grpc/ directory too.
    import grpc

    generated = os.path.join(final, "grpc")
    if generated not in grpc.__path__:
        grpc.__path__.append(generated)
    names = ["empty_pb2", "messages_pb2", "test_pb2", "test_pb2_grpc"]
    return tuple(importlib.import_module("grpc.testing." + n) for n in names)


def parse_bool(text):
    """gRPC's interop flags spell booleans true/false."""
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError("not a boolean: %r" % text)


if __name__ == "__main__":
    print([m.__name__ for m in load()], file=sys.stderr)
