//! `keel call`, `list`, `describe`, `bench` and `completions` through the
//! real binary, against a Keel server this test runs on 127.0.0.1:0
//! (brpc's echo service and gRPC's interop test service, with reflection):
//! successes with their JSON parsed and checked, and every class of error
//! with its exit code (2 usage, 3 transport, 4 RPC).
//!
//! The test binary counts its allocations (keel-alloc), so the server's
//! console publishes `keel_heap_allocations_total` and `keel bench` reports
//! the server's allocations per call, as it does against any Keel server
//! built with the counting allocator.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use keel_alloc::CountingAlloc;
use keel_examples::Echo;
use keel_examples::example::EchoServiceServer;
use keel_examples::grpc_testing::TestServiceServer;
use keel_examples::interop::server::TestServer;
use serde_json::Value;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

/// How long one `keel` run may take before the test fails (and kills it).
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The address of the server every test calls: started once, on its own
/// thread and runtime, for the life of the test binary.
fn server() -> &'static str {
    static ADDR: OnceLock<String> = OnceLock::new();
    ADDR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let server = keel::Server::builder()
                    .add_service(EchoServiceServer::new(Echo))
                    .add_service(TestServiceServer::new(TestServer))
                    .bind("127.0.0.1:0")
                    .await
                    .expect("bind 127.0.0.1:0");
                tx.send(server.local_addr().to_string()).expect("send");
                std::future::pending::<()>().await;
            });
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the server starts")
    })
}

/// Runs `keel ARGS` with `stdin`, bounded by [`RUN_LIMIT`].
fn keel_with_input(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keel");
    let mut input = child.stdin.take().expect("piped");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_LIMIT) {
        Ok(out) => out.expect("keel's output"),
        Err(_) => {
            // Our own child, by its PID.
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("keel {args:?} ran past {RUN_LIMIT:?}");
        }
    }
}

fn keel(args: &[&str]) -> Output {
    keel_with_input(args, "")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts `keel` exited with `code`; returns its output.
fn expect_code(args: &[&str], code: i32) -> Output {
    let out = keel(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "keel {args:?}\nstdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&stdout(out))
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(out)))
}

