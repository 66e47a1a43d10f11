//! Per-call options a client carries: timeout, attachment, compression,
//! log id, hash key, retries.

use std::time::Duration;

use bytes::Bytes;

/// How the request payload is compressed on the wire (baidu_std's
/// `compress_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Not compressed.
    #[default]
    None,
    /// Snappy (baidu_std value 1).
    Snappy,
    /// Gzip (baidu_std value 2).
    Gzip,
}

impl Compression {
    /// The baidu_std `compress_type` value.
    pub const fn wire_value(self) -> i32 {
        match self {
            Compression::None => 0,
            Compression::Snappy => 1,
            Compression::Gzip => 2,
        }
    }

    /// The compression for a baidu_std `compress_type`, if Keel supports it.
    pub const fn from_wire_value(value: i32) -> Option<Compression> {
        match value {
            0 => Some(Compression::None),
            1 => Some(Compression::Snappy),
            2 => Some(Compression::Gzip),
            _ => None,
        }
    }
}

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
    /// [`Context`](crate::Context). `None`: wait as long as it takes.
    /// Enforced with tokio's timer: the runtime needs the time driver
    /// (`enable_time`, or `enable_all`).
    pub timeout: Option<Duration>,
    /// Raw bytes sent after the request message (baidu_std attachment).
    pub attachment: Bytes,
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
    /// The defaults, as a `const`: no timeout, no attachment, no compression.
    pub const fn new() -> CallOptions {
        CallOptions {
            timeout: None,
            attachment: Bytes::new(),
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

    #[test]
    fn compression_wire_values_round_trip() {
        for c in [Compression::None, Compression::Snappy, Compression::Gzip] {
            assert_eq!(Compression::from_wire_value(c.wire_value()), Some(c));
        }
        assert_eq!(Compression::from_wire_value(3), None);
    }
}
