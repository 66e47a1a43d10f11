//! HPACK's two tables: the static table (RFC 7541 Appendix A) and the
//! dynamic table (sections 2.3.2 and 4).
//!
//! The dynamic table keeps every entry's bytes in one `Vec<u8>`, name then
//! value, oldest first, and a `VecDeque` of (offset, lengths) beside it.
//! Inserting appends to the buffer; evicting pops the oldest entry and only
//! moves `start` past its bytes. When the buffer is full, the live bytes are
//! moved to its front (compaction), and the buffer grows, by doubling, to
//! twice the live data if that is more than it has, and straight to twice
//! the table's maximum once that passes the maximum. So an entry is always one contiguous
//! slice (lookups hand out `&[u8]` with no copying), no entry is allocated
//! on its own, compaction moves each byte at most about twice over its life,
//! and the buffer never exceeds twice the table's maximum size, since the
//! entries' bytes never exceed that size (each entry also counts 32 bytes of
//! overhead). Once the buffer and the deque have reached their working size,
//! a connection's table does not allocate again.

use std::collections::VecDeque;

/// Entries in the static table.
pub(crate) const STATIC_LEN: usize = 61;

/// The static table, index 1 first (RFC 7541 Appendix A).
const STATIC_ENTRIES: [(&[u8], &[u8]); STATIC_LEN] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The static table, as one copy in memory (a `const` would be copied into
/// each function that indexes it at run time).
static STATIC: [(&[u8], &[u8]); STATIC_LEN] = STATIC_ENTRIES;

/// The static entry at 1-based `index`, if `index` is in 1..=61.
#[inline]
pub(crate) fn static_entry(index: usize) -> Option<(&'static [u8], &'static [u8])> {
    STATIC.get(index.checked_sub(1)?).copied()
}

/// The longest name in the static table (`access-control-allow-origin`).
const MAX_STATIC_NAME: usize = 27;

/// The encoder's index of static names: the 0-based position of the first
/// entry of each distinct name, grouped by name length, so finding a name
/// compares it with the two or three names of its length, not all 52.
struct NamesByLen {
    /// First entries of distinct names, shortest names first.
    order: [u8; STATIC_LEN],
    /// `order[start[n]..start[n + 1]]` are the names of length `n`.
    start: [u8; MAX_STATIC_NAME + 2],
}

static NAMES_BY_LEN: NamesByLen = names_by_len();

const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn names_by_len() -> NamesByLen {
    let mut order = [0u8; STATIC_LEN];
    let mut start = [0u8; MAX_STATIC_NAME + 2];
    let mut n = 0;
    let mut len = 0;
    while len <= MAX_STATIC_NAME {
        start[len] = n as u8;
        let mut i = 0;
        while i < STATIC_LEN {
            let name = STATIC_ENTRIES[i].0;
            assert!(name.len() <= MAX_STATIC_NAME);
            // Entries sharing a name are adjacent; index the first.
            if name.len() == len && (i == 0 || !bytes_eq(STATIC_ENTRIES[i - 1].0, name)) {
                order[n] = i as u8;
                n += 1;
            }
            i += 1;
        }
        len += 1;
    }
    start[MAX_STATIC_NAME + 1] = n as u8;
    NamesByLen { order, start }
}

/// Byte equality, inline for short slices (the names and most values of
/// header fields): two overlapping fixed-size compares cover every length
/// up to 16 and compile to a few loads, where `==` calls `memcmp`, whose
/// call costs more than the comparison at these lengths.
#[inline]
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    match a.len() {
        0 => true,
        1..=3 => a.first() == b.first() && a.last() == b.last() && a.get(1) == b.get(1),
        4..=7 => {
            a.first_chunk::<4>() == b.first_chunk::<4>()
                && a.last_chunk::<4>() == b.last_chunk::<4>()
        }
        8..=16 => {
            a.first_chunk::<8>() == b.first_chunk::<8>()
                && a.last_chunk::<8>() == b.last_chunk::<8>()
        }
        _ => a == b,
    }
}

/// What the static table holds for a field: the 1-based index of its name's
/// first entry, and of the entry with exactly this name and value.
#[derive(Clone, Copy, Default)]
pub(crate) struct StaticMatch {
    pub(crate) name: Option<usize>,
    pub(crate) field: Option<usize>,
}

