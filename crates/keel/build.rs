//! Generates the services keel's own tests and doctests use: brpc's echo
//! (proto2) and a small proto3 greeter. Cheap: two small files, re-run only
//! when they change.

fn main() {
    if let Err(err) =
        keel_build::compile_protos(&["proto/echo.proto", "proto/greeter.proto"], &["proto"])
    {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}
