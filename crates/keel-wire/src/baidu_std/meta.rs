//! `RpcMeta` and its parts: brpc's `baidu_rpc_meta.proto`, written by hand.
//!
//! brpc's messages are proto2. Fields brpc marks `required` are `required`
//! here too, so they are always written (brpc rejects a meta without them).
//! Plain scalar fields are written only when they differ from their default,
//! which is what brpc reads for an absent `optional` field anyway; where
//! brpc distinguishes "absent" from "zero" (`timeout_ms`) the field is an
//! `Option`. One exception: `RpcResponseMeta.error_code` is always written,
//! as brpc itself writes it. Unknown fields are skipped when decoding.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::WireError;
use crate::compress::CompressType;

/// The meta of every baidu_std frame (`brpc.policy.RpcMeta`).
///
/// A request carries [`request`](Self::request), a response
/// [`response`](Self::response); both carry the
/// [`correlation_id`](Self::correlation_id) that pairs them.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RpcMeta {
    /// Set on requests: which method to call.
    #[prost(message, optional, tag = "1")]
    pub request: Option<RpcRequestMeta>,
    /// Set on responses: how the call ended.
    #[prost(message, optional, tag = "2")]
    pub response: Option<RpcResponseMeta>,
    /// How the payload is compressed: a [`CompressType`] number (0 none,
    /// 1 snappy, 2 gzip, 3 zlib, 4 lz4). The attachment is never compressed.
    #[prost(int32, tag = "3")]
    pub compress_type: i32,
    /// Chosen by the client; the response echoes it. Replies on one
    /// connection may come in any order and are matched by this id.
    #[prost(int64, tag = "4")]
    pub correlation_id: i64,
    /// Length of the raw attachment at the end of the body.
    #[prost(int32, tag = "5")]
    pub attachment_size: i32,
    /// Set on the chunks of a chunked message.
    #[prost(message, optional, tag = "6")]
    pub chunk_info: Option<ChunkInfo>,
    /// Credentials checked by the server's authenticator.
    #[prost(bytes = "bytes", tag = "7")]
    pub authentication_data: Bytes,
    /// Set when a call opens or accepts a brpc stream.
    #[prost(message, optional, tag = "8")]
    pub stream_settings: Option<StreamSettings>,
    /// Free-form key/value pairs (brpc's `request_user_fields` /
    /// `response_user_fields`).
    #[prost(btree_map = "string, string", tag = "9")]
    pub user_fields: BTreeMap<String, String>,
    /// Payload encoding, written by newer brpc (0: protobuf binary).
    #[prost(int32, tag = "10")]
    pub content_type: i32,
    /// Checksum algorithm over the payload, written by newer brpc (0: none).
    #[prost(int32, tag = "11")]
    pub checksum_type: i32,
    /// The checksum's value, when `checksum_type` is not 0.
    #[prost(bytes = "bytes", tag = "12")]
    pub checksum_value: Bytes,
}

/// The request half of [`RpcMeta`] (`brpc.policy.RpcRequestMeta`).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RpcRequestMeta {
    /// The service's full protobuf name, e.g. `example.EchoService`.
    #[prost(string, required, tag = "1")]
    pub service_name: String,
    /// The method's name within the service, e.g. `Echo`.
    #[prost(string, required, tag = "2")]
    pub method_name: String,
    /// A client-chosen id for logs.
    #[prost(int64, tag = "3")]
    pub log_id: i64,
    /// rpcz trace id (0: none).
    #[prost(int64, tag = "4")]
    pub trace_id: i64,
    /// rpcz span id of the client span (0: none).
    #[prost(int64, tag = "5")]
    pub span_id: i64,
    /// rpcz span id of the client span's parent (0: none).
    #[prost(int64, tag = "6")]
    pub parent_span_id: i64,
    /// Like HTTP's `x-request-id`.
    #[prost(string, tag = "7")]
    pub request_id: String,
    /// The client's timeout for this call, if it has one.
    #[prost(int32, optional, tag = "8")]
    pub timeout_ms: Option<i32>,
}

/// The response half of [`RpcMeta`] (`brpc.policy.RpcResponseMeta`).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RpcResponseMeta {
    /// 0 on success, else a brpc error code (see [`errno`](super::errno)) or
    /// an application's own.
    ///
    /// Always written, even when 0: brpc writes it that way (so
    /// `response {}` is never empty on the wire), and Keel's frames match
    /// brpc's. brpc's proto has it `optional`; an absent one reads as 0.
    #[prost(int32, required, tag = "1")]
    pub error_code: i32,
    /// What went wrong, for people.
    #[prost(string, tag = "2")]
    pub error_text: String,
}

