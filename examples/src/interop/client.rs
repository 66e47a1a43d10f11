//! The interop cases a gRPC interop client runs, over a Keel channel.
//!
//! Each case returns `Ok(())` when every assertion of gRPC's description
//! held, or what went wrong. Where Keel's client cannot observe what the
//! description asks to assert, the case checks what it can and says so:
//! - **server_compressed_unary**: whether a response message had its
//!   compressed flag set is not visible to a Keel caller; the case checks
//!   that both calls (one asking for compression) succeed with the right
//!   sizes, so a compressed response is at least read correctly.
//! - **client_compressed_unary**: the feature probe (an uncompressed request
//!   with `expect_compressed`) must fail with INVALID_ARGUMENT on a server
//!   that checks; a server that answers it OK does not implement
//!   CompressedRequest (grpcio's Python server cannot see compression
//!   either), which is reported on stderr and the rest of the case runs.
//! - **custom_metadata** (unary part): Keel merges a unary response's
//!   headers and trailers into one [`keel::Metadata`], so the two keys are
//!   checked for presence and value, not for which of the two they came in.
//!   The streaming part checks headers and trailers apart.
//! - **cancel_after_begin**, **cancel_after_first_response**: a Keel caller
//!   cancels by dropping the call (RST_STREAM CANCEL) and sees no status of
//!   its own; the case checks the drop happens where the description puts
//!   it and that the connection serves a call right after.

use std::time::Duration;

use keel::streaming::Streaming;
use keel::{CallOptions, Channel, Compression, Metadata, Status};

use super::{ECHO_INITIAL, ECHO_TRAILING, base64_decode, base64_encode};
use crate::grpc_testing::{
    BoolValue, EchoStatus, Empty, Payload, ResponseParameters, SimpleRequest,
    StreamingInputCallRequest, StreamingOutputCallRequest, StreamingOutputCallResponse,
    TestServiceClient, UnimplementedServiceClient,
};

/// Every case [`run`] knows, in the order of gRPC's descriptions.
pub const CASES: &[&str] = &[
    "empty_unary",
    "large_unary",
    "client_compressed_unary",
    "server_compressed_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "empty_stream",
    "timeout_on_sleeping_server",
    "cancel_after_begin",
    "cancel_after_first_response",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
];

/// The channel an interop client uses: gRPC to `host:port`, no retries (a
/// case must see the first outcome), and a timeout long enough for the
/// largest case on a loaded machine.
pub fn channel(host: &str, port: u16) -> Result<Channel, String> {
    Channel::builder(&format!("grpc://{host}:{port}"))
        .connect_timeout(Duration::from_secs(5))
        .timeout(Some(Duration::from_secs(20)))
        .max_retry(0)
        .build()
        .map_err(|e| format!("cannot make a channel to {host}:{port}: {e}"))
}

/// Runs the case `name` against the server behind `channel`.
pub async fn run(channel: &Channel, name: &str) -> Result<(), String> {
    let client = TestServiceClient::new(channel);
    match name {
        "empty_unary" => empty_unary(&client).await,
        "large_unary" => large_unary(&client).await,
        "client_compressed_unary" => client_compressed_unary(&client).await,
        "server_compressed_unary" => server_compressed_unary(&client).await,
        "client_streaming" => client_streaming(&client).await,
        "server_streaming" => server_streaming(&client).await,
        "ping_pong" => ping_pong(&client).await,
        "empty_stream" => empty_stream(&client).await,
        "timeout_on_sleeping_server" => timeout_on_sleeping_server(&client).await,
        "cancel_after_begin" => cancel_after_begin(&client).await,
        "cancel_after_first_response" => cancel_after_first_response(&client).await,
        "custom_metadata" => custom_metadata(&client).await,
        "status_code_and_message" => status_code_and_message(&client).await,
        "special_status_message" => special_status_message(&client).await,
        "unimplemented_method" => unimplemented_method(&client).await,
        "unimplemented_service" => unimplemented_service(channel).await,
        other => Err(format!(
            "unknown test case {other:?}; known: {}",
            CASES.join(", ")
        )),
    }
}

/// What the description's sizes are made of.
fn zeros(len: usize) -> Option<Payload> {
    Some(Payload {
        r#type: 0,
        body: vec![0; len],
    })
}

fn bool_value(value: bool) -> Option<BoolValue> {
    Some(BoolValue { value })
}

/// Names a failed step: `what` and the status it ended with.
fn failed(what: &str) -> impl FnOnce(Status) -> String + '_ {
    move |status| {
        format!(
            "{what}: {} (gRPC code {}): {}",
            status.code(),
            status.code().grpc(),
            status.message()
        )
    }
}

