//! gRPC interop with grpcio: every case of gRPC's interop descriptions, in
//! both directions, each its own test.
//!
//! ```text
//!   python_client_keel_server::CASE   examples/interop/python/client.py ──► interop_server
//!   keel_client_python_server::CASE   interop_client ──► examples/interop/python/server.py
//! ```
//!
//! Python runs from the venv `scripts/interop-venv.sh` makes in
//! `target/interop-venv` (pinned grpcio and grpcio-tools); a test binary
//! that finds it missing runs the script once. Each test starts its own
//! server on a free loopback port (the server binds port 0 and prints the
//! port it got), waits for that line, runs the client, and kills the server
//! by its PID when the test ends, whatever the outcome. Every wait is
//! bounded.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to print its listening line.
const SERVER_START: Duration = Duration::from_secs(60);
/// How long one client run (one case) may take.
const CLIENT_RUN: Duration = Duration::from_secs(120);
/// How long the venv script may take (a fresh machine downloads wheels).
const VENV_SETUP: Duration = Duration::from_secs(900);

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("examples/ sits in the workspace")
}

fn python_dir() -> PathBuf {
    workspace().join("examples/interop/python")
}

/// The venv's python, made by `scripts/interop-venv.sh` when missing (once
/// per test binary; the script itself locks against other processes).
fn python() -> &'static Path {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        let python = workspace().join("target/interop-venv/bin/python");
        if python.exists() {
            return Ok(python);
        }
        let script = workspace().join("scripts/interop-venv.sh");
        let mut command = Command::new("bash");
        command.arg(&script);
        let run = run_bounded(command, VENV_SETUP)?;
        if !run.status.success() || !python.exists() {
            return Err(format!(
                "{} failed ({}):\n{}\n{}",
                script.display(),
                run.status,
                run.stdout,
                run.stderr
            ));
        }
        Ok(python)
    });
    match found {
        Ok(python) => python,
        Err(why) => panic!("no Python with grpcio for the interop tests: {why}"),
    }
}

/// What a finished program printed and how it exited.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Collects everything `pipe` yields in a thread; `done` is told at its end.
fn drain(
    mut pipe: impl Read + Send + 'static,
    done: mpsc::Sender<()>,
) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = done.send(());
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `command` to its end, killing it (by its PID) past `limit`.
fn run_bounded(mut command: Command, limit: Duration) -> Result<Finished, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    let (done, ended) = mpsc::channel();
    let stdout = drain(child.stdout.take().expect("piped"), done.clone());
    let stderr = drain(child.stderr.take().expect("piped"), done);
    // Both pipes close when the program exits.
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        if ended.recv_timeout(left).is_err() {
            timed_out = true;
            let _ = child.kill();
            break;
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {command:?}: {e}"))?;
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if timed_out {
        return Err(format!(
            "{command:?} ran past {limit:?} and was killed\nstdout:\n{stdout}\nstderr:\n{stderr}"
        ));
    }
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}

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
