//! One server of a channel: `host:port` and a weight.

use std::fmt;

/// A server address as naming services give it: `host:port` (IPv6 as
/// `[::1]:8000`) and a weight for weighted balancers (default 1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// `host:port`.
    pub addr: String,
    /// Relative share of calls under weighted balancers; 0 is never picked
    /// by them.
    pub weight: u32,
}

/// An endpoint entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint {entry:?}: {reason}")]
pub struct EndpointError {
    /// The entry as given.
    pub entry: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Endpoint {
    /// An endpoint of weight 1.
    pub fn new(addr: impl Into<String>) -> Endpoint {
        Endpoint {
            addr: addr.into(),
            weight: 1,
        }
    }

    /// The same endpoint with another weight.
    pub fn with_weight(mut self, weight: u32) -> Endpoint {
        self.weight = weight;
        self
    }

    /// Parses one entry: `host:port`, optionally followed by whitespace and
    /// `weight=N`, e.g. `127.0.0.1:8001 weight=3`.
    pub fn parse(entry: &str) -> Result<Endpoint, EndpointError> {
        let bad = |reason| {
            Err(EndpointError {
                entry: entry.to_owned(),
                reason,
            })
        };
        let mut words = entry.split_whitespace();
        let Some(addr) = words.next() else {
            return bad("the entry is empty");
        };
        if let Err(reason) = check_addr(addr) {
            return bad(reason);
        }
        let mut endpoint = Endpoint::new(addr);
        for word in words {
            match word.split_once('=') {
                Some(("weight", n)) => match n.parse::<u32>() {
                    Ok(w) => endpoint.weight = w,
                    Err(_) => return bad("the weight is not a number from 0 to 4294967295"),
                },
                _ => return bad("expected `host:port` or `host:port weight=N`"),
            }
        }
        Ok(endpoint)
    }
}

/// Checks that `addr` is `host:port` with a non-empty host and a port that
/// is a number; the reason when it is not.
pub fn check_addr(addr: &str) -> Result<(), &'static str> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err("expected host:port");
    };
    if host.is_empty() || host == "[]" {
        return Err("the host is empty");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("an IPv6 host must be in brackets, e.g. [::1]:8000");
    }
    if port.parse::<u16>().is_err() {
        return Err("the port is not a number from 0 to 65535");
    }
    Ok(())
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.weight == 1 {
            f.write_str(&self.addr)
        } else {
            write!(f, "{} weight={}", self.addr, self.weight)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_and_without_weights() {
        assert_eq!(
            Endpoint::parse("127.0.0.1:8001").unwrap(),
            Endpoint::new("127.0.0.1:8001")
        );
        assert_eq!(
            Endpoint::parse("  [::1]:8002   weight=3 ").unwrap(),
            Endpoint::new("[::1]:8002").with_weight(3)
        );
        assert_eq!(
            Endpoint::new("h:1").with_weight(3).to_string(),
            "h:1 weight=3"
        );
    }

    #[test]
    fn bad_entries_say_why() {
        for (entry, why) in [
            ("", "empty"),
            ("127.0.0.1", "host:port"),
            (":80", "host is empty"),
            ("h:99999", "port"),
            ("::1:80", "brackets"),
            ("h:1 weight=x", "weight"),
            ("h:1 tag", "weight=N"),
        ] {
            let e = Endpoint::parse(entry).unwrap_err();
            assert!(e.to_string().contains(why), "{entry:?}: {e}");
        }
    }
}
