//! Running the peers the interop tests talk to: Python from the venv
//! `scripts/interop-venv.sh` makes in `target/interop-venv` (pinned grpcio,
//! grpcio-tools and prometheus_client), and any program bounded by a time
//! limit, killed by its PID past it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long the venv script may take (a fresh machine downloads wheels).
const VENV_SETUP: Duration = Duration::from_secs(900);

pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("examples/ sits in the workspace")
}

/// Where the Python peers live.
pub fn python_dir() -> PathBuf {
    workspace().join("examples/interop/python")
}

/// The venv's python. The script runs once per test binary, even when the
/// venv is there: it only checks the pins when they are installed (a
/// fraction of a second), and installs them when they changed; it locks
/// against other processes itself.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        let python = workspace().join("target/interop-venv/bin/python");
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
        Err(why) => panic!("no Python with the pinned interop packages: {why}"),
    }
}

/// What a finished program printed and how it exited.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
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
pub fn run_bounded(mut command: Command, limit: Duration) -> Result<Finished, String> {
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
