//! HPACK's static Huffman code (RFC 7541 section 5.2 and Appendix B).
//!
//! The code is canonical: codes are handed out in order of (length, symbol),
//! so the table of code lengths alone defines it. `LENGTHS` is that table,
//! copied from Appendix B; the codes and the decoding machine are derived
//! from it at compile time by `const fn`s, which also check that the lengths
//! form a complete prefix code whose last code, EOS, is thirty one-bits, as
//! Appendix B lists it, so most typos in the table fail the build (and the
//! tests compare the derived codes with samples of Appendix B's).
//!
//! Encoding is a 64-bit accumulator that takes one whole code per input byte
//! and writes four bytes at a time. Decoding is a finite-state machine over
//! nibbles: the states are the 256 inner nodes of the code tree, and each
//! (state, nibble) step says which node the four bits lead to and which byte,
//! if any, they completed. The shortest code has five bits, so one nibble
//! completes at most one byte. The table is 256 × 16 steps of four bytes
//! (16 KiB), built at compile time; decoding does two lookups per input byte,
//! never walks bits one by one, and does not branch on whether a nibble
//! completed a byte (it always stores, and advances by the step's flag).
//!
//! The end of a string is checked as RFC 7541 5.2 requires: the bits after
//! the last whole code must be fewer than eight and all ones (a prefix of
//! EOS), and the EOS code itself must never appear.

use bytes::{BufMut, BytesMut};

use super::HpackError;

/// The end-of-string symbol, which only ever appears as padding.
const EOS: usize = 256;

/// Code length in bits of each symbol: bytes 0..=255, then EOS (RFC 7541
/// Appendix B, the "len in bits" column).
#[rustfmt::skip]
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0..=15
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 16..=31
     6, 10, 10, 12, 13,  6,  8, 11, 10, 10,  8, 11,  8,  6,  6,  6, // 32..=47
     5,  5,  5,  6,  6,  6,  6,  6,  6,  6,  7,  8, 15,  6, 12, 10, // 48..=63
    13,  6,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7, // 64..=79
     7,  7,  7,  7,  7,  7,  7,  7,  8,  7,  8, 13, 19, 13, 14,  6, // 80..=95
    15,  5,  6,  5,  6,  5,  6,  6,  6,  5,  7,  7,  6,  6,  6,  5, // 96..=111
     6,  7,  6,  5,  5,  6,  7,  7,  7,  7,  7, 15, 11, 14, 13, 28, // 112..=127
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128..=143
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144..=159
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160..=175
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176..=191
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192..=207
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208..=223
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224..=239
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240..=255
    30,                                                             // EOS
];

/// The code of each symbol, right-aligned (the "code as hex" column).
static CODES: [u32; 257] = canonical_codes();

/// Assigns canonical codes: shortest first, ties in symbol order, each code
/// one more than the previous one of its length and the first of a length
/// the next code of the previous length shifted left once.
const fn canonical_codes() -> [u32; 257] {
    let mut codes = [0u32; 257];
    let mut code: u32 = 0;
    let mut len: u8 = 1;
    while len <= 30 {
        let mut sym = 0;
        while sym < 257 {
            if LENGTHS[sym] == len {
                assert!(code < 1 << len, "the code lengths overflow the code space");
                codes[sym] = code;
                code += 1;
            }
            sym += 1;
        }
        if len == 30 {
            // Complete: every 30-bit sequence starts with some code.
            assert!(
                code == 1 << 30,
                "the code lengths leave part of the code space unused"
            );
        }
        code <<= 1;
        len += 1;
    }
    assert!(codes[EOS] == (1 << 30) - 1, "EOS must be thirty one-bits");
    codes
}

/// One step of the decoding machine, four input bits from a state, packed
/// in a `u32` so that a lookup is one aligned load: the state (inner node
/// of the code tree) the bits lead to in bits 0..8, the byte they completed
/// in bits 8..16, and the [`EMIT`] and [`FAIL`] flags.
type Step = u32;

/// The step completed a byte.
const EMIT: Step = 1 << 16;
/// The step completed EOS, which must not appear in a string.
const FAIL: Step = 1 << 17;

/// How a string may end in a state: the bits since the last whole code.
const END_OK: u8 = 0;
/// All ones, but eight or more of them.
const END_TOO_LONG: u8 = 1;
/// Not all ones: a code cut short, or padding that is not a prefix of EOS.
const END_NOT_ONES: u8 = 2;

