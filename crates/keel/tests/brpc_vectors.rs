//! Bytes captured from a real brpc 1.17 echo client, sent to Keel's server
//! over TCP: the answers mean what brpc's own server answered (error code,
//! correlation id, message, attachment), matched by correlation id.

mod support;

use std::path::PathBuf;

use keel::bytes::BytesMut;
use keel_wire::baidu_std::{Frame, Limits, decode_frame};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One captured frame: its title line and raw bytes.
struct Captured {
    title: String,
    bytes: Vec<u8>,
}

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../keel-wire/tests/vectors")
}

/// Every frame of a capture file, in order.
fn read_captures(name: &str) -> Vec<Captured> {
    let text = std::fs::read_to_string(vectors_dir().join(name)).expect("vector file");
    let mut out = Vec::new();
    let mut title = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("# REQUEST")
            || line.starts_with("# RESPONSE")
            || out.is_empty() && title.is_empty()
        {
            title = line.to_owned();
        }
        if line.starts_with("# raw hex") {
            let hex = lines.next().expect("hex line follows").trim();
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            out.push(Captured {
                title: title.clone(),
                bytes,
            });
        }
    }
    out
}

fn decode_one(bytes: &[u8]) -> Frame {
    let mut buf = BytesMut::from(bytes);
    decode_frame(&mut buf, &Limits::default())
        .expect("valid frame")
        .expect("complete frame")
}

/// Sends `request` on `stream` and reads the one response frame.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Frame {
    stream.write_all(request).await.expect("write");
    let mut buf = BytesMut::new();
    loop {
        if let Some(frame) = decode_frame(&mut buf, &Limits::default()).expect("valid response") {
            return frame;
        }
        let n = stream.read_buf(&mut buf).await.expect("read");
        assert!(n > 0, "server closed before answering");
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct EchoMessage {
    #[prost(string, optional, tag = "1")]
    message: Option<String>,
}

async fn check_pair(stream: &mut TcpStream, request: &Captured, brpc_answer: &Captured) {
    let sent = decode_one(&request.bytes);
    let expected = decode_one(&brpc_answer.bytes);
    let got = exchange(stream, &request.bytes).await;
    let what = &request.title;
    assert_eq!(got.meta.correlation_id, sent.meta.correlation_id, "{what}");
    assert_eq!(
        got.meta.correlation_id, expected.meta.correlation_id,
        "{what}"
    );
    let brpc_code = expected.meta.error_code();
    let keel_code = got.meta.error_code();
    if what.contains("unknown service") {
        // brpc 1.17 answers 1002 here; Keel uses ENOSERVICE as brpc's
        // errno table defines it.
        assert_eq!((brpc_code, keel_code), (1002, 1001), "{what}");
    } else {
        assert_eq!(keel_code, brpc_code, "{what}: {:?}", got.meta);
    }
    if brpc_code == 0 {
        let want = EchoMessage::decode(expected.payload.clone()).expect("brpc payload");
        let have = EchoMessage::decode(got.payload.clone()).expect("keel payload");
        assert_eq!(have, want, "{what}");
        assert_eq!(got.attachment.len(), expected.attachment.len(), "{what}");
    } else {
        assert!(got.payload.is_empty(), "{what}");
    }
}

#[tokio::test]
async fn keel_answers_brpc_echo_client_bytes_like_brpc() {
    // brpc's echo server echoes the attachment as is; Keel's test echo
    // reverses it, so use a service that echoes it unchanged.
    struct Plain;
    impl support::EchoService for Plain {
        async fn echo(
            &self,
            ctx: &keel::Context,
            req: &support::EchoRequest,
            response: &mut support::EchoResponse,
        ) -> Result<(), keel::Status> {
            ctx.set_response_attachment(ctx.attachment().clone());
            response.message.clone_from(&req.message);
            Ok(())
        }
    }
    let server = keel::Server::builder()
        .add_service(support::EchoServiceServer::new(Plain))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut stream = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");

    let pairs = [
        ("echo_request.hex", "echo_response.hex"),
        (
            "echo_request_attachment.hex",
            "echo_response_attachment.hex",
        ),
    ];
    for (req, resp) in pairs {
        let req = read_captures(req).remove(0);
        let resp = read_captures(resp).remove(0);
        check_pair(&mut stream, &req, &resp).await;
    }
    let attachment_answer = decode_one(&read_captures("echo_response_attachment.hex")[0].bytes);
    assert_eq!(attachment_answer.attachment.len(), 3);

    let cases = read_captures("wire_cases.txt");
    let requests: Vec<_> = cases
        .iter()
        .filter(|c| c.title.starts_with("# REQUEST"))
        .collect();
    assert!(requests.len() >= 4, "captures found: {}", cases.len());
    for req in requests {
        let cid = decode_one(&req.bytes).meta.correlation_id;
        let answer = cases
            .iter()
            .filter(|c| c.title.starts_with("# RESPONSE"))
            .find(|c| decode_one(&c.bytes).meta.correlation_id == cid)
            .expect("brpc's answer to this request");
        check_pair(&mut stream, req, answer).await;
    }
}
