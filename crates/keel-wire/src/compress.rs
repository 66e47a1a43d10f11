//! Payload compression, as pure functions over byte slices.
//!
//! baidu_std names the compression of a frame's payload in
//! `RpcMeta.compress_type` (the attachment is never compressed). The numbers
//! are brpc's [`CompressType`]: 1 is raw snappy (not the framed format), 2 is
//! gzip, 3 is zlib. brpc defines 4 (lz4) but registers no codec for it by
//! default, and Keel has none.
//!
//! Decompression is bounded twice before any work is done. The output may
//! not exceed a caller-given limit, and it may not exceed what the input's
//! length can produce in its format: raw snappy expands at most 64 bytes per
//! 3 compressed ones (a 2-byte-offset copy of 64 bytes), deflate (gzip,
//! zlib) at most [`DEFLATE_MAX_RATIO`] to 1. So a snappy header that
//! announces 64 MiB in a 32-byte message is refused before anything is
//! allocated, as is a gzip stream whose trailer announces more than the
//! limit; a stream that lies keeps being checked while it inflates, and costs
//! at most the smaller of the two bounds. Too much for the limit is
//! [`WireError::DecompressedTooLarge`]; more than the input can hold is
//! corrupt input, [`WireError::Decompress`].

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
/// announced length (gzip's too, from its trailer) is checked before
/// anything is allocated. So a decompression bomb costs at most about
/// `limit` bytes and yields [`WireError::DecompressedTooLarge`]. Neither is
/// more output produced than `src.len()` can hold (see [`max_expansion`]):
/// an announced size or a stream past that bound is corrupt input,
/// [`WireError::Decompress`], like any other. [`CompressType::Lz4`] is
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
            let bounds = Bounds::new(kind, src, limit);
            if let Some(announced) = gzip_announced_len(src) {
                bounds.check_announced(kind, announced)?;
            }
            let decoder = flate2::bufread::MultiGzDecoder::new(src);
            inflate_bounded(decoder, kind, bounds, dst)
        }
        CompressType::Zlib => {
            let decoder = flate2::bufread::ZlibDecoder::new(src);
            inflate_bounded(decoder, kind, Bounds::new(kind, src, limit), dst)
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
    let most = max_expansion(kind, src.len());
    if len > most {
        return Err(WireError::Decompress {
            kind,
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the header announces {len} bytes, but {} compressed bytes can hold at most {most}",
                    src.len()
                ),
            ),
        });
    }
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

/// deflate's largest expansion: a length-258 match coded in two bits (one
/// for the length code, one for the distance) in a dynamic block, so 258
/// bytes out per quarter byte in, 1032 to 1. Nothing a deflate stream (gzip,
/// zlib) of `n` bytes says can make it inflate to more than `1032 * n`.
pub const DEFLATE_MAX_RATIO: usize = 1032;

/// The most bytes `compressed_len` bytes of `kind` can decompress to.
///
/// Raw snappy: every element is a literal (at least one byte in per byte
/// out) or a copy of at most 64 bytes, whose shortest encoding for that
/// length is 3 bytes (a 2-byte offset); 1-byte-offset copies give at most 11
/// bytes for 2. So at most 64/3 out per byte in (the length header counted
/// as input too, which only loosens the bound). gzip and zlib:
/// [`DEFLATE_MAX_RATIO`]. None: the input itself.
pub const fn max_expansion(kind: CompressType, compressed_len: usize) -> usize {
    match kind {
        CompressType::None => compressed_len,
        CompressType::Snappy => compressed_len.saturating_mul(64) / 3,
        CompressType::Gzip | CompressType::Zlib | CompressType::Lz4 => {
            compressed_len.saturating_mul(DEFLATE_MAX_RATIO)
        }
    }
}

/// The uncompressed size a gzip stream announces: its last member's
/// `ISIZE` (RFC 1952: the size modulo 2^32, little-endian, in the last four
/// bytes). When it exceeds a limit, the stream decompresses to more than
/// that limit or is corrupt (its member does not end as it says): either
/// way it is refused without inflating anything. `None` when `src` is too
/// short to be a gzip member.
fn gzip_announced_len(src: &[u8]) -> Option<usize> {
    // A member is at least a 10-byte header and an 8-byte trailer.
    const SMALLEST_MEMBER: usize = 18;
    if src.len() < SMALLEST_MEMBER {
        return None;
    }
    let isize = src[src.len() - 4..]
        .try_into()
        .ok()
        .map(u32::from_le_bytes)?;
    usize::try_from(isize).ok()
}

/// How much output one inflation may produce: the caller's limit, and what
/// the input can hold.
#[derive(Clone, Copy)]
struct Bounds {
    limit: usize,
    /// [`max_expansion`] of the input.
    most: usize,
    compressed_len: usize,
}

