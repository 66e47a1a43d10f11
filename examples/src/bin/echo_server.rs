//! brpc's echo server, in Keel: `echo_server [--addr HOST:PORT]`
//! (default 127.0.0.1:8000). Answers `example.EchoService.Echo` over
//! baidu_std, echoing the message and the attachment, until Ctrl-C, then
//! shuts down gracefully.

use std::time::Duration;

use keel::Server;
use keel_examples::Echo;
use keel_examples::example::EchoServiceServer;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr: String = match keel_examples::flag(&args, "addr", "127.0.0.1:8000".to_string()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("echo_server: {e}");
            std::process::exit(2);
        }
    };
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
