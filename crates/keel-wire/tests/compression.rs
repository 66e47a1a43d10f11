//! Compression round trips and decompression bombs, under the project's
//! counting allocator so the bomb test can show what it did not allocate.

use std::io::Write;

use bytes::BytesMut;
use keel_alloc::CountingAlloc;
use keel_wire::baidu_std::{Frame, Limits, RpcMeta, encode_frame};
use keel_wire::{CompressType, WireError, compress, decompress, decompress_into};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

const MIB: usize = 1 << 20;

fn sample() -> Vec<u8> {
    // Compressible but not trivial: an echo message repeated with a counter.
    (0..2000)
        .flat_map(|i| format!("message {i}: rrrrrrrrrrrrrrrr\n").into_bytes())
        .collect()
}

#[test]
fn snappy_and_gzip_round_trip() {
    let data = sample();
    for kind in [CompressType::Snappy, CompressType::Gzip, CompressType::Zlib] {
        let mut packed = BytesMut::new();
        compress(kind, &data, &mut packed).unwrap();
        assert!(
            packed.len() < data.len() / 3,
            "{kind} compressed {} to {}",
            data.len(),
            packed.len()
        );
        assert_eq!(decompress(kind, &packed, data.len()).unwrap(), data);
        // Empty input round-trips too.
        packed.clear();
        compress(kind, b"", &mut packed).unwrap();
        assert!(decompress(kind, &packed, 0).unwrap().is_empty());
    }
}

#[test]
fn formats_are_the_standard_ones() {
    let data = sample();
    let mut packed = BytesMut::new();
    compress(CompressType::Gzip, &data, &mut packed).unwrap();
    assert_eq!(&packed[..2], b"\x1f\x8b", "gzip magic");
    packed.clear();
    compress(CompressType::Zlib, &data, &mut packed).unwrap();
    assert_eq!(packed[0] & 0x0f, 8, "zlib: deflate method");
    packed.clear();
    compress(CompressType::Snappy, &data, &mut packed).unwrap();
    // Raw snappy (what brpc uses) starts with the varint length, not the
    // framed format's stream identifier.
    assert_ne!(packed[0], 0xff);
    assert_eq!(snap::raw::decompress_len(&packed).unwrap(), data.len());
}

#[test]
fn compressed_payload_in_a_frame() {
    let data = sample();
    let mut packed = BytesMut::new();
    compress(CompressType::Gzip, &data, &mut packed).unwrap();
    let mut meta = RpcMeta::request("example.EchoService", "Echo", 5);
    meta.compress_type = CompressType::Gzip.as_i32();
    let mut wire = BytesMut::new();
    encode_frame(
        &mut wire,
        &meta,
        packed.len(),
        |b| b.extend_from_slice(&packed),
        &[],
    )
    .unwrap();

    let limits = Limits::default();
    let frame = Frame::decode(wire.freeze(), &limits).unwrap();
    let kind = frame.meta.compression().unwrap();
    assert_eq!(
        decompress(kind, &frame.payload, limits.max_body_size).unwrap(),
        data
    );
}

/// `mib` MiB of zeros, gzip- or zlib-compressed, written in pieces so the
/// zeros are never all in memory at once.
fn zeros_compressed(kind: CompressType, mib: usize) -> Vec<u8> {
    fn pump(mut w: impl Write, mib: usize) -> std::io::Result<()> {
        let zeros = vec![0u8; MIB];
        for _ in 0..mib {
            w.write_all(&zeros)?;
        }
        w.flush()
    }
    let level = flate2::Compression::fast();
    match kind {
        CompressType::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), level);
            pump(&mut enc, mib).unwrap();
            enc.finish().unwrap()
        }
        CompressType::Zlib => {
            let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), level);
            pump(&mut enc, mib).unwrap();
            enc.finish().unwrap()
        }
        other => panic!("no bomb for {other}"),
    }
}

/// Runs `f` and returns its result with the bytes this thread allocated.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, u64) {
    assert!(keel_alloc::is_installed());
    let before = keel_alloc::thread_stats();
    let out = f();
    (out, before.delta(&keel_alloc::thread_stats()).alloc_bytes)
}

fn assert_stopped(kind: CompressType, bomb: &[u8], what: &str) {
    let limit = MIB;
    let (result, allocated) = allocated_by(|| decompress(kind, bomb, limit).map(|b| b.len()));
    assert!(
        matches!(result, Err(WireError::DecompressedTooLarge { kind: k, limit: l }) if k == kind && l == limit),
        "{what}: {result:?}"
    );
    // The output buffer grows to the limit and no further (doubling may
    // reserve up to twice it); the inflater's state is small.
    assert!(
        allocated < 4 * MIB as u64,
        "{what}: allocated {allocated} bytes"
    );
}

#[test]
fn decompression_bombs_are_stopped_at_the_limit() {
    for kind in [CompressType::Gzip, CompressType::Zlib] {
        // 100 MiB of zeros in about 100 KiB-500 KiB.
        let bomb = zeros_compressed(kind, 100);
        assert!(bomb.len() < MIB, "{kind} bomb is {} bytes", bomb.len());
        assert_stopped(kind, &bomb, &format!("{kind}, 100 MiB of zeros"));
        // Exactly the limit is allowed.
        let one = zeros_compressed(kind, 1);
        assert_eq!(decompress(kind, &one, MIB).unwrap().len(), MIB);
    }

    // gzip members are concatenated by gunzip, so a bomb can be many small
    // members: they count against one limit.
    let member = zeros_compressed(CompressType::Gzip, 1);
    let members = member.repeat(100);
    assert_stopped(CompressType::Gzip, &members, "100 gzip members of 1 MiB");

    // Raw snappy announces its length first: a lie of 4 GiB is refused
    // before anything is allocated for it. Six bytes cannot hold it at
    // all (corrupt, whatever the limit); a claim the bytes could back is
    // checked against the limit.
    let liar = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
    let (result, allocated) =
        allocated_by(|| decompress(CompressType::Snappy, &liar, usize::MAX).map(|b| b.len()));
    assert!(
        matches!(
            result,
            Err(WireError::Decompress {
                kind: CompressType::Snappy,
                ..
            })
        ),
        "snappy claiming 4 GiB: {result:?}"
    );
    // The error's message only.
    assert!(
        allocated < 1024,
        "snappy claiming 4 GiB: allocated {allocated} bytes"
    );
    let mut claim = vec![0x80, 0x80, 0x80, 0x01]; // 2 MiB
    claim.resize(200 * 1024, 0);
    assert_stopped(
        CompressType::Snappy,
        &claim,
        "snappy claiming 2 MiB in 200 KiB",
    );
}

#[test]
fn decompress_into_appends_and_keeps_dst_on_error() {
    let mut packed = BytesMut::new();
    compress(CompressType::Snappy, b"second", &mut packed).unwrap();
    let mut dst = BytesMut::from(&b"first,"[..]);
    decompress_into(CompressType::Snappy, &packed, 6, &mut dst).unwrap();
    assert_eq!(&dst[..], b"first,second");
    // The limit counts only what this call adds.
    assert!(decompress_into(CompressType::Snappy, &packed, 5, &mut dst).is_err());
    assert_eq!(&dst[..], b"first,second");
}
