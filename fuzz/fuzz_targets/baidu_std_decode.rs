//! Arbitrary bytes through every decoding path of `keel-wire`: the streaming
//! frame decoder fed at arbitrary split points, whole-frame decoding,
//! decompression under a small limit, and protocol sniffing. Nothing may
//! panic, and the two decoders must agree.
#![no_main]

use bytes::{Bytes, BytesMut};
use keel_wire::baidu_std::{Frame, Limits, decode_frame};
use keel_wire::{CompressType, decompress, sniff};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the split points (and the limit), the rest is the
    // connection's byte stream.
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let limits = Limits::new(if control & 0x80 != 0 {
        1 << 10
    } else {
        1 << 20
    });
    let step = usize::from(control & 0x3f) + 1;

    // Streaming: feed `step`-sized pieces (the last one may be shorter),
    // decoding after each, until an error.
    let mut buf = BytesMut::new();
    let mut streamed = Vec::new();
    let mut stream_error = false;
    'feed: for piece in input.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match decode_frame(&mut buf, &limits) {
                Ok(Some(frame)) => streamed.push(frame),
                Ok(None) => break,
                Err(_) => {
                    stream_error = true;
                    break 'feed;
                }
            }
        }
    }

    // Whole-frame decoding of the same bytes.
    let whole = Frame::decode(Bytes::copy_from_slice(input), &limits);
    if let Ok(frame) = &whole {
        // One whole frame decodes the same way in both decoders.
        assert!(!stream_error);
        assert_eq!(streamed.len(), 1);
        assert_eq!(&streamed[0], frame);
        // And re-encodes to bytes that decode equal.
        let mut again = BytesMut::new();
        frame
            .encode(&mut again)
            .expect("a decoded frame re-encodes");
        assert_eq!(
            &Frame::decode(again.freeze(), &limits).expect("re-decodes"),
            frame
        );
    }

    // Every decoded frame's payload through every decompressor, and the
    // whole input too.
    for kind in [
        CompressType::None,
        CompressType::Snappy,
        CompressType::Gzip,
        CompressType::Zlib,
    ] {
        let _ = decompress(kind, input, limits.max_body_size);
        for frame in &streamed {
            let _ = decompress(kind, &frame.payload, 1 << 16);
        }
    }
    let _ = sniff(input);
});