struct Machine {
    steps: [[Step; 16]; 256],
    end: [u8; 256],
}

static MACHINE: Machine = build_machine();

const fn build_machine() -> Machine {
    // The code tree: inner nodes 0..256 (0 is the root), each with two
    // children that are either an inner node or LEAF | symbol. 257 leaves
    // make exactly 256 inner nodes, so a state fits in a u8.
    const LEAF: u16 = 0x8000;
    const NONE: u16 = 0xffff;
    let mut tree = [[NONE; 2]; 256];
    let mut depth = [0u8; 256];
    let mut all_ones = [false; 256];
    all_ones[0] = true;
    let mut nodes = 1;

    let mut sym = 0;
    while sym < 257 {
        let code = CODES[sym];
        let mut node = 0;
        let mut bit_index = LENGTHS[sym];
        while bit_index > 1 {
            bit_index -= 1;
            let bit = ((code >> bit_index) & 1) as usize;
            let child = tree[node][bit];
            if child == NONE {
                assert!(nodes < 256, "more inner nodes than a complete code has");
                tree[node][bit] = nodes as u16;
                depth[nodes] = depth[node] + 1;
                all_ones[nodes] = all_ones[node] && bit == 1;
                node = nodes;
                nodes += 1;
            } else {
                assert!(child & LEAF == 0, "a code is a prefix of another");
                node = child as usize;
            }
        }
        let bit = (code & 1) as usize;
        assert!(tree[node][bit] == NONE, "two symbols share a code");
        tree[node][bit] = LEAF | sym as u16;
        sym += 1;
    }
    assert!(nodes == 256, "the code tree is not complete");

    let mut steps: [[Step; 16]; 256] = [[0; 16]; 256];
    let mut end = [END_NOT_ONES; 256];
    let mut state = 0;
    while state < 256 {
        let mut nibble = 0;
        while nibble < 16 {
            let mut step: Step = 0;
            let mut node = state;
            let mut k = 4;
            while k > 0 {
                k -= 1;
                // Every child is set: the tree is complete.
                let child = tree[node][(nibble >> k) & 1];
                if child & LEAF == 0 {
                    node = child as usize;
                } else if (child & !LEAF) as usize == EOS {
                    step = FAIL;
                    node = 0;
                    break;
                } else {
                    step = EMIT | ((child & !LEAF) as Step) << 8;
                    node = 0;
                }
            }
            steps[state][nibble] = step | node as Step;
            nibble += 1;
        }
        end[state] = if !all_ones[state] {
            END_NOT_ONES
        } else if depth[state] > 7 {
            END_TOO_LONG
        } else {
            END_OK
        };
        state += 1;
    }
    Machine { steps, end }
}

/// The length in bytes of `src` Huffman-coded, padding included.
#[inline]
pub fn encoded_len(src: &[u8]) -> usize {
    let bits: u64 = src
        .iter()
        .map(|&b| u64::from(LENGTHS[usize::from(b)]))
        .sum();
    // At most 30 bits per byte: the quotient is below 4 × src.len().
    usize::try_from(bits.div_ceil(8)).unwrap_or(usize::MAX)
}

/// Appends `src` Huffman-coded to `dst`, padded with ones to a whole byte.
/// Takes [`encoded_len(src)`](encoded_len) bytes.
pub fn encode(src: &[u8], dst: &mut BytesMut) {
    dst.reserve(encoded_len(src));
    encode_reserved(src, dst);
}

/// [`encode`] without the reservation, for callers that already computed
/// the length (`put_*` still grows `dst` if it was not reserved).
pub(crate) fn encode_reserved(src: &[u8], dst: &mut BytesMut) {
    // `acc`'s low `bits` bits are pending output; bits above them are stale
    // and cut off by the casts. Before each code `bits` < 32, and a code has
    // at most 30 bits, so nothing pending is shifted out of the u64.
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in src {
        let len = u32::from(LENGTHS[usize::from(b)]);
        acc = (acc << len) | u64::from(CODES[usize::from(b)]);
        bits += len;
        if bits >= 32 {
            bits -= 32;
            dst.put_u32((acc >> bits) as u32);
        }
    }
    if bits % 8 != 0 {
        // Pad with the most significant bits of EOS, i.e. ones.
        let pad = 8 - bits % 8;
        acc = (acc << pad) | ((1 << pad) - 1);
        bits += pad;
    }
    while bits >= 8 {
        bits -= 8;
        dst.put_u8((acc >> bits) as u8);
    }
}

