//! Errors of a call: a numeric [`Code`] and a human message, carried to the
//! caller unchanged.
//!
//! Two families of codes have names: gRPC's 17 canonical codes
//! ([`Code::NotFound`], values 0-16) and brpc's framework errnos
//! ([`Code::ERPCTIMEDOUT`], values 112, 125 and 1001-2005). Any other `i32` is
//! an application's code and passes through unchanged. How every code reads
//! on each protocol (gRPC status, HTTP status, baidu_std `error_code`) is one
//! table, in [`mapping`].

use std::borrow::Cow;
use std::fmt;

pub mod mapping;

/// An error code, as carried in baidu_std's `RpcResponseMeta.error_code`.
///
/// The named constants are gRPC's canonical codes (`Code::NotFound`, with
/// the values gRPC gives them) and brpc's framework errnos
/// (`brpc/errno.proto`: `Code::ERPCTIMEDOUT`), so gRPC, brpc and Keel peers
/// read each other's failures. Any other `i32` is an application code chosen
/// by a handler and passes through unchanged. Codes compare by value and work
/// in patterns:
///
/// ```
/// use keel::Code;
/// fn retryable(code: Code) -> bool {
///     matches!(code, Code::EFAILEDSOCKET | Code::EOVERCROWDED | Code::Unavailable)
/// }
/// assert!(retryable(Code::new(1009)));
/// assert!(retryable(Code::new(14)));
/// assert!(!retryable(Code::new(42)));
/// assert_eq!(Code::NotFound.value(), 5);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(i32);

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal, $text:literal;)*) => {
        #[allow(non_upper_case_globals)]
        impl Code {
            $( $(#[$doc])* pub const $name: Code = Code($value); )*

            /// Every named code, in value order.
            pub const NAMED: &'static [Code] = &[$(Code($value)),*];

            /// The name of this code's constant (`"NotFound"`,
            /// `"ERPCTIMEDOUT"`), if it is a gRPC or a brpc code.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some(stringify!($name)), )*
                    _ => None,
                }
            }

            /// A one-line description (`"RPC call is timed out"`), if the
            /// code has a name.
            pub const fn description(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some($text), )*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    /// Success: never the code of a [`Status`] (gRPC's `OK`, 0).
    Ok = 0, "OK";
    /// The operation was cancelled, typically by the caller (gRPC's
    /// `CANCELLED`, 1).
    Cancelled = 1, "Cancelled";
    /// An error with no better code, such as an unknown code from another
    /// address space (gRPC's `UNKNOWN`, 2).
    Unknown = 2, "Unknown error";
    /// The caller gave an invalid argument, whatever the system's state
    /// (gRPC's `INVALID_ARGUMENT`, 3).
    InvalidArgument = 3, "Invalid argument";
    /// The deadline expired before the operation could complete (gRPC's
    /// `DEADLINE_EXCEEDED`, 4).
    DeadlineExceeded = 4, "Deadline exceeded";
    /// A requested entity was not found (gRPC's `NOT_FOUND`, 5).
    NotFound = 5, "Not found";
    /// The entity a caller tried to create already exists (gRPC's
    /// `ALREADY_EXISTS`, 6).
    AlreadyExists = 6, "Already exists";
    /// The caller may not do this (gRPC's `PERMISSION_DENIED`, 7).
    PermissionDenied = 7, "Permission denied";
    /// A resource, such as a quota, is exhausted (gRPC's
    /// `RESOURCE_EXHAUSTED`, 8).
    ResourceExhausted = 8, "Resource exhausted";
    /// The system is not in the state the operation needs (gRPC's
    /// `FAILED_PRECONDITION`, 9).
    FailedPrecondition = 9, "Failed precondition";
    /// The operation was aborted, typically by a concurrency conflict
    /// (gRPC's `ABORTED`, 10).
    Aborted = 10, "Aborted";
    /// The operation went past the valid range (gRPC's `OUT_OF_RANGE`, 11).
    OutOfRange = 11, "Out of range";
    /// The operation is not implemented or supported (gRPC's
    /// `UNIMPLEMENTED`, 12).
    Unimplemented = 12, "Unimplemented";
    /// An internal invariant broke (gRPC's `INTERNAL`, 13).
    Internal = 13, "Internal error";
    /// The service is unavailable for now; a retry may succeed (gRPC's
    /// `UNAVAILABLE`, 14).
    Unavailable = 14, "Unavailable";
    /// Unrecoverable data loss or corruption (gRPC's `DATA_LOSS`, 15).
    DataLoss = 15, "Data loss";
    /// The request has no valid credentials (gRPC's `UNAUTHENTICATED`, 16).
    Unauthenticated = 16, "Unauthenticated";
    /// No server of the channel can take the call: none is known, or every
    /// one is isolated or excluded (Linux's errno, as brpc uses it; 112).
    EHOSTDOWN = 112, "Host is down";
    /// The call was cancelled: its caller went away before the answer (a
    /// dropped call, a closed connection; Linux's errno, as brpc uses it;
    /// 125).
    ECANCELED = 125, "Operation canceled";
    /// No such service on the server (1001).
    ENOSERVICE = 1001, "No such service";
    /// The service has no such method (1002).
    ENOMETHOD = 1002, "No such method";
    /// The request could not be decoded or is invalid (1003).
    EREQUEST = 1003, "Bad request";
    /// Authentication failed (1004).
    ERPCAUTH = 1004, "Authentication failed";
    /// Too many sub-calls of a parallel call failed (1005).
    ETOOMANYFAILS = 1005, "Too many sub calls failed";
    /// A parallel channel finished (1006).
    EPCHANFINISH = 1006, "ParallelChannel finished";
    /// A backup request was sent (1007).
    EBACKUPREQUEST = 1007, "Sending backup request";
    /// The call's deadline passed before a response arrived (1008).
    ERPCTIMEDOUT = 1008, "RPC call is timed out";
    /// The connection broke (1009).
    EFAILEDSOCKET = 1009, "Broken socket";
    /// A bad HTTP call (1010).
    EHTTP = 1010, "Bad http call";
    /// The server is overcrowded: too many pending writes (1011).
    EOVERCROWDED = 1011, "The server is overcrowded";
    /// The server failed internally (2001).
    EINTERNAL = 2001, "Internal server error";
    /// The response could not be decoded or is invalid (2002).
    ERESPONSE = 2002, "Bad response";
    /// The server is stopping (2003).
    ELOGOFF = 2003, "Server is stopping";
    /// The server reached its concurrency limit (2004).
    ELIMIT = 2004, "Reached server's max_concurrency";
    /// The connection was closed on purpose (2005).
    ECLOSE = 2005, "Close socket initiatively";
}

impl Code {
    /// The code with numeric value `value` (brpc's or an application's).
    pub const fn new(value: i32) -> Code {
        Code(value)
    }

    /// The numeric value, as sent on the wire.
    pub const fn value(self) -> i32 {
        self.0
    }
}

impl From<i32> for Code {
    fn from(value: i32) -> Code {
        Code(value)
    }
}

impl From<Code> for i32 {
    fn from(code: Code) -> i32 {
        code.0
    }
}

/// `ERPCTIMEDOUT(1008)` or `NotFound(5)` for named codes, `E42` for others.
impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}({})", self.0),
            None => write!(f, "E{}", self.0),
        }
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A failed call: a [`Code`] and a message for people.
///
/// Handlers return it to fail a call; the server sends code and message to
/// the caller, who gets an equal `Status`. Static messages cost no
/// allocation (`Status::new(code, "text")`).
///
/// ```
/// use keel::{Code, Status};
/// let status = Status::new(Code::ERPCTIMEDOUT, "reached timeout=100ms");
/// assert_eq!(status.to_string(), "ERPCTIMEDOUT(1008): reached timeout=100ms");
/// assert_eq!(Status::new(Code::new(42), "out of stock").to_string(), "E42: out of stock");
/// ```
#[derive(Clone, thiserror::Error)]
pub struct Status {
    code: Code,
    message: Cow<'static, str>,
    /// Set by a transport whose attempt failed before any byte of the
    /// request was written (a refused connection, a connection lost before
    /// the request went out): no handler can have run it. The retry loop
    /// reads it (a retry after such a failure costs no retry budget); it is
    /// never sent on the wire and takes no part in equality.
    unwritten: bool,
    /// Structured details (gRPC's `grpc-status-details-bin`, usually an
    /// encoded `google.rpc.Status`); boxed, as most failures carry none.
    details: Option<Box<bytes::Bytes>>,
}

