//! Payload compression, as pure functions over byte slices.
//!
//! baidu_std names the compression of a frame's payload in
//! `RpcMeta.compress_type` (the attachment is never compressed). The numbers
//! are brpc's [`CompressType`]: 1 is raw snappy (not the framed format), 2 is
//! gzip, 3 is zlib. brpc defines 4 (lz4) but registers no codec for it by
//! default, and Keel has none.
//!
//! Decompression is bounded: the output may not exceed a caller-given limit,
//! and that limit is enforced while decompressing, so a few kilobytes that
//! inflate to gigabytes (a decompression bomb) cost at most `limit` bytes of
//! memory before they are rejected with [`WireError::DecompressedTooLarge`].

use std::fmt;
use std::io::{self, Read};

use bytes::{Bytes, BytesMut};

use crate::WireError;

/// brpc's compression types, as carried in `RpcMeta.compress_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CompressType {
    /// No compression (0).
    #[default]
    None = 0,
    /// Raw snappy, brpc's `COMPRESS_TYPE_SNAPPY` (1).
    Snappy = 1,
    /// gzip (RFC 1952), brpc's `COMPRESS_TYPE_GZIP` (2).
    Gzip = 2,
    /// zlib (RFC 1950), brpc's `COMPRESS_TYPE_ZLIB` (3).
    Zlib = 3,
    /// lz4, brpc's `COMPRESS_TYPE_LZ4` (4): named by brpc, without a codec in
    /// brpc's defaults or in Keel; [`compress`] and [`decompress`] refuse it.
    Lz4 = 4,
}

impl CompressType {
    /// The value carried in `RpcMeta.compress_type`.
    pub const fn as_i32(self) -> i32 {
        self as i32
    }

    /// The lower-case name used in messages (`"gzip"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            CompressType::None => "none",
            CompressType::Snappy => "snappy",
            CompressType::Gzip => "gzip",
            CompressType::Zlib => "zlib",
            CompressType::Lz4 => "lz4",
        }
    }
}

impl fmt::Display for CompressType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<i32> for CompressType {
    type Error = WireError;

    /// Maps a `compress_type` value; unknown values are
    /// [`WireError::UnsupportedCompression`].
    fn try_from(value: i32) -> Result<Self, WireError> {
        Ok(match value {
            0 => CompressType::None,
            1 => CompressType::Snappy,
            2 => CompressType::Gzip,
            3 => CompressType::Zlib,
            4 => CompressType::Lz4,
            _ => {
                return Err(WireError::UnsupportedCompression {
                    compress_type: value,
                });
            }
        })
    }
}

/// Compresses `src` with `kind`, appending the result to `dst`.
///
/// [`CompressType::None`] appends `src` unchanged. Fails, leaving `dst` as it
/// was, only for [`CompressType::Lz4`] ([`WireError::UnsupportedCompression`])
/// and for snappy input of 4 GiB or more ([`WireError::FrameTooLarge`]: no
/// baidu_std frame can carry it anyway).
pub fn compress(kind: CompressType, src: &[u8], dst: &mut BytesMut) -> Result<(), WireError> {
    let level = flate2::Compression::default();
    match kind {
        CompressType::None => dst.extend_from_slice(src),
        CompressType::Snappy => compress_snappy(src, dst)?,
        // The read-side encoders take `src` as it is (a slice is a
        // `BufRead`) and write straight into `dst`: no intermediate buffer,
        // unlike the write-side ones (32 KiB per call).
        CompressType::Gzip => deflate_into(flate2::bufread::GzEncoder::new(src, level), dst),
        CompressType::Zlib => deflate_into(flate2::bufread::ZlibEncoder::new(src, level), dst),
        CompressType::Lz4 => {
            return Err(WireError::UnsupportedCompression {
                compress_type: kind.as_i32(),
            });
        }
    }
    Ok(())
}

