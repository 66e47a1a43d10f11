//! brpc's echo server, in Keel: `echo_server [--addr HOST:PORT]`
//! (default 127.0.0.1:8000). Answers `example.EchoService.Echo` over
//! baidu_std, echoing the message and the attachment, until Ctrl-C, then
//! shuts down gracefully.

use std::time::Duration;

use clap::Parser;
use keel::Server;
use keel_examples::Echo;
use keel_examples::example::EchoServiceServer;

/// brpc's echo server, in Keel: answers `example.EchoService.Echo` until
/// Ctrl-C, then shuts down gracefully.
#[derive(Debug, Parser)]
#[command(name = "echo_server")]
struct Flags {
    /// Where to listen (port 0: any free port, printed on the first line)
    #[arg(long, default_value = "127.0.0.1:8000", value_name = "HOST:PORT")]
    addr: String,
}

#[tokio::main]
async fn main() {
    let addr = Flags::parse().addr;
    let server = match Server::builder()
        .add_service(EchoServiceServer::new(Echo))
        .bind(&addr)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo_server: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("echo_server listening on {}", server.local_addr());
    let _ = tokio::signal::ctrl_c().await;
    let cut = server.shutdown(Duration::from_secs(5)).await;
    println!("echo_server stopped ({cut} connections cut at the deadline)");
}
