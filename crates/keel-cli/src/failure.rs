//! Why a command failed, and the exit code that tells scripts which kind
//! of failure it was.

use std::fmt;

use keel::{Code, Status};

/// The exit codes of `keel` (also in `keel --help` and the README).
pub mod exit {
    /// The command did what it was asked.
    pub const OK: u8 = 0;
    /// Something else failed (a file could not be written, a runtime could
    /// not start).
    pub const OTHER: u8 = 1;
    /// The command line or its input is wrong: an unknown flag (clap's
    /// code), bad JSON, an unknown service or method, a `.proto` that does
    /// not compile.
    pub const USAGE: u8 = 2;
    /// The server could not be reached, or the connection broke.
    pub const TRANSPORT: u8 = 3;
    /// The server answered with an error status (the call's deadline
    /// passing included).
    pub const RPC: u8 = 4;
}

/// The text `keel --help` ends with.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  another failure (a runtime or a file that cannot be written)
  2  usage: bad flags, bad JSON, unknown service or method, a .proto that does not compile
  3  transport: the server cannot be reached, or the connection broke
  4  RPC: the server answered with an error status (or the deadline passed)";

/// A failed command: one line for a person, and its class.
#[derive(Debug)]
pub struct Failure {
    /// The exit code ([`exit`]).
    pub code: u8,
    /// What happened, in one line a person can act on.
    pub message: String,
}

impl Failure {
    /// A wrong command line or input.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: exit::USAGE,
            message: message.into(),
        }
    }

    /// Any other failure.
    pub fn other(message: impl Into<String>) -> Failure {
        Failure {
            code: exit::OTHER,
            message: message.into(),
        }
    }

    /// The server could not be reached.
    pub fn transport(message: impl Into<String>) -> Failure {
        Failure {
            code: exit::TRANSPORT,
            message: message.into(),
        }
    }

    /// A call to `what` failed with `status`: a transport failure when the
    /// connection is to blame, else an RPC error naming the status code.
    pub fn from_status(what: &str, addr: &str, status: &Status) -> Failure {
        if is_transport(status) {
            Failure::transport(format!(
                "cannot reach {addr}: {} (is the server up, and speaking this protocol?)",
                status.message()
            ))
        } else {
            Failure {
                code: exit::RPC,
                message: format!(
                    "{what} failed: {}: {}",
                    code_name(status.code()),
                    status.message()
                ),
            }
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Whether `status` says the connection failed (not the server's answer).
pub fn is_transport(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::EFAILEDSOCKET | Code::EHOSTDOWN | Code::ECLOSE
    )
}

/// `NAME(value)` for a code with a name, `E<value>` otherwise.
pub fn code_name(code: Code) -> String {
    match code.name() {
        Some(name) => format!("{name}({})", code.value()),
        None => format!("E{}", code.value()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classed() {
        let broken = Status::new(Code::EFAILEDSOCKET, "connection refused");
        let f = Failure::from_status("call", "127.0.0.1:1", &broken);
        assert_eq!(f.code, exit::TRANSPORT);
        assert!(f.message.contains("cannot reach 127.0.0.1:1"), "{f}");
        let answered = Status::new(Code::ENOMETHOD, "no such method");
        let f = Failure::from_status("call", "x:1", &answered);
        assert_eq!(f.code, exit::RPC);
        assert!(f.message.contains("ENOMETHOD(1002)"), "{f}");
        assert_eq!(code_name(Code::new(77)), "E77");
    }
}
