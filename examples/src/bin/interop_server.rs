//! gRPC's interop server, in Keel:
//! `interop_server --port N [--use_tls=false] [--host 127.0.0.1]`.
//! Serves `grpc.testing.TestService` over gRPC (and baidu_std, on the same
//! port) until Ctrl-C or SIGTERM. `--port 0` takes a free port; the line
//! `interop_server listening on HOST:PORT` on stdout says which, once the
//! server accepts connections.

use std::time::Duration;

use clap::error::ErrorKind;
use clap::{ArgAction, CommandFactory, Parser};
use keel::Server;
use keel_examples::grpc_testing::TestServiceServer;
use keel_examples::interop::server::TestServer;

/// gRPC's interop server, in Keel: serves `grpc.testing.TestService` over
/// gRPC (and baidu_std, on the same port) until Ctrl-C or SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "interop_server")]
struct Flags {
    /// The port (0: any free port, printed once the server accepts)
    #[arg(long)]
    port: u16,
    /// The address to listen on
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// TLS (only false: this server speaks plaintext)
    #[arg(long = "use_tls", default_value_t = false, action = ArgAction::Set, value_name = "BOOL")]
    use_tls: bool,
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
    let Flags {
        port,
        host,
        use_tls,
    } = Flags::parse();
    if use_tls {
        Flags::command()
            .error(
                ErrorKind::InvalidValue,
                "--use_tls=true: this server speaks plaintext only",
            )
            .exit();
    }
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
