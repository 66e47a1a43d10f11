//! `keel call ADDR package.Service/Method JSON`: one call of any method,
//! from JSON, printed as JSON; streaming methods over gRPC take and print
//! one JSON object a line.

use std::io::BufRead as _;

use bytes::{Buf, BufMut, Bytes};
use keel::{Client, MethodKind};
use prost_reflect::MethodDescriptor;
use tokio::sync::mpsc;

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
    let data = args.data.as_deref().or(args.json.as_deref());
    let streaming = method.is_client_streaming() || method.is_server_streaming();
    let requests = if streaming && data == Some("@-") {
        // Read as they come: a bidirectional call may answer each line
        // before the next is typed.
        Requests::Lines
    } else {
        let text = crate::json::request_text(data)?;
        let mut requests = Vec::new();
        for v in crate::json::values(&text)? {
            requests.push(crate::json::encode(&method.input(), &v)?);
        }
        Requests::Given(requests)
    };
    let descriptor = keel_method(&schema.pool, &method);
    let channel = target.channel(args.target.timeout)?;
    let client = Client::new(&channel).with_options(options);
    if let (MethodKind::Unary, Requests::Given(requests)) = (descriptor.kind, &requests) {
        let [request] = <[Bytes; 1]>::try_from(requests.clone()).map_err(|r| {
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

/// A streaming call's requests.
enum Requests {
    /// Encoded already.
    Given(Vec<Bytes>),
    /// Standard input's lines, encoded as they are read.
    Lines,
}

/// Standard input's JSON requests, one a line, encoded as `input` as they
/// come; a line that does not fit ends the stream with its error.
fn stdin_lines(input: prost_reflect::MessageDescriptor) -> mpsc::Receiver<Result<Bytes, Failure>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        for (n, line) in std::io::stdin().lock().lines().enumerate() {
            let encoded = match line {
                Err(e) => Err(Failure::usage(format!(
                    "-d @-: cannot read standard input: {e}"
                ))),
                Ok(line) if line.trim().is_empty() => continue,
                Ok(line) => crate::json::values(&line).and_then(|values| {
                    values
                        .iter()
                        .map(|v| crate::json::encode(&input, v))
                        .collect::<Result<Vec<_>, _>>()
                }),
            };
            let encoded = encoded.map_err(|f| Failure {
                message: format!("line {}: {}", n + 1, f.message),
                ..f
            });
            let stop = encoded.is_err();
            for item in match encoded {
                Ok(all) => all.into_iter().map(Ok).collect(),
                Err(f) => vec![Err(f)],
            } {
                if tx.blocking_send(item).is_err() {
                    return;
                }
            }
            if stop {
                return;
            }
        }
    });
    rx
}

/// A streaming call: sends the requests, prints every response as it comes.
async fn stream(
    client: &Client,
    descriptor: &'static keel::MethodDescriptor,
    method: &MethodDescriptor,
    requests: Requests,
    target: &Target,
) -> Result<(), Failure> {
    let fail =
        |s: keel::Status| Failure::from_status(&descriptor.to_string(), &target.host_port, &s);
    let mut requests = match requests {
        Requests::Given(given) => {
            if descriptor.kind == MethodKind::ServerStreaming && given.len() != 1 {
                return Err(Failure::usage(format!(
                    "{descriptor} streams responses to one request: give one JSON request, not {}",
                    given.len()
                )));
            }
            let (tx, rx) = mpsc::channel(given.len().max(1));
            for r in given {
                let _ = tx.try_send(Ok(r));
            }
            rx
        }
        Requests::Lines => stdin_lines(method.input()),
    };
    let (mut sink, mut responses) = client
        .bidi_streaming::<Encoded, Encoded>(descriptor, None)
        .await
        .map_err(fail)?;
    // Requests go out while responses come in (a bidirectional server may
    // answer each before the next).
    // A request that does not fit drops the sink unclosed, which cancels
    // the call; its error is the one reported.
    let addr = target.host_port.clone();
    let sender = tokio::spawn(async move {
        while let Some(r) = requests.recv().await {
            sink.send(&Encoded(r?))
                .await
                .map_err(|s| Failure::from_status("sending a request", &addr, &s))?;
        }
        sink.close();
        Ok::<_, Failure>(sink)
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
        Ok(Err(f)) if f.code == crate::failure::exit::USAGE => return Err(f),
        // The server's status (in `result`) says more than a send error.
        Ok(Err(f)) if result.is_ok() => result = Err(f),
        Ok(Err(_)) => {}
        Err(e) => return Err(Failure::other(format!("the request sender failed: {e}"))),
    }
    result
}
