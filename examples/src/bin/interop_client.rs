//! gRPC's interop client, in Keel:
//! `interop_client --server_host HOST --server_port PORT --test_case NAME
//! [--use_tls=false]`. Runs one case of gRPC's interop descriptions against
//! the server over gRPC; exits 0 when it passed, 1 with a message on stderr
//! when it failed, 2 on bad flags (as gRPC's interop clients do).

use clap::error::ErrorKind;
use clap::{ArgAction, CommandFactory, Parser};
use keel_examples::interop::client;

/// gRPC's interop client, in Keel: runs one case of gRPC's interop
/// descriptions against the server over gRPC.
#[derive(Debug, Parser)]
#[command(name = "interop_client")]
struct Flags {
    /// The server's host
    #[arg(long = "server_host", default_value = "localhost")]
    host: String,
    /// The server's port
    #[arg(long = "server_port", value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// The case to run
    #[arg(long = "test_case", value_parser = clap::builder::PossibleValuesParser::new(client::CASES))]
    case: String,
    /// Accepted for gRPC's command lines (only the authority differs)
    #[arg(long = "server_host_override")]
    _server_host_override: Option<String>,
    /// TLS (only false: this client speaks plaintext)
    #[arg(long = "use_tls", default_value_t = false, action = ArgAction::Set, value_name = "BOOL")]
    use_tls: bool,
}

#[tokio::main]
async fn main() {
    let flags = Flags::parse();
    if flags.use_tls {
        Flags::command()
            .error(
                ErrorKind::InvalidValue,
                "--use_tls=true: this client speaks plaintext only",
            )
            .exit();
    }
    let channel = match client::channel(&flags.host, flags.port) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("interop_client: {e}");
            std::process::exit(1);
        }
    };
    match client::run(&channel, &flags.case).await {
        Ok(()) => println!("interop_client: {} passed", flags.case),
        Err(e) => {
            eprintln!("interop_client: {} failed: {e}", flags.case);
            std::process::exit(1);
        }
    }
}
