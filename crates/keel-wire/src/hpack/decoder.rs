//! The decoding side: header blocks from the peer's encoder to fields.

use super::table::{DynamicTable, STATIC_LEN, static_entry};
use super::{HpackError, huffman, read_int};

/// Decodes the header blocks of one HTTP/2 connection (RFC 7541 section 3),
/// keeping the dynamic table the peer's encoder fills.
///
/// ```
/// use keel_wire::hpack::{Decoder, Encoder, Indexing};
///
/// let mut encoder = Encoder::new();
/// let mut block = bytes::BytesMut::new();
/// encoder.encode([(&b"grpc-status"[..], &b"0"[..], Indexing::Yes)], &mut block);
///
/// let mut decoder = Decoder::new(4096);
/// let mut fields = Vec::new();
/// decoder.decode(&block, 16 << 10, |name, value| fields.push((name.to_vec(), value.to_vec())))?;
/// assert_eq!(fields, [(b"grpc-status".to_vec(), b"0".to_vec())]);
/// # Ok::<(), keel_wire::hpack::HpackError>(())
/// ```
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// The SETTINGS_HEADER_TABLE_SIZE this side advertised: the most a size
    /// update may ask for.
    limit: usize,
    /// Set when the limit went below the table's maximum: the next block
    /// must start with a size update (RFC 7541 4.2).
    update_required: bool,
    /// Huffman-decoded strings of the field being decoded (and a copied
    /// name, see `literal_indexed`); reused from field to field.
    scratch: Vec<u8>,
}

/// A decoded string: borrowed from the block or a table, or a range of the
/// scratch buffer (which may still grow, so it is resolved last).
#[derive(Clone, Copy)]
enum Piece<'a> {
    Borrowed(&'a [u8]),
    Scratch(usize, usize),
}

impl<'a> Piece<'a> {
    #[inline]
    fn get<'s>(self, scratch: &'s [u8]) -> &'s [u8]
    where
        'a: 's,
    {
        match self {
            Piece::Borrowed(s) => s,
            // The range was filled by the decoder before it handed out the
            // piece, so `get` always finds it; a failure would give an
            // empty string, not a panic.
            Piece::Scratch(start, end) => scratch.get(start..end).unwrap_or_default(),
        }
    }
}

/// A cursor over a header block.
struct Reader<'a> {
    block: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn byte(&mut self) -> Option<u8> {
        let b = *self.block.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    #[inline]
    fn int(&mut self, first: u8, prefix_bits: u8) -> Result<usize, HpackError> {
        read_int(self.block, &mut self.pos, first, prefix_bits)
    }

    /// Reads a string literal (RFC 7541 5.2), Huffman-decoding it into
    /// `scratch` if it is coded.
    #[inline]
    fn string(&mut self, scratch: &mut Vec<u8>) -> Result<Piece<'a>, HpackError> {
        let first = self.byte().ok_or(HpackError::Truncated(
            "a field: a string literal is missing",
        ))?;
        let len = self.int(first, 7)?;
        let bytes = self
            .pos
            .checked_add(len)
            .and_then(|end| self.block.get(self.pos..end))
            .ok_or(HpackError::Truncated(
                "a string literal: the block is shorter than its length says",
            ))?;
        self.pos += len;
        if first & 0x80 == 0 {
            return Ok(Piece::Borrowed(bytes));
        }
        let start = scratch.len();
        huffman::decode(bytes, scratch)?;
        Ok(Piece::Scratch(start, scratch.len()))
    }
}

/// The running size of the decoded header list (RFC 7540 6.5.2).
struct List {
    size: usize,
    limit: usize,
}

impl List {
    /// Counts a field, and passes it on while the list is within the limit.
    #[inline]
    fn emit(&mut self, field: &mut impl FnMut(&[u8], &[u8]), name: &[u8], value: &[u8]) {
        self.size = self
            .size
            .saturating_add(name.len())
            .saturating_add(value.len())
            .saturating_add(32);
        if self.size <= self.limit {
            field(name, value);
        }
    }
}

impl Decoder {
    /// A decoder for a connection on which this side advertised
    /// SETTINGS_HEADER_TABLE_SIZE `max_table_size` (4096 is HTTP/2's
    /// default). The dynamic table starts empty with that maximum.
    pub fn new(max_table_size: usize) -> Decoder {
        Decoder {
            table: DynamicTable::new(max_table_size),
            limit: max_table_size,
            update_required: false,
            scratch: Vec::new(),
        }
    }

    /// Applies a new SETTINGS_HEADER_TABLE_SIZE advertised by this side,
    /// once the peer has acknowledged it. A size update in a later block may
    /// ask for at most `max_table_size`; if that is below the table's
    /// current maximum, the next block must start with a size update that
    /// brings the table within it (RFC 7541 4.2), or decoding it fails with
    /// [`HpackError::TableSizeUpdateMissing`].
    pub fn set_max_table_size(&mut self, max_table_size: usize) {
        self.limit = max_table_size;
        self.update_required = max_table_size < self.table.max();
    }

