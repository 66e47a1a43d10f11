//! Call metadata: string key/value pairs that travel with a call and its
//! answer (auth tokens, tenant ids, request ids).
//!
//! Owns: the [`Metadata`] type. On baidu_std it is `RpcMeta.user_fields`
//! (field 9, `map<string,string>`, as brpc's `Controller::request_user_fields`
//! carries it); gRPC will carry it as HTTP/2 headers. May not touch: wire
//! encoding (the protocols do that) or calls.

use std::fmt;

/// The metadata key that also travels in baidu_std's own request-id field
/// (`RpcRequestMeta.request_id`, what brpc's `Controller::set_request_id`
/// sets): the client side sends it there, the server side reads it back
/// as this entry.
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// String key/value pairs sent with a request or a response.
///
/// Empty metadata is a `Vec` that never allocated: calls that carry none
/// pay nothing. Keys are compared exactly; as in brpc's `user_fields` map a
/// key appears at most once ([`insert`](Self::insert) replaces).
///
/// ```
/// use keel::Metadata;
/// let mut md = Metadata::new();
/// md.insert("authorization", "Bearer t0ken");
/// md.insert("tenant", "acme");
/// md.insert("tenant", "globex");
/// assert_eq!(md.get("tenant"), Some("globex"));
/// assert_eq!(md.len(), 2);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<(String, String)>,
}

impl Metadata {
    /// No entries (no allocation; usable in `const`).
    pub const fn new() -> Metadata {
        Metadata {
            entries: Vec::new(),
        }
    }

    /// Sets `key` to `value`, replacing an earlier value of `key`.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Builder form of [`insert`](Self::insert).
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Metadata {
        self.insert(key, value);
        self
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.swap_remove(i).1)
    }

    /// The entries, in insertion order (except after a `remove`).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The entries as `(key, value)` pairs, in insertion order (what the
    /// wire encoders take).
    pub fn as_pairs(&self) -> &[(String, String)] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds every entry of `other`, replacing values of keys present in both.
    pub fn extend_from(&mut self, other: &Metadata) {
        for (k, v) in other.iter() {
            self.insert(k, v);
        }
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Metadata {
        let mut md = Metadata::new();
        for (k, v) in iter {
            md.insert(k, v);
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_remove_and_collect() {
        let mut md: Metadata = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        assert_eq!(md.len(), 2);
        assert_eq!(md.get("a"), Some("3"));
        assert_eq!(md.remove("a").as_deref(), Some("3"));
        assert_eq!(md.get("a"), None);
        assert_eq!(md.remove("zz"), None);
        let mut other = Metadata::new().with("b", "9").with("c", "4");
        other.extend_from(&md);
        assert_eq!(other.get("b"), Some("2"));
        assert_eq!(format!("{other:?}"), r#"{"b": "2", "c": "4"}"#);
        const EMPTY: Metadata = Metadata::new();
        assert!(EMPTY.is_empty());
    }
}