/// Code, message and details: two statuses that read the same are equal.
impl PartialEq for Status {
    fn eq(&self, other: &Status) -> bool {
        self.code == other.code && self.message == other.message && self.details == other.details
    }
}

impl Eq for Status {}

impl Status {
    /// A failure with `code` and `message`.
    ///
    /// Code 0 means success on the wire, so it is replaced by
    /// [`Code::EINTERNAL`] (a failure must never read as success).
    pub fn new(code: Code, message: impl Into<Cow<'static, str>>) -> Status {
        let code = if code.0 == 0 { Code::EINTERNAL } else { code };
        Status {
            code,
            message: message.into(),
            unwritten: false,
            details: None,
        }
    }

    /// This status, marked as the failure of an attempt whose request was
    /// not written at all (see [`request_unwritten`](Self::request_unwritten)).
    pub(crate) fn with_request_unwritten(mut self) -> Status {
        self.unwritten = true;
        self
    }

    /// Whether a transport reported that the failed attempt wrote no byte
    /// of its request, so no handler can have run it.
    pub(crate) fn request_unwritten(&self) -> bool {
        self.unwritten
    }

    /// This status with structured `details` attached: gRPC carries them
    /// in `grpc-status-details-bin` (an encoded `google.rpc.Status`, by
    /// convention), both ways and through Keel unchanged; baidu_std has no
    /// place for them and drops them.
    #[must_use]
    pub fn with_details(mut self, details: impl Into<bytes::Bytes>) -> Status {
        let details = details.into();
        self.details = (!details.is_empty()).then(|| Box::new(details));
        self
    }

