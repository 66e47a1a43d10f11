//! A server process this program starts by running itself with a hidden
//! subcommand (`echo-server`, `pingpong-server`), so that each server has a
//! process, and its CPU time, of its own.
//!
//! ```text
//!   keel-bench <benchmark>
//!     │ spawns `keel-bench <server subcommand> [args]`
//!     └──► server process   127.0.0.1:<port>
//!           stdout: "port N" first, then one line per line read on stdin
//!           stdin closed (this process ends or drops it) ──► the server exits
//! ```
//!
//! Every wait on the child is bounded: its lines are read by a thread and
//! received with [`REPLY_WAIT`], and a child that has not exited
//! [`CHILD_EXIT_WAIT`] after its stdin closed is killed by its PID.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// How long a server process gets to exit after its stdin closes.
pub const CHILD_EXIT_WAIT: Duration = Duration::from_secs(3);
/// How long to wait for a line from a server process.
pub const REPLY_WAIT: Duration = Duration::from_secs(10);

/// A running server process, ended when dropped.
pub struct ChildServer {
    /// What it serves, for messages ("the keel server").
    name: &'static str,
    child: Child,
    /// Closing it tells the server to exit.
    stdin: Option<ChildStdin>,
    /// Lines the server printed, read by a thread so waits are bounded.
    lines: Receiver<String>,
    /// Where it listens (127.0.0.1 and the port it printed).
    pub addr: SocketAddr,
}

impl ChildServer {
    /// Starts `keel-bench <args>` and waits for its `port N` line.
    pub fn start(name: &'static str, args: &[String]) -> Result<ChildServer, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find this program to start a server: {e}"))?;
        ChildServer::start_program(name, &exe, args)
    }

    /// Starts `exe <args>` and waits for its `port N` line.
    pub fn start_program(
        name: &'static str,
        exe: &std::path::Path,
        args: &[String],
    ) -> Result<ChildServer, String> {
        let mut server = ChildServer::spawn(name, exe, args)?;
        let line = server.next_line(REPLY_WAIT)?;
        let port = line
            .strip_prefix("port ")
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(|| format!("the {name} server said {line:?}"))?;
        server.addr.set_port(port);
        Ok(server)
    }

    /// Starts `exe <args>` (a server or a load client) with piped standard
    /// input and output, not waiting for anything it says.
    pub fn spawn(
        name: &'static str,
        exe: &std::path::Path,
        args: &[String],
    ) -> Result<ChildServer, String> {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the {name} server: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let (tx, lines) = channel();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(ChildServer {
            name,
            child,
            stdin,
            lines,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        })
    }

    /// The next line the server prints, within [`REPLY_WAIT`].
    /// The next line it prints, waiting at most `wait`.
    pub fn next_line(&self, wait: Duration) -> Result<String, String> {
        self.lines.recv_timeout(wait).map_err(|e| match e {
            RecvTimeoutError::Timeout => {
                format!("the {} server did not answer in {wait:?}", self.name)
            }
            RecvTimeoutError::Disconnected => format!("the {} server exited", self.name),
        })
    }

    /// Sends one command line and returns the server's answer.
    pub fn ask(&mut self, command: &str) -> Result<String, String> {
        self.ask_within(command, REPLY_WAIT)
    }

    /// Sends one command line and returns the answer, waiting at most
    /// `wait` for it.
    pub fn ask_within(&mut self, command: &str, wait: Duration) -> Result<String, String> {
        let name = self.name;
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| format!("the {name} server was told to exit"))?;
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("the {name} server is gone: {e}"))?;
        self.next_line(wait)
    }

    /// The server's CPU time so far, in clock ticks.
    pub fn cpu_ticks(&self) -> Result<u64, String> {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
        parse_cpu_ticks(&stat).ok_or_else(|| format!("cannot parse /proc/{pid}/stat"))
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        stop(&mut self.child, self.stdin.take(), self.name);
    }
}

/// Ends a server child: closing its standard input tells it to exit; one
/// still there after [`CHILD_EXIT_WAIT`] is killed (this one process, by
/// its PID). `name` says which server, for the message.
pub fn stop(child: &mut std::process::Child, stdin: Option<ChildStdin>, name: &str) {
    drop(stdin); // the server exits on end of input
    let deadline = Instant::now() + CHILD_EXIT_WAIT;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break,
        }
    }
    eprintln!(
        "keel-bench: the {name} server (pid {}) did not exit; killing it",
        child.id()
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Says `port N` on `out`: the first line a server child prints, which
/// [`ChildServer::start`] waits for.
pub fn announce_port(out: &mut impl Write, port: u16) -> std::io::Result<()> {
    writeln!(out, "port {port}")?;
    out.flush()
}

/// utime + stime (fields 14 and 15 of `/proc/<pid>/stat`), in clock ticks.
/// The command name (field 2) is in parentheses and may hold spaces or
/// parentheses itself, so fields are counted after the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace(); // field 3 (state) first
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}