impl Bounds {
    fn new(kind: CompressType, src: &[u8], limit: usize) -> Bounds {
        Bounds {
            limit,
            most: max_expansion(kind, src.len()),
            compressed_len: src.len(),
        }
    }

    /// The error for a stream that announces `len` bytes of output, if
    /// that is past a bound: corrupt when its input cannot hold them (a
    /// cut or garbled trailer, or a lie), else too large for the limit.
    fn check_announced(&self, kind: CompressType, len: usize) -> Result<(), WireError> {
        if len > self.most {
            return Err(WireError::Decompress {
                kind,
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "announces {len} bytes, more than {} compressed bytes can hold",
                        self.compressed_len
                    ),
                ),
            });
        }
        self.check(kind, len)
    }

    /// The error for `produced` bytes of output, if it is past a bound.
    fn check(&self, kind: CompressType, produced: usize) -> Result<(), WireError> {
        if produced > self.limit {
            return Err(WireError::DecompressedTooLarge {
                kind,
                limit: self.limit,
            });
        }
        if produced > self.most {
            return Err(WireError::Decompress {
                kind,
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "inflates past {} bytes, more than {} compressed bytes can hold",
                        self.most, self.compressed_len
                    ),
                ),
            });
        }
        Ok(())
    }
}

/// Reads `reader` to the end in small steps, failing as soon as the output
/// passes one of `bounds`.
fn inflate_bounded(
    mut reader: impl Read,
    kind: CompressType,
    bounds: Bounds,
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
        if let Err(e) = bounds.check(kind, dst.len() - start + n) {
            dst.truncate(start);
            return Err(e);
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

    /// A raw snappy message announcing `len` bytes, with `body` after the
    /// header.
    fn snappy_claiming(len: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut v = len;
        while v >= 0x80 {
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn a_snappy_header_claiming_more_than_the_input_can_hold_is_corrupt() {
        // 32 bytes that announce 64 MiB: refused, whatever the limit.
        let bomb = snappy_claiming(64 << 20, &[0; 28]);
        assert_eq!(bomb.len(), 32);
        let mut dst = BytesMut::new();
        let e = decompress_into(CompressType::Snappy, &bomb, usize::MAX, &mut dst).unwrap_err();
        assert!(matches!(e, WireError::Decompress { .. }), "{e:?}");
        assert!(e.to_string().contains("at most 682"), "{e}");
        assert_eq!(dst.capacity(), 0, "nothing was allocated");
        // The most compressible real input stays within the bound: a run of
        // one byte is a literal, then copies of 64 bytes in 3 bytes each.
        let run = vec![7u8; 1 << 20];
        let mut packed = BytesMut::new();
        compress(CompressType::Snappy, &run, &mut packed).unwrap();
        assert!(run.len() <= max_expansion(CompressType::Snappy, packed.len()));
        assert_eq!(
            &decompress(CompressType::Snappy, &packed, run.len()).unwrap()[..],
            &run[..]
        );
        // Within the input's bound but over the limit: too large.
        assert!(matches!(
            decompress(CompressType::Snappy, &packed, run.len() - 1),
            Err(WireError::DecompressedTooLarge { .. })
        ));
    }

    #[test]
    fn deflate_is_bounded_by_its_ratio_and_gzip_by_its_trailer() {
        let zeros = vec![0u8; 8 << 20];
        for kind in [CompressType::Gzip, CompressType::Zlib] {
            let mut packed = BytesMut::new();
            compress(kind, &zeros, &mut packed).unwrap();
            assert!(zeros.len() <= max_expansion(kind, packed.len()), "{kind}");
            assert_eq!(
                decompress(kind, &packed, zeros.len()).unwrap().len(),
                zeros.len()
            );
            assert!(matches!(
                decompress(kind, &packed, zeros.len() - 1),
                Err(WireError::DecompressedTooLarge { .. })
            ));
            // Cut short: the same stream now says more than its length
            // can hold.
            let cut = &packed[..packed.len() / 8];
            assert!(
                decompress(kind, cut, usize::MAX).is_err(),
                "{kind}: a truncated stream fails"
            );
        }
        // A gzip trailer announcing more than the limit is refused before
        // inflating; one announcing more than the input can hold is corrupt.
        let mut packed = BytesMut::new();
        compress(CompressType::Gzip, b"small", &mut packed).unwrap();
        let n = packed.len();
        packed[n - 4..].copy_from_slice(&(8u32 << 10).to_le_bytes());
        assert!(matches!(
            decompress(CompressType::Gzip, &packed, 1 << 10),
            Err(WireError::DecompressedTooLarge { limit: 1024, .. })
        ));
        packed[n - 4..].copy_from_slice(&(1u32 << 20).to_le_bytes());
        assert!(matches!(
            decompress(CompressType::Gzip, &packed, 1 << 10),
            Err(WireError::Decompress { .. })
        ));
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
