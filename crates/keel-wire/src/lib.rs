//! Keel's wire formats as pure types and functions: no sockets, no tasks, no
//! clocks.
//!
//! Like the `frame` module of the `h2` crate, this crate only turns bytes into
//! values and values into bytes. Connection state, timeouts and I/O live in
//! the `keel` crate, which feeds its read buffers through these functions.
//! Keeping the wire format pure means every function here can be tested byte
//! by byte against captures from real peers, property-tested, and fuzzed (see
//! `fuzz/` at the repository root).
//!
//! What is here:
//!
//! - [`baidu_std`]: brpc's default protocol, so brpc clients and servers
//!   interoperate with Keel's. A frame is a 12-byte header (`PRPC`, body
//!   size, meta size), an `RpcMeta` protobuf, the message, and a raw
//!   attachment. [`baidu_std::decode_frame`] cuts frames off a connection
//!   buffer without copying their bodies, and enforces
//!   [`baidu_std::Limits`] from the header alone, before buffering a body;
//!   [`baidu_std::encode_frame`] writes one into a caller's buffer in place.
//!   For hot paths that must not allocate per call, [`baidu_std::view`]
//!   does the same without owned strings: [`baidu_std::decode_raw_frame`]
//!   and [`baidu_std::MetaView`] read a frame in place,
//!   [`baidu_std::encode_request`] and [`baidu_std::encode_response`] write
//!   one from borrowed fields, byte for byte as `encode_frame` would.
//! - [`protowire`]: the protobuf wire format read in place (varints, keys,
//!   length prefixes, fixed-width values, groups), accepting exactly what
//!   prost accepts. The `RpcMeta` parser above and `keel`'s proto2
//!   `required`-field check both walk messages with it.
//! - [`compress`](mod@compress): the payload compressions brpc names in
//!   `RpcMeta.compress_type` (snappy, gzip, zlib), with decompression bounded
//!   by a limit so a decompression bomb is an error, not an allocation.
//! - [`http2`]: HTTP/2 frames (headers, payloads of every frame type gRPC
//!   needs, writers), for Keel's own HTTP/2 server connection.
//! - [`hpack`]: HTTP/2 header compression (RFC 7541): a [`hpack::Decoder`]
//!   that hands out each field of a header block as borrowed slices without
//!   allocating, and keeps decoding past a too-large header list so the
//!   connection stays in sync; an [`hpack::Encoder`] that sends repeated
//!   fields as one-byte indexes and Huffman-codes strings when shorter.
//! - [`sniff`](sniff()): which protocol a new connection speaks, from its first
//!   bytes, so one port can serve baidu_std, HTTP/2 and HTTP/1.
//!
//! Malformed input never panics: every failure is a [`WireError`] whose
//! message says what was wrong and what to do about it.
//!
//! # Example
//!
//! Encode a request frame into a write buffer, then decode it back as a
//! server reading the same bytes would:
//!
//! ```
//! use bytes::BytesMut;
//! use keel_wire::baidu_std::{decode_frame, encode_frame, Limits, RpcMeta};
//!
//! // An example.EchoRequest { message: "hello" }, already serialized.
//! let payload = b"\x0a\x05hello";
//! let meta = RpcMeta::request("example.EchoService", "Echo", 42).with_attachment_size(3);
//!
//! let mut buf = BytesMut::new();
//! encode_frame(&mut buf, &meta, payload.len(), |b| b.extend_from_slice(payload), b"att")?;
//! assert_eq!(&buf[..4], b"PRPC");
//!
//! let frame = decode_frame(&mut buf, &Limits::default())?.expect("the whole frame is buffered");
//! let request = frame.meta.request.as_ref().expect("a request frame");
//! assert_eq!(request.service_name, "example.EchoService");
//! assert_eq!(request.method_name, "Echo");
//! assert_eq!(frame.meta.correlation_id, 42);
//! assert_eq!(&frame.payload[..], payload);
//! assert_eq!(&frame.attachment[..], b"att");
//! assert!(buf.is_empty(), "the frame was cut off the buffer");
//! # Ok::<(), keel_wire::WireError>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod baidu_std;
pub mod compress;
mod error;
pub mod grpc;
pub mod hpack;
pub mod http2;
pub mod protowire;
mod sniff;

pub use compress::{
    CompressType, DEFLATE_MAX_RATIO, compress, decompress, decompress_into, max_expansion,
};
pub use error::{BadMetaReason, WireError};
pub use sniff::{HTTP2_PREFACE, SNIFF_MAX_LEN, Sniff, sniff};
