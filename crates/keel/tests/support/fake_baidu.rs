//! A baidu_std "server" written by hand, for tests of what a client does
//! with answers no Keel server sends: each request is answered with the
//! frame a test's function makes of it, byte for byte.
#![allow(dead_code)] // each test binary uses part of it

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::BytesMut;
use keel_wire::baidu_std::{Limits, decode_raw_frame};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::EchoRequest;

/// Makes the whole answer frame to a request: its correlation id and its
/// decoded message.
pub type Answer = dyn Fn(i64, &EchoRequest) -> Vec<u8> + Send + Sync;

/// A running fake server on an ephemeral loopback port; ends when dropped.
pub struct FakeServer {
    pub addr: String,
    /// Connections accepted so far.
    pub accepts: Arc<AtomicU64>,
    /// Requests read so far.
    pub requests: Arc<AtomicU64>,
    /// While set, every connection is closed as soon as it is accepted.
    pub close_at_once: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a fake server answering every request with `answer`.
pub async fn start(
    answer: impl Fn(i64, &EchoRequest) -> Vec<u8> + Send + Sync + 'static,
) -> FakeServer {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr").to_string();
    let accepts = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let close_at_once = Arc::new(AtomicBool::new(false));
    let answer: Arc<Answer> = Arc::new(answer);
    let task = tokio::spawn({
        let (accepts, requests, close_at_once) =
            (accepts.clone(), requests.clone(), close_at_once.clone());
        async move {
            // The connections end with the accept loop (aborted on drop).
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                accepts.fetch_add(1, Ordering::Relaxed);
                if close_at_once.load(Ordering::Relaxed) {
                    drop(stream);
                    continue;
                }
                connections.spawn(serve(stream, answer.clone(), requests.clone()));
                while connections.try_join_next().is_some() {}
            }
        }
    });
    FakeServer {
        addr,
        accepts,
        requests,
        close_at_once,
        task,
    }
}

async fn serve(mut stream: tokio::net::TcpStream, answer: Arc<Answer>, requests: Arc<AtomicU64>) {
    let limits = Limits::default();
    let mut inbuf = BytesMut::with_capacity(8 * 1024);
    loop {
        match stream.read_buf(&mut inbuf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut out = Vec::new();
        while let Ok(Some(frame)) = decode_raw_frame(&mut inbuf, &limits) {
            let Ok(meta) = frame.meta() else { return };
            let Ok((payload, _)) = frame.split(&meta) else {
                return;
            };
            let request = EchoRequest::decode(payload).unwrap_or_default();
            requests.fetch_add(1, Ordering::Relaxed);
            out.extend_from_slice(&answer(meta.correlation_id, &request));
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Appends `value` as a protobuf varint.
pub fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A baidu_std response frame: `RpcMeta { response { error_code,
/// error_text } compress_type correlation_id }` (the text as raw bytes,
/// valid UTF-8 or not), then `payload`.
pub fn response(
    cid: i64,
    error_code: i32,
    error_text: &[u8],
    compress_type: i32,
    payload: &[u8],
) -> Vec<u8> {
    let mut response = vec![0x08];
    varint(&mut response, error_code as i64 as u64);
    if !error_text.is_empty() {
        response.push(0x12);
        varint(&mut response, error_text.len() as u64);
        response.extend_from_slice(error_text);
    }
    let mut meta = vec![0x12];
    varint(&mut meta, response.len() as u64);
    meta.extend_from_slice(&response);
    if compress_type != 0 {
        meta.push(0x18);
        varint(&mut meta, compress_type as u64);
    }
    meta.push(0x20);
    varint(&mut meta, cid as u64);
    let mut frame = b"PRPC".to_vec();
    frame.extend_from_slice(&((meta.len() + payload.len()) as u32).to_be_bytes());
    frame.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    frame.extend_from_slice(&meta);
    frame.extend_from_slice(payload);
    frame
}

/// The answer a well-behaved echo server gives.
pub fn echo(cid: i64, request: &EchoRequest) -> Vec<u8> {
    let payload = super::EchoResponse {
        message: request.message.clone(),
    }
    .encode_to_vec();
    response(cid, 0, b"", 0, &payload)
}

/// Raw snappy whose header announces `len` bytes, padded with zeros to
/// `total` bytes: a claim the bytes cannot back.
pub fn snappy_claiming(len: u64, total: usize) -> Vec<u8> {
    let mut out = Vec::new();
    varint(&mut out, len);
    out.resize(total, 0);
    out
}
