//! `keel call` and `keel bench` over gRPC against a server that is not
//! Keel: grpcio's interop server (Python, `examples/interop/python`), from
//! the venv `scripts/interop-venv.sh` makes in `target/interop-venv`, as
//! the examples' interop tests run it. The schema comes from the `.proto`
//! files (`--proto`), since that server offers no reflection.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// How long the venv script may take (a fresh machine downloads wheels).
const VENV_SETUP: Duration = Duration::from_secs(900);
/// How long the server may take to print its port, and a `keel` run.
const LIMIT: Duration = Duration::from_secs(120);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A child process killed (by its PID) and reaped on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `command` to its end, killed (by its PID) past [`LIMIT`] or `limit`.
fn run_bounded(mut command: Command, limit: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("{command:?} ran past {limit:?}");
        }
    }
}

/// The venv's python, made (or checked) by the project's script.
fn python() -> PathBuf {
    let mut script = Command::new("bash");
    script.arg(workspace().join("scripts/interop-venv.sh"));
    let out = run_bounded(script, VENV_SETUP);
    let python = workspace().join("target/interop-venv/bin/python");
    assert!(
        out.status.success() && python.exists(),
        "scripts/interop-venv.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    python
}

/// grpcio's interop server on 127.0.0.1, and its port.
fn grpcio_server() -> (Process, u16) {
    let child = Command::new(python())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(workspace().join("examples/interop/python/server.py"))
        .args(["--port", "0", "--use_tls=false"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start grpcio's server");
    let mut server = Process(child);
    let stdout = server.0.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let port = lines.by_ref().find_map(|l| {
            let (_, addr) = l.split_once(" listening on ")?;
            addr.rsplit_once(':')?.1.trim().parse::<u16>().ok()
        });
        let _ = tx.send(port);
        lines.for_each(drop);
    });
    let port = rx
        .recv_timeout(LIMIT)
        .ok()
        .flatten()
        .expect("grpcio's server prints its port");
    (server, port)
}

fn keel(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
    command.args(args);
    run_bounded(command, LIMIT)
}

fn check(out: &Output, code: i32) -> String {
    let mut text = String::new();
    let _ = out.stdout.as_slice().read_to_string(&mut text);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{text}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn call_and_bench_a_grpcio_server() {
    let (_server, port) = grpcio_server();
    let target = format!("grpc://127.0.0.1:{port}");
    let include = workspace().join("examples/proto");
    let proto = include.join("grpc/testing/test.proto");
    let (include, proto) = (
        include.to_str().expect("UTF-8"),
        proto.to_str().expect("UTF-8"),
    );
    let schema = ["--proto", proto, "-I", include];

    let mut args = vec![
        "call",
        &target,
        "grpc.testing.TestService/UnaryCall",
        r#"{"responseSize": 3, "payload": {"body": "AAAA"}}"#,
    ];
    args.extend(schema);
    let reply: Value = serde_json::from_str(&check(&keel(&args), 0)).expect("JSON");
    assert_eq!(reply["payload"]["body"], "AAAA", "{reply}");

    let mut args = vec![
        "call",
        &target,
        "grpc.testing.TestService/StreamingOutputCall",
        r#"{"responseParameters":[{"size":2},{"size":2}]}"#,
    ];
    args.extend(schema);
    let text = check(&keel(&args), 0);
    assert_eq!(text.lines().count(), 2, "{text}");

    // grpcio's status comes back by name, exit code 4.
    let mut args = vec![
        "call",
        &target,
        "grpc.testing.TestService/UnaryCall",
        r#"{"responseStatus":{"code":9,"message":"not now"}}"#,
    ];
    args.extend(schema);
    let out = keel(&args);
    check(&out, 4);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FailedPrecondition(9): not now"), "{err}");

    let mut args = vec![
        "bench",
        &target,
        "grpc.testing.TestService/UnaryCall",
        "-d",
        r#"{"responseSize": 16}"#,
        "--total",
        "300",
        "--concurrency",
        "4",
        "--warmup",
        "0s",
        "--format",
        "json",
    ];
    args.extend(schema);
    let report: Value = serde_json::from_str(&check(&keel(&args), 0)).expect("JSON");
    assert_eq!(
        (report["calls"].as_u64(), report["ok"].as_u64()),
        (Some(300), Some(300)),
        "{report}"
    );
    // Not a Keel server: no console, so no server allocations.
    assert!(report["server_allocs_per_call"].is_null(), "{report}");
}
