//! Method schemas: from `.proto` files compiled now (protox, no protoc), or
//! from the server's reflection service (`grpc.reflection.v1`, then
//! `v1alpha`); and the method a command line names, found in them.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use keel::builtin::reflection::v1::server_reflection_request::MessageRequest;
use keel::builtin::reflection::v1::server_reflection_response::MessageResponse;
use keel::builtin::reflection::v1::{ServerReflectionRequest, ServerReflectionResponse};
use keel::builtin::reflection::{v1, v1alpha};
use keel::streaming::{RequestSink, Streaming};
use keel::{Client, Code, MethodKind};
use prost::Message as _;
use prost_reflect::{DescriptorPool, MethodDescriptor};
use prost_types::FileDescriptorProto;

use crate::failure::{Failure, code_name};
use crate::target::Target;

/// Where schemas come from: `--proto FILE [-I DIR]`, else reflection.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SchemaArgs {
    /// A .proto file declaring the service (repeatable); without it the
    /// server's reflection service is asked
    #[arg(long = "proto", value_name = "FILE")]
    pub protos: Vec<PathBuf>,
    /// A directory imports are searched in (repeatable; default: each
    /// --proto file's directory)
    #[arg(short = 'I', long = "import-path", value_name = "DIR")]
    pub includes: Vec<PathBuf>,
}

/// The descriptors a command works with, and where they came from.
pub struct Schema {
    /// Every file, message, service known.
    pub pool: DescriptorPool,
    /// Services the server lists (reflection), or the files declare.
    pub services: Vec<String>,
}

impl SchemaArgs {
    /// The schema of `target`'s services: from the files given, or from
    /// the server. With reflection, only the files of `symbols` (and what
    /// they import) are fetched; no symbols fetches every service's.
    pub async fn load(
        &self,
        target: &Target,
        timeout: std::time::Duration,
        symbols: &[&str],
    ) -> Result<Schema, Failure> {
        if !self.protos.is_empty() {
            return self.compile();
        }
        reflect(target, timeout, symbols).await
    }

    fn compile(&self) -> Result<Schema, Failure> {
        let includes: Vec<PathBuf> = if self.includes.is_empty() {
            let mut dirs: Vec<PathBuf> = self
                .protos
                .iter()
                .map(|p| {
                    p.parent()
                        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
                })
                .map(|d| {
                    if d.as_os_str().is_empty() {
                        PathBuf::from(".")
                    } else {
                        d
                    }
                })
                .collect();
            dirs.dedup();
            dirs
        } else {
            self.includes.clone()
        };
        let mut compiler = protox::Compiler::new(&includes)
            .map_err(|e| Failure::usage(format!("--proto: {e}")))?;
        compiler.include_imports(true);
        for file in &self.protos {
            // protox names files relative to an include directory.
            let relative = includes
                .iter()
                .find_map(|dir| file.strip_prefix(dir).ok())
                .unwrap_or(file);
            compiler
                .open_file(relative)
                .map_err(|e| Failure::usage(format!("--proto {}: {e}", file.display())))?;
        }
        let pool = compiler.descriptor_pool();
        let mut services: Vec<String> = pool.services().map(|s| s.full_name().to_owned()).collect();
        services.sort();
        Ok(Schema { pool, services })
    }
}

/// One reflection stream: requests answered one at a time, in order.
struct Reflector {
    requests: RequestSink<ServerReflectionRequest>,
    responses: Streaming<ServerReflectionResponse>,
    /// The services listed when the stream opened.
    services: Vec<String>,
}

