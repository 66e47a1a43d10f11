//! The zero-allocation path for baidu_std: frames cut without parsing,
//! metas read in place, requests and responses written from borrowed fields.
//!
//! The prost types ([`RpcMeta`](super::RpcMeta), [`Frame`](super::Frame))
//! own their strings, so decoding a meta allocates one `String` per name and
//! encoding one needs owned `String`s. Servers and clients must not allocate
//! per call (rule R3 in `DESIGN.md`), so their hot paths use this module
//! instead; the prost types stay the reference, and the tests check this
//! path against them field by field and byte for byte.
//!
//! ```text
//!  read buffer (BytesMut)
//!    │ decode_raw_frame: header checked, frame split off, no copy
//!    ▼
//!  RawFrame { body: Bytes, meta_size }
//!    │ .meta(): MetaView<'_>  ── strings / &[u8] borrowed from the body
//!    │ .split(&view): (payload, attachment) ── Bytes slices of the body
//!    ▼
//!  dispatch on view.request.service_name / method_name
//!    │
//!    ▼ encode_response / encode_request: header + meta + payload +
//!  write buffer (BytesMut)   attachment, one reservation, no temporary
//! ```
//!
//! # Example
//!
//! A client writes a request, a server reads it and answers:
//!
//! ```
//! use bytes::{BufMut, BytesMut};
//! use keel_wire::baidu_std::{
//!     decode_raw_frame, encode_request, encode_response, Limits, RequestHeader,
//! };
//!
//! let payload = b"\x0a\x05hello"; // example.EchoRequest { message: "hello" }
//! let mut wire = BytesMut::with_capacity(256);
//! let header = RequestHeader {
//!     timeout_ms: Some(500),
//!     attachment_len: 3,
//!     ..RequestHeader::new("example.EchoService", "Echo", 42)
//! };
//! encode_request(&mut wire, &header, payload.len(), |b| b.put_slice(payload), b"att")?;
//!
//! let frame = decode_raw_frame(&mut wire, &Limits::default())?.expect("a whole frame");
//! let meta = frame.meta()?;
//! let request = meta.request.as_ref().expect("a request");
//! assert_eq!(request.service_name, "example.EchoService");
//! assert_eq!(request.method_name, "Echo");
//! assert_eq!(request.timeout_ms, Some(500));
//! let (message, attachment) = frame.split(&meta)?;
//! assert_eq!((&message[..], &attachment[..]), (&payload[..], &b"att"[..]));
//!
//! encode_response(&mut wire, meta.correlation_id, 0, "", 0, &message, &attachment)?;
//! let answer = decode_raw_frame(&mut wire, &Limits::default())?.expect("a whole frame");
//! assert_eq!(answer.meta()?.correlation_id, 42);
//! assert_eq!(answer.meta()?.error_code(), 0);
//! # Ok::<(), keel_wire::WireError>(())
//! ```

mod encode;
mod fields;
mod frame;
mod meta;

pub use encode::{
    RequestHeader, ResponseHeader, encode_request, encode_response, encode_response_with,
};
pub use frame::{RawFrame, decode_raw_frame};
pub use meta::{
    MetaView, RequestView, ResponseView, UserFields, UserFieldsIter, salvage_correlation_id,
};
