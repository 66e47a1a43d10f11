//! Helpers shared by the integration tests: reading the captured vectors.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

use bytes::Bytes;
use keel_wire::baidu_std::{MetaView, RpcMeta, RpcRequestMeta, RpcResponseMeta};

/// `example.EchoRequest` / `example.EchoResponse` from `vectors/echo.proto`
/// (both are `required string message = 1`). `Option` keeps presence, so a
/// server can tell a missing required field from an empty one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoMessage {
    /// Field 1.
    #[prost(string, optional, tag = "1")]
    pub message: Option<String>,
}

/// One captured frame: where it came from, what its comment says, its bytes.
#[derive(Debug, Clone)]
pub struct Capture {
    /// File name, plus the section title for `wire_cases.txt`.
    pub name: String,
    /// `true` for `# REQUEST` sections and `*_request*.hex` files.
    pub is_request: bool,
    /// The sizes in the `# header:` comment line.
    pub claimed: Claimed,
    /// The raw frame.
    pub bytes: Bytes,
}

/// Sizes stated by a capture's `# header:` comment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Claimed {
    pub body_size: usize,
    pub meta_size: usize,
    pub payload_size: usize,
    pub attachment_size: usize,
}

pub fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn read(name: &str) -> String {
    let path = vectors_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn hex(line: &str) -> Bytes {
    let line = line.trim();
    assert!(line.len() % 2 == 0, "odd hex length");
    (0..line.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&line[i..i + 2], 16).expect("hex digit"))
        .collect::<Vec<u8>>()
        .into()
}

fn claimed(line: &str) -> Claimed {
    let mut c = Claimed::default();
    for word in line.split_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        let slot = match key {
            "body_size" => &mut c.body_size,
            "meta_size" => &mut c.meta_size,
            "payload_size" => &mut c.payload_size,
            "attachment_size" => &mut c.attachment_size,
            _ => continue,
        };
        *slot = value.parse().expect("a size");
    }
    c
}

/// Parses one file's captures: sections start at `# REQUEST` / `# RESPONSE`
/// (or the file start), and each has a `# header:` line and one hex line
/// after `# raw hex (one line):`.
fn parse(name: &str, default_is_request: bool) -> Vec<Capture> {
    let text = read(name);
    let mut out = Vec::new();
    let mut title = name.to_owned();
    let mut is_request = default_is_request;
    let mut header = Claimed::default();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("# REQUEST") {
            title = format!("{name}: REQUEST{rest}");
            is_request = true;
        } else if let Some(rest) = line.strip_prefix("# RESPONSE") {
            title = format!("{name}: RESPONSE{rest}");
            is_request = false;
        } else if let Some(rest) = line.strip_prefix("# header:") {
            header = claimed(rest);
        } else if line.starts_with("# raw hex (one line):") {
            let raw = lines.next().expect("a hex line after the raw hex marker");
            out.push(Capture {
                name: title.clone(),
                is_request,
                claimed: header,
                bytes: hex(raw),
            });
        }
    }
    assert!(!out.is_empty(), "{name} holds no capture");
    out
}

pub fn echo_request() -> Capture {
    parse("echo_request.hex", true).remove(0)
}
pub fn echo_response() -> Capture {
    parse("echo_response.hex", false).remove(0)
}
pub fn echo_request_attachment() -> Capture {
    parse("echo_request_attachment.hex", true).remove(0)
}
pub fn echo_response_attachment() -> Capture {
    parse("echo_response_attachment.hex", false).remove(0)
}
pub fn wire_cases() -> Vec<Capture> {
    parse("wire_cases.txt", true)
}

/// Every captured frame.
pub fn all() -> Vec<Capture> {
    let mut v = vec![
        echo_request(),
        echo_response(),
        echo_request_attachment(),
        echo_response_attachment(),
    ];
    v.extend(wire_cases());
    v
}

/// What `view` says, as an `RpcMeta` (the fields a `MetaView` keeps).
pub fn view_to_meta(view: &MetaView<'_>) -> RpcMeta {
    RpcMeta {
        request: view.request.clone().map(|r| RpcRequestMeta {
            service_name: r.service_name.into(),
            method_name: r.method_name.into(),
            log_id: r.log_id,
            trace_id: r.trace_id,
            span_id: r.span_id,
            parent_span_id: r.parent_span_id,
            request_id: r.request_id.into(),
            timeout_ms: r.timeout_ms,
        }),
        response: view.response.clone().map(|r| RpcResponseMeta {
            error_code: r.error_code,
            error_text: r.error_text.into(),
        }),
        compress_type: view.compress_type,
        correlation_id: view.correlation_id,
        attachment_size: view.attachment_size,
        authentication_data: Bytes::copy_from_slice(view.authentication_data),
        // Later pairs replace earlier ones, as in a protobuf map.
        user_fields: view
            .user_fields()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        ..RpcMeta::default()
    }
}

/// `meta` without the fields a `MetaView` checks but does not keep.
pub fn kept_by_view(meta: &RpcMeta) -> RpcMeta {
    RpcMeta {
        chunk_info: None,
        stream_settings: None,
        content_type: 0,
        checksum_type: 0,
        checksum_value: Bytes::new(),
        ..meta.clone()
    }
}

/// Asserts that `view` and the prost-decoded `meta` agree field by field.
#[track_caller]
pub fn assert_view_eq(view: &MetaView<'_>, meta: &RpcMeta, what: &str) {
    assert_eq!(view_to_meta(view), kept_by_view(meta), "{what}");
    assert_eq!(view.error_code(), meta.error_code(), "{what}");
    for (key, value) in &meta.user_fields {
        assert_eq!(
            view.user_fields.get(key).as_deref(),
            Some(&**value),
            "{what}"
        );
    }
}
