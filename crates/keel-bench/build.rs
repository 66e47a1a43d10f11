//! Generates tonic's service and client code for brpc's echo service, the
//! gRPC peer of `keel-bench echo`, with tonic's own generator and no system
//! `protoc`: protox parses `examples/proto/echo.proto` into a descriptor set
//! and `tonic-prost-build` compiles that. The messages are not generated
//! again: `.example` maps to `keel_examples::example`, so Keel and tonic
//! send the very same prost types.

fn main() {
    let proto = "../../examples/proto/echo.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = match protox::compile([proto], ["../../examples/proto"]) {
        Ok(fds) => fds,
        Err(e) => {
            eprintln!("error: {e:?}");
            std::process::exit(1);
        }
    };
    if let Err(e) = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".example", "::keel_examples::example")
        .compile_fds(fds)
    {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