/// Looks `(name, value)` up in the static table.
pub(crate) fn static_find(name: &[u8], value: &[u8]) -> StaticMatch {
    let by_len = &NAMES_BY_LEN;
    let candidates = match (
        by_len.start.get(name.len()),
        by_len.start.get(name.len() + 1),
    ) {
        (Some(&a), Some(&b)) => by_len
            .order
            .get(usize::from(a)..usize::from(b))
            .unwrap_or_default(),
        _ => return StaticMatch::default(),
    };
    for &first in candidates {
        let first = usize::from(first);
        if STATIC.get(first).is_none_or(|&(n, _)| !same(n, name)) {
            continue;
        }
        let mut found = StaticMatch {
            name: Some(first + 1),
            field: None,
        };
        for (i, &(n, v)) in STATIC.iter().enumerate().skip(first) {
            if !same(n, name) {
                break;
            }
            if same(v, value) {
                found.field = Some(i + 1);
                break;
            }
        }
        return found;
    }
    StaticMatch::default()
}

/// What a field costs in a dynamic table: its bytes plus 32 (RFC 7541 4.1).
#[inline]
pub(crate) fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len().saturating_add(value.len()).saturating_add(32)
}

/// Where one entry's bytes are in [`DynamicTable::buf`].
#[derive(Clone, Copy, Debug)]
struct Entry {
    pos: usize,
    name_len: usize,
    value_len: usize,
}

impl Entry {
    fn end(&self) -> usize {
        self.pos + self.name_len + self.value_len
    }

    fn size(&self) -> usize {
        self.name_len + self.value_len + 32
    }
}

/// A dynamic table: a FIFO of fields bounded by a size in bytes.
#[derive(Debug, Default)]
pub(crate) struct DynamicTable {
    /// Entries' bytes, name then value, oldest first. Bytes before `start`
    /// belong to evicted entries and are reclaimed by compaction.
    buf: Vec<u8>,
    start: usize,
    /// Oldest at the front, newest at the back.
    entries: VecDeque<Entry>,
    /// The sum of the entries' sizes, at most `max`.
    size: usize,
    max: usize,
}

impl DynamicTable {
    pub(crate) fn new(max: usize) -> DynamicTable {
        DynamicTable {
            max,
            ..DynamicTable::default()
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// The entry at dynamic index `index`, 0 being the newest.
    #[inline]
    pub(crate) fn get(&self, index: usize) -> Option<(&[u8], &[u8])> {
        let i = self.entries.len().checked_sub(index.checked_add(1)?)?;
        self.slices(self.entries.get(i)?)
    }

    #[inline]
    fn slices(&self, e: &Entry) -> Option<(&[u8], &[u8])> {
        let entry = self.buf.get(e.pos..e.end())?;
        entry.split_at_checked(e.name_len)
    }

    /// The entries, newest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries.iter().rev().filter_map(|e| self.slices(e))
    }

    /// Looks `(name, value)` up: the dynamic index of an entry with exactly
    /// this name and value, and of the newest entry with this name.
    pub(crate) fn find(&self, name: &[u8], value: &[u8]) -> (Option<usize>, Option<usize>) {
        let mut name_match = None;
        for (i, e) in self.entries.iter().rev().enumerate() {
            // Lengths first: most entries differ there, without touching
            // their bytes.
            if e.name_len != name.len() {
                continue;
            }
            let Some((n, v)) = self.slices(e) else {
                continue;
            };
            if !same(n, name) {
                continue;
            }
            if same(v, value) {
                return (Some(i), Some(i));
            }
            name_match.get_or_insert(i);
        }
        (None, name_match)
    }

    /// Changes the maximum size, evicting the oldest entries until the rest
    /// fit (RFC 7541 4.3).
    pub(crate) fn set_max(&mut self, max: usize) {
        self.max = max;
        while self.size > self.max {
            self.evict_oldest();
        }
    }

    /// Adds a field as the newest entry, evicting the oldest ones to make
    /// room (RFC 7541 4.4). A field larger than the whole table empties it
    /// and is not added; returns whether it was added.
    pub(crate) fn insert(&mut self, name: &[u8], value: &[u8]) -> bool {
        let size = entry_size(name, value);
        if size > self.max {
            self.clear();
            return false;
        }
        while self.size.saturating_add(size) > self.max {
            self.evict_oldest();
        }
        // size <= max, so this does not overflow.
        let need = name.len() + value.len();
        self.make_room(need);
        let pos = self.buf.len();
        self.buf.extend_from_slice(name);
        self.buf.extend_from_slice(value);
        self.entries.push_back(Entry {
            pos,
            name_len: name.len(),
            value_len: value.len(),
        });
        self.size += size;
        true
    }

    fn evict_oldest(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.size = self.size.saturating_sub(e.size());
            self.start = e.end();
        }
        if self.entries.is_empty() {
            // Free compaction: nothing is live.
            self.buf.clear();
            self.start = 0;
            self.size = 0;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.buf.clear();
        self.start = 0;
        self.size = 0;
    }

    /// Moves the live bytes to the front of the buffer.
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        let start = self.start;
        self.buf.copy_within(start.., 0);
        self.buf.truncate(self.buf.len() - start);
        for e in &mut self.entries {
            e.pos -= start;
        }
        self.start = 0;
    }

