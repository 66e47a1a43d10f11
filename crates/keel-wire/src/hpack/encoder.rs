//! The encoding side: fields to header blocks for the peer's decoder.

use bytes::{BufMut, BytesMut};

use super::table::{DynamicTable, STATIC_LEN, entry_size, static_find};
use super::{DEFAULT_TABLE_SIZE, encode_int, huffman};

/// Whether a field may enter the encoder's dynamic table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Indexing {
    /// Yes: a field likely to be sent again on the connection. Sent as a
    /// literal with incremental indexing the first time, as an index after.
    Yes,
    /// No: a field unlikely to repeat (a request id, a timestamp), which
    /// would only push useful entries out of the table.
    No,
    /// Never: a sensitive field (a credential). Sent as a literal marked
    /// never-indexed, which intermediaries must forward the same way (RFC
    /// 7541 7.1.3), even if the same field is in a table.
    Never,
}

/// Encodes the header blocks of one HTTP/2 connection (RFC 7541), keeping
/// the dynamic table the peer's decoder mirrors.
///
/// ```
/// use keel_wire::hpack::{Encoder, Indexing};
///
/// let mut encoder = Encoder::new();
/// let trailers = [(&b"grpc-status"[..], &b"0"[..], Indexing::Yes)];
/// let mut first = bytes::BytesMut::new();
/// encoder.encode(trailers, &mut first);
/// let mut second = bytes::BytesMut::new();
/// encoder.encode(trailers, &mut second);
/// // The second time, the field is an index into the dynamic table.
/// assert_eq!(&second[..], [0x80 | 62]);
/// ```
#[derive(Debug)]
pub struct Encoder {
    table: DynamicTable,
    /// The table size the peer's decoder was last told (or assumes: the
    /// HTTP/2 default).
    signaled: usize,
    /// The smallest table size set since the last block, while a size
    /// update is pending.
    pending_low: Option<usize>,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    /// An encoder whose dynamic table may grow to 4096 bytes, the default
    /// the peer allows until its SETTINGS say otherwise.
    pub fn new() -> Encoder {
        Encoder {
            table: DynamicTable::new(DEFAULT_TABLE_SIZE),
            signaled: DEFAULT_TABLE_SIZE,
            pending_low: None,
        }
    }

    /// Applies the peer's SETTINGS_HEADER_TABLE_SIZE: the table will use at
    /// most `min(size, 4096)` bytes (more would not pay for itself), evicting
    /// entries as needed. When that changes the size in use, the next block
    /// starts with dynamic table size updates: the smallest size set since
    /// the last block, if the table shrank below the final size in between,
    /// then the final size (RFC 7541 4.2, 6.3).
    pub fn set_max_table_size(&mut self, size: usize) {
        let size = size.min(DEFAULT_TABLE_SIZE);
        if size == self.table.max() && self.pending_low.is_none() {
            return;
        }
        self.table.set_max(size);
        self.pending_low = Some(self.pending_low.map_or(size, |low| low.min(size)));
    }

    /// Appends one header block to `dst`, encoding each `(name, value,
    /// indexing)` in order.
    pub fn encode<'a>(
        &mut self,
        fields: impl IntoIterator<Item = (&'a [u8], &'a [u8], Indexing)>,
        dst: &mut BytesMut,
    ) {
        self.size_updates(dst);
        for (name, value, indexing) in fields {
            self.field(name, value, indexing, dst);
        }
    }

    fn size_updates(&mut self, dst: &mut BytesMut) {
        let Some(low) = self.pending_low.take() else {
            return;
        };
        let size = self.table.max();
        // The table was evicted down to `low`: the peer's must be too.
        if low < size {
            encode_int(low, 5, 0x20, dst);
        }
        if low < size || size != self.signaled {
            encode_int(size, 5, 0x20, dst);
        }
        self.signaled = size;
    }

    fn field(&mut self, name: &[u8], value: &[u8], indexing: Indexing, dst: &mut BytesMut) {
        let in_static = static_find(name, value);
        let name_index = if indexing == Indexing::Never {
            in_static
                .name
                .or_else(|| self.table.find(name, value).1.map(dynamic_index))
        } else {
            if let Some(index) = in_static.field {
                encode_int(index, 7, 0x80, dst);
                return;
            }
            let (field, name_match) = self.table.find(name, value);
            if let Some(i) = field {
                encode_int(dynamic_index(i), 7, 0x80, dst);
                return;
            }
            // A static name index is the smaller, and never evicted.
            in_static.name.or(name_match.map(dynamic_index))
        };
        // A field larger than the whole table would only empty it.
        let insert = indexing == Indexing::Yes && entry_size(name, value) <= self.table.max();
        let (flags, prefix_bits) = match indexing {
            Indexing::Yes if insert => (0x40, 6),
            Indexing::Yes | Indexing::No => (0x00, 4),
            Indexing::Never => (0x10, 4),
        };
        match name_index {
            Some(index) => encode_int(index, prefix_bits, flags, dst),
            None => {
                dst.put_u8(flags);
                string(name, dst);
            }
        }
        string(value, dst);
        if insert {
            // The name index above was resolved before this insertion, as
            // the peer's decoder resolves it.
            self.table.insert(name, value);
        }
    }

    /// The dynamic table's entries, newest (index 62) first.
    pub fn dynamic_table(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.table.iter()
    }

    /// The dynamic table's size as RFC 7541 4.1 counts it.
    pub fn dynamic_table_size(&self) -> usize {
        self.table.size()
    }

    /// The dynamic table's maximum size: `min(peer's setting, 4096)`.
    pub fn dynamic_table_max(&self) -> usize {
        self.table.max()
    }

    /// Heap bytes this encoder holds (its dynamic table's storage), for
    /// memory accounting.
    pub fn retained(&self) -> usize {
        self.table.retained()
    }
}

/// The combined index (RFC 7541 2.3.3) of dynamic table entry `i`.
fn dynamic_index(i: usize) -> usize {
    STATIC_LEN + 1 + i
}

/// Appends a string literal (RFC 7541 5.2), Huffman-coded if that is
/// shorter.
#[inline]
fn string(s: &[u8], dst: &mut BytesMut) {
    let coded = huffman::encoded_len(s);
    if coded < s.len() {
        dst.reserve(coded.saturating_add(5));
        encode_int(coded, 7, 0x80, dst);
        huffman::encode_reserved(s, dst);
    } else {
        dst.reserve(s.len().saturating_add(5));
        encode_int(s.len(), 7, 0x00, dst);
        dst.extend_from_slice(s);
    }
}
