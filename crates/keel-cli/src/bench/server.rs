//! The server's side of allocations per call: a Keel server with the
//! counting allocator publishes `keel_heap_allocations_total` and
//! `keel_server_calls_total` on its console (`/vars`), which answers on the
//! service's own port.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

/// Two of the server's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counters {
    allocs: f64,
    calls: f64,
}

impl Counters {
    /// The counters of the Keel server at `host_port`, or `None` when it
    /// has no console or no counting allocator (any other server).
    pub async fn read(host_port: &str) -> Option<Counters> {
        let addr = host_port.to_owned();
        tokio::task::spawn_blocking(move || fetch(&addr))
            .await
            .ok()
            .flatten()
    }

    /// Allocations per call between `before` and `self`.
    pub fn allocs_per_call(&self, before: &Counters) -> Option<f64> {
        let calls = self.calls - before.calls;
        (calls > 0.0).then(|| (self.allocs - before.allocs) / calls)
    }
}

fn fetch(addr: &str) -> Option<Counters> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    write!(
        stream,
        "GET /vars?format=json&q=keel_ HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = Vec::new();
    stream.take(1 << 20).read_to_end(&mut reply).ok()?;
    parse(&reply)
}

/// The counters in an HTTP reply from `/vars?format=json`.
fn parse(reply: &[u8]) -> Option<Counters> {
    let text = std::str::from_utf8(reply).ok()?;
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    let body = &text[text.find("\r\n\r\n")? + 4..];
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    let value = |name: &str| {
        json["vars"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == name)?["value"]
            .as_f64()
    };
    Some(Counters {
        allocs: value("keel_heap_allocations_total")?,
        calls: value("keel_server_calls_total")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_come_from_the_vars_page() {
        let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"vars\":[\
            {\"name\":\"keel_server_calls_total\",\"value\":10.0},\
            {\"name\":\"keel_heap_allocations_total\",\"value\":25.0}]}";
        let after = parse(reply).expect("parses");
        let before = Counters {
            allocs: 5.0,
            calls: 0.0,
        };
        assert_eq!(after.allocs_per_call(&before), Some(2.0));
        assert!(parse(b"HTTP/1.1 404 Not Found\r\n\r\n{}").is_none());
        let no_alloc = b"HTTP/1.1 200 OK\r\n\r\n{\"vars\":[{\"name\":\"keel_server_calls_total\",\"value\":1}]}";
        assert!(parse(no_alloc).is_none());
    }
}
