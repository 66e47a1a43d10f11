//! A plain HTTP/1.1 client over one keep-alive TCP connection, as a browser
//! or curl would speak to the console: requests written by hand, responses
//! read by `Content-Length`.
#![allow(dead_code)]

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A keep-alive connection.
pub struct Http1 {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Http1 {
    pub async fn connect(addr: std::net::SocketAddr) -> Http1 {
        Http1 {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    /// Sends raw bytes (a request written by the test).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, &[], b"").await
    }

    pub async fn post(&mut self, path: &str, body: &[u8]) -> Reply {
        self.request("POST", path, &[], body).await
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: keel\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.send_raw(&request).await;
        self.read_reply().await.expect("a reply")
    }

    /// Reads one response; `None` if the server closed the connection first.
    pub async fn read_reply(&mut self) -> Option<Reply> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if self.fill().await == 0 {
                return None;
            }
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).expect("ASCII head");
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while self.buf.len() < head_end + 4 + length {
            assert!(self.fill().await > 0, "closed within a body");
        }
        let body = self.buf[head_end + 4..head_end + 4 + length].to_vec();
        self.buf.drain(..head_end + 4 + length);
        Some(Reply {
            status,
            headers,
            body,
        })
    }

    /// Whether the server closes (or resets) the connection within 5 s.
    pub async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        let end = self.stream.read_to_end(&mut rest);
        tokio::time::timeout(std::time::Duration::from_secs(5), end)
            .await
            .is_ok()
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }
}

/// The value of the variable `name` on the `/vars` of the server at
/// `addr` (over a connection of its own).
pub async fn var(addr: std::net::SocketAddr, name: &str) -> f64 {
    let mut http = Http1::connect(addr).await;
    let vars = http.get("/vars?format=json").await.json();
    vars["vars"]
        .as_array()
        .expect("vars")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in /vars"))["value"]
        .as_f64()
        .expect("a number")
}