    /// The structured details (empty when there are none).
    pub fn details(&self) -> &[u8] {
        self.details.as_deref().map_or(&[], |d| &d[..])
    }

    /// The error code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message (may be empty).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// [`Code::EINTERNAL`] with `message`: brpc's internal error, which
    /// reads as gRPC's `INTERNAL` on gRPC and as HTTP 500 (see [`mapping`]);
    /// `Status::new(Code::Internal, ..)` gives gRPC's own code 13.
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Status {
        Status::new(Code::EINTERNAL, message)
    }

    /// [`Code::EREQUEST`] with `message`: the request is invalid.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Status {
        Status::new(Code::EREQUEST, message)
    }
}

macro_rules! canonical_constructors {
    ($($fn_name:ident => $code:ident),* $(,)?) => {
        /// One constructor per gRPC canonical code, named as tonic and
        /// grpc-go name them: `Status::not_found("no such item")` is
        /// `Status::new(Code::NotFound, "no such item")`.
        impl Status {
            $(
                #[doc = concat!("[`Code::", stringify!($code), "`] with `message`.")]
                pub fn $fn_name(message: impl Into<Cow<'static, str>>) -> Status {
                    Status::new(Code::$code, message)
                }
            )*
        }
    };
}

canonical_constructors! {
    cancelled => Cancelled,
    unknown => Unknown,
    invalid_argument => InvalidArgument,
    deadline_exceeded => DeadlineExceeded,
    not_found => NotFound,
    already_exists => AlreadyExists,
    permission_denied => PermissionDenied,
    resource_exhausted => ResourceExhausted,
    failed_precondition => FailedPrecondition,
    aborted => Aborted,
    out_of_range => OutOfRange,
    unimplemented => Unimplemented,
    unavailable => Unavailable,
    data_loss => DataLoss,
    unauthenticated => Unauthenticated,
}

