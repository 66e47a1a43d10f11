//! Where a command sends its calls: the server's address, the protocol,
//! and the options every call carries (`--timeout`, `--header`,
//! `--attachment`).

use std::time::Duration;

use keel::{CallOptions, Channel, Protocol};

use crate::failure::Failure;

/// The protocols `--protocol` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolArg {
    /// brpc's baidu_std (the default for `host:port`)
    #[value(name = "baidu_std")]
    BaiduStd,
    /// gRPC over HTTP/2 (the default for `grpc://host:port`)
    Grpc,
    /// JSON over HTTP/1.1 (the default for `http://host:port`)
    Http,
}

impl ProtocolArg {
    /// Keel's name of the protocol.
    pub fn protocol(self) -> Protocol {
        match self {
            ProtocolArg::BaiduStd => Protocol::BaiduStd,
            ProtocolArg::Grpc => Protocol::Grpc,
            ProtocolArg::Http => Protocol::Http,
        }
    }

    /// The name `--protocol` takes.
    pub fn name(self) -> &'static str {
        match self {
            ProtocolArg::BaiduStd => "baidu_std",
            ProtocolArg::Grpc => "grpc",
            ProtocolArg::Http => "http",
        }
    }
}

/// The flags that say where and how calls go.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// The protocol [default: baidu_std for host:port, else the URL's scheme]
    #[arg(long, value_enum)]
    pub protocol: Option<ProtocolArg>,
    /// Deadline of each call, e.g. 500ms, 2s, 1m (a bare number is seconds)
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub timeout: Duration,
    /// Metadata sent with each call, `key=value` (repeatable)
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE", value_parser = header)]
    pub headers: Vec<(String, String)>,
    /// Raw bytes sent after the request (baidu_std attachment): text, or
    /// @FILE for a file's bytes
    #[arg(long, value_name = "TEXT|@FILE")]
    pub attachment: Option<String>,
}

/// A server's address with the protocol to speak to it.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`, without the scheme.
    pub host_port: String,
    /// The protocol calls use.
    pub protocol: ProtocolArg,
}

impl Target {
    /// `addr` (`host:port`, `grpc://host:port` or `http://host:port`)
    /// with `protocol` when given.
    pub fn parse(addr: &str, protocol: Option<ProtocolArg>) -> Result<Target, Failure> {
        let (scheme, rest) = match addr.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, addr),
        };
        let implied = match scheme {
            None => ProtocolArg::BaiduStd,
            Some("grpc") => ProtocolArg::Grpc,
            Some("http") => ProtocolArg::Http,
            Some(other) => {
                return Err(Failure::usage(format!(
                    "address {addr:?}: unknown scheme {other}:// (use host:port, grpc://host:port or http://host:port)"
                )));
            }
        };
        let host_port = rest.trim_end_matches('/').to_owned();
        if host_port
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(Failure::usage(format!(
                "address {addr:?}: expected host:port (e.g. 127.0.0.1:8000)"
            )));
        }
        Ok(Target {
            host_port,
            protocol: protocol.unwrap_or(implied),
        })
    }

    /// A channel to the server over the target's protocol, one connection.
    pub fn channel(&self, timeout: Duration) -> Result<Channel, Failure> {
        Channel::builder(&self.host_port)
            .protocol(self.protocol.protocol())
            .timeout(Some(timeout))
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .build()
            .map_err(|e| Failure::usage(e.to_string()))
    }

    /// A gRPC channel to the same server (reflection is a gRPC service;
    /// Keel serves every protocol on one port).
    pub fn grpc_channel(&self, timeout: Duration) -> Result<Channel, Failure> {
        Target {
            host_port: self.host_port.clone(),
            protocol: ProtocolArg::Grpc,
        }
        .channel(timeout)
    }
}

impl TargetArgs {
    /// The options every call carries.
    pub fn call_options(&self) -> Result<CallOptions, Failure> {
        let mut options = CallOptions {
            timeout: Some(self.timeout),
            ..CallOptions::default()
        };
        for (k, v) in &self.headers {
            options.metadata.insert(k.clone(), v.clone());
        }
        if let Some(a) = &self.attachment {
            options.attachment = match a.strip_prefix('@') {
                Some(path) => std::fs::read(path)
                    .map_err(|e| Failure::usage(format!("--attachment @{path}: {e}")))?
                    .into(),
                None => a.clone().into_bytes().into(),
            };
        }
        Ok(options)
    }
}

/// `10s`, `500ms`, `1m`, `2.5` (seconds).
pub fn duration(v: &str) -> Result<Duration, String> {
    let (number, unit) = match v.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{v}` is not a duration (e.g. 500ms, 2s, 1m)"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{v}`: the unit is one of ms, s, m, h")),
    };
    if !(seconds > 0.0 && seconds < 1e7) {
        return Err(format!("`{v}` must be positive"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `key=value` (or `key: value`).
fn header(v: &str) -> Result<(String, String), String> {
    let (k, value) = v
        .split_once('=')
        .or_else(|| v.split_once(':'))
        .ok_or_else(|| format!("`{v}` is not key=value"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("`{v}` has an empty key"));
    }
    Ok((k.to_ascii_lowercase(), value.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_protocols() {
        let t = Target::parse("127.0.0.1:80", None).expect("parses");
        assert_eq!(
            (t.host_port.as_str(), t.protocol),
            ("127.0.0.1:80", ProtocolArg::BaiduStd)
        );
        let t = Target::parse("grpc://h:1/", None).expect("parses");
        assert_eq!(
            (t.host_port.as_str(), t.protocol),
            ("h:1", ProtocolArg::Grpc)
        );
        let t = Target::parse("http://h:1", Some(ProtocolArg::BaiduStd)).expect("parses");
        assert_eq!(t.protocol, ProtocolArg::BaiduStd);
        assert!(Target::parse("ftp://h:1", None).is_err());
        assert!(Target::parse("nohost", None).is_err());
    }

    #[test]
    fn durations_and_headers() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
        assert!(duration("0s").is_err());
        assert!(duration("3 parsecs").is_err());
        assert_eq!(header("X-A=b=c"), Ok(("x-a".into(), "b=c".into())));
        assert!(header("nokey").is_err());
    }
}
