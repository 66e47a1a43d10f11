//! Entry points for the fuzz targets in `fuzz/` (built only with
//! `--cfg fuzzing`, which cargo-fuzz sets): Keel's own decoders of bytes a
//! peer sends, reached the way a connection reaches them.
//!
//! Each function takes arbitrary bytes and must not panic; the checks they
//! make on the results panic when an invariant breaks.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::builder::{Port, ServerCore};

/// gRPC headers and trailers as a peer may send them: the input split into
/// `name: value` lines; the metadata, status, compression and trace
/// readers run on what `http` accepts. Metadata read back out and in again
/// is the same.
pub fn grpc_headers(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let metadata = crate::codec::grpc::metadata_from(&headers);
    let head = crate::codec::grpc::ResponseHead::from_map(&headers);
    assert_eq!(head.metadata, metadata, "the client reads other metadata");
    let _ = head.encoding();
    let _ = crate::codec::grpc::trace_from(&headers);
    // A status read from the trailers, written as trailers and read again,
    // is the same.
    if let Some(Err(status)) = head.status() {
        let mut written = HeaderMap::new();
        crate::codec::grpc::status_into(&status, &mut written);
        let again = crate::codec::grpc::ResponseHead::from_map(&written)
            .status()
            .expect("a status was written")
            .expect_err("a failure");
        assert_eq!(again.code(), status.code(), "{status} became {again}");
        assert_eq!(again.message(), status.message(), "{status} became {again}");
    }
    let mut again = HeaderMap::new();
    if crate::codec::grpc::metadata_into(&metadata, &mut again, crate::Code::EREQUEST).is_ok() {
        let back = crate::codec::grpc::metadata_from(&again);
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            metadata.iter().collect::<Vec<_>>(),
            "metadata changed on its way out and in"
        );
    }
}

/// The JSON of a JSON call, as the request of etcd's `Range` (bytes,
/// enums, 64-bit integers), `Watch` (a oneof) or `LeaseGrant`, chosen by
/// the first byte. What decodes, encodes back to JSON that decodes to the
/// same protobuf.
pub fn json_transcode(data: &[u8]) {
    use crate::etcd::api::etcdserverpb::{kv, lease, watch};
    let Some((&which, json)) = data.split_first() else {
        return;
    };
    let method = match which % 3 {
        0 => &kv::RANGE,
        1 => &watch::WATCH,
        _ => &lease::LEASE_GRANT,
    };
    let pool = crate::codec::json::pool_of(method).expect("embedded descriptors");
    let descriptor =
        crate::codec::json::message(&pool, method.request_type).expect("the request type");
    let Ok(encoded) = crate::codec::json::from_json(descriptor.clone(), json) else {
        return;
    };
    let text = crate::codec::json::to_json(descriptor.clone(), Bytes::from(encoded.clone()))
        .expect("a message that was decoded encodes to JSON");
    let again = crate::codec::json::from_json(descriptor, &text).expect("its JSON decodes");
    assert_eq!(again, encoded, "the JSON round trip changed the message");
}

/// A connection's first bytes: the protocol sniffers (keel-wire's and the
/// TLS ClientHello check) on every prefix agree with the whole.
pub fn sniff(data: &[u8]) {
    let whole = keel_wire::sniff(data);
    for end in 0..=data.len() {
        let prefix = &data[..end];
        let hello = crate::tls::is_client_hello(prefix);
        if let (Some(true), Some(&first)) = (hello, data.first()) {
            assert_eq!(first, 0x16);
        }
        match keel_wire::sniff(prefix) {
            keel_wire::Sniff::NeedMore => {}
            decided => {
                assert_eq!(
                    decided, whole,
                    "a prefix decided otherwise than the whole input"
                );
                break;
            }
        }
    }
}

/// A server core with the builtin services and the console, made once.
fn core() -> &'static Arc<ServerCore> {
    static CORE: OnceLock<Arc<ServerCore>> = OnceLock::new();
    CORE.get_or_init(|| {
        crate::Server::builder()
            .build_core()
            .expect("a server core")
    })
}

/// The bytes as an HTTP/1.1 connection to a server's port (JSON calls of
/// the builtin services, the console), read to the end; the server answers
/// or closes within a bound.
pub fn http1_request(data: &[u8]) {
    drive(data, |server, peer, shared, shutdown| async move {
        let open = Arc::new(crate::server::sniff::OpenGuard::new(shared.clone(), peer));
        let port = Port::Service { console: true };
        crate::server::http::serve(server, peer, shared, shutdown, open, port).await;
    });
}