/// Position of one chunk in a chunked message (`brpc.ChunkInfo`).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ChunkInfo {
    /// The stream the chunk belongs to.
    #[prost(int64, required, tag = "1")]
    pub stream_id: i64,
    /// The chunk's index.
    #[prost(int64, required, tag = "2")]
    pub chunk_id: i64,
}

/// Settings of a brpc stream opened by a call (`brpc.StreamSettings`).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct StreamSettings {
    /// The sender's id for the stream.
    #[prost(int64, required, tag = "1")]
    pub stream_id: i64,
    /// Whether the receiver must send consumption feedback.
    #[prost(bool, tag = "2")]
    pub need_feedback: bool,
    /// Whether the stream may be written to.
    #[prost(bool, tag = "3")]
    pub writable: bool,
}

impl RpcMeta {
    /// The meta of a request to `service`/`method`.
    ///
    /// `service` is the service's full protobuf name (`example.EchoService`).
    /// Set [`attachment_size`](Self::attachment_size) too if the frame
    /// carries an attachment.
    pub fn request(
        service: impl Into<String>,
        method: impl Into<String>,
        correlation_id: i64,
    ) -> RpcMeta {
        RpcMeta {
            request: Some(RpcRequestMeta {
                service_name: service.into(),
                method_name: method.into(),
                ..RpcRequestMeta::default()
            }),
            correlation_id,
            ..RpcMeta::default()
        }
    }

    /// The meta of a response to the request with `correlation_id`.
    ///
    /// `error_code` 0 means success (then `error_text` is normally empty);
    /// see [`errno`](super::errno) for brpc's codes.
    pub fn response(
        correlation_id: i64,
        error_code: i32,
        error_text: impl Into<String>,
    ) -> RpcMeta {
        RpcMeta {
            response: Some(RpcResponseMeta {
                error_code,
                error_text: error_text.into(),
            }),
            correlation_id,
            ..RpcMeta::default()
        }
    }

    /// Sets [`attachment_size`](Self::attachment_size), for chaining.
    pub fn with_attachment_size(mut self, attachment_size: i32) -> RpcMeta {
        self.attachment_size = attachment_size;
        self
    }

    /// The response's error code: 0 for success, and for a meta without a
    /// response part (brpc reads it the same way).
    pub fn error_code(&self) -> i32 {
        self.response.as_ref().map_or(0, |r| r.error_code)
    }

    /// The payload's compression, or [`WireError::UnsupportedCompression`]
    /// for a number brpc does not define.
    pub fn compression(&self) -> Result<CompressType, WireError> {
        CompressType::try_from(self.compress_type)
    }
}

/// brpc's error codes (`brpc/errno.proto`), for
/// [`RpcResponseMeta::error_code`].
///
/// Codes 1xxx blame the request, 2xxx the server. Applications may use their
/// own codes too.
pub mod errno {
    /// The service was not found.
    pub const ENOSERVICE: i32 = 1001;
    /// The method was not found.
    pub const ENOMETHOD: i32 = 1002;
    /// The request is malformed (e.g. its message does not parse).
    pub const EREQUEST: i32 = 1003;
    /// Authentication failed.
    pub const ERPCAUTH: i32 = 1004;
    /// The call timed out.
    pub const ERPCTIMEDOUT: i32 = 1008;
    /// The connection broke.
    pub const EFAILEDSOCKET: i32 = 1009;
    /// The server is overcrowded.
    pub const EOVERCROWDED: i32 = 1011;
    /// The server failed internally.
    pub const EINTERNAL: i32 = 2001;
    /// The response is malformed.
    pub const ERESPONSE: i32 = 2002;
    /// The server is stopping.
    pub const ELOGOFF: i32 = 2003;
    /// The server reached a limit (e.g. max concurrency).
    pub const ELIMIT: i32 = 2004;
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn required_fields_are_written_even_when_empty() {
        // brpc's RpcRequestMeta requires service_name and method_name; a
        // proto3-style encoder would drop empty strings and brpc would then
        // reject the whole meta.
        let meta = RpcMeta::request("", "", 0);
        assert_eq!(meta.encode_to_vec(), [0x0a, 0x04, 0x0a, 0x00, 0x12, 0x00]);
    }

    #[test]
    fn error_code_is_written_even_when_zero() {
        // As brpc writes it (see tests/vectors/echo_response.hex).
        assert_eq!(
            RpcMeta::response(0, 0, "").encode_to_vec(),
            [0x12, 0x02, 0x08, 0x00]
        );
    }

    #[test]
    fn helpers() {
        let meta = RpcMeta::response(9, errno::ENOMETHOD, "no such method").with_attachment_size(3);
        assert_eq!(meta.error_code(), 1002);
        assert_eq!(meta.attachment_size, 3);
        assert_eq!(RpcMeta::request("s", "m", 1).error_code(), 0);
        assert_eq!(meta.compression().ok(), Some(CompressType::None));
    }
}
