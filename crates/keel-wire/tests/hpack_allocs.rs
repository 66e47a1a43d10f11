//! HPACK's steady state allocates nothing: once a connection's decoder and
//! encoder have grown their buffers, a header block costs no allocation,
//! counted by the project's counting allocator.

use bytes::BytesMut;
use keel_alloc::{CountingAlloc, churn_thread};
use keel_wire::hpack::{Decoder, Encoder, Indexing};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::system();

const WARMUP: u64 = 100;
const ITERS: u64 = 10_000;

/// A typical gRPC request's headers, as grpc-go sends them.
const REQUEST: [(&[u8], &[u8]); 8] = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/echo.Echo/Echo"),
    (b":authority", b"127.0.0.1:8000"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
    (b"grpc-timeout", b"1S"),
    (b"user-agent", b"grpc-go/1.60"),
];

fn request_fields() -> impl Iterator<Item = (&'static [u8], &'static [u8], Indexing)> {
    REQUEST.iter().map(|&(n, v)| (n, v, Indexing::Yes))
}

/// Decodes `block`, checking it gives exactly [`REQUEST`], without
/// allocating for the check.
fn decode_request(decoder: &mut Decoder, block: &[u8]) {
    let mut i = 0;
    decoder
        .decode(block, 16 << 10, |name, value| {
            assert_eq!((name, value), REQUEST[i]);
            i += 1;
        })
        .unwrap();
    assert_eq!(i, REQUEST.len());
}

#[test]
fn decoding_a_request_block_again_allocates_nothing() {
    let mut encoder = Encoder::new();
    // The first block on a connection: literals with incremental indexing,
    // their strings Huffman-coded, so decoding it inserts six entries and
    // uses the scratch buffer.
    let mut first = BytesMut::new();
    encoder.encode(request_fields(), &mut first);
    assert!(first.len() > 40, "{}", first.len());
    // Every later block: indexes only.
    let mut later = BytesMut::new();
    encoder.encode(request_fields(), &mut later);
    assert_eq!(later.len(), REQUEST.len());

    let mut decoder = Decoder::new(4096);
    decode_request(&mut decoder, &first);

    // Decoding the literal block again and again keeps inserting (and
    // evicting) entries: the table's buffer is reused, never reallocated.
    let d = churn_thread(WARMUP, ITERS, |_| decode_request(&mut decoder, &first));
    assert!(keel_alloc::is_installed());
    assert_eq!(d.allocs, 0, "{d:?}");

    // The newest entries are again the first block's, so the indexed block
    // refers to them.
    let d = churn_thread(WARMUP, ITERS, |_| decode_request(&mut decoder, &later));
    assert_eq!(d.allocs, 0, "{d:?}");

    // The control: a fresh decoder does allocate its table and scratch.
    let d = churn_thread(0, 100, |_| {
        let mut fresh = Decoder::new(4096);
        decode_request(&mut fresh, &first);
    });
    assert!(d.allocs >= 100, "{d:?}");
}

#[test]
fn encoding_a_response_again_allocates_nothing() {
    // Response headers and trailers, with a grpc-message that changes from
    // call to call so the table keeps taking (and evicting) entries.
    let messages: Vec<Vec<u8>> = (0..64)
        .map(|i| format!("call {i} failed: deadline exceeded after {i}ms").into_bytes())
        .collect();
    let mut encoder = Encoder::new();
    let mut dst = BytesMut::with_capacity(4096);
    let mut encode = |i: u64| {
        dst.clear();
        let message = &messages[i as usize % messages.len()];
        encoder.encode(
            [
                (&b":status"[..], &b"200"[..], Indexing::Yes),
                (b"content-type", b"application/grpc", Indexing::Yes),
                (
                    b"grpc-accept-encoding",
                    b"identity,deflate,gzip",
                    Indexing::Yes,
                ),
                (b"grpc-status", b"4", Indexing::Yes),
                (b"grpc-message", message, Indexing::Yes),
            ],
            &mut dst,
        );
        std::hint::black_box(&dst);
    };
    let d = churn_thread(WARMUP, ITERS, &mut encode);
    assert_eq!(d.allocs, 0, "{d:?}");
}
