//! Payload compression, in one place for every protocol and both sides.
//!
//! Owns: the one [`Compression`] type (brpc's `compress_type` values, from
//! keel-wire) and the two conversions every protocol needs, with the error
//! codes a peer expects: a payload that does not decompress is the
//! sender's fault (`EREQUEST` on a server, `ERESPONSE` on a client), a
//! payload that cannot be compressed is the local side's.
//!
//! May not touch: sockets, frames or calls; it maps bytes to bytes.

use std::cell::Cell;

use bytes::{Bytes, BytesMut};

use crate::status::{Code, Status};

/// How a payload is compressed on the wire: brpc's `compress_type` values
/// (baidu_std `RpcMeta.compress_type`). The same type configures a client's
/// requests ([`CallOptions::compression`](crate::CallOptions::compression))
/// and names what a server received.
pub use keel_wire::CompressType as Compression;

/// Appends `body` compressed as `kind` to `out`. Fails with
/// [`Code::EINTERNAL`] for a compression Keel has no codec for (lz4).
pub(crate) fn compress(kind: Compression, body: &[u8], out: &mut BytesMut) -> Result<(), Status> {
    keel_wire::compress(kind, body, out)
        .map_err(|e| Status::new(Code::EINTERNAL, format!("cannot compress as {kind}: {e}")))
}

/// Two buffers a caller compresses with (the message encoded, then
/// compressed), reused by the thread that compresses: per-call compression
/// allocates nothing once they are warm. [`decompress`] inflates into
/// `plain` too. Take them with [`Scratch::take`],
/// hand them back with [`Scratch::give_back`]; buffers grown past 64 KiB are
/// not kept (rule R7).
#[derive(Default)]
pub(crate) struct Scratch {
    pub(crate) plain: BytesMut,
    pub(crate) packed: BytesMut,
}

thread_local! {
    static SCRATCH: Cell<Option<Scratch>> = const { Cell::new(None) };
}

/// Largest buffer a thread keeps for compressing.
const SCRATCH_KEPT: usize = 64 * 1024;

impl Scratch {
    /// This thread's buffers (empty ones the first time, or while another
    /// caller on the thread holds them).
    pub(crate) fn take() -> Scratch {
        SCRATCH.with(Cell::take).unwrap_or_default()
    }

    /// Returns the buffers to this thread, emptied.
    pub(crate) fn give_back(mut self) {
        for buf in [&mut self.plain, &mut self.packed] {
            buf.clear();
            if buf.capacity() > SCRATCH_KEPT {
                *buf = BytesMut::new();
            }
        }
        // A thread being torn down has no cell: the buffers just drop.
        let _ = SCRATCH.try_with(|cell| cell.set(Some(self)));
    }
}

/// Output beyond which a decompression is not run on a connection's own
/// task: a payload that may inflate to more is decompressed in a task of
/// its own (or its caller's), so it never holds up the other calls of its
/// connection.
const INLINE_OUTPUT: usize = 256 * 1024;

/// Whether a payload of `len` bytes compressed as `compress_type` may
/// inflate to more than a connection should decompress on its own task:
/// more than 256 KiB, given the format's largest expansion and `limit`.
pub(crate) fn inflates_large(compress_type: i32, len: usize, limit: usize) -> bool {
    match Compression::try_from(compress_type) {
        Ok(Compression::None) | Err(_) => false,
        Ok(kind) => keel_wire::max_expansion(kind, len).min(limit) > INLINE_OUTPUT,
    }
}

/// The payload a peer sent, decompressed as its `compress_type` says and
/// bounded by `limit` bytes (enforced while inflating). `blame` is the code
/// of a payload that does not decompress: [`Code::EREQUEST`] on a server,
/// [`Code::ERESPONSE`] on a client.
pub(crate) fn decompress(
    compress_type: i32,
    payload: Bytes,
    limit: usize,
    blame: Code,
) -> Result<Bytes, Status> {
    if compress_type == 0 {
        return Ok(payload);
    }
    let kind =
        Compression::try_from(compress_type).map_err(|e| Status::new(blame, e.to_string()))?;
    // Inflated into this thread's reused buffer, which grows once rather
    // than per message, then copied out at its exact size: one allocation
    // per payload, and no spare room kept alive with it. A payload too
    // large for the buffer to be kept is handed over as it is.
    let mut scratch = Scratch::take();
    let inflated = keel_wire::decompress_into(kind, &payload, limit, &mut scratch.plain)
        .map_err(|e| Status::new(blame, e.to_string()))
        .map(|()| {
            if scratch.plain.capacity() > SCRATCH_KEPT {
                std::mem::take(&mut scratch.plain).freeze()
            } else {
                Bytes::copy_from_slice(&scratch.plain)
            }
        });
    scratch.give_back();
    inflated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_blame() {
        let mut packed = BytesMut::new();
        compress(Compression::Gzip, b"hello hello hello", &mut packed).expect("gzip");
        let plain = decompress(2, packed.freeze(), 1 << 20, Code::EREQUEST).expect("inflates");
        assert_eq!(&plain[..], b"hello hello hello");
        let err = decompress(2, Bytes::from_static(b"not gzip"), 1 << 20, Code::ERESPONSE)
            .expect_err("garbage");
        assert_eq!(err.code(), Code::ERESPONSE);
        let err = decompress(99, Bytes::new(), 1, Code::EREQUEST).expect_err("unknown type");
        assert_eq!(err.code(), Code::EREQUEST);
        assert_eq!(
            compress(Compression::Lz4, b"x", &mut BytesMut::new())
                .expect_err("no lz4 codec")
                .code(),
            Code::EINTERNAL
        );
    }
}