/// The bytes as what follows the preface on an HTTP/2 connection to a
/// server's port (gRPC calls of the builtin services: health, reflection,
/// streaming ones included), read to the end; the server answers or closes
/// within a bound.
pub fn http2_connection(data: &[u8]) {
    let preface = &crate::server::http2::PREFACE[..];
    drive(data, |server, peer, shared, shutdown| async move {
        let open = crate::server::sniff::OpenGuard::new(shared.clone(), peer);
        let head = bytes::BytesMut::from(preface);
        crate::server::http2::serve(server, head, peer, shared, shutdown, open).await;
    });
}

/// The bytes as what a server sends on an HTTP/2 connection Keel's gRPC
/// client opened (the client's preface and SETTINGS are read and dropped):
/// a unary call on stream 1 and a streaming call on stream 3 each end,
/// answered or failed, within a bound; nothing panics; and the
/// connection's task ends once its transport is gone.
pub fn http2_client(data: &[u8]) {
    use keel_wire::hpack::Indexing;
    block_on(async {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let (alive, alive_rx) = tokio::sync::watch::channel(());
        let conn = crate::transport::http2::Connection::start(client, None, alive_rx);
        let fields = [
            (&b":method"[..], &b"POST"[..], Indexing::Yes),
            (b":path", b"/grpc.health.v1.Health/Check", Indexing::Yes),
        ];
        let mut encode = |e: &mut keel_wire::hpack::Encoder, b: &mut bytes::BytesMut| {
            e.encode(fields, b);
        };
        let unary = async {
            let mut stream = conn
                .open(
                    &mut encode,
                    &crate::streaming::Queued::Sealed(Bytes::from_static(&[0; 5])),
                    true,
                    1 << 20,
                )
                .await?;
            std::future::poll_fn(|cx| stream.poll_finished(cx))
                .await
                .map(|_| ())
        };
        let mut encode = |e: &mut keel_wire::hpack::Encoder, b: &mut bytes::BytesMut| {
            e.encode(fields, b);
        };
        let streaming = async {
            let stream = conn
                .open(
                    &mut encode,
                    &crate::streaming::Queued::Sealed(Bytes::new()),
                    false,
                    0,
                )
                .await?;
            stream.send(5, |q| q.extend_from_slice(&[0; 5])).await?;
            stream.close_send();
            if std::future::poll_fn(|cx| stream.poll_head(cx))
                .await?
                .is_none()
            {
                return Ok(());
            }
            loop {
                let next = std::future::poll_fn(|cx| stream.poll_data(cx)).await?;
                if let crate::transport::http2::Received::End(_) = next {
                    return Ok::<(), crate::Status>(());
                }
            }
        };
        // What the client sends is read (and dropped) all along, so
        // neither side blocks the other; the server's bytes go out,
        // then its side closes.
        let (mut rd, mut wr) = tokio::io::split(&mut server);
        let drain = async {
            let mut sink = [0u8; 4096];
            while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
            std::future::pending::<()>().await;
        };
        let write = async {
            let _ = wr.write_all(data).await;
            let _ = wr.shutdown().await;
        };
        let work = async { tokio::join!(unary, streaming, write) };
        let within = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::select! {
                _ = work => {}
                () = drain => {}
            }
        });
        assert!(within.await.is_ok(), "a call neither ended nor failed");
        // The transport and the server's end gone, the connection's
        // task ends (rule R5): it held the last reference.
        let task = Arc::downgrade(&conn);
        drop((conn, alive, server));
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while task.strong_count() > 0 {
                tokio::task::yield_now().await;
            }
        });
        assert!(ended.await.is_ok(), "the connection's task did not end");
    });
}

/// Writes `data` to a connection `serve` serves, closes the writing side,
/// and reads to the end: the server must answer or close within a bound.
fn drive<F: std::future::Future<Output = ()> + Send + 'static>(
    data: &[u8],
    serve: impl FnOnce(
        tokio::io::DuplexStream,
        SocketAddr,
        Arc<ServerCore>,
        tokio::sync::watch::Receiver<bool>,
    ) -> F,
) {
    block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        let (_shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let serving = tokio::spawn(serve(server, peer, core().clone(), shutdown_rx));
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer));
        assert!(read.await.is_ok(), "the server neither answered nor closed");
        serving.abort();
    });
}

/// Runs `work` to its end on this thread's runtime (one per fuzzing
/// thread, kept between inputs).
fn block_on<F: std::future::Future>(work: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
    }
    RUNTIME.with(|runtime| runtime.block_on(work))
}
