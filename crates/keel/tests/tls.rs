//! TLS on the service port, beside the plain protocols, with certificates
//! made at test time (rcgen): baidu_std, gRPC and HTTP/1 channels call over
//! TLS and plain on the same port; a certificate for another name, an
//! expired one and one from an unknown root each fail the connection with
//! the reason and no call sent; mutual TLS refuses a client without a
//! certificate; certificates reload without a restart; `/vars` counts
//! handshakes.

#[path = "support/http1.rs"]
mod http1;
mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use keel::tls::{ClientTls, ServerTls};
use keel::{Channel, Code, Protocol};
#[path = "support/certs.rs"]
mod certs;
use certs::Ca;
use support::{EchoServiceClient, Fixture, request, start};

/// What the tests make of a root: a server's TLS and a client trusting it.
trait Tls {
    fn server(&self, expired: bool) -> ServerTls;
    fn client(&self) -> ClientTls;
}

impl Tls for Ca {
    fn server(&self, expired: bool) -> ServerTls {
        let (cert, key) = self.server_leaf(expired);
        ServerTls::from_pem(cert.as_bytes(), key.as_bytes()).expect("server TLS")
    }

    fn client(&self) -> ClientTls {
        ClientTls::with_roots_pem(self.pem().as_bytes()).expect("roots")
    }
}

async fn tls_server(tls: ServerTls) -> Fixture {
    start(|b| b.tls(tls)).await
}

fn channel(fixture: &Fixture, protocol: Protocol, tls: Option<ClientTls>) -> Channel {
    let mut builder = Channel::builder(&fixture.addr())
        .protocol(protocol)
        .max_retry(0)
        .timeout(Some(Duration::from_secs(5)));
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    builder.build().expect("a channel")
}

#[tokio::test]
async fn every_protocol_calls_over_tls_and_plain_on_one_port() {
    let ca = Ca::new("keel test root");
    let fixture = tls_server(ca.server(false)).await;
    for protocol in [Protocol::BaiduStd, Protocol::Grpc, Protocol::Http] {
        for tls in [Some(ca.client()), None] {
            let secure = tls.is_some();
            let channel = channel(&fixture, protocol, tls);
            let reply = EchoServiceClient::new(&channel)
                .echo(&request("over tls?"))
                .await
                .unwrap_or_else(|e| panic!("{protocol:?} tls={secure}: {e}"));
            assert_eq!(reply.message, "over tls?");
        }
    }
    assert_eq!(fixture.calls.load(Ordering::Relaxed), 6);
    assert_eq!(
        http1::var(
            fixture.server.local_addr(),
            "keel_server_tls_connections_total"
        )
        .await,
        3.0
    );
    // An IP address verified as itself, and another name asked for.
    let by_name = channel(
        &fixture,
        Protocol::Grpc,
        Some(ca.client().server_name("localhost")),
    );
    EchoServiceClient::new(&by_name)
        .echo(&request("by name"))
        .await
        .expect("verified as localhost");
}

