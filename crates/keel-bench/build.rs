//! Generates tonic's service and client code for the gRPC peers of
//! `keel-bench echo` and `grpc`, with tonic's own generator and no system
//! `protoc`: protox parses the protos into a descriptor set and
//! `tonic-prost-build` compiles that. Two services: brpc's echo
//! (`examples/proto/echo.proto`) and gRPC's interop `TestService`
//! (`examples/proto/grpc/testing/test.proto`, for the streaming runs). The
//! messages are not generated again: `.example` and `.grpc.testing` map to
//! `keel_examples`' modules, so Keel and tonic send the very same prost
//! types.

fn main() {
    let protos = [
        "../../examples/proto/echo.proto",
        "../../examples/proto/grpc/testing/test.proto",
    ];
    println!("cargo:rerun-if-changed=../../examples/proto");
    let fds = match protox::compile(protos, ["../../examples/proto"]) {
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
        .extern_path(".grpc.testing", "::keel_examples::grpc_testing")
        .compile_fds(fds)
    {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
