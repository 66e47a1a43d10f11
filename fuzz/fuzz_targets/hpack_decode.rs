//! Arbitrary bytes as the header blocks of one HTTP/2 connection, through
//! `keel_wire::hpack`:
//!
//! - the input, after two control bytes, is cut into blocks at every
//!   occurrence of the first control byte, and the blocks are decoded in
//!   order by one `Decoder`, with a header list limit the second control
//!   byte picks, and in lockstep by a twin `Decoder` with no limit. The
//!   limit may only turn the twin's success into `TooLarge` (never another
//!   outcome), the fields it lets through are a prefix of the twin's, and
//!   after every block the two dynamic tables are the same: a too-large
//!   list never puts the connection out of sync;
//! - every block that decodes is encoded again by one `Encoder` (fields
//!   indexed, not indexed and never indexed in turn, and the encoder's
//!   table size changed now and then) and decoded by one fresh `Decoder`:
//!   exactly the same fields come back, and the encoder's table stays a
//!   prefix of that decoder's;
//! - tables stay within their maximum and count their size right, and a
//!   decoder's heap stays within twice the table size it advertised plus
//!   its entry records and a scratch bounded by the longest block;
//! - every error has a message; after a connection error the connection
//!   is over, so decoding stops.
//!
//! Nothing may panic.
#![no_main]

use bytes::BytesMut;
use keel_wire::hpack::{Decoder, Encoder, HpackError, Indexing};
use libfuzzer_sys::fuzz_target;

/// The table size this side advertises to the peer of the fuzzed blocks.
const TABLE: usize = 4096;

type Field = (Vec<u8>, Vec<u8>);

fn collect(
    decoder: &mut Decoder,
    block: &[u8],
    limit: usize,
) -> (Vec<Field>, Result<(), HpackError>) {
    let mut fields = Vec::new();
    let result = decoder.decode(block, limit, |n, v| fields.push((n.to_vec(), v.to_vec())));
    (fields, result)
}

fn table(decoder: &Decoder) -> Vec<(&[u8], &[u8])> {
    decoder.dynamic_table().collect()
}

fn check_bounds(decoder: &Decoder) {
    assert!(decoder.dynamic_table_size() <= decoder.dynamic_table_max());
    let entries = decoder.dynamic_table().count();
    let data: usize = decoder
        .dynamic_table()
        .map(|(n, v)| n.len() + v.len())
        .sum();
    assert_eq!(decoder.dynamic_table_size(), data + 32 * entries);
}

fuzz_target!(|data: &[u8]| {
    let [separator, limit, input @ ..] = data else {
        return;
    };
    let limit = match limit {
        255 => usize::MAX,
        l => usize::from(*l) * 16,
    };
    let mut decoder = Decoder::new(TABLE);
    let mut twin = Decoder::new(TABLE);
    let mut encoder = Encoder::new();
    let mut again = Decoder::new(TABLE);
    let mut longest = 0;

    for (i, block) in input.split(|b| b == separator).enumerate() {
        let (fields, result) = collect(&mut decoder, block, limit);
        let (all, twin_result) = collect(&mut twin, block, usize::MAX);
        match (&result, &twin_result) {
            (Ok(()), Ok(())) => assert_eq!(fields, all),
            (Err(HpackError::TooLarge { size, limit: l }), Ok(())) => {
                assert_eq!(*l, limit);
                let total: usize = all.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
                assert_eq!(*size, total);
                assert!(total > limit);
                assert!(all.starts_with(&fields));
                let passed: usize = fields.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
                assert!(passed <= limit);
            }
            (Err(a), Err(b)) => {
                assert_eq!(a, b);
                assert!(a.is_connection_error());
                assert!(!a.to_string().is_empty());
                return;
            }
            _ => panic!("a list limit changed {twin_result:?} into {result:?}"),
        }
        // Whatever the limit did, the tables agree.
        assert_eq!(table(&decoder), table(&twin));
        check_bounds(&decoder);
        // The table's buffer is at most twice the largest maximum it had,
        // its records 24 bytes per possible entry (rounded up to a power of
        // two), and the scratch about twice the largest string decoded.
        longest = longest.max(block.len());
        let bound = 2 * TABLE + 2 * 24 * (TABLE / 32) + 8 * longest + 64;
        assert!(
            decoder.retained() <= bound,
            "{} bytes retained, more than {bound}",
            decoder.retained()
        );

        // Re-encode what decoded, over the same connection.
        if i % 4 == 3 {
            // The peer's SETTINGS changed; somewhere in 0..=TABLE.
            encoder.set_max_table_size(block.len() * 97 % (TABLE + 1));
        }
        let mut dst = BytesMut::new();
        let with_indexing = |j: usize| match (i + j) % 3 {
            0 => Indexing::Yes,
            1 => Indexing::No,
            _ => Indexing::Never,
        };
        encoder.encode(
            all.iter()
                .enumerate()
                .map(|(j, (n, v))| (&n[..], &v[..], with_indexing(j))),
            &mut dst,
        );
        let (back, result) = collect(&mut again, &dst, usize::MAX);
        assert_eq!(result, Ok(()));
        assert_eq!(back, all);
        let ours: Vec<_> = encoder.dynamic_table().collect();
        assert!(table(&again).starts_with(&ours));
        check_bounds(&again);
    }
});
