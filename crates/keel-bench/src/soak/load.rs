//! The soak's traffic: every load task, each paced, each ending by the
//! deadline and after a bounded number of iterations.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel::cluster::Endpoint;
use keel::cluster::naming::{ListNaming, ListUpdater};
use keel::{Channel, Server};
use keel_examples::example::{EchoRequest, EchoServiceClient, EchoServiceServer};
use keel_examples::grpc_testing::{
    Payload, ResponseParameters, StreamingOutputCallRequest, TestServiceClient, TestServiceServer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

/// Each call's deadline (generous: the machine is shared).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Member servers of the cluster channels.
pub(super) const MEMBERS: usize = 3;
/// The member sets the updater cycles through (indices into the members;
/// never empty, so calls always have somewhere to go).
const MEMBER_SETS: &[&[usize]] = &[&[0, 1, 2], &[0, 1], &[1, 2], &[2], &[0, 2], &[0], &[1]];

/// What the load did, by kind, and its first error.
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) baidu_std: AtomicU64,
    pub(super) grpc: AtomicU64,
    pub(super) server_streams: AtomicU64,
    pub(super) bidi_streams: AtomicU64,
    pub(super) connections: AtomicU64,
    pub(super) cluster_calls: AtomicU64,
    pub(super) cluster_channels: AtomicU64,
    pub(super) membership_changes: AtomicU64,
    pub(super) console_pages: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) first_error: Mutex<Option<String>>,
}

impl Counts {
    pub(super) fn calls(&self) -> u64 {
        [
            &self.baidu_std,
            &self.grpc,
            &self.server_streams,
            &self.bidi_streams,
            &self.connections,
            &self.cluster_calls,
            &self.console_pages,
        ]
        .iter()
        .map(|c| c.load(Relaxed))
        .sum()
    }

    /// Counts `r` under `kind` if it went well, as an error otherwise.
    fn record(&self, kind: &AtomicU64, r: Result<(), String>) {
        match r {
            Ok(()) => {
                kind.fetch_add(1, Relaxed);
            }
            Err(e) => {
                self.errors.fetch_add(1, Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert(e);
            }
        }
    }
}

/// A paced loop: runs `step` every `period` until `deadline`, at most
/// `deadline / period` times (plus one).
pub(super) async fn paced<F, Fut>(deadline: Instant, period: Duration, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let bound = (deadline
        .saturating_duration_since(Instant::now())
        .as_secs_f64()
        / period.as_secs_f64()) as u64
        + 1;
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..bound {
        ticks.tick().await;
        if Instant::now() >= deadline {
            break;
        }
        step().await;
    }
}

fn echo_request() -> EchoRequest {
    EchoRequest {
        message: crate::echo::MESSAGE.to_string(),
    }
}

async fn echo(client: &EchoServiceClient, request: &EchoRequest) -> Result<(), String> {
    let reply = client
        .echo(request)
        .await
        .map_err(|e| format!("echo: {e}"))?;
    if reply.message == request.message {
        Ok(())
    } else {
        Err(format!("the echo came back as {:?}", reply.message))
    }
}

fn channel(url: &str) -> Result<Channel, String> {
    Channel::builder(url)
        .timeout(Some(CALL_TIMEOUT))
        .build()
        .map_err(|e| format!("{url}: {e}"))
}

async fn server_stream(client: &TestServiceClient) -> Result<(), String> {
    const RESPONSES: usize = 8;
    let request = StreamingOutputCallRequest {
        response_parameters: vec![
            ResponseParameters {
                size: 64,
                ..ResponseParameters::default()
            };
            RESPONSES
        ],
        ..StreamingOutputCallRequest::default()
    };
    let mut responses = client
        .streaming_output_call(&request)
        .await
        .map_err(|e| format!("StreamingOutputCall: {e}"))?;
    let mut n = 0;
    while let Some(r) = responses
        .message()
        .await
        .map_err(|e| format!("StreamingOutputCall response: {e}"))?
    {
        if r.payload.map_or(0, |p| p.body.len()) != 64 {
            return Err("StreamingOutputCall: a response of the wrong size".into());
        }
        n += 1;
    }
    if n == RESPONSES {
        Ok(())
    } else {
        Err(format!(
            "StreamingOutputCall: {n} responses, not {RESPONSES}"
        ))
    }
}

async fn bidi_stream(client: &TestServiceClient) -> Result<(), String> {
    let (mut requests, mut responses) = client
        .full_duplex_call()
        .await
        .map_err(|e| format!("FullDuplexCall: {e}"))?;
    for size in [1, 16, 256, 1024] {
        let request = StreamingOutputCallRequest {
            response_parameters: vec![ResponseParameters {
                size,
                ..ResponseParameters::default()
            }],
            payload: Some(Payload {
                body: vec![0; size as usize],
                ..Payload::default()
            }),
            ..StreamingOutputCallRequest::default()
        };
        requests
            .send(&request)
            .await
            .map_err(|e| format!("FullDuplexCall send: {e}"))?;
        let r = responses
            .message()
            .await
            .map_err(|e| format!("FullDuplexCall response: {e}"))?
            .ok_or("FullDuplexCall: the stream ended early")?;
        if r.payload.map_or(0, |p| p.body.len()) != size as usize {
            return Err("FullDuplexCall: a response of the wrong size".into());
        }
    }
    requests.close();
    match responses
        .message()
        .await
        .map_err(|e| format!("FullDuplexCall end: {e}"))?
    {
        None => Ok(()),
        Some(_) => Err("FullDuplexCall: a response too many".into()),
    }
}

/// One HTTP/1.1 GET of a console page, read to the end.
async fn get_page(addr: SocketAddr, path: &str) -> Result<(), String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes())
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    if body.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "GET {path}: {:?}",
            String::from_utf8_lossy(&body[..body.len().min(40)])
        ))
    }
}