    /// Makes sure `need` more bytes can be appended without reallocating
    /// more than the growth policy in the module docs allows.
    fn make_room(&mut self, need: usize) {
        if self.buf.capacity() - self.buf.len() >= need {
            return;
        }
        self.compact();
        let want = self.buf.len() + need;
        // Twice the live data, so that the next compaction comes only after
        // about as many bytes were appended as it moves; at least double the
        // old capacity, so growing takes few steps. Past `max`, straight to
        // twice `max`, the ceiling (twice the most the entries' bytes can
        // be): a table that busy gets there anyway, and getting there in one
        // step leaves no last reallocation to a late fluctuation in the
        // sizes of the entries.
        let doubled = want
            .saturating_mul(2)
            .max(self.buf.capacity().saturating_mul(2));
        let target = if doubled > self.max {
            self.max.saturating_mul(2)
        } else {
            doubled
        }
        .max(want);
        if self.buf.capacity() < target {
            self.buf.reserve_exact(target - self.buf.len());
        }
    }

    /// Heap bytes held.
    pub(crate) fn retained(&self) -> usize {
        self.buf.capacity() + self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    /// Gives back capacity the current entries do not use.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.compact();
        self.buf.shrink_to_fit();
        self.entries.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_names_are_indexed_by_length() {
        for (i, &(name, value)) in STATIC.iter().enumerate() {
            let found = static_find(name, value);
            assert_eq!(found.field, Some(i + 1), "{}", name.escape_ascii());
            let first = STATIC.iter().position(|&(n, _)| n == name).unwrap();
            assert_eq!(found.name, Some(first + 1));
        }
        let found = static_find(b":status", b"302");
        assert_eq!((found.name, found.field), (Some(8), None));
        let found = static_find(b"x-unknown", b"");
        assert_eq!((found.name, found.field), (None, None));
        let long = [b'a'; 100];
        assert!(static_find(&long, b"").name.is_none());
    }

    #[test]
    fn same_is_equality() {
        let words: Vec<Vec<u8>> = (0..=40)
            .flat_map(|len| {
                let base: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                // The slice itself and, for each position, a copy differing
                // there only.
                let mut variants = vec![base.clone()];
                for i in 0..len {
                    let mut v = base.clone();
                    v[i] ^= 0x20;
                    variants.push(v);
                }
                variants
            })
            .collect();
        for a in &words {
            for b in &words {
                assert_eq!(same(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn buffer_stays_within_twice_the_maximum() {
        let mut t = DynamicTable::new(256);
        for i in 0..10_000usize {
            let value = vec![b'v'; i % 200];
            t.insert(b"name", &value);
            assert!(t.size() <= 256);
            assert!(t.buf.capacity() <= 512, "{}", t.buf.capacity());
            let (n, v) = t.get(0).unwrap();
            assert_eq!((n, v), (&b"name"[..], &value[..]));
        }
    }
}
