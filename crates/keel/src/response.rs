//! What a call answers: the decoded response message and what the server
//! sent with it.
//!
//! Owns: the [`Response`] type. A leaf that unary calls
//! ([`client`](crate::client)) and client-streaming calls
//! ([`streaming`](crate::streaming)) both hand back; it imports neither.
//! May not touch: calls, decoding, the wire.

use bytes::Bytes;

use crate::metadata::Metadata;

/// A decoded response and what the server sent with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response<T> {
    /// The response message.
    pub message: T,
    /// The raw bytes the server sent after the message.
    pub attachment: Bytes,
    /// The key/value pairs the server sent back
    /// ([`Context::set_response_metadata`](crate::Context::set_response_metadata)).
    pub metadata: Metadata,
}
