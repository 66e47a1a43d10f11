//! Generates the echo service from brpc's echo.proto, the events service
//! that uses the well-known types, and gRPC's interop test service
//! (`grpc.testing`), all with no protoc.

fn main() -> Result<(), keel_build::Error> {
    keel_build::compile_protos(
        &[
            "proto/echo.proto",
            "proto/events.proto",
            "proto/grpc/testing/test.proto",
            "proto/shop/v1/common.proto",
            "proto/shop/v1/catalog.proto",
            "proto/shop/v1/orders.proto",
            "proto/shop/v2/catalog.proto",
            "proto/shop/legacy/inventory.proto",
        ],
        &["proto"],
    )
}
