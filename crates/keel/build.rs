//! Generates the services keel's own tests and doctests use: brpc's echo
//! (proto2, the one copy in `examples/proto`), a small proto3 greeter, and proto2 messages with nested
//! `required` fields (plus the package they import). Cheap: a few small
//! files, re-run only when they change.

fn main() {
    let protos = [
        "../../examples/proto/echo.proto",
        "proto/greeter.proto",
        "proto/required.proto",
        "proto/streams.proto",
    ];
    if let Err(err) = keel_build::compile_protos(&protos, &["../../examples/proto", "proto"]) {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}