/// Appends the Huffman-coded string `src` decoded to `dst`.
///
/// # Errors
///
/// [`HpackError::BadHuffman`] if `src` contains the EOS code, or ends in
/// padding that is eight bits or longer or not all ones (which includes a
/// code cut short). `dst` may have received part of the string.
pub fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), HpackError> {
    // Whether a nibble completes a byte is a coin toss to a branch
    // predictor, so there is no such branch: every step stores its byte at
    // the cursor and moves the cursor by its EMIT bit, in room made up front
    // (the shortest code has five bits). EOS is looked for once, at the end,
    // in the OR of all steps; after EOS the machine goes on from the root,
    // harmlessly.
    let start = dst.len();
    let room = src.len().saturating_mul(8) / 5 + 1;
    dst.resize(start.saturating_add(room), 0);
    let out = dst.get_mut(start..).unwrap_or_default();
    let mut len = 0;
    let mut seen: Step = 0;
    let mut state = 0;
    for &byte in src {
        let high = MACHINE.steps[state][usize::from(byte >> 4)];
        if let Some(slot) = out.get_mut(len) {
            *slot = (high >> 8) as u8;
        }
        len += ((high & EMIT) >> 16) as usize;
        let low = MACHINE.steps[(high & 0xff) as usize][usize::from(byte & 0x0f)];
        if let Some(slot) = out.get_mut(len) {
            *slot = (low >> 8) as u8;
        }
        len += ((low & EMIT) >> 16) as usize;
        seen |= high | low;
        state = (low & 0xff) as usize;
    }
    dst.truncate(start + len);
    if seen & FAIL != 0 {
        return Err(HpackError::BadHuffman(
            "it contains the EOS symbol, which may only be padding",
        ));
    }
    match MACHINE.end[state] {
        END_OK => Ok(()),
        END_TOO_LONG => Err(HpackError::BadHuffman("the padding is longer than 7 bits")),
        _ => Err(HpackError::BadHuffman(
            "the string ends inside a code: the padding is not all one-bits",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The derived codes agree with Appendix B's "code as hex" column, for
    /// samples of every length the table uses.
    #[test]
    fn codes_match_appendix_b() {
        let samples: &[(usize, u32, u8)] = &[
            (0, 0x1ff8, 13),
            (1, 0x7f_ffd8, 23),
            (9, 0xff_ffea, 24),
            (10, 0x3fff_fffc, 30),
            (b' ' as usize, 0x14, 6),
            (b'!' as usize, 0x3f8, 10),
            (b'&' as usize, 0xf8, 8),
            (b'\'' as usize, 0x7fa, 11),
            (b'#' as usize, 0xffa, 12),
            (b'0' as usize, 0x0, 5),
            (b'/' as usize, 0x18, 6),
            (b':' as usize, 0x5c, 7),
            (b'<' as usize, 0x7ffc, 15),
            (b'\\' as usize, 0x7_fff0, 19),
            (b'^' as usize, 0x3ffc, 14),
            (b't' as usize, 0x9, 5),
            (b'~' as usize, 0x1ffd, 13),
            (127, 0xfff_fffc, 28),
            (128, 0xf_ffe6, 20),
            (153, 0x1f_ffdc, 21),
            (129, 0x3f_ffd2, 22),
            (199, 0x1ff_ffec, 25),
            (192, 0x3ff_ffe0, 26),
            (203, 0x7ff_ffde, 27),
            (249, 0xfff_fffe, 28),
            (255, 0x3ff_ffee, 26),
            (EOS, 0x3fff_ffff, 30),
        ];
        for &(sym, code, len) in samples {
            assert_eq!((CODES[sym], LENGTHS[sym]), (code, len), "symbol {sym}");
        }
    }

    #[test]
    fn accepting_states_are_short_runs_of_ones() {
        // The root and the seven all-ones nodes below it.
        let accepting = MACHINE.end.iter().filter(|&&e| e == END_OK).count();
        assert_eq!(accepting, 8);
    }
}
