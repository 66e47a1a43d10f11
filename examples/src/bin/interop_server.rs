//! gRPC's interop server, in Keel:
//! `interop_server --port N [--use_tls=false] [--host 127.0.0.1]`.
//! Serves `grpc.testing.TestService` over gRPC (and baidu_std, on the same
//! port) until Ctrl-C or SIGTERM. `--port 0` takes a free port; the line
//! `interop_server listening on HOST:PORT` on stdout says which, once the
//! server accepts connections.

use std::time::Duration;

use keel::Server;
use keel_examples::grpc_testing::TestServiceServer;
use keel_examples::interop::server::TestServer;

fn parse() -> Result<(String, u16), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if flag_given(&args, "port").is_none() {
        return Err("--port is required".into());
    }
    let port = keel_examples::flag(&args, "port", 0u16)?;
    let host = keel_examples::flag(&args, "host", "127.0.0.1".to_string())?;
    if keel_examples::flag(&args, "use_tls", false)? {
        return Err("--use_tls=true: this server speaks plaintext only".into());
    }
    Ok((host, port))
}

/// Whether `--name` appears in `args`, in either form.
fn flag_given<'a>(args: &'a [String], name: &str) -> Option<&'a String> {
    let eq = format!("--{name}=");
    args.iter()
        .find(|a| a.strip_prefix("--") == Some(name) || a.starts_with(&eq))
}

/// Ctrl-C or SIGTERM, whichever comes first.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() {
    let (host, port) = match parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("interop_server: {e}");
            std::process::exit(2);
        }
    };
    let server = match Server::builder()
        .add_service(TestServiceServer::new(TestServer))
        .bind((host.as_str(), port))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("interop_server: cannot listen on {host}:{port}: {e}");
            std::process::exit(1);
        }
    };
    println!("interop_server listening on {}", server.local_addr());
    stop_signal().await;
    server.shutdown(Duration::from_secs(5)).await;
}
