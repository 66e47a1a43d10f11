//! Per-call options a client carries: timeout, attachment, metadata,
//! compression, log id, hash key, retries.

use std::time::Duration;

use bytes::Bytes;

use crate::compression::Compression;
use crate::metadata::Metadata;

/// Options applied to every call a [`Client`](crate::Client) makes.
///
/// Plain data: `Default` (and [`CallOptions::new`], usable in `const`) and
/// `clone` allocate nothing — the attachment is a [`Bytes`], empty by
/// default and shared by reference count otherwise. Derive a client with
/// other options through `with_options`:
///
/// ```
/// use std::time::Duration;
/// use keel::CallOptions;
/// let options = CallOptions {
///     timeout: Some(Duration::from_millis(200)),
///     log_id: 7,
///     ..CallOptions::default()
/// };
/// assert_eq!(options.max_retry, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallOptions {
    /// Fail with [`Code::ERPCTIMEDOUT`](crate::Code::ERPCTIMEDOUT) when no
    /// response arrived in time; the server sees the deadline in its
    /// [`Context`](crate::Context). `None`: the channel's default timeout
    /// applies (1 s unless [`ChannelBuilder::timeout`](crate::ChannelBuilder::timeout)
    /// set another, or `None` there for no limit at all). Enforced with
    /// tokio's timer: the runtime needs the time driver (`enable_time`, or
    /// `enable_all`).
    pub timeout: Option<Duration>,
    /// Raw bytes sent after the request message (baidu_std attachment).
    pub attachment: Bytes,
    /// String key/value pairs sent with the request (baidu_std
    /// `user_fields`); the server reads them from its
    /// [`Context::metadata`](crate::Context::metadata).
    pub metadata: Metadata,
    /// Compression of the request payload.
    pub compression: Compression,
    /// Opaque id the server logs with the call (baidu_std `log_id`).
    pub log_id: u64,
    /// Key for consistent-hashing load balancers (brpc's `request_code`).
    /// Calls that leave it 0 all hash alike, so they all go to one server.
    pub hash_key: u64,
    /// Retries after a retryable failure; `None` uses the channel's default.
    pub max_retry: Option<u32>,
}

impl CallOptions {
    /// The defaults, as a `const`: the channel's timeout, no attachment, no
    /// metadata, no compression.
    pub const fn new() -> CallOptions {
        CallOptions {
            timeout: None,
            attachment: Bytes::new(),
            metadata: Metadata::new(),
            compression: Compression::None,
            log_id: 0,
            hash_key: 0,
            max_retry: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn const_new_is_default() {
        const OPTIONS: CallOptions = CallOptions::new();
        assert_eq!(OPTIONS, CallOptions::default());
    }
}