/// `CODE(n): message`, or brpc's description when the message is empty.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match (&*self.message, self.code.description()) {
            ("", Some(description)) => description,
            (message, _) => message,
        };
        write!(f, "{}: {text}", self.code)
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Status");
        debug
            .field("code", &self.code)
            .field("message", &self.message);
        if let Some(details) = &self.details {
            debug.field("details_len", &details.len());
        }
        debug.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brpc_values() {
        let table = [
            (Code::ENOSERVICE, 1001),
            (Code::ENOMETHOD, 1002),
            (Code::EREQUEST, 1003),
            (Code::ERPCAUTH, 1004),
            (Code::ETOOMANYFAILS, 1005),
            (Code::EBACKUPREQUEST, 1007),
            (Code::ERPCTIMEDOUT, 1008),
            (Code::EFAILEDSOCKET, 1009),
            (Code::EHTTP, 1010),
            (Code::EOVERCROWDED, 1011),
            (Code::EINTERNAL, 2001),
            (Code::ERESPONSE, 2002),
            (Code::ELOGOFF, 2003),
            (Code::ELIMIT, 2004),
            (Code::ECLOSE, 2005),
        ];
        for (code, value) in table {
            assert_eq!(code.value(), value);
            assert_eq!(Code::from(value), code);
            assert!(code.name().is_some_and(|n| n.starts_with('E')));
        }
        assert_eq!(Code::ENOMETHOD.name(), Some("ENOMETHOD"));
    }

    #[test]
    fn application_codes_pass_through() {
        let code = Code::new(-7);
        assert_eq!(code.name(), None);
        assert_eq!(i32::from(code), -7);
        assert_eq!(code.to_string(), "E-7");
    }

    #[test]
    fn display_has_name_number_and_text() {
        let s = Status::new(Code::ENOMETHOD, "no method Foo in example.EchoService");
        assert_eq!(
            s.to_string(),
            "ENOMETHOD(1002): no method Foo in example.EchoService"
        );
        assert_eq!(
            Status::new(Code::ELIMIT, "").to_string(),
            "ELIMIT(2004): Reached server's max_concurrency"
        );
        let err: &dyn std::error::Error = &s;
        assert!(err.source().is_none());
    }

    #[test]
    fn canonical_codes_have_names_and_constructors() {
        let s = Status::not_found("no item 7");
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.to_string(), "NotFound(5): no item 7");
        assert_eq!(
            Status::unauthenticated("").to_string(),
            "Unauthenticated(16): Unauthenticated"
        );
        let built: [(Status, Code); 16] = [
            (Status::cancelled(""), Code::Cancelled),
            (Status::unknown(""), Code::Unknown),
            (Status::invalid_argument(""), Code::InvalidArgument),
            (Status::deadline_exceeded(""), Code::DeadlineExceeded),
            (Status::not_found(""), Code::NotFound),
            (Status::already_exists(""), Code::AlreadyExists),
            (Status::permission_denied(""), Code::PermissionDenied),
            (Status::resource_exhausted(""), Code::ResourceExhausted),
            (Status::failed_precondition(""), Code::FailedPrecondition),
            (Status::aborted(""), Code::Aborted),
            (Status::out_of_range(""), Code::OutOfRange),
            (Status::unimplemented(""), Code::Unimplemented),
            (Status::new(Code::Internal, ""), Code::Internal),
            (Status::unavailable(""), Code::Unavailable),
            (Status::data_loss(""), Code::DataLoss),
            (Status::unauthenticated(""), Code::Unauthenticated),
        ];
        for (i, (status, code)) in built.into_iter().enumerate() {
            assert_eq!(status.code(), code);
            assert_eq!(code.value(), i as i32 + 1);
        }
    }

    #[test]
    fn code_zero_is_never_a_failure_code() {
        assert_eq!(Status::new(Code::new(0), "oops").code(), Code::EINTERNAL);
    }
}
