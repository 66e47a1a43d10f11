//! Generates, with keel-build:
//!
//! - the builtin services' messages and clients, part of the library
//!   (`keel::builtin`): gRPC health checking and server reflection, from
//!   gRPC's `.proto` files under `proto/grpc`, referring to the runtime as
//!   `crate`;
//! - the services keel's own tests and doctests use: brpc's echo (proto2,
//!   the one copy in `examples/proto`), a small proto3 greeter, and proto2
//!   messages with nested `required` fields (plus the package they import).
//!
//! Cheap: a few small files, re-run only when they change.

fn main() {
    let builtin = keel_build::configure()
        .runtime_path("crate")
        // Reflection answers with the embedded descriptors: `Bytes` lets a
        // response point at them instead of copying.
        .prost_config(|config| {
            config.bytes([".grpc.reflection"]);
        })
        .compile(
            &[
                "proto/grpc/health/v1/health.proto",
                "proto/grpc/reflection/v1/reflection.proto",
                "proto/grpc/reflection/v1alpha/reflection.proto",
                "proto/etcd/api/etcdserverpb/rpc.proto",
            ],
            &["proto"],
        );
    let tests = builtin.and_then(|()| {
        keel_build::compile_protos(
            &[
                "../../examples/proto/echo.proto",
                "proto/greeter.proto",
                "proto/required.proto",
                "proto/streams.proto",
            ],
            &["../../examples/proto", "proto"],
        )
    });
    if let Err(err) = tests {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}
