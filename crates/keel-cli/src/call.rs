//! `keel call ADDR package.Service/Method JSON`: one call of any method,
//! from JSON, printed as JSON; streaming methods over gRPC take and print
//! one JSON object a line.

use bytes::{Buf, BufMut, Bytes};
use keel::{Client, MethodKind};
use prost_reflect::MethodDescriptor;

use crate::failure::Failure;
use crate::schema::{SchemaArgs, keel_method};
use crate::target::{ProtocolArg, Target, TargetArgs};

/// The flags of `keel call`.
#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// The server: host:port (baidu_std), grpc://host:port or http://host:port
    pub addr: String,
    /// The method: package.Service/Method
    pub method: String,
    /// The request as JSON (default {}); same as -d
    #[arg(conflicts_with = "data")]
    pub json: Option<String>,
    /// The request: JSON, @FILE or @- (standard input); streaming
    /// methods take one JSON object a line
    #[arg(short = 'd', long = "data", value_name = "JSON|@FILE|@-")]
    pub data: Option<String>,
    /// Print each response on one line (streaming responses always are)
    #[arg(long)]
    pub compact: bool,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub schema: SchemaArgs,
}

/// A message kept encoded: what a raw stream sends and receives. Its
/// encoding is the bytes it holds, and decoding one keeps the bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Encoded(pub Bytes);

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Never reached: `merge` keeps the bytes whole.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }

    fn merge(&mut self, mut buf: impl Buf) -> Result<(), prost::DecodeError> {
        self.0 = buf.copy_to_bytes(buf.remaining());
        Ok(())
    }
}

/// Runs `keel call`.
pub async fn run(args: CallArgs) -> Result<(), Failure> {
    let target = Target::parse(&args.addr, args.target.protocol)?;
    let options = args.target.call_options()?;
    let service = args
        .method
        .trim_start_matches('/')
        .rsplit_once('/')
        .map_or(args.method.as_str(), |(s, _)| s);
    let schema = args
        .schema
        .load(&target, args.target.timeout, &[service])
        .await?;
    let method = schema.method(&args.method)?;
    let text = crate::json::request_text(args.data.as_deref().or(args.json.as_deref()))?;
    let values = crate::json::values(&text)?;
    let mut requests = Vec::with_capacity(values.len());
    for v in &values {
        requests.push(crate::json::encode(&method.input(), v)?);
    }
    let descriptor = keel_method(&schema.pool, &method);
    let channel = target.channel(args.target.timeout)?;
    let client = Client::new(&channel).with_options(options);
    if descriptor.kind == MethodKind::Unary {
        let [request] = <[Bytes; 1]>::try_from(requests).map_err(|r| {
            Failure::usage(format!(
                "{} is unary: give one JSON request, not {}",
                args.method,
                r.len()
            ))
        })?;
        let reply = client
            .unary_raw(descriptor, request)
            .await
            .map_err(|s| Failure::from_status(&format!("{}", descriptor), &target.host_port, &s))?;
        println!(
            "{}",
            crate::json::decode(&method.output(), reply.message, !args.compact)?
        );
        if !reply.attachment.is_empty() {
            eprintln!(
                "(the response carries a {}-byte attachment)",
                reply.attachment.len()
            );
        }
        return Ok(());
    }
    if target.protocol != ProtocolArg::Grpc {
        return Err(Failure::usage(format!(
            "{} is a streaming method: call it over gRPC (grpc://{} or --protocol grpc)",
            args.method, target.host_port
        )));
    }
    stream(&client, descriptor, &method, requests, &target).await
}

/// A streaming call: sends `requests`, prints every response as it comes.
async fn stream(
    client: &Client,
    descriptor: &'static keel::MethodDescriptor,
    method: &MethodDescriptor,
    requests: Vec<Bytes>,
    target: &Target,
) -> Result<(), Failure> {
    let fail =
        |s: keel::Status| Failure::from_status(&descriptor.to_string(), &target.host_port, &s);
    if descriptor.kind == MethodKind::ServerStreaming && requests.len() != 1 {
        return Err(Failure::usage(format!(
            "{descriptor} streams responses to one request: give one JSON request, not {}",
            requests.len()
        )));
    }
    let (mut sink, mut responses) = client
        .bidi_streaming::<Encoded, Encoded>(descriptor, None)
        .await
        .map_err(fail)?;
    // Requests go out while responses come in (a bidirectional server may
    // answer each before the next).
    let sender = tokio::spawn(async move {
        for r in requests {
            sink.send(&Encoded(r)).await?;
        }
        sink.close();
        Ok::<_, keel::Status>(sink)
    });
    let output = method.output();
    let mut result = Ok(());
    loop {
        match responses.message().await {
            Ok(Some(Encoded(bytes))) => println!("{}", crate::json::decode(&output, bytes, false)?),
            Ok(None) => break,
            Err(s) => {
                result = Err(fail(s));
                break;
            }
        }
    }
    match sender.await {
        Ok(Ok(_sink)) => {}
        // The server's status (in `result`) says more than a send error.
        Ok(Err(s)) if result.is_ok() => result = Err(fail(s)),
        Ok(Err(_)) => {}
        Err(e) => return Err(Failure::other(format!("the request sender failed: {e}"))),
    }
    result
}
