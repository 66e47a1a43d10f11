//! TLS (rustls): on a server's one port beside the plain protocols, and for
//! channels.
//!
//! ```text
//!   server port ─► first bytes: a TLS ClientHello (0x16 0x03 ..)?
//!                    ├─ yes: handshake (ALPN offers h2 and http/1.1), then the
//!                    │       decrypted bytes are sniffed as usual: baidu_std,
//!                    │       gRPC (HTTP/2), HTTP/1 (JSON calls, the console)
//!                    └─ no:  the plain protocols, as before
//! ```
//!
//! A server takes TLS with
//! [`ServerBuilder::tls`](crate::server::ServerBuilder::tls) and keeps
//! serving plain connections on the same port; certificates come from PEM
//! (files or bytes) and [`ServerTls::reload`] swaps them without a restart
//! (connections already open keep theirs). [`ServerTls::client_ca_pem`]
//! asks every client for a certificate signed by the given roots (mutual
//! TLS).
//!
//! A channel speaks TLS with
//! [`ChannelBuilder::tls`](crate::ChannelBuilder::tls): a [`ClientTls`] with
//! the roots to trust (PEM, or the system's bundle), optionally another
//! server name to verify than the host dialled, and a client certificate.
//! A certificate that does not verify (another name, expired, an unknown
//! root) fails the connection with `EFAILEDSOCKET` before any request is
//! written, saying why.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::status::{Code, Status};

/// A certificate, key or root set that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

fn error(why: impl Into<String>) -> TlsError {
    TlsError(why.into())
}

/// Where PEM comes from: a file (read again on reload) or bytes.
#[derive(Debug, Clone)]
enum Pem {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl Pem {
    fn read(&self) -> Result<Vec<u8>, TlsError> {
        match self {
            Pem::File(path) => std::fs::read(path)
                .map_err(|e| error(format!("cannot read {}: {e}", path.display()))),
            Pem::Bytes(bytes) => Ok(bytes.clone()),
        }
    }

    fn name(&self) -> String {
        match self {
            Pem::File(path) => path.display().to_string(),
            Pem::Bytes(_) => "the PEM given".to_owned(),
        }
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let pem = self.read()?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(format!("bad certificate PEM in {}: {e}", self.name())))?;
        if certs.is_empty() {
            return Err(error(format!("no certificate in {}", self.name())));
        }
        Ok(certs)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        let pem = self.read()?;
        PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| error(format!("no usable private key in {}: {e}", self.name())))
    }

    fn roots(&self) -> Result<rustls::RootCertStore, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in self.certificates()? {
            roots
                .add(cert)
                .map_err(|e| error(format!("bad root certificate in {}: {e}", self.name())))?;
        }
        Ok(roots)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server's TLS identity: its certificate chain and key, and optionally
/// the roots client certificates must chain to. Cheap to clone (clones
/// share the configuration, so a [`reload`](Self::reload) reaches every
/// server given a clone).
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<ServerInner>,
}

struct ServerInner {
    cert: Pem,
    key: Pem,
    client_ca: Option<Pem>,
    config: RwLock<Arc<rustls::ServerConfig>>,
    reloads: AtomicU64,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.inner.cert.name())
            .field("client_ca", &self.inner.client_ca.as_ref().map(Pem::name))
            .field("reloads", &self.inner.reloads.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The certificate chain (leaf first) and private key in the PEM files
    /// at `cert` and `key`; [`reload`](Self::reload) reads them again.
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<ServerTls, TlsError> {
        ServerTls::new(
            Pem::File(cert.as_ref().to_owned()),
            Pem::File(key.as_ref().to_owned()),
            None,
        )
    }

    /// The certificate chain and private key given as PEM.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<ServerTls, TlsError> {
        ServerTls::new(Pem::Bytes(cert.to_vec()), Pem::Bytes(key.to_vec()), None)
    }

    /// Requires every client to present a certificate chaining to one of
    /// the roots in `ca` (PEM): mutual TLS. A client without one, or with
    /// another, fails the handshake.
    pub fn client_ca_pem(self, ca: &[u8]) -> Result<ServerTls, TlsError> {
        self.with_client_ca(Pem::Bytes(ca.to_vec()))
    }

    /// [`client_ca_pem`](Self::client_ca_pem) from a file (read again on
    /// reload).
    pub fn client_ca_file(self, ca: impl AsRef<Path>) -> Result<ServerTls, TlsError> {
        self.with_client_ca(Pem::File(ca.as_ref().to_owned()))
    }

    fn with_client_ca(self, ca: Pem) -> Result<ServerTls, TlsError> {
        ServerTls::new(self.inner.cert.clone(), self.inner.key.clone(), Some(ca))
    }

    fn new(cert: Pem, key: Pem, client_ca: Option<Pem>) -> Result<ServerTls, TlsError> {
        let config = build_server_config(&cert, &key, client_ca.as_ref())?;
        Ok(ServerTls {
            inner: Arc::new(ServerInner {
                cert,
                key,
                client_ca,
                config: RwLock::new(config),
                reloads: AtomicU64::new(0),
            }),
        })
    }

    /// Reads the certificate, key (and client roots) again and uses them
    /// for connections from now on. On an error the configuration in use
    /// stays, and the error says what is wrong.
    pub fn reload(&self) -> Result<(), TlsError> {
        let inner = &self.inner;
        let config = build_server_config(&inner.cert, &inner.key, inner.client_ca.as_ref())?;
        *inner.config.write().unwrap_or_else(PoisonError::into_inner) = config;
        inner.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Successful reloads so far.
    pub fn reloads(&self) -> u64 {
        self.inner.reloads.load(Ordering::Relaxed)
    }

    /// An acceptor with the configuration in use now.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .inner
            .config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        tokio_rustls::TlsAcceptor::from(config)
    }
}

