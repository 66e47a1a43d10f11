//! gRPC interop with grpcio: every case of gRPC's interop descriptions, in
//! both directions, each its own test.
//!
//! ```text
//!   python_client_keel_server::CASE   examples/interop/python/client.py ──► interop_server
//!   keel_client_python_server::CASE   interop_client ──► examples/interop/python/server.py
//! ```
//!
//! Python runs from the venv `scripts/interop-venv.sh` makes in
//! `target/interop-venv` (pinned grpcio and grpcio-tools); each test binary
//! runs the script once, which installs the pins only when they changed
//! (see `support/peers.rs`). Each test starts its own server on a free
//! loopback port (the server binds port 0 and prints the port it got),
//! waits for that line, runs the client, and kills the server by its PID
//! when the test ends, whatever the outcome. Every wait is bounded.

#[path = "support/peers.rs"]
mod peers;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use peers::{python, python_dir, run_bounded};

/// How long a server may take to print its listening line.
const SERVER_START: Duration = Duration::from_secs(60);
/// How long one client run (one case) may take.
const CLIENT_RUN: Duration = Duration::from_secs(120);

/// A server child process on a loopback port; killed (by its PID) and
/// reaped on drop.
struct ServerProcess {
    child: Child,
    port: u16,
    stderr: Arc<Mutex<String>>,
}

impl ServerProcess {
    /// Starts `command` (a server given `--port 0`) and waits for the line
    /// `... listening on HOST:PORT`.
    fn start(mut command: Command) -> ServerProcess {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        // Dropped (and the child killed) if the server never gets ready.
        let mut server = ServerProcess {
            child,
            port: 0,
            stderr: stderr.clone(),
        };
        let errors = server.child.stderr.take().expect("piped");
        thread::spawn(move || {
            for line in BufReader::new(errors).lines().map_while(Result::ok) {
                let mut all = stderr.lock().unwrap_or_else(PoisonError::into_inner);
                all.push_str(&line);
                all.push('\n');
            }
        });
        let (port_tx, port_rx) = mpsc::channel();
        let output = server.child.stdout.take().expect("piped");
        thread::spawn(move || {
            let mut lines = BufReader::new(output).lines().map_while(Result::ok);
            let port = lines.by_ref().find_map(|line| {
                let (_, addr) = line.split_once(" listening on ")?;
                addr.rsplit_once(':')?.1.trim().parse::<u16>().ok()
            });
            let _ = port_tx.send(port);
            // Keep reading so the server never blocks on a full pipe.
            lines.for_each(drop);
        });
        match port_rx.recv_timeout(SERVER_START) {
            Ok(Some(port)) => server.port = port,
            Ok(None) => panic!(
                "{command:?} exited without a listening line; stderr:\n{}",
                server.stderr()
            ),
            Err(_) => panic!(
                "{command:?} printed no listening line within {SERVER_START:?}; stderr:\n{}",
                server.stderr()
            ),
        }
        server
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client flags every case passes, gRPC's spelling.
fn client_args(port: u16, case: &str) -> [String; 4] {
    [
        "--server_host=127.0.0.1".to_string(),
        format!("--server_port={port}"),
        format!("--test_case={case}"),
        "--use_tls=false".to_string(),
    ]
}

/// Runs `client` against `server` and fails the test, with both sides'
/// output, unless the client exits 0.
fn expect_pass(server: &ServerProcess, client: Command, case: &str) {
    let what = format!("{client:?}");
    let run = run_bounded(client, CLIENT_RUN)
        .unwrap_or_else(|e| panic!("{case}: {e}\nserver stderr:\n{}", server.stderr()));
    assert!(
        run.status.success(),
        "{case} failed ({}): {what}\nclient stdout:\n{}\nclient stderr:\n{}\nserver stderr:\n{}",
        run.status,
        run.stdout,
        run.stderr,
        server.stderr()
    );
}

/// grpcio's client (Python) against Keel's `interop_server`.
fn python_client_keel_server(case: &str) {
    let python = python();
    let mut command = Command::new(env!("CARGO_BIN_EXE_interop_server"));
    command.args(["--port", "0", "--use_tls=false"]);
    let server = ServerProcess::start(command);
    let mut client = Command::new(python);
    client
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(python_dir().join("client.py"))
        .args(client_args(server.port, case));
    expect_pass(&server, client, case);
}

/// Keel's `interop_client` against grpcio's server (Python).
fn keel_client_python_server(case: &str) {
    let mut command = Command::new(python());
    command
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(python_dir().join("server.py"))
        .args(["--port", "0", "--use_tls=false"]);
    let server = ServerProcess::start(command);
    let mut client = Command::new(env!("CARGO_BIN_EXE_interop_client"));
    client.args(client_args(server.port, case));
    expect_pass(&server, client, case);
}

/// One test per case in each direction: `$module::$case` runs `$run`.
macro_rules! cases {
    ($module:ident, $run:ident: $($(#[$attr:meta])* $case:ident),+ $(,)?) => {
        mod $module {
            $(
                $(#[$attr])*
                #[test]
                fn $case() {
                    super::$run(stringify!($case));
                }
            )+
        }
    };
}

cases!(python_client_keel_server, python_client_keel_server:
    empty_unary,
    large_unary,
    client_compressed_unary,
    server_compressed_unary,
    client_streaming,
    server_streaming,
    ping_pong,
    empty_stream,
    timeout_on_sleeping_server,
    cancel_after_begin,
    cancel_after_first_response,
    custom_metadata,
    status_code_and_message,
    special_status_message,
    unimplemented_method,
    unimplemented_service,
);

cases!(keel_client_python_server, keel_client_python_server:
    empty_unary,
    large_unary,
    client_compressed_unary,
    server_compressed_unary,
    client_streaming,
    server_streaming,
    ping_pong,
    empty_stream,
    timeout_on_sleeping_server,
    cancel_after_begin,
    cancel_after_first_response,
    custom_metadata,
    status_code_and_message,
    special_status_message,
    unimplemented_method,
    unimplemented_service,
);
