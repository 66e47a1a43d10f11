//! `grpc.testing.TestService` as gRPC's interop servers implement it: the
//! "server features" of the interop descriptions.
//!
//! - **CompressedRequest** (`expect_compressed`): checked against
//!   [`Context::request_compression`]; an unmet expectation is
//!   `INVALID_ARGUMENT`.
//! - **CompressedResponse** (`response_compressed`): a unary response is
//!   compressed with gzip through [`Context::set_response_compression`]. A
//!   streaming response is compressed like its request (per-response
//!   `compressed` is accepted and not honoured).
//! - **Echo Metadata**: the initial key goes in the response headers, the
//!   trailing key in the trailers ([`Context::set_response_trailer`]).

use std::time::Duration;

use keel::streaming::{ResponseSink, Streaming};
use keel::{Code, Compression, Context, Status};

use super::{ECHO_INITIAL, ECHO_TRAILING};
use crate::grpc_testing::{
    BoolValue, EchoStatus, Empty, Payload, PayloadType, ResponseParameters, SimpleRequest,
    SimpleResponse, StreamingInputCallRequest, StreamingInputCallResponse,
    StreamingOutputCallRequest, StreamingOutputCallResponse, TestService,
};

/// The interop server's `TestService`. Stateless.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestServer;

/// A payload of `size` zero bytes of `kind` (only COMPRESSABLE exists).
fn payload(kind: i32, size: i32) -> Result<Payload, Status> {
    if kind != PayloadType::Compressable as i32 {
        return Err(Status::invalid_argument(format!(
            "payload type {kind} is not supported"
        )));
    }
    let size = usize::try_from(size)
        .map_err(|_| Status::invalid_argument(format!("a negative payload size {size}")))?;
    Ok(Payload {
        r#type: kind,
        body: vec![0; size],
    })
}

/// The status the client asked for with `response_status`, if it asked for
/// a failure (code 0 asks for nothing).
fn echo_status(status: Option<&EchoStatus>) -> Result<(), Status> {
    match status {
        Some(s) if s.code != 0 => Err(Status::new(Code::new(s.code), s.message.clone())),
        _ => Ok(()),
    }
}

/// Echo Metadata for a unary call: the initial key in the headers, the
/// trailing key in the trailers.
fn echo_unary_metadata(ctx: &Context) {
    if let Some(value) = ctx.metadata().get(ECHO_INITIAL) {
        ctx.set_response_metadata(ECHO_INITIAL, value);
    }
    if let Some(value) = ctx.metadata().get(ECHO_TRAILING) {
        ctx.set_response_trailer(ECHO_TRAILING, value);
    }
}

/// CompressedRequest: `expect_compressed` set and true asks that the
/// request arrived compressed (and false or unset, that it did not need to).
fn check_compressed(ctx: &Context, expect: Option<&BoolValue>) -> Result<(), Status> {
    if expect.is_some_and(|b| b.value) && ctx.request_compression() == Compression::None {
        return Err(Status::invalid_argument(
            "expected a compressed request, got an uncompressed one",
        ));
    }
    Ok(())
}

/// Echo Metadata for a streaming call: the initial key in the headers sent
/// with the first response, the trailing key in the trailers.
fn echo_stream_metadata<T: prost::Message>(
    ctx: &Context,
    responses: &mut ResponseSink<T>,
) -> Result<(), Status> {
    if let Some(value) = ctx.metadata().get(ECHO_INITIAL) {
        responses.header(ECHO_INITIAL, value)?;
    }
    if let Some(value) = ctx.metadata().get(ECHO_TRAILING) {
        ctx.set_response_metadata(ECHO_TRAILING, value);
    }
    Ok(())
}

/// Sends one response per parameter, each after its `interval_us`.
async fn respond(
    kind: i32,
    parameters: &[ResponseParameters],
    responses: &mut ResponseSink<StreamingOutputCallResponse>,
) -> Result<(), Status> {
    for parameters in parameters {
        if parameters.interval_us > 0 {
            let interval = u64::try_from(parameters.interval_us).unwrap_or(0);
            tokio::time::sleep(Duration::from_micros(interval)).await;
        }
        let response = StreamingOutputCallResponse {
            payload: Some(payload(kind, parameters.size)?),
        };
        responses.send(&response).await?;
    }
    Ok(())
}

impl TestService for TestServer {
    async fn empty_call(
        &self,
        _ctx: &Context,
        _request: &Empty,
        _response: &mut Empty,
    ) -> Result<(), Status> {
        Ok(())
    }

    async fn unary_call(
        &self,
        ctx: &Context,
        request: &SimpleRequest,
        response: &mut SimpleResponse,
    ) -> Result<(), Status> {
        echo_unary_metadata(ctx);
        check_compressed(ctx, request.expect_compressed.as_ref())?;
        if let Some(compressed) = &request.response_compressed {
            ctx.set_response_compression(if compressed.value {
                Compression::Gzip
            } else {
                Compression::None
            });
        }
        echo_status(request.response_status.as_ref())?;
        response.payload = Some(payload(request.response_type, request.response_size)?);
        Ok(())
    }

    async fn streaming_output_call(
        &self,
        ctx: &Context,
        request: &StreamingOutputCallRequest,
        responses: &mut ResponseSink<StreamingOutputCallResponse>,
    ) -> Result<(), Status> {
        echo_stream_metadata(ctx, responses)?;
        respond(
            request.response_type,
            &request.response_parameters,
            responses,
        )
        .await?;
        echo_status(request.response_status.as_ref())
    }

    async fn streaming_input_call(
        &self,
        _ctx: &Context,
        requests: &mut Streaming<StreamingInputCallRequest>,
        response: &mut StreamingInputCallResponse,
    ) -> Result<(), Status> {
        let mut total = 0usize;
        while let Some(request) = requests.message().await? {
            total += request.payload.as_ref().map_or(0, |p| p.body.len());
        }
        response.aggregated_payload_size = i32::try_from(total)
            .map_err(|_| Status::invalid_argument("more than 2 GiB of payload"))?;
        Ok(())
    }

    async fn full_duplex_call(
        &self,
        ctx: &Context,
        requests: &mut Streaming<StreamingOutputCallRequest>,
        responses: &mut ResponseSink<StreamingOutputCallResponse>,
    ) -> Result<(), Status> {
        echo_stream_metadata(ctx, responses)?;
        while let Some(request) = requests.message().await? {
            echo_status(request.response_status.as_ref())?;
            respond(
                request.response_type,
                &request.response_parameters,
                responses,
            )
            .await?;
        }
        Ok(())
    }

    async fn half_duplex_call(
        &self,
        ctx: &Context,
        requests: &mut Streaming<StreamingOutputCallRequest>,
        responses: &mut ResponseSink<StreamingOutputCallResponse>,
    ) -> Result<(), Status> {
        echo_stream_metadata(ctx, responses)?;
        let mut all = Vec::new();
        while let Some(request) = requests.message().await? {
            all.push(request);
        }
        for request in &all {
            echo_status(request.response_status.as_ref())?;
            respond(
                request.response_type,
                &request.response_parameters,
                responses,
            )
            .await?;
        }
        Ok(())
    }

    async fn unimplemented_call(
        &self,
        _ctx: &Context,
        _request: &Empty,
        _response: &mut Empty,
    ) -> Result<(), Status> {
        Err(Status::unimplemented(
            "grpc.testing.TestService/UnimplementedCall is never implemented",
        ))
    }
}