fn build_server_config(
    cert: &Pem,
    key: &Pem,
    client_ca: Option<&Pem>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| error(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(ca.roots()?),
                provider(),
            )
            .build()
            .map_err(|e| error(format!("client roots in {}: {e}", ca.name())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(cert.certificates()?, key.key()?)
        .map_err(|e| {
            error(format!(
                "the certificate in {} and the key in {} do not go together: {e}",
                cert.name(),
                key.name()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What a channel trusts and presents over TLS.
#[derive(Clone)]
pub struct ClientTls {
    roots: Arc<rustls::RootCertStore>,
    server_name: Option<String>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("roots", &self.roots.len())
            .field("server_name", &self.server_name)
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

/// Where Debian-like and Red Hat-like systems keep their trusted roots.
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

impl ClientTls {
    /// Trusts the root certificates in `pem` (one or more).
    pub fn with_roots_pem(pem: &[u8]) -> Result<ClientTls, TlsError> {
        ClientTls::with_roots(&Pem::Bytes(pem.to_vec()))
    }

    /// Trusts the root certificates in the PEM file at `path`.
    pub fn with_roots_file(path: impl AsRef<Path>) -> Result<ClientTls, TlsError> {
        ClientTls::with_roots(&Pem::File(path.as_ref().to_owned()))
    }

    /// Trusts the system's roots (the bundle at
    /// `/etc/ssl/certs/ca-certificates.crt` or its usual other places).
    pub fn system_roots() -> Result<ClientTls, TlsError> {
        let bundle = SYSTEM_BUNDLES
            .iter()
            .find(|path| Path::new(path).is_file())
            .ok_or_else(|| {
                error(format!(
                    "no system root bundle (looked for {})",
                    SYSTEM_BUNDLES.join(", ")
                ))
            })?;
        ClientTls::with_roots_file(bundle)
    }

    fn with_roots(pem: &Pem) -> Result<ClientTls, TlsError> {
        Ok(ClientTls {
            roots: Arc::new(pem.roots()?),
            server_name: None,
            identity: None,
        })
    }

    /// Verifies the server's certificate for `name` rather than the host
    /// the channel dials (e.g. dialling an IP address).
    pub fn server_name(mut self, name: impl Into<String>) -> ClientTls {
        self.server_name = Some(name.into());
        self
    }

    /// Presents the certificate chain and key in `cert` and `key` (PEM) to
    /// servers that ask for one (mutual TLS).
    pub fn client_certificate_pem(
        mut self,
        cert: &[u8],
        key: &[u8],
    ) -> Result<ClientTls, TlsError> {
        let chain = Pem::Bytes(cert.to_vec()).certificates()?;
        let key = Pem::Bytes(key.to_vec()).key()?;
        self.identity = Some((chain, Arc::new(key)));
        Ok(self)
    }

    /// The connector for one protocol (its ALPN), and the name to verify
    /// for `host`.
    pub(crate) fn connector(&self, alpn: &[&[u8]], host: &str) -> Result<Connector, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| error(e.to_string()))?
            .with_root_certificates(self.roots.clone());
        let mut config = match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| error(format!("the client certificate and key: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = self.server_name.as_deref().unwrap_or(host);
        // An IPv6 literal is dialled in brackets but verified without.
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| error(format!("{name:?} is not a server name to verify: {e}")))?;
        Ok(Connector {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name,
        })
    }
}

/// A channel endpoint's TLS: its configuration and the name it verifies.
#[derive(Clone)]
pub(crate) struct Connector {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// The TLS handshake over `io`; a failure is `EFAILEDSOCKET`, marked
    /// as a request that was not written.
    pub(crate) async fn connect<IO>(
        &self,
        io: IO,
        addr: &str,
    ) -> Result<tokio_rustls::client::TlsStream<IO>, Status>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.connector
            .connect(self.name.clone(), io)
            .await
            .map_err(|e| {
                Status::new(
                    Code::EFAILEDSOCKET,
                    format!("TLS handshake with {addr} failed: {}", tls_reason(&e)),
                )
                .with_request_unwritten()
            })
    }
}

/// The reason inside an I/O error from a handshake.
pub(crate) fn tls_reason(e: &io::Error) -> String {
    match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    }
}

/// The ALPN protocol names of `protocol`'s channels.
pub(crate) fn alpn(protocol: crate::Protocol) -> &'static [&'static [u8]] {
    match protocol {
        crate::Protocol::Grpc => &[b"h2"],
        crate::Protocol::Http => &[b"http/1.1"],
        _ => &[],
    }
}

/// Whether `head` (a connection's first bytes) starts a TLS handshake:
/// `Some(true)` yes, `Some(false)` no, `None` too few bytes to tell.
pub(crate) fn is_client_hello(head: &[u8]) -> Option<bool> {
    match head {
        [] => None,
        [0x16] | [0x16, 0x03] => None,
        [0x16, 0x03, minor, ..] => Some(*minor <= 0x04),
        _ => Some(false),
    }
}

/// A stream a connection's read loop and writer use at once: TCP splits
/// for free; a TLS stream through tokio's lock.
pub(crate) trait Duplex: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The reading half.
    type Reader<'a>: AsyncRead + Unpin + Send
    where
        Self: 'a;
    /// The writing half.
    type Writer<'a>: AsyncWrite + Unpin + Send
    where
        Self: 'a;
    /// Both halves, borrowed.
    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>);

    /// Reads what has arrived into `buf` without waiting and without the
    /// runtime (a plain non-blocking `recv`): `None` where the stream
    /// cannot (TLS).
    fn recv_now(_reader: &Self::Reader<'_>, _buf: &mut [u8]) -> Option<std::io::Result<usize>> {
        None
    }

    /// Sets how many bytes must wait unread before the runtime sees the
    /// stream as readable (`SO_RCVLOWAT`, see `sys`); does nothing where
    /// the stream is not a plain socket, or not on Linux.
    fn set_read_low_water(_reader: &Self::Reader<'_>, _bytes: i32) -> std::io::Result<()> {
        Ok(())
    }

    /// The socket's receive buffer (`SO_RCVBUF`), where the stream is a
    /// plain socket.
    fn read_buffer(_reader: &Self::Reader<'_>) -> Option<usize> {
        None
    }
}

impl Duplex for tokio::net::TcpStream {
    type Reader<'a> = tokio::net::tcp::ReadHalf<'a>;
    type Writer<'a> = tokio::net::tcp::WriteHalf<'a>;

    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
        self.split()
    }

    fn recv_now(reader: &Self::Reader<'_>, buf: &mut [u8]) -> Option<std::io::Result<usize>> {
        use std::io::Read as _;
        // The socket is non-blocking (tokio made it so).
        let socket = socket2::SockRef::from(reader.as_ref());
        Some((&*socket).read(buf))
    }

    #[cfg(target_os = "linux")]
    fn set_read_low_water(reader: &Self::Reader<'_>, bytes: i32) -> std::io::Result<()> {
        crate::sys::set_read_low_water(reader.as_ref(), bytes)
    }

    fn read_buffer(reader: &Self::Reader<'_>) -> Option<usize> {
        socket2::SockRef::from(reader.as_ref())
            .recv_buffer_size()
            .ok()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Duplex
    for tokio_rustls::server::TlsStream<S>
{
    type Reader<'a> = tokio::io::ReadHalf<&'a mut Self>;
    type Writer<'a> = tokio::io::WriteHalf<&'a mut Self>;

    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
        tokio::io::split(self)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Duplex
    for tokio_rustls::client::TlsStream<S>
{
    type Reader<'a> = tokio::io::ReadHalf<&'a mut Self>;
    type Writer<'a> = tokio::io::WriteHalf<&'a mut Self>;

    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
        tokio::io::split(self)
    }
}

/// In-memory connections, for the fuzz targets.
#[cfg(fuzzing)]
impl Duplex for tokio::io::DuplexStream {
    type Reader<'a> = tokio::io::ReadHalf<&'a mut Self>;
    type Writer<'a> = tokio::io::WriteHalf<&'a mut Self>;

    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
        tokio::io::split(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_hellos_are_told_from_other_protocols() {
        assert_eq!(is_client_hello(b""), None);
        assert_eq!(is_client_hello(&[0x16]), None);
        assert_eq!(is_client_hello(&[0x16, 0x03, 0x01, 0x02]), Some(true));
        assert_eq!(is_client_hello(&[0x16, 0x03, 0x09]), Some(false));
        assert_eq!(is_client_hello(b"PRPC"), Some(false));
        assert_eq!(is_client_hello(b"PRI * HTTP/2.0"), Some(false));
        assert_eq!(is_client_hello(b"GET /"), Some(false));
    }

    #[test]
    fn bad_pem_says_what_is_wrong() {
        let err = ServerTls::from_pem(b"not pem", b"not pem").expect_err("bad");
        assert!(err.to_string().contains("no certificate"), "{err}");
        let err = ServerTls::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem")
            .expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
        let err = ClientTls::with_roots_pem(b"").expect_err("no roots");
        assert!(err.to_string().contains("no certificate"), "{err}");
    }
}