    /// Decodes one complete header block (a HEADERS payload and its
    /// CONTINUATION payloads, joined), calling `field(name, value)` for
    /// every field in order.
    ///
    /// `max_list_size` bounds the decoded header list as RFC 7540 6.5.2
    /// counts it: the sum over fields of `name.len() + value.len() + 32`.
    /// Once a field takes the list past it, that field and those after it
    /// are not passed to `field`, but the block is still decoded to its end,
    /// applying its dynamic table updates, before [`HpackError::TooLarge`]
    /// is returned; the connection's later blocks then decode correctly.
    ///
    /// # Errors
    ///
    /// [`HpackError::TooLarge`] as above: reject the stream (HTTP 431 or
    /// RST_STREAM), keep the connection. Any other error means the block is
    /// malformed and the decoder is out of sync with the peer: end the
    /// connection with COMPRESSION_ERROR. Fields before the error may have
    /// been passed to `field`.
    pub fn decode(
        &mut self,
        block: &[u8],
        max_list_size: usize,
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut r = Reader { block, pos: 0 };
        let mut list = List {
            size: 0,
            limit: max_list_size,
        };
        let mut in_fields = false;
        while let Some(first) = r.byte() {
            if first & 0xe0 == 0x20 {
                // 001xxxxx: dynamic table size update (6.3).
                if in_fields {
                    return Err(HpackError::TableSizeUpdateNotFirst);
                }
                let size = r.int(first, 5)?;
                if size > self.limit {
                    return Err(HpackError::TableSizeUpdateTooLarge {
                        size,
                        max: self.limit,
                    });
                }
                self.table.set_max(size);
                self.update_required = false;
                continue;
            }
            if !in_fields {
                in_fields = true;
                self.check_update()?;
            }
            if first & 0x80 != 0 {
                // 1xxxxxxx: indexed field (6.1).
                let index = r.int(first, 7)?;
                let (name, value) = lookup(&self.table, index)?;
                list.emit(&mut field, name, value);
            } else if first & 0x40 != 0 {
                // 01xxxxxx: literal with incremental indexing (6.2.1).
                self.literal_indexed(&mut r, first, &mut list, &mut field)?;
            } else {
                // 0000xxxx and 0001xxxx: literal without indexing and never
                // indexed (6.2.2, 6.2.3); the same to a decoder.
                self.literal_unindexed(&mut r, first, &mut list, &mut field)?;
            }
        }
        // A block of only size updates has done its duty; an empty one has
        // not.
        self.check_update()?;
        if list.size > list.limit {
            return Err(HpackError::TooLarge {
                size: list.size,
                limit: list.limit,
            });
        }
        Ok(())
    }

    fn check_update(&self) -> Result<(), HpackError> {
        if self.update_required {
            return Err(HpackError::TableSizeUpdateMissing {
                max: self.limit,
                current: self.table.max(),
            });
        }
        Ok(())
    }

    fn literal_indexed(
        &mut self,
        r: &mut Reader<'_>,
        first: u8,
        list: &mut List,
        field: &mut impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let index = r.int(first, 6)?;
        self.scratch.clear();
        let name = if index == 0 {
            r.string(&mut self.scratch)?
        } else if let Some((name, _)) = static_entry(index) {
            Piece::Borrowed(name)
        } else {
            // Inserting this field may evict the very entry its name comes
            // from (RFC 7541 4.4), so the name is copied out first.
            let (name, _) = lookup(&self.table, index)?;
            let start = self.scratch.len();
            self.scratch.extend_from_slice(name);
            Piece::Scratch(start, self.scratch.len())
        };
        let value = r.string(&mut self.scratch)?;
        let (name, value) = (name.get(&self.scratch), value.get(&self.scratch));
        self.table.insert(name, value);
        list.emit(field, name, value);
        Ok(())
    }

    fn literal_unindexed(
        &mut self,
        r: &mut Reader<'_>,
        first: u8,
        list: &mut List,
        field: &mut impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let index = r.int(first, 4)?;
        self.scratch.clear();
        let name = if index == 0 {
            r.string(&mut self.scratch)?
        } else {
            // Nothing is inserted, so a dynamic name can stay borrowed.
            Piece::Borrowed(lookup(&self.table, index)?.0)
        };
        let value = r.string(&mut self.scratch)?;
        list.emit(field, name.get(&self.scratch), value.get(&self.scratch));
        Ok(())
    }

    /// The dynamic table's entries, newest (index 62) first.
    pub fn dynamic_table(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.table.iter()
    }

    /// The dynamic table's size as RFC 7541 4.1 counts it: its entries'
    /// names and values plus 32 bytes each.
    pub fn dynamic_table_size(&self) -> usize {
        self.table.size()
    }

    /// The dynamic table's maximum size, as last set by a size update (or
    /// [`Decoder::new`]).
    pub fn dynamic_table_max(&self) -> usize {
        self.table.max()
    }

    /// Heap bytes this decoder holds (its dynamic table's storage and
    /// scratch buffers), for memory accounting.
    pub fn retained(&self) -> usize {
        self.table.retained() + self.scratch.capacity()
    }

    /// Gives back scratch capacity beyond what the dynamic table needs
    /// (call it when a connection goes idle). Later blocks allocate again
    /// as they need.
    pub fn shrink(&mut self) {
        self.scratch = Vec::new();
        self.table.shrink_to_fit();
    }
}

/// The field at `index` in the combined index space (RFC 7541 2.3.3).
///
/// A function of the table alone, not of the decoder, so that the returned
/// slices borrow only the table and the scratch buffer stays writable.
#[inline]
fn lookup(table: &DynamicTable, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
    if index == 0 {
        return Err(HpackError::IndexZero);
    }
    if let Some(entry) = static_entry(index) {
        return Ok(entry);
    }
    table
        .get(index - STATIC_LEN - 1)
        .ok_or(HpackError::IndexOutOfRange {
            index,
            dynamic_len: table.len(),
        })
}