/// Checks that `payload` is `len` zero bytes.
fn check_payload(payload: Option<&Payload>, len: usize, what: &str) -> Result<(), String> {
    let body = payload.map_or(&[][..], |p| &p.body[..]);
    if body.len() != len {
        return Err(format!(
            "{what}: payload body of {} bytes, expected {len}",
            body.len()
        ));
    }
    if body.iter().any(|&b| b != 0) {
        return Err(format!("{what}: payload body is not all zeros"));
    }
    Ok(())
}

/// Checks that a call failed with gRPC code `code` (and `message`, when
/// given).
fn check_status<T>(
    result: Result<T, Status>,
    code: u32,
    message: Option<&str>,
    what: &str,
) -> Result<(), String> {
    let status = match result {
        Ok(_) => return Err(format!("{what}: succeeded, expected gRPC code {code}")),
        Err(status) => status,
    };
    if status.code().grpc() != code {
        return Err(format!(
            "{what}: gRPC code {} ({}: {:?}), expected {code}",
            status.code().grpc(),
            status.code(),
            status.message()
        ));
    }
    if let Some(message) = message {
        if status.message() != message {
            return Err(format!(
                "{what}: status message {:?}, expected {message:?}",
                status.message()
            ));
        }
    }
    Ok(())
}

/// Reads the next response of a stream, which must be there.
async fn next_response(
    responses: &mut Streaming<StreamingOutputCallResponse>,
    what: &str,
) -> Result<StreamingOutputCallResponse, String> {
    responses
        .message()
        .await
        .map_err(failed(what))?
        .ok_or_else(|| format!("{what}: the stream ended early"))
}

/// Reads the end of a stream, which must come with no more responses.
async fn expect_end(
    responses: &mut Streaming<StreamingOutputCallResponse>,
    what: &str,
) -> Result<(), String> {
    match responses.message().await.map_err(failed(what))? {
        None => Ok(()),
        Some(_) => Err(format!("{what}: more responses than asked for")),
    }
}

fn large_request() -> SimpleRequest {
    SimpleRequest {
        response_size: 314_159,
        payload: zeros(271_828),
        ..SimpleRequest::default()
    }
}

fn output_request(size: i32, payload: usize) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: vec![ResponseParameters {
            size,
            ..ResponseParameters::default()
        }],
        payload: zeros(payload),
        ..StreamingOutputCallRequest::default()
    }
}

async fn empty_unary(client: &TestServiceClient) -> Result<(), String> {
    client
        .empty_call(&Empty {})
        .await
        .map_err(failed("EmptyCall"))?;
    Ok(())
}

async fn large_unary(client: &TestServiceClient) -> Result<(), String> {
    let response = client
        .unary_call(&large_request())
        .await
        .map_err(failed("UnaryCall"))?;
    check_payload(response.payload.as_ref(), 314_159, "UnaryCall")
}

async fn client_compressed_unary(client: &TestServiceClient) -> Result<(), String> {
    let mut request = large_request();
    request.expect_compressed = bool_value(true);
    match client.unary_call(&request).await {
        Err(status) if status.code().grpc() == 3 => {}
        Ok(_) => eprintln!(
            "client_compressed_unary: the server answered the uncompressed probe OK: it does \
             not check expect_compressed (CompressedRequest); going on with the compressed calls"
        ),
        Err(status) => {
            return Err(failed("the probe (uncompressed, expect_compressed)")(
                status,
            ));
        }
    }
    let response = client
        .unary_call(&request)
        .compression(Compression::Gzip)
        .await
        .map_err(failed("UnaryCall compressed"))?;
    check_payload(response.payload.as_ref(), 314_159, "UnaryCall compressed")?;
    request.expect_compressed = bool_value(false);
    let response = client
        .unary_call(&request)
        .await
        .map_err(failed("UnaryCall uncompressed"))?;
    check_payload(response.payload.as_ref(), 314_159, "UnaryCall uncompressed")
}

async fn server_compressed_unary(client: &TestServiceClient) -> Result<(), String> {
    for compressed in [true, false] {
        let mut request = large_request();
        request.response_compressed = bool_value(compressed);
        let what = format!("UnaryCall with response_compressed {compressed}");
        let response = client.unary_call(&request).await.map_err(failed(&what))?;
        check_payload(response.payload.as_ref(), 314_159, &what)?;
    }
    Ok(())
}