/// Reads `encoder` to the end into `dst`.
fn deflate_into(mut encoder: impl Read, dst: &mut BytesMut) {
    const IN_MEMORY: &str = "compressing a slice cannot fail: its reader never errors";
    let start = dst.len();
    let mut len = start;
    loop {
        if dst.len() == len {
            // Room for the next step; deflate output is mostly smaller than
            // its input, so a first step of 1 KiB suits small messages.
            let more = (len - start).clamp(1024, 1 << 20);
            dst.resize(len + more, 0);
        }
        match encoder.read(&mut dst[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("{IN_MEMORY}: {e}"),
        }
    }
    dst.truncate(len);
}

fn compress_snappy(src: &[u8], dst: &mut BytesMut) -> Result<(), WireError> {
    let too_large = || WireError::FrameTooLarge {
        size: src.len() as u64,
    };
    // 0 means the input is too large for snappy's 32-bit length.
    let max = snap::raw::max_compress_len(src.len());
    if max == 0 && !src.is_empty() {
        return Err(too_large());
    }
    let start = dst.len();
    dst.resize(start + max, 0);
    match snap::raw::Encoder::new().compress(src, &mut dst[start..]) {
        Ok(written) => {
            dst.truncate(start + written);
            Ok(())
        }
        // Only possible for too large inputs: the output has max_compress_len.
        Err(_) => {
            dst.truncate(start);
            Err(too_large())
        }
    }
}

/// Decompresses `src` (compressed with `kind`) into a new buffer of at most
/// `limit` bytes.
///
/// See [`decompress_into`]; this allocates the output buffer itself.
pub fn decompress(kind: CompressType, src: &[u8], limit: usize) -> Result<Bytes, WireError> {
    let mut dst = BytesMut::new();
    decompress_into(kind, src, limit, &mut dst)?;
    Ok(dst.freeze())
}

/// Decompresses `src` (compressed with `kind`), appending at most `limit`
/// bytes to `dst`.
///
/// Output beyond `limit` is never produced: gzip and zlib are inflated in
/// small steps and stopped as soon as the limit is passed, and snappy's
/// announced length is checked before anything is allocated. So a
/// decompression bomb costs at most about `limit` bytes and yields
/// [`WireError::DecompressedTooLarge`]. Corrupt input is
/// [`WireError::Decompress`]; [`CompressType::Lz4`] is
/// [`WireError::UnsupportedCompression`]. On error `dst` is left as it was.
///
/// Concatenated gzip members are decompressed as one stream, like `gunzip`.
pub fn decompress_into(
    kind: CompressType,
    src: &[u8],
    limit: usize,
    dst: &mut BytesMut,
) -> Result<(), WireError> {
    match kind {
        CompressType::None => {
            if src.len() > limit {
                return Err(WireError::DecompressedTooLarge { kind, limit });
            }
            dst.extend_from_slice(src);
            Ok(())
        }
        CompressType::Snappy => decompress_snappy(src, limit, dst),
        // The read-side decoders over a slice (a `BufRead`): no 32 KiB
        // read buffer per call.
        CompressType::Gzip => {
            inflate_bounded(flate2::bufread::MultiGzDecoder::new(src), kind, limit, dst)
        }
        CompressType::Zlib => {
            inflate_bounded(flate2::bufread::ZlibDecoder::new(src), kind, limit, dst)
        }
        CompressType::Lz4 => Err(WireError::UnsupportedCompression {
            compress_type: kind.as_i32(),
        }),
    }
}

fn decompress_snappy(src: &[u8], limit: usize, dst: &mut BytesMut) -> Result<(), WireError> {
    let kind = CompressType::Snappy;
    let corrupt = |e: snap::Error| WireError::Decompress {
        kind,
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    };
    // Raw snappy starts with the uncompressed length: check it before
    // allocating, so a lying header cannot make us reserve gigabytes.
    let len = snap::raw::decompress_len(src).map_err(corrupt)?;
    if len > limit {
        return Err(WireError::DecompressedTooLarge { kind, limit });
    }
    let start = dst.len();
    dst.resize(start + len, 0);
    match snap::raw::Decoder::new().decompress(src, &mut dst[start..]) {
        Ok(written) => {
            dst.truncate(start + written);
            Ok(())
        }
        Err(e) => {
            dst.truncate(start);
            Err(corrupt(e))
        }
    }
}

/// Reads `reader` to the end in small steps, failing as soon as more than
/// `limit` bytes came out.
fn inflate_bounded(
    mut reader: impl Read,
    kind: CompressType,
    limit: usize,
    dst: &mut BytesMut,
) -> Result<(), WireError> {
    let start = dst.len();
    let mut chunk = [0u8; 8 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                dst.truncate(start);
                return Err(WireError::Decompress { kind, source });
            }
        };
        if dst.len() - start + n > limit {
            dst.truncate(start);
            return Err(WireError::DecompressedTooLarge { kind, limit });
        }
        dst.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compress_type_numbers_are_brpcs() {
        for (n, kind) in [
            (0, CompressType::None),
            (1, CompressType::Snappy),
            (2, CompressType::Gzip),
            (3, CompressType::Zlib),
            (4, CompressType::Lz4),
        ] {
            assert_eq!(CompressType::try_from(n).ok(), Some(kind));
            assert_eq!(kind.as_i32(), n);
        }
        assert!(matches!(
            CompressType::try_from(5),
            Err(WireError::UnsupportedCompression { compress_type: 5 })
        ));
    }

    #[test]
    fn errors_leave_dst_unchanged() {
        let mut dst = BytesMut::from(&b"keep"[..]);
        for kind in [CompressType::Snappy, CompressType::Gzip, CompressType::Zlib] {
            assert!(decompress_into(kind, b"\xff\xff\xff\xff garbage", 1 << 20, &mut dst).is_err());
            assert_eq!(&dst[..], b"keep");
        }
        assert!(compress(CompressType::Lz4, b"x", &mut dst).is_err());
        assert_eq!(&dst[..], b"keep");
    }

    #[test]
    fn none_is_a_bounded_copy() {
        assert_eq!(
            &decompress(CompressType::None, b"abc", 3).unwrap()[..],
            b"abc"
        );
        assert!(matches!(
            decompress(CompressType::None, b"abcd", 3),
            Err(WireError::DecompressedTooLarge { limit: 3, .. })
        ));
    }
}