/// The member endpoints of set `i`.
fn member_set(members: &[SocketAddr], i: usize) -> Vec<Endpoint> {
    MEMBER_SETS[i % MEMBER_SETS.len()]
        .iter()
        .map(|&m| Endpoint::new(members[m].to_string()))
        .collect()
}

/// Starts every load task; each ends by `deadline`.
pub(super) fn spawn_load(
    tasks: &mut JoinSet<()>,
    main: SocketAddr,
    members: &[SocketAddr],
    deadline: Instant,
    counts: &Arc<Counts>,
) -> Result<(), String> {
    let baidu = EchoServiceClient::new(&channel(&main.to_string())?);
    let grpc_channel = channel(&format!("grpc://{main}"))?;
    let grpc = EchoServiceClient::new(&grpc_channel);
    let testing = TestServiceClient::new(&grpc_channel);
    let ms = Duration::from_millis(1);

    for _ in 0..4 {
        let (c, client) = (counts.clone(), baidu.clone());
        tasks.spawn(async move {
            let request = echo_request();
            paced(deadline, ms, || async {
                c.record(&c.baidu_std, echo(&client, &request).await);
            })
            .await;
        });
    }
    for _ in 0..2 {
        let (c, client) = (counts.clone(), grpc.clone());
        tasks.spawn(async move {
            let request = echo_request();
            paced(deadline, ms, || async {
                c.record(&c.grpc, echo(&client, &request).await);
            })
            .await;
        });
    }
    let (c, client) = (counts.clone(), testing.clone());
    tasks.spawn(async move {
        paced(deadline, 5 * ms, || async {
            c.record(&c.server_streams, server_stream(&client).await);
        })
        .await;
    });
    let (c, client) = (counts.clone(), testing);
    tasks.spawn(async move {
        paced(deadline, 5 * ms, || async {
            c.record(&c.bidi_streams, bidi_stream(&client).await);
        })
        .await;
    });

    // Connection churn: a channel (its connection) per call.
    let c = counts.clone();
    tasks.spawn(async move {
        let request = echo_request();
        let mut grpc = false;
        paced(deadline, 20 * ms, || {
            grpc = !grpc;
            let url = if grpc {
                format!("grpc://{main}")
            } else {
                main.to_string()
            };
            let (c, request) = (&c, &request);
            async move {
                let r = match channel(&url) {
                    Ok(ch) => echo(&EchoServiceClient::new(&ch), request).await,
                    Err(e) => Err(e),
                };
                c.record(&c.connections, r);
            }
        })
        .await;
    });

    // Console pages, rpcz among them (sampling every call).
    let c = counts.clone();
    tasks.spawn(async move {
        let mut rpcz = false;
        paced(deadline, 1000 * ms, || {
            rpcz = !rpcz;
            let (c, path) = (&c, if rpcz { "/rpcz" } else { "/vars" });
            async move { c.record(&c.console_pages, get_page(main, path).await) }
        })
        .await;
    });

    // A long-lived cluster channel whose members change.
    let naming = ListNaming::new(member_set(members, 0));
    let updater: ListUpdater = naming.updater();
    let cluster = Channel::builder_with_naming("soak-members", Box::new(naming))
        .timeout(Some(CALL_TIMEOUT))
        .build()
        .map_err(|e| format!("list channel: {e}"))?;
    let cluster_client = EchoServiceClient::new(&cluster);
    for _ in 0..2 {
        let (c, client) = (counts.clone(), cluster_client.clone());
        tasks.spawn(async move {
            let request = echo_request();
            paced(deadline, 2 * ms, || async {
                c.record(&c.cluster_calls, echo(&client, &request).await);
            })
            .await;
        });
    }
    let (c, members_now) = (counts.clone(), members.to_vec());
    let current = Arc::new(AtomicU64::new(0));
    let set = current.clone();
    tasks.spawn(async move {
        let _cluster = cluster; // lives as long as the membership changes
        let mut i = 0;
        paced(deadline, 250 * ms, || {
            i += 1;
            updater.set(member_set(&members_now, i));
            set.store(i as u64, Relaxed);
            c.membership_changes.fetch_add(1, Relaxed);
            async {}
        })
        .await;
    });

    // Cluster channel churn: a list:// channel over the current members.
    let (c, members_now) = (counts.clone(), members.to_vec());
    tasks.spawn(async move {
        let request = echo_request();
        paced(deadline, 50 * ms, || {
            let set = MEMBER_SETS[current.load(Relaxed) as usize % MEMBER_SETS.len()];
            let list: Vec<String> = set.iter().map(|&m| members_now[m].to_string()).collect();
            let url = format!("list://{}", list.join(","));
            let (c, request) = (&c, &request);
            async move {
                let r = match channel(&url) {
                    Ok(ch) => {
                        let client = EchoServiceClient::new(&ch);
                        match echo(&client, request).await {
                            Ok(()) => echo(&client, request).await,
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
                c.record(&c.cluster_channels, r);
            }
        })
        .await;
    });
    Ok(())
}

pub(super) async fn echo_server(testing: bool) -> Result<Server, String> {
    let mut builder =
        keel::Server::builder().add_service(EchoServiceServer::new(keel_examples::Echo));
    if testing {
        builder = builder.add_service(TestServiceServer::new(
            keel_examples::interop::server::TestServer,
        ));
    }
    builder
        .bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))
}

/// `--leak`: `per_second` bytes a second, never freed.
pub(super) async fn leak_on_purpose(per_second: u64, deadline: Instant) {
    let piece = (per_second / 10).max(1) as usize;
    paced(deadline, Duration::from_millis(100), || {
        std::mem::forget(vec![1u8; piece]);
        async {}
    })
    .await;
}
