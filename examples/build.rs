//! Generates the echo service from brpc's echo.proto (no protoc needed).

fn main() {
    if let Err(err) = keel_build::compile_protos(&["proto/echo.proto"], &["proto"]) {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}
