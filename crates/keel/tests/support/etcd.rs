//! A real etcd for the tests: Debian's `etcd-server`, on free loopback
//! ports with a temporary data directory, ended by its PID when the value
//! drops (a failing test included) and its directory removed.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel::etcd::api::etcdserverpb::{KvClient, RangeRequest};

/// One etcd member.
pub struct Etcd {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
}

/// Finds `etcd` on `PATH`, or fails saying how to get it (a missing peer is
/// a failure, never a silent skip).
fn binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "etcd is not on PATH: these tests run Debian's etcd; install it with \
                 `apt-get install etcd-server` (.ci/run does so when it is missing)"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Etcd {
    /// Starts a one-member etcd and waits until it answers.
    pub async fn start() -> Etcd {
        let dir =
            std::env::temp_dir().join(format!("keel-etcd-{}-{}", std::process::id(), free_port()));
        let mut etcd = Etcd {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            dir,
        };
        etcd.launch().await;
        etcd
    }

    /// `host:port` of the client (gRPC) endpoint.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `etcd://<endpoint>/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://{}/{prefix}", self.endpoint())
    }

    async fn launch(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(binary())
            .arg("--name=keel-test")
            .arg(format!("--data-dir={}", self.dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=keel-test={peer}"))
            .arg("--log-level=error")
            .arg("--logger=zap")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Waits (bounded) until a Range succeeds.
    async fn wait_ready(&mut self) {
        let channel = keel::Channel::builder(&format!("grpc://{}", self.endpoint()))
            .timeout(Some(Duration::from_millis(500)))
            .build()
            .expect("a channel to etcd");
        let kv = KvClient::new(&channel);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let probe = RangeRequest {
                key: b"/".to_vec(),
                ..RangeRequest::default()
            };
            if kv.range(&probe).await.is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("etcd exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "etcd did not answer within 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills etcd (SIGKILL), keeping its data.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    /// A gauge or counter from etcd's `/metrics` (the sum over its label
    /// sets), 0 when absent.
    pub fn metric(&self, name: &str) -> f64 {
        self.metric_where(name, "")
    }

    /// [`metric`](Self::metric) over the label sets containing `labels`
    /// (e.g. `grpc_method="Range"`).
    pub fn metric_where(&self, name: &str, labels: &str) -> f64 {
        let mut stream = TcpStream::connect(("127.0.0.1", self.client_port)).expect("etcd up");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a timeout");
        write!(
            stream,
            "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .expect("request sent");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("metrics read");
        text.lines()
            .filter(|line| {
                line.strip_prefix(name).is_some_and(|rest| {
                    (rest.starts_with(' ') || rest.starts_with('{')) && rest.contains(labels)
                })
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
