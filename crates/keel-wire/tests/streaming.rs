//! The streaming decoder fed the way a socket feeds it: in pieces.

mod common;

use bytes::{Bytes, BytesMut};
use keel_wire::WireError;
use keel_wire::baidu_std::{Frame, FrameHeader, HEADER_LEN, Limits, decode_frame};
use proptest::prelude::*;

fn limits() -> Limits {
    Limits::default()
}

/// Feeds `input` in pieces ending at `cuts` (sorted), decoding after each
/// piece; returns each frame with the number of bytes fed when it came out.
fn feed(input: &[u8], cuts: &[usize]) -> Vec<(usize, Frame)> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    for &end in cuts.iter().chain(std::iter::once(&input.len())) {
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
        while let Some(frame) = decode_frame(&mut buf, &limits()).unwrap() {
            out.push((fed, frame));
        }
    }
    assert!(buf.is_empty(), "bytes left over");
    out
}

#[test]
fn byte_by_byte_yields_one_frame_at_the_last_byte() {
    for c in common::all() {
        let cuts: Vec<usize> = (1..c.bytes.len()).collect();
        let frames = feed(&c.bytes, &cuts);
        assert_eq!(frames.len(), 1, "{}", c.name);
        assert_eq!(frames[0].0, c.bytes.len(), "{}: came out early", c.name);
        assert_eq!(
            frames[0].1,
            Frame::decode(c.bytes.clone(), &limits()).unwrap()
        );
    }
}

#[test]
fn pipelined_frames_come_out_in_order() {
    // All captures back to back in one buffer, as a busy connection reads them.
    let all = common::all();
    let mut buf = BytesMut::new();
    for c in &all {
        buf.extend_from_slice(&c.bytes);
    }
    for c in &all {
        let frame = decode_frame(&mut buf, &limits())
            .unwrap()
            .expect("a whole frame");
        assert_eq!(
            frame,
            Frame::decode(c.bytes.clone(), &limits()).unwrap(),
            "{}",
            c.name
        );
    }
    assert!(decode_frame(&mut buf, &limits()).unwrap().is_none());
    assert!(buf.is_empty());
}

#[test]
fn oversized_header_is_rejected_after_12_bytes() {
    let limits = Limits::new(1024);
    let header = FrameHeader {
        body_size: 1025,
        meta_size: 10,
    }
    .to_bytes();
    let mut buf = BytesMut::new();
    for (i, byte) in header.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        let result = decode_frame(&mut buf, &limits);
        if i + 1 < HEADER_LEN {
            assert!(
                matches!(result, Ok(None)),
                "after {} bytes: {result:?}",
                i + 1
            );
        } else {
            assert!(
                matches!(
                    result,
                    Err(WireError::Oversized {
                        size: 1025,
                        limit: 1024
                    })
                ),
                "{result:?}"
            );
        }
    }
    // Nothing was reserved for the body, and the buffer is untouched.
    assert_eq!(buf.len(), HEADER_LEN);
    assert!(buf.capacity() < 1024);
    // A 4 GiB announcement against the default limit fails the same way.
    let mut buf = BytesMut::from(
        &FrameHeader {
            body_size: u32::MAX,
            meta_size: 0,
        }
        .to_bytes()[..],
    );
    assert!(matches!(
        decode_frame(&mut buf, &Limits::default()),
        Err(WireError::Oversized { .. })
    ));
}

#[test]
fn body_at_the_limit_is_accepted() {
    let limits = Limits::new(3);
    let mut buf = BytesMut::from(&b"PRPC\0\0\0\x03\0\0\0\0abc"[..]);
    let frame = decode_frame(&mut buf, &limits).unwrap().unwrap();
    assert_eq!(&frame.payload[..], b"abc");
}

#[test]
fn header_errors_leave_the_buffer_and_body_errors_consume_the_frame() {
    // Bad magic: nothing is consumed.
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
    assert!(decode_frame(&mut buf, &limits()).is_err());
    assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
    // Bad meta in the first frame: it is consumed, the next one decodes.
    let good = common::echo_request().bytes;
    let mut buf = BytesMut::from(&b"PRPC\0\0\0\x02\0\0\0\x02\xff\xff"[..]);
    buf.extend_from_slice(&good);
    assert!(matches!(
        decode_frame(&mut buf, &limits()),
        Err(WireError::BadMeta(_))
    ));
    let frame = decode_frame(&mut buf, &limits()).unwrap().unwrap();
    assert_eq!(frame, Frame::decode(good, &limits()).unwrap());
}

#[test]
fn decoding_does_not_copy_the_body() {
    let c = common::echo_request_attachment();
    let mut buf = BytesMut::with_capacity(4096);
    buf.extend_from_slice(&c.bytes);
    let storage = buf.as_ptr_range();
    let frame = decode_frame(&mut buf, &limits()).unwrap().unwrap();
    assert!(storage.contains(&frame.payload.as_ptr()));
    assert!(storage.contains(&frame.attachment.as_ptr()));
}

proptest! {
    #[test]
    fn random_splits_yield_the_same_frames(
        picks in proptest::collection::vec(0..14usize, 1..6),
        cut_seeds in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let all = common::all();
        let chosen: Vec<Bytes> = picks.iter().map(|&i| all[i].bytes.clone()).collect();
        let input: Vec<u8> = chosen.iter().flat_map(|b| b.iter().copied()).collect();
        let mut cuts: Vec<usize> = cut_seeds.iter().map(|i| i.index(input.len())).collect();
        cuts.sort_unstable();

        let frames = feed(&input, &cuts);
        prop_assert_eq!(frames.len(), chosen.len());
        let mut end = 0;
        for ((fed, frame), bytes) in frames.iter().zip(&chosen) {
            end += bytes.len();
            // A frame comes out at the first cut at or after its last byte.
            let expected = cuts.iter().copied().find(|&c| c >= end).unwrap_or(input.len());
            prop_assert_eq!(*fed, expected);
            prop_assert_eq!(frame, &Frame::decode(bytes.clone(), &limits()).unwrap());
        }
    }
}
