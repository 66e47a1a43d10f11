//! Keel's TLS against peers that are not Keel, with certificates made at
//! test time (rcgen):
//!
//! ```text
//!   Python grpcio (ssl_channel_credentials) ──gRPC over TLS──► Keel echo server
//!   curl --http1.1 --cacert ─────────────────HTTPS (JSON call, /status)──►   (the same port,
//!   openssl s_client -alpn h2 ───────────────handshake, ALPN, verify ────►    plain beside)
//! ```
//!
//! and mutual TLS with a grpcio client that presents a certificate, and one
//! that does not (refused).

#[path = "support/peers.rs"]
mod peers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use keel::tls::ServerTls;
use peers::{python, python_dir, run_bounded};
#[path = "../../crates/keel/tests/support/certs.rs"]
mod certs;
use certs::Ca;

/// How long one peer's run may take.
const PEER_RUN: Duration = Duration::from_secs(60);

/// A directory of the test's own, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("keel-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("a temporary directory");
        TempDir(path)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("written");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Keel echo server with TLS on a loopback port, on a runtime of its own.
struct Server {
    addr: std::net::SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

fn serve(tls: ServerTls) -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let server = runtime.block_on(async {
        keel::Server::builder()
            .add_service(keel_examples::example::EchoServiceServer::new(
                keel_examples::Echo,
            ))
            .tls(tls)
            .bind("127.0.0.1:0")
            .await
            .expect("bind loopback")
    });
    let addr = server.local_addr();
    // The server lives as long as the runtime.
    runtime.spawn(async move {
        let _server = server;
        std::future::pending::<()>().await;
    });
    Server {
        addr,
        _runtime: runtime,
    }
}

fn tool(name: &str) -> &'static str {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|dir| dir.join(name).is_file()) {
        panic!(
            "{name} is not on PATH: this test runs it as a TLS peer; install it with \
             `apt-get install {name}` (.ci/run does so when it is missing)"
        );
    }
    match name {
        "curl" => "curl",
        _ => "openssl",
    }
}

fn grpcio_echo(
    addr: &str,
    ca: &Path,
    message: &str,
    identity: Option<(&Path, &Path)>,
) -> peers::Finished {
    let mut command = Command::new(python());
    command
        .arg(python_dir().join("tls_echo.py"))
        .arg(addr)
        .arg(ca)
        .arg(message);
    if let Some((cert, key)) = identity {
        command.arg(cert).arg(key);
    }
    run_bounded(command, PEER_RUN).expect("the grpcio client ran")
}

#[test]
fn grpcio_curl_and_openssl_speak_tls_to_keel() {
    let dir = TempDir::new("tls-peers");
    let ca = Ca::new("keel test root");
    let ca_path = dir.write("ca.pem", &ca.pem());
    let (cert, key) = ca.server_leaf(false);
    let server = serve(ServerTls::from_pem(cert.as_bytes(), key.as_bytes()).expect("TLS"));
    let addr = server.addr.to_string();

    // grpcio over TLS (ALPN h2).
    let run = grpcio_echo(&addr, &ca_path, "hello over tls", None);
    assert!(
        run.status.success(),
        "grpcio: {}\n{}",
        run.stdout,
        run.stderr
    );
    assert_eq!(run.stdout.trim(), "hello over tls");

    // curl over HTTPS with HTTP/1.1: a JSON call and a console page.
    let mut call = Command::new(tool("curl"));
    call.args(["--silent", "--show-error", "--http1.1", "--cacert"])
        .arg(&ca_path)
        .args([
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"message":"curl"}"#,
        ])
        .arg(format!("https://{addr}/example.EchoService/Echo"));
    let run = run_bounded(call, PEER_RUN).expect("curl ran");
    assert!(run.status.success(), "curl: {}", run.stderr);
    let reply: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(reply["message"], "curl");
    let mut page = Command::new(tool("curl"));
    page.args(["--silent", "--show-error", "--http1.1", "--cacert"])
        .arg(&ca_path)
        .arg(format!("https://{addr}/status?format=json"));
    let run = run_bounded(page, PEER_RUN).expect("curl ran");
    assert!(run.status.success(), "curl: {}", run.stderr);
    let status: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert!(status["services"].is_array(), "{status}");

    // openssl: the certificate verifies against the root, ALPN picks h2.
    let mut handshake = Command::new(tool("openssl"));
    handshake
        .args(["s_client", "-connect", &addr, "-CAfile"])
        .arg(&ca_path)
        .args(["-verify_return_error", "-alpn", "h2"]);
    let run = run_bounded(handshake, PEER_RUN).expect("openssl ran");
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains("Verify return code: 0 (ok)"),
        "openssl: {said}"
    );
    assert!(said.contains("ALPN protocol: h2"), "openssl: {said}");
}

#[test]
fn grpcio_with_and_without_a_client_certificate_under_mutual_tls() {
    let dir = TempDir::new("tls-mutual");
    let ca = Ca::new("keel test root");
    let clients = Ca::new("client root");
    let ca_path = dir.write("ca.pem", &ca.pem());
    let (cert, key) = ca.server_leaf(false);
    let tls = ServerTls::from_pem(cert.as_bytes(), key.as_bytes())
        .and_then(|tls| tls.client_ca_pem(clients.pem().as_bytes()))
        .expect("mutual TLS");
    let server = serve(tls);
    let addr = server.addr.to_string();
    let (client_cert, client_key) = clients.client_leaf();
    let cert_path = dir.write("client.pem", &client_cert);
    let key_path = dir.write("client.key", &client_key);
    let run = grpcio_echo(&addr, &ca_path, "with", Some((&cert_path, &key_path)));
    assert!(
        run.status.success(),
        "grpcio: {}\n{}",
        run.stdout,
        run.stderr
    );
    assert_eq!(run.stdout.trim(), "with");
    let run = grpcio_echo(&addr, &ca_path, "without", None);
    assert!(!run.status.success(), "refused without a certificate");
    assert!(run.stderr.contains("UNAVAILABLE"), "{}", run.stderr);
}