async fn client_streaming(client: &TestServiceClient) -> Result<(), String> {
    let mut call = client
        .streaming_input_call()
        .await
        .map_err(failed("StreamingInputCall"))?;
    for size in [27_182, 8, 1828, 45_904] {
        let request = StreamingInputCallRequest {
            payload: zeros(size),
            ..StreamingInputCallRequest::default()
        };
        call.send(&request)
            .await
            .map_err(failed("StreamingInputCall send"))?;
    }
    let response = call
        .finish()
        .await
        .map_err(failed("StreamingInputCall finish"))?;
    match response.message.aggregated_payload_size {
        74_922 => Ok(()),
        n => Err(format!("aggregated_payload_size {n}, expected 74922")),
    }
}

async fn server_streaming(client: &TestServiceClient) -> Result<(), String> {
    let sizes = [31_415, 9, 2653, 58_979];
    let request = StreamingOutputCallRequest {
        response_parameters: sizes
            .iter()
            .map(|&size| ResponseParameters {
                size,
                ..ResponseParameters::default()
            })
            .collect(),
        ..StreamingOutputCallRequest::default()
    };
    let mut responses = client
        .streaming_output_call(&request)
        .await
        .map_err(failed("StreamingOutputCall"))?;
    for (i, &size) in sizes.iter().enumerate() {
        let what = format!("StreamingOutputCall response {i}");
        let response = next_response(&mut responses, &what).await?;
        check_payload(response.payload.as_ref(), size as usize, &what)?;
    }
    expect_end(&mut responses, "StreamingOutputCall end").await
}

async fn ping_pong(client: &TestServiceClient) -> Result<(), String> {
    let (mut requests, mut responses) = client
        .full_duplex_call()
        .await
        .map_err(failed("FullDuplexCall"))?;
    for (i, (size, payload)) in [(31_415, 27_182), (9, 8), (2653, 1828), (58_979, 45_904)]
        .into_iter()
        .enumerate()
    {
        let what = format!("FullDuplexCall ping {i}");
        requests
            .send(&output_request(size, payload))
            .await
            .map_err(failed(&what))?;
        let response = next_response(&mut responses, &what).await?;
        check_payload(response.payload.as_ref(), size as usize, &what)?;
    }
    requests.close();
    expect_end(&mut responses, "FullDuplexCall end").await
}

async fn empty_stream(client: &TestServiceClient) -> Result<(), String> {
    let (mut requests, mut responses) = client
        .full_duplex_call()
        .await
        .map_err(failed("FullDuplexCall"))?;
    requests.close();
    expect_end(&mut responses, "FullDuplexCall with no requests").await
}

async fn timeout_on_sleeping_server(client: &TestServiceClient) -> Result<(), String> {
    let client = client.with_options(CallOptions {
        timeout: Some(Duration::from_millis(1)),
        ..CallOptions::default()
    });
    // The deadline may pass at any step; each must then say so.
    let outcome = async {
        let (mut requests, mut responses) = client.full_duplex_call().await?;
        let request = StreamingOutputCallRequest {
            payload: zeros(27_182),
            ..StreamingOutputCallRequest::default()
        };
        // A send that finds the stream already reset is not the outcome:
        // the responses' end says why it was reset.
        let _ = requests.send(&request).await;
        responses.message().await
    }
    .await;
    check_status(outcome, 4, None, "FullDuplexCall with a 1 ms timeout")
}

/// After a cancellation: the connection still serves calls.
async fn still_serves(client: &TestServiceClient, after: &str) -> Result<(), String> {
    client
        .empty_call(&Empty {})
        .await
        .map_err(failed(&format!("EmptyCall after {after}")))?;
    Ok(())
}

async fn cancel_after_begin(client: &TestServiceClient) -> Result<(), String> {
    let call = client
        .streaming_input_call()
        .await
        .map_err(failed("StreamingInputCall"))?;
    // Dropping the call before any message cancels it (RST_STREAM CANCEL).
    drop(call);
    still_serves(client, "cancelling StreamingInputCall").await
}

async fn cancel_after_first_response(client: &TestServiceClient) -> Result<(), String> {
    let (mut requests, mut responses) = client
        .full_duplex_call()
        .await
        .map_err(failed("FullDuplexCall"))?;
    requests
        .send(&output_request(31_415, 27_182))
        .await
        .map_err(failed("FullDuplexCall send"))?;
    let response = next_response(&mut responses, "FullDuplexCall first response").await?;
    check_payload(
        response.payload.as_ref(),
        31_415,
        "FullDuplexCall first response",
    )?;
    // Dropping both halves cancels the call (RST_STREAM CANCEL).
    drop(requests);
    drop(responses);
    still_serves(client, "cancelling FullDuplexCall").await
}

