//! Generates the echo service from brpc's echo.proto, and the events service
//! that uses the well-known types (no protoc needed).

fn main() -> Result<(), keel_build::Error> {
    keel_build::compile_protos(&["proto/echo.proto", "proto/events.proto"], &["proto"])
}