impl Reflector {
    /// Opens a stream on v1, else v1alpha, and lists the services.
    async fn open(client: &Client) -> Result<Reflector, keel::Status> {
        let mut last = None;
        for method in [
            &v1::server_reflection::SERVER_REFLECTION_INFO,
            &v1alpha::server_reflection::SERVER_REFLECTION_INFO,
        ] {
            let (requests, responses) = client.bidi_streaming(method, None).await?;
            let mut r = Reflector {
                requests,
                responses,
                services: Vec::new(),
            };
            // An unknown service shows on the first answer, so ask now.
            match r.ask(MessageRequest::ListServices(String::new())).await {
                Ok(MessageResponse::ListServicesResponse(list)) => {
                    r.services = list.service.into_iter().map(|s| s.name).collect();
                    r.services.sort();
                    return Ok(r);
                }
                Ok(_) => {
                    return Err(keel::Status::new(
                        Code::Internal,
                        "the reflection service answered a list request with something else",
                    ));
                }
                Err(e)
                    if matches!(
                        e.code(),
                        Code::Unimplemented | Code::ENOSERVICE | Code::ENOMETHOD
                    ) =>
                {
                    last = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("two attempts were made"))
    }

    /// Sends one request and waits for its answer.
    async fn ask(&mut self, request: MessageRequest) -> Result<MessageResponse, keel::Status> {
        let ask = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        self.requests.send(&ask).await?;
        match self.responses.message().await? {
            Some(ServerReflectionResponse {
                message_response: Some(answer),
                ..
            }) => Ok(answer),
            Some(_) => Err(keel::Status::new(
                Code::Internal,
                "the reflection service sent an empty answer",
            )),
            None => Err(keel::Status::new(
                Code::Internal,
                "the reflection service ended the stream",
            )),
        }
    }

    /// The files declaring `symbol` and what they import, or `None` when
    /// the server does not know it.
    async fn files_of(&mut self, symbol: &str) -> Result<Option<Vec<Bytes>>, keel::Status> {
        match self
            .ask(MessageRequest::FileContainingSymbol(symbol.to_owned()))
            .await?
        {
            MessageResponse::FileDescriptorResponse(files) => Ok(Some(files.file_descriptor_proto)),
            MessageResponse::ErrorResponse(e) if e.error_code == Code::NotFound.value() => Ok(None),
            MessageResponse::ErrorResponse(e) => {
                Err(keel::Status::new(Code::new(e.error_code), e.error_message))
            }
            _ => Err(keel::Status::new(
                Code::Internal,
                "the reflection service answered a file request with something else",
            )),
        }
    }
}

/// The schema of `symbols` (every service when empty) from the server's
/// reflection service.
async fn reflect(
    target: &Target,
    timeout: std::time::Duration,
    symbols: &[&str],
) -> Result<Schema, Failure> {
    let addr = &target.host_port;
    let channel = target.grpc_channel(timeout)?;
    let client = Client::new(&channel);
    let fail = |status: keel::Status| {
        if crate::failure::is_transport(&status) {
            Failure::from_status("reflection", addr, &status)
        } else {
            Failure::usage(format!(
                "{addr} offers no reflection service ({}: {}); give the schema with --proto FILE.proto [-I DIR]",
                code_name(status.code()),
                status.message()
            ))
        }
    };
    let mut reflector = Reflector::open(&client).await.map_err(fail)?;
    let wanted: Vec<String> = if symbols.is_empty() {
        reflector.services.clone()
    } else {
        symbols.iter().map(|s| (*s).to_owned()).collect()
    };
    let mut found = Vec::new();
    for symbol in &wanted {
        found.extend(reflector.files_of(symbol).await.map_err(fail)?);
    }
    if found.is_empty() {
        // None of the names is known: fetch every service's files, for
        // the error to suggest the closest names.
        for service in reflector.services.clone() {
            found.extend(reflector.files_of(&service).await.map_err(fail)?);
        }
    }
    let mut files: Vec<FileDescriptorProto> = Vec::new();
    for found in found {
        for bytes in found {
            let file = FileDescriptorProto::decode(bytes).map_err(|e| {
                Failure::other(format!("{addr}'s reflection sent a corrupt file: {e}"))
            })?;
            if !files.iter().any(|f| f.name == file.name) {
                files.push(file);
            }
        }
    }
    reflector.requests.close();
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(files).map_err(|e| {
        Failure::other(format!(
            "{addr}'s reflection sent files that do not fit together: {e}"
        ))
    })?;
    Ok(Schema {
        pool,
        services: reflector.services,
    })
}

impl Schema {
    /// The method `name` names: `package.Service/Method`,
    /// `/package.Service/Method` or `package.Service.Method`. Unknown
    /// names are usage errors that suggest the closest known ones.
    pub fn method(&self, name: &str) -> Result<MethodDescriptor, Failure> {
        let trimmed = name.trim_start_matches('/');
        let (service, method) = trimmed
            .rsplit_once('/')
            .or_else(|| trimmed.rsplit_once('.'))
            .ok_or_else(|| {
                Failure::usage(format!(
                    "{name:?} is not a method name: use package.Service/Method"
                ))
            })?;
        let found = self
            .pool
            .get_service_by_name(service)
            .and_then(|s| s.methods().find(|m| m.name() == method));
        if let Some(m) = found {
            return Ok(m);
        }
        let known = self.method_names();
        let wanted = format!("{service}/{method}");
        let close = closest(&wanted, &known);
        let hint = if close.is_empty() {
            match self.services.is_empty() {
                true => String::new(),
                false => format!("; services: {}", self.services.join(", ")),
            }
        } else {
            format!("; did you mean {}?", close.join(" or "))
        };
        let what = if self.pool.get_service_by_name(service).is_some() {
            format!("service {service} has no method {method}")
        } else {
            format!("unknown service {service}")
        };
        Err(Failure::usage(format!("{what}{hint}")))
    }

    /// `package.Service/Method` of every method known, sorted.
    pub fn method_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .pool
            .services()
            .flat_map(|s| {
                s.methods()
                    .map(|m| format!("{}/{}", s.full_name(), m.name()))
                    .collect::<Vec<_>>()
            })
            .collect();
        names.sort();
        names
    }
}

/// Keel's descriptor of `method`, built once for the process (a tool
/// calls a handful of methods; a descriptor is an identity that lives as
/// long as the process, as generated code's statics do). It carries the
/// schema's files, so `http://` channels can speak it as JSON.
pub fn keel_method(
    pool: &DescriptorPool,
    method: &MethodDescriptor,
) -> &'static keel::MethodDescriptor {
    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }
    let files: Vec<&'static [u8]> = pool
        .file_descriptor_protos()
        .map(|f| &*Box::leak(f.encode_to_vec().into_boxed_slice()))
        .collect();
    let service = method.parent_service();
    let kind = match (method.is_client_streaming(), method.is_server_streaming()) {
        (false, false) => MethodKind::Unary,
        (true, false) => MethodKind::ClientStreaming,
        (false, true) => MethodKind::ServerStreaming,
        (true, true) => MethodKind::BidiStreaming,
    };
    Box::leak(Box::new(keel::MethodDescriptor {
        service: leak(service.full_name().to_owned()),
        method: leak(method.name().to_owned()),
        path: leak(format!("/{}/{}", service.full_name(), method.name())),
        index: method.index(),
        request_type: leak(method.input().full_name().to_owned()),
        response_type: leak(method.output().full_name().to_owned()),
        kind,
        files: Box::leak(files.into_boxed_slice()),
    }))
}

