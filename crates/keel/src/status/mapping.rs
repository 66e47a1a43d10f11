//! How a [`Code`] reads on each protocol: one table, used by every transport.
//!
//! | Keel code | gRPC status | HTTP status |
//! |---|---|---|
//! | `Ok` (0) | `OK` | 200 |
//! | `Cancelled` .. `Unauthenticated` (1-16) | the same code | as `google/rpc/code.proto` says: 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401 |
//! | `EHOSTDOWN` (112) | `UNAVAILABLE` | 503 |
//! | `ECANCELED` (125) | `CANCELLED` | 499 |
//! | `ENOSERVICE` (1001), `ENOMETHOD` (1002) | `UNIMPLEMENTED` | 404 |
//! | `EREQUEST` (1003) | `INVALID_ARGUMENT` | 400 |
//! | `ERPCAUTH` (1004) | `UNAUTHENTICATED` | 401 |
//! | `ETOOMANYFAILS` (1005) | `UNAVAILABLE` | 503 |
//! | `EPCHANFINISH` (1006), `EBACKUPREQUEST` (1007) | `INTERNAL` | 500 |
//! | `ERPCTIMEDOUT` (1008) | `DEADLINE_EXCEEDED` | 504 |
//! | `EFAILEDSOCKET` (1009) | `UNAVAILABLE` | 503 |
//! | `EHTTP` (1010) | `INVALID_ARGUMENT` | 400 |
//! | `EOVERCROWDED` (1011) | `UNAVAILABLE` | 503 |
//! | `EINTERNAL` (2001), `ERESPONSE` (2002) | `INTERNAL` | 500 |
//! | `ELOGOFF` (2003) | `UNAVAILABLE` | 503 |
//! | `ELIMIT` (2004) | `UNAVAILABLE` | 503 |
//! | `ECLOSE` (2005) | `UNAVAILABLE` | 503 |
//! | any other (an application's) | `UNKNOWN` | 500 |
//!
//! `ELIMIT` (the server's concurrency limit) reads as `UNAVAILABLE`, as
//! grpc-go answers load it sheds: the call did not run, and clients retry
//! `UNAVAILABLE` on another server, which is what a shed call wants.
//!
//! On baidu_std every code travels as its own number in
//! `RpcResponseMeta.error_code`, so brpc peers read brpc's errnos unchanged.
//! A code whose gRPC status is not its own number (brpc's errnos and
//! application codes) also travels to Keel peers in the `keel-code`
//! trailer, so a Keel client gets back exactly the code a Keel handler
//! returned on every protocol ([`Code::from_grpc`] takes it into account
//! when given). gRPC statuses read back as the canonical code of the same
//! number, and numbers outside 0-16 pass through unchanged.

use super::Code;

/// One row of the table: a code, its gRPC status and its HTTP status.
struct Row {
    code: Code,
    grpc: u8,
    http: u16,
}

const fn row(code: Code, grpc: Code, http: u16) -> Row {
    Row {
        code,
        grpc: grpc.0 as u8,
        http,
    }
}

/// The table above, in value order.
const TABLE: &[Row] = &[
    row(Code::Ok, Code::Ok, 200),
    row(Code::Cancelled, Code::Cancelled, 499),
    row(Code::Unknown, Code::Unknown, 500),
    row(Code::InvalidArgument, Code::InvalidArgument, 400),
    row(Code::DeadlineExceeded, Code::DeadlineExceeded, 504),
    row(Code::NotFound, Code::NotFound, 404),
    row(Code::AlreadyExists, Code::AlreadyExists, 409),
    row(Code::PermissionDenied, Code::PermissionDenied, 403),
    row(Code::ResourceExhausted, Code::ResourceExhausted, 429),
    row(Code::FailedPrecondition, Code::FailedPrecondition, 400),
    row(Code::Aborted, Code::Aborted, 409),
    row(Code::OutOfRange, Code::OutOfRange, 400),
    row(Code::Unimplemented, Code::Unimplemented, 501),
    row(Code::Internal, Code::Internal, 500),
    row(Code::Unavailable, Code::Unavailable, 503),
    row(Code::DataLoss, Code::DataLoss, 500),
    row(Code::Unauthenticated, Code::Unauthenticated, 401),
    row(Code::EHOSTDOWN, Code::Unavailable, 503),
    row(Code::ECANCELED, Code::Cancelled, 499),
    row(Code::ENOSERVICE, Code::Unimplemented, 404),
    row(Code::ENOMETHOD, Code::Unimplemented, 404),
    row(Code::EREQUEST, Code::InvalidArgument, 400),
    row(Code::ERPCAUTH, Code::Unauthenticated, 401),
    row(Code::ETOOMANYFAILS, Code::Unavailable, 503),
    row(Code::EPCHANFINISH, Code::Internal, 500),
    row(Code::EBACKUPREQUEST, Code::Internal, 500),
    row(Code::ERPCTIMEDOUT, Code::DeadlineExceeded, 504),
    row(Code::EFAILEDSOCKET, Code::Unavailable, 503),
    row(Code::EHTTP, Code::InvalidArgument, 400),
    row(Code::EOVERCROWDED, Code::Unavailable, 503),
    row(Code::EINTERNAL, Code::Internal, 500),
    row(Code::ERESPONSE, Code::Internal, 500),
    row(Code::ELOGOFF, Code::Unavailable, 503),
    row(Code::ELIMIT, Code::Unavailable, 503),
    row(Code::ECLOSE, Code::Unavailable, 503),
];