#[tokio::test]
async fn certificates_that_do_not_verify_fail_before_any_call() {
    let ca = Ca::new("keel test root");
    let good = tls_server(ca.server(false)).await;
    let expired = tls_server(ca.server(true)).await;
    let stranger = Ca::new("another root");
    let cases = [
        (
            &good,
            ca.client().server_name("other.example"),
            "not valid for name",
        ),
        (&expired, ca.client(), "expired"),
        (&good, stranger.client(), "UnknownIssuer"),
    ];
    for (fixture, tls, why) in cases {
        for protocol in [Protocol::BaiduStd, Protocol::Grpc, Protocol::Http] {
            let channel = channel(fixture, protocol, Some(tls.clone()));
            let err = EchoServiceClient::new(&channel)
                .echo(&request("never sent"))
                .await
                .expect_err("the certificate does not verify");
            assert_eq!(err.code(), Code::EFAILEDSOCKET, "{protocol:?}: {err}");
            assert!(err.message().contains("TLS handshake"), "{err}");
            assert!(err.message().contains(why), "{protocol:?}: {err}");
        }
    }
    assert_eq!(
        good.calls.load(Ordering::Relaxed),
        0,
        "no call reached a handler"
    );
    assert_eq!(expired.calls.load(Ordering::Relaxed), 0);
    assert!(
        http1::var(
            good.server.local_addr(),
            "keel_server_tls_handshake_failures_total"
        )
        .await
            >= 6.0
    );
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate() {
    let ca = Ca::new("keel test root");
    let clients = Ca::new("client root");
    let fixture = tls_server(
        ca.server(false)
            .client_ca_pem(clients.pem().as_bytes())
            .expect("mTLS"),
    )
    .await;
    let (cert, key) = clients.client_leaf();
    let with_cert = ca
        .client()
        .client_certificate_pem(cert.as_bytes(), key.as_bytes())
        .expect("client identity");
    for protocol in [Protocol::BaiduStd, Protocol::Grpc, Protocol::Http] {
        let channel = channel(&fixture, protocol, Some(with_cert.clone()));
        EchoServiceClient::new(&channel)
            .echo(&request("with a certificate"))
            .await
            .unwrap_or_else(|e| panic!("{protocol:?}: {e}"));
        let without = channel_without_cert(&fixture, protocol, &ca);
        let err = EchoServiceClient::new(&without)
            .echo(&request("without"))
            .await
            .expect_err("refused");
        assert_ne!(err.code(), Code::Ok);
    }
    assert_eq!(fixture.calls.load(Ordering::Relaxed), 3);
}

fn channel_without_cert(fixture: &Fixture, protocol: Protocol, ca: &Ca) -> Channel {
    channel(fixture, protocol, Some(ca.client()))
}

#[tokio::test]
async fn certificates_reload_without_a_restart() {
    let dir = std::env::temp_dir().join(format!("keel-tls-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a directory");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    let write = |ca: &Ca| {
        let (cert, key) = ca.server_leaf(false);
        std::fs::write(&cert_path, cert).expect("cert written");
        std::fs::write(&key_path, key).expect("key written");
    };
    let (first, second) = (Ca::new("first root"), Ca::new("second root"));
    write(&first);
    let tls = ServerTls::from_pem_files(&cert_path, &key_path).expect("from files");
    let fixture = tls_server(tls.clone()).await;
    let old = channel(&fixture, Protocol::Grpc, Some(first.client()));
    EchoServiceClient::new(&old)
        .echo(&request("first"))
        .await
        .expect("the first certificate");
    write(&second);
    // A half-written file is refused and the certificate in use kept.
    std::fs::write(&key_path, "-----BEGIN PRIVATE KEY-----\n").expect("garbage");
    assert!(tls.reload().is_err());
    write(&second);
    tls.reload().expect("reloaded");
    assert_eq!(tls.reloads(), 1);
    let new = channel(&fixture, Protocol::Grpc, Some(second.client()));
    EchoServiceClient::new(&new)
        .echo(&request("second"))
        .await
        .expect("the second certificate");
    let stale = channel(&fixture, Protocol::Grpc, Some(first.client()));
    let err = EchoServiceClient::new(&stale)
        .echo(&request("stale"))
        .await
        .expect_err("the first root no longer verifies");
    assert!(err.message().contains("UnknownIssuer"), "{err}");
    // The connection made before the reload keeps working.
    EchoServiceClient::new(&old)
        .echo(&request("still"))
        .await
        .expect("an old connection");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_server_without_tls_closes_tls_connections() {
    let ca = Ca::new("keel test root");
    let plain = start(|b| b).await;
    let channel = channel(&plain, Protocol::Grpc, Some(ca.client()));
    let err = EchoServiceClient::new(&channel)
        .echo(&request("tls to a plain server"))
        .await
        .expect_err("no TLS there");
    assert_eq!(err.code(), Code::EFAILEDSOCKET, "{err}");
    assert_eq!(
        http1::var(
            plain.server.local_addr(),
            "keel_server_tls_handshake_failures_total"
        )
        .await,
        1.0
    );
}
