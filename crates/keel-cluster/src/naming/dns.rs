//! `dns://`: the addresses a host name resolves to, re-resolved
//! periodically.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::{Announcer, NamingError, NamingService, NamingSink, Problems, check_interval};
use crate::endpoint::{Endpoint, check_addr};

/// The addresses `host` resolves to, each with `port` and weight 1.
///
/// [`DnsNaming::new`] checks only the `host:port` syntax; nothing is
/// resolved until [`NamingService::run`], which resolves the name with
/// [`tokio::net::lookup_host`] (the system resolver, so `/etc/hosts`
/// counts) at once and then every `interval`, sending the addresses
/// (`ip:port`, IPv6 in brackets) whenever they change. A failed resolution,
/// or one that yields no address, keeps the last set (reported once on
/// stderr).
#[derive(Debug)]
pub struct DnsNaming {
    addr: String,
    interval: Duration,
}

impl DnsNaming {
    /// Resolves `host_port` (`host:port`, an IPv6 literal in brackets)
    /// every `interval` (above zero) once running.
    pub fn new(host_port: &str, interval: Duration) -> Result<DnsNaming, NamingError> {
        let url = format!("dns://{host_port}");
        check_interval(&url, interval)?;
        if host_port.contains(char::is_whitespace) {
            return Err(NamingError::new(
                url,
                "expected dns://host:port alone (DNS servers all get weight 1)",
            ));
        }
        check_addr(host_port)
            .map_err(|why| NamingError::new(&url, format!("{why}, as in dns://host:port")))?;
        Ok(DnsNaming {
            addr: host_port.to_owned(),
            interval,
        })
    }
}

impl NamingService for DnsNaming {
    fn run(self: Box<Self>, sink: NamingSink) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let DnsNaming { addr, interval } = *self;
        Box::pin(async move {
            let mut announcer = Announcer::new(sink);
            let mut problems = Problems::new(format!("dns://{addr}"));
            loop {
                match tokio::net::lookup_host(addr.as_str()).await {
                    Ok(resolved) => {
                        let set: Vec<Endpoint> = resolved
                            .map(|socket_addr| Endpoint::new(socket_addr.to_string()))
                            .collect();
                        if set.is_empty() {
                            problems.report(format!("{addr} resolved to no address"));
                        } else {
                            problems.clear();
                            if !announcer.offer(set) {
                                return;
                            }
                        }
                    }
                    Err(e) => problems.report(format!("cannot resolve {addr}: {e}")),
                }
                tokio::time::sleep(interval).await;
            }
        })
    }
}
