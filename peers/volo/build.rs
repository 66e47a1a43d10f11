//! Generates the echo service from `examples/proto/echo.proto` (see
//! `volo.yml`), with volo-build: no system protoc.

fn main() {
    volo_build::ConfigBuilder::default()
        .write()
        .expect("volo-build generates the echo service");
}