const INITIAL_VALUE: &str = "test_initial_metadata_value";
const TRAILING_VALUE: &[u8] = b"\xab\xab\xab";

/// Checks one echoed metadata key in `metadata`.
fn check_echo(metadata: &Metadata, key: &str, binary: bool, what: &str) -> Result<(), String> {
    let Some(value) = metadata.get(key) else {
        return Err(format!("{what}: no {key} in {:?}", metadata.as_pairs()));
    };
    let ok = if binary {
        base64_decode(value).as_deref() == Some(TRAILING_VALUE)
    } else {
        value == INITIAL_VALUE
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{what}: {key} is {value:?}"))
    }
}

async fn custom_metadata(client: &TestServiceClient) -> Result<(), String> {
    let trailing = base64_encode(TRAILING_VALUE);
    let response = client
        .unary_call(&large_request())
        .metadata(ECHO_INITIAL, INITIAL_VALUE)
        .metadata(ECHO_TRAILING, trailing.clone())
        .full()
        .await
        .map_err(failed("UnaryCall with metadata"))?;
    check_payload(response.message.payload.as_ref(), 314_159, "UnaryCall")?;
    check_echo(&response.metadata, ECHO_INITIAL, false, "UnaryCall")?;
    check_echo(&response.metadata, ECHO_TRAILING, true, "UnaryCall")?;

    let metadata = Metadata::new()
        .with(ECHO_INITIAL, INITIAL_VALUE)
        .with(ECHO_TRAILING, trailing);
    let streaming = client.with_options(CallOptions {
        metadata,
        ..CallOptions::default()
    });
    let (mut requests, mut responses) = streaming
        .full_duplex_call()
        .await
        .map_err(failed("FullDuplexCall with metadata"))?;
    requests
        .send(&output_request(314_159, 271_828))
        .await
        .map_err(failed("FullDuplexCall send"))?;
    requests.close();
    let response = next_response(&mut responses, "FullDuplexCall").await?;
    check_payload(response.payload.as_ref(), 314_159, "FullDuplexCall")?;
    expect_end(&mut responses, "FullDuplexCall end").await?;
    check_echo(
        responses.metadata(),
        ECHO_INITIAL,
        false,
        "FullDuplexCall headers",
    )?;
    check_echo(
        responses.trailers(),
        ECHO_TRAILING,
        true,
        "FullDuplexCall trailers",
    )
}

/// Asks UnaryCall and FullDuplexCall (when `stream`) to end with `code`
/// and `message`, and checks both did.
async fn echo_status(
    client: &TestServiceClient,
    code: u32,
    message: &str,
    stream: bool,
) -> Result<(), String> {
    let status = Some(EchoStatus {
        code: code as i32,
        message: message.to_owned(),
    });
    let request = SimpleRequest {
        response_status: status.clone(),
        ..SimpleRequest::default()
    };
    let result = client.unary_call(&request).await;
    check_status(result, code, Some(message), "UnaryCall")?;
    if !stream {
        return Ok(());
    }
    let (mut requests, mut responses) = client
        .full_duplex_call()
        .await
        .map_err(failed("FullDuplexCall"))?;
    let request = StreamingOutputCallRequest {
        response_status: status,
        ..StreamingOutputCallRequest::default()
    };
    requests
        .send(&request)
        .await
        .map_err(failed("FullDuplexCall send"))?;
    requests.close();
    let result = responses.message().await;
    check_status(result, code, Some(message), "FullDuplexCall")
}

async fn status_code_and_message(client: &TestServiceClient) -> Result<(), String> {
    echo_status(client, 2, "test status message", true).await
}

async fn special_status_message(client: &TestServiceClient) -> Result<(), String> {
    let message = "\t\ntest with whitespace\r\nand Unicode BMP \u{263a} and non-BMP \u{1f608}\t\n";
    echo_status(client, 2, message, false).await
}

async fn unimplemented_method(client: &TestServiceClient) -> Result<(), String> {
    let result = client.unimplemented_call(&Empty {}).await;
    check_status(result, 12, None, "TestService/UnimplementedCall")
}

async fn unimplemented_service(channel: &Channel) -> Result<(), String> {
    let client = UnimplementedServiceClient::new(channel);
    let result = client.unimplemented_call(&Empty {}).await;
    check_status(result, 12, None, "UnimplementedService/UnimplementedCall")
}