fn find(code: Code) -> Option<&'static Row> {
    TABLE
        .binary_search_by_key(&code, |row| row.code)
        .ok()
        .map(|i| &TABLE[i])
}

impl Code {
    /// The gRPC status code this code is sent as (see [`mapping`](self)).
    pub fn grpc(self) -> u32 {
        find(self).map_or(Code::Unknown.0 as u32, |row| u32::from(row.grpc))
    }

    /// Whether the gRPC status alone loses this code (a brpc errno or an
    /// application code): then it also travels in the `keel-code` trailer.
    pub fn needs_keel_code(self) -> bool {
        self.grpc() as i32 != self.0
    }

    /// The code of a gRPC status: `keel_code`, the `keel-code` trailer a
    /// Keel server adds, when present and consistent with `grpc`; else the
    /// canonical code with `grpc`'s number (numbers above 16 pass through,
    /// ones that fit no `i32` read as `Unknown`).
    pub fn from_grpc(grpc: u32, keel_code: Option<i32>) -> Code {
        let plain = i32::try_from(grpc).map_or(Code::Unknown, Code);
        match keel_code.map(Code) {
            Some(exact) if exact.grpc() == grpc => exact,
            _ => plain,
        }
    }

    /// The HTTP status a failed HTTP call with this code answers (see
    /// [`mapping`](self)); application codes answer 500.
    pub fn http_status(self) -> u16 {
        find(self).map_or(500, |row| row.http)
    }

    /// The code of an HTTP status from a server that sent no Keel code, as
    /// gRPC's "HTTP to gRPC status code mapping" reads it: 400 `Internal`,
    /// 401 `Unauthenticated`, 403 `PermissionDenied`, 404 `Unimplemented`,
    /// 429, 502, 503 and 504 `Unavailable`, any other `Unknown`.
    pub fn from_http_status(status: u16) -> Code {
        match status {
            200..=299 => Code::Ok,
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_code_has_one_row_in_value_order() {
        let codes: Vec<Code> = TABLE.iter().map(|row| row.code).collect();
        assert_eq!(codes, Code::NAMED);
    }

    #[test]
    fn canonical_codes_are_their_own_grpc_status() {
        for value in 0..=16 {
            let code = Code::new(value);
            assert_eq!(code.grpc(), value as u32);
            assert!(!code.needs_keel_code());
            assert_eq!(Code::from_grpc(value as u32, None), code);
            assert!(code.name().is_some());
        }
    }

    #[test]
    fn brpc_codes_map_as_documented_and_round_trip_between_keel_peers() {
        let cases = [
            (Code::ERPCTIMEDOUT, Code::DeadlineExceeded, 504),
            (Code::ENOMETHOD, Code::Unimplemented, 404),
            (Code::ENOSERVICE, Code::Unimplemented, 404),
            (Code::ELIMIT, Code::Unavailable, 503),
            (Code::EREQUEST, Code::InvalidArgument, 400),
            (Code::ERPCAUTH, Code::Unauthenticated, 401),
            (Code::ECANCELED, Code::Cancelled, 499),
            (Code::EINTERNAL, Code::Internal, 500),
        ];
        for (code, grpc, http) in cases {
            assert_eq!(code.grpc(), grpc.value() as u32, "{code}");
            assert_eq!(code.http_status(), http, "{code}");
            assert!(code.needs_keel_code());
            assert_eq!(Code::from_grpc(code.grpc(), Some(code.value())), code);
            // A peer that is not Keel sends no keel-code: the canonical code.
            assert_eq!(Code::from_grpc(code.grpc(), None), grpc);
        }
    }

    #[test]
    fn application_codes_are_unknown_on_the_wire_and_exact_between_keel_peers() {
        let code = Code::new(404_001);
        assert_eq!(code.grpc(), 2);
        assert_eq!(code.http_status(), 500);
        assert_eq!(Code::from_grpc(2, Some(404_001)), code);
        // A keel-code that contradicts the status is ignored.
        assert_eq!(Code::from_grpc(5, Some(404_001)), Code::NotFound);
        // Statuses outside 0-16 from other peers pass through unchanged.
        assert_eq!(Code::from_grpc(42, None), Code::new(42));
        assert_eq!(Code::from_grpc(u32::MAX, None), Code::Unknown);
    }

    #[test]
    fn http_statuses_read_back_as_grpc_specifies() {
        assert_eq!(Code::from_http_status(200), Code::Ok);
        assert_eq!(Code::from_http_status(401), Code::Unauthenticated);
        assert_eq!(Code::from_http_status(404), Code::Unimplemented);
        assert_eq!(Code::from_http_status(503), Code::Unavailable);
        assert_eq!(Code::from_http_status(418), Code::Unknown);
    }
}