/// The names in `known` closest to `wanted` (edit distance, ignoring
/// case), at most three; a name whose last part equals `wanted`'s comes
/// first.
pub fn closest(wanted: &str, known: &[String]) -> Vec<String> {
    let w = wanted.to_ascii_lowercase();
    let tail = |s: &str| {
        s.rsplit(['/', '.'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let mut scored: Vec<(usize, &String)> = known
        .iter()
        .map(|k| {
            let d = if tail(k) == tail(&w) {
                0
            } else {
                distance(&w, &k.to_ascii_lowercase())
            };
            (d, k)
        })
        .filter(|(d, k)| *d <= (k.len() / 3).max(3))
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, k)| k.clone()).collect()
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_are_suggested() {
        let known = vec![
            "example.EchoService/Echo".to_owned(),
            "grpc.testing.TestService/UnaryCall".to_owned(),
        ];
        assert_eq!(
            closest("example.EchoService/Ecko", &known),
            vec![known[0].clone()]
        );
        assert_eq!(
            closest("example.EchoServce/Echo", &known),
            vec![known[0].clone()]
        );
        assert_eq!(
            closest("other.Svc/UnaryCall", &known),
            vec![known[1].clone()]
        );
        assert!(closest("zzz.Qqq/Www", &known).is_empty());
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