fn proto_dir() -> String {
    format!("{}/../../examples/proto", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn call_speaks_every_protocol() {
    let addr = server();
    for target in [
        addr.to_string(),
        format!("grpc://{addr}"),
        format!("http://{addr}"),
    ] {
        let out = expect_code(
            &[
                "call",
                &target,
                "example.EchoService/Echo",
                r#"{"message":"hello"}"#,
            ],
            0,
        );
        assert_eq!(json(&out)["message"], "hello", "{target}");
    }
    // --protocol overrides the default of host:port.
    let out = expect_code(
        &[
            "call",
            addr,
            "example.EchoService/Echo",
            "-d",
            r#"{"message":"by grpc"}"#,
            "--protocol",
            "grpc",
            "-H",
            "x-request-id=7",
        ],
        0,
    );
    assert_eq!(json(&out)["message"], "by grpc");
}

#[test]
fn call_reads_files_stdin_and_proto_files() {
    let addr = server();
    let dir = std::env::temp_dir().join(format!("keel-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("request.json");
    std::fs::write(&file, r#"{"message":"from a file"}"#).expect("write");
    let at_file = format!("@{}", file.display());
    let out = expect_code(
        &["call", addr, "example.EchoService/Echo", "-d", &at_file],
        0,
    );
    assert_eq!(json(&out)["message"], "from a file");
    let _ = std::fs::remove_dir_all(&dir);

    let out = keel_with_input(
        &["call", addr, "example.EchoService/Echo", "-d", "@-"],
        r#"{"message":"from stdin"}"#,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["message"], "from stdin");

    // The schema from a .proto file, compiled now; no reflection needed.
    let proto = format!("{}/grpc/testing/test.proto", proto_dir());
    let out = expect_code(
        &[
            "call",
            addr,
            "grpc.testing.TestService/UnaryCall",
            r#"{"responseSize": 4}"#,
            "--proto",
            &proto,
            "-I",
            &proto_dir(),
        ],
        0,
    );
    // proto3 JSON: bytes as base64, 4 zero bytes.
    assert_eq!(json(&out)["payload"]["body"], "AAAAAA==");
}

#[test]
fn call_streams_over_grpc() {
    let grpc = format!("grpc://{}", server());
    let out = expect_code(
        &[
            "call",
            &grpc,
            "grpc.testing.TestService/StreamingOutputCall",
            r#"{"responseParameters":[{"size":1},{"size":2},{"size":3}]}"#,
        ],
        0,
    );
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    let sizes: Vec<usize> = lines
        .iter()
        .map(|v| v["payload"]["body"].as_str().expect("a body").len())
        .collect();
    // base64 of 1, 2, 3 bytes: 4 characters each.
    assert_eq!(sizes, [4, 4, 4], "{lines:?}");

    // Bidirectional: one response per request line.
    let out = keel_with_input(
        &[
            "call",
            &grpc,
            "grpc.testing.TestService/FullDuplexCall",
            "-d",
            "@-",
        ],
        "{\"responseParameters\":[{\"size\":3}]}\n{\"responseParameters\":[{\"size\":6}]}\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bodies: Vec<String> = stdout(&out)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON");
            v["payload"]["body"].as_str().expect("body").to_owned()
        })
        .collect();
    assert_eq!(bodies, ["AAAA", "AAAAAAAA"]);
    // A line that does not fit ends the call with a usage error naming it.
    let out = keel_with_input(
        &[
            "call",
            &grpc,
            "grpc.testing.TestService/FullDuplexCall",
            "-d",
            "@-",
        ],
        "{\"responseParameters\":[{\"size\":3}]}\n{\"responseParameters\":[{\"sise\":6}]}\n",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("line 2: the request does not fit")
            && stderr(&out).contains(".responseParameters[0].sise"),
        "{}",
        stderr(&out)
    );

    // Streaming over baidu_std is a usage error that says what to do.
    let out = expect_code(
        &[
            "call",
            server(),
            "grpc.testing.TestService/StreamingOutputCall",
            "{}",
        ],
        2,
    );
    assert!(stderr(&out).contains("over gRPC"), "{}", stderr(&out));
}

#[test]
fn list_and_describe_use_reflection() {
    let addr = server();
    let out = expect_code(&["list", addr], 0);
    let services: Vec<&str> = std::str::from_utf8(&out.stdout)
        .expect("UTF-8")
        .lines()
        .collect();
    for s in [
        "example.EchoService",
        "grpc.testing.TestService",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(services.contains(&s), "{services:?}");
    }
    let out = expect_code(&["list", addr, "grpc.testing.TestService"], 0);
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l == "grpc.testing.TestService.FullDuplexCall"),
        "{}",
        stdout(&out)
    );
    let out = expect_code(&["describe", addr, "example.EchoService"], 0);
    assert!(
        stdout(&out).contains("rpc Echo(example.EchoRequest) returns (example.EchoResponse);"),
        "{}",
        stdout(&out)
    );
    let out = expect_code(
        &["describe", addr, "grpc.testing.TestService/FullDuplexCall"],
        0,
    );
    assert!(
        stdout(&out).contains("(stream grpc.testing.StreamingOutputCallRequest) returns (stream"),
        "{}",
        stdout(&out)
    );
    let out = expect_code(&["describe", addr, "grpc.testing.SimpleRequest"], 0);
    assert!(
        stdout(&out).contains("int32 response_size = 2;"),
        "{}",
        stdout(&out)
    );
    let out = expect_code(&["describe", addr, "grpc.testing.SimpleRequst"], 2);
    assert!(
        stderr(&out).contains("did you mean grpc.testing.SimpleRequest"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn errors_have_their_exit_codes() {
    let addr = server();
    // 2: clap's usage errors name the flag.
    let out = expect_code(
        &["call", addr, "example.EchoService/Echo", "--frobnicate"],
        2,
    );
    assert!(stderr(&out).contains("--frobnicate"), "{}", stderr(&out));
    let out = expect_code(
        &[
            "bench",
            addr,
            "example.EchoService/Echo",
            "--concurrency",
            "0",
        ],
        2,
    );
    assert!(stderr(&out).contains("--concurrency"), "{}", stderr(&out));
    // 2: an unknown method, with the close names.
    let out = expect_code(&["call", addr, "example.EchoService/Ecko", "{}"], 2);
    assert!(
        stderr(&out).contains("did you mean example.EchoService/Echo"),
        "{}",
        stderr(&out)
    );
    let out = expect_code(&["call", addr, "example.EchoServce/Echo", "{}"], 2);
    assert!(stderr(&out).contains("unknown service"), "{}", stderr(&out));
    // 2: bad JSON, with the field's path.
    let out = expect_code(
        &[
            "call",
            addr,
            "grpc.testing.TestService/UnaryCall",
            r#"{"payload":{"body":"AA==","bodyy":1}}"#,
        ],
        2,
    );
    assert!(
        stderr(&out).contains("at .payload.bodyy"),
        "{}",
        stderr(&out)
    );
    let out = expect_code(
        &["call", addr, "example.EchoService/Echo", r#"{"message": 7"#],
        2,
    );
    assert!(stderr(&out).contains("not valid JSON"), "{}", stderr(&out));
    // 3: nothing listens there (a port this test bound and closed).
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let proto = format!("{}/echo.proto", proto_dir());
    let out = expect_code(
        &[
            "call",
            &closed,
            "example.EchoService/Echo",
            r#"{"message":"x"}"#,
            "--proto",
            &proto,
        ],
        3,
    );
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
    let out = expect_code(&["list", &closed], 3);
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
    // 4: the server's status, by name.
    let out = expect_code(
        &[
            "call",
            &format!("grpc://{addr}"),
            "grpc.testing.TestService/UnaryCall",
            r#"{"responseStatus":{"code":5,"message":"no such thing"}}"#,
        ],
        4,
    );
    assert!(
        stderr(&out).contains("NotFound(5): no such thing"),
        "{}",
        stderr(&out)
    );
    let out = expect_code(&["call", addr, "example.EchoService/Echo", "{}"], 4);
    assert!(stderr(&out).contains("EREQUEST(1003)"), "{}", stderr(&out));
}

#[test]
fn bench_reports_json() {
    let addr = server();
    for target in [
        addr.to_string(),
        format!("grpc://{addr}"),
        format!("http://{addr}"),
    ] {
        let out = expect_code(
            &[
                "bench",
                &target,
                "example.EchoService/Echo",
                "-d",
                r#"{"message":"0123456789abcdef"}"#,
                "--total",
                "600",
                "--concurrency",
                "8",
                "--connections",
                "2",
                "--warmup",
                "0s",
                "--format",
                "json",
            ],
            0,
        );
        let r = json(&out);
        assert_eq!(r["calls"], 600, "{target}: {r}");
        assert_eq!(r["ok"], 600, "{target}: {r}");
        assert_eq!(r["errors"], 0, "{target}: {r}");
        let latency = &r["latency"];
        let p50 = latency["p50_us"].as_u64().expect("p50");
        let p99 = latency["p99_us"].as_u64().expect("p99");
        let max = latency["max_us"].as_u64().expect("max");
        assert!(p50 > 0 && p50 <= p99 && p99 <= max, "{r}");
        assert!(r["client_allocs_per_call"].as_f64().is_some(), "{r}");
        // This server counts its allocations, and its console says so.
        assert!(r["server_allocs_per_call"].as_f64().is_some(), "{r}");
    }
    // Open loop, a bounded number of calls at a fixed rate.
    let out = expect_code(
        &[
            "bench",
            addr,
            "example.EchoService/Echo",
            "-d",
            r#"{"message":"x"}"#,
            "--total",
            "200",
            "--qps",
            "2000",
            "--warmup",
            "0s",
            "--format",
            "json",
        ],
        0,
    );
    let r = json(&out);
    assert_eq!(
        (r["calls"].as_u64(), r["qps_target"].as_f64()),
        (Some(200), Some(2000.0)),
        "{r}"
    );
    // The text report, with its histogram.
    let out = expect_code(
        &[
            "bench",
            addr,
            "example.EchoService/Echo",
            "-d",
            r#"{"message":"x"}"#,
            "--total",
            "300",
            "--warmup",
            "0s",
        ],
        0,
    );
    let text = stdout(&out);
    assert!(
        text.contains("QPS") && text.contains("p999") && text.contains("histogram"),
        "{text}"
    );
}

#[test]
fn bench_errors_have_their_exit_codes() {
    let addr = server();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let proto = format!("{}/echo.proto", proto_dir());
    let out = expect_code(
        &[
            "bench",
            &closed,
            "example.EchoService/Echo",
            "-d",
            r#"{"message":"x"}"#,
            "--total",
            "10",
            "--proto",
            &proto,
        ],
        3,
    );
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
    // The server refuses every call: an error before the run.
    let out = expect_code(
        &[
            "bench",
            addr,
            "example.EchoService/Echo",
            "-d",
            "{}",
            "--total",
            "10",
        ],
        4,
    );
    assert!(stderr(&out).contains("EREQUEST"), "{}", stderr(&out));
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = expect_code(&["completions", shell], 0);
        let script = stdout(&out);
        assert!(
            script.contains("keel") && script.contains("bench"),
            "{shell}: {script}"
        );
    }
    let out = expect_code(&["completions", "tcsh"], 2);
    assert!(stderr(&out).contains("tcsh"), "{}", stderr(&out));
    let out = expect_code(&["--help"], 0);
    assert!(stdout(&out).contains("Exit codes:"), "{}", stdout(&out));
}
