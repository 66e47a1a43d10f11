//! gRPC's interop client, in Keel:
//! `interop_client --server_host HOST --server_port PORT --test_case NAME
//! [--use_tls=false]`. Runs one case of gRPC's interop descriptions against
//! the server over gRPC; exits 0 when it passed, 1 with a message on stderr
//! when it failed, 2 on bad flags (as gRPC's interop clients do).

use keel_examples::interop::client;

struct Flags {
    host: String,
    port: u16,
    case: String,
}

fn parse() -> Result<Flags, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let host = keel_examples::flag(&args, "server_host", "localhost".to_string())?;
    let port = keel_examples::flag(&args, "server_port", 0u16)?;
    let case = keel_examples::flag(&args, "test_case", String::new())?;
    // Only the authority differs; accepted for gRPC's command lines.
    let _ = keel_examples::flag(&args, "server_host_override", String::new())?;
    if keel_examples::flag(&args, "use_tls", false)? {
        return Err("--use_tls=true: this client speaks plaintext only".into());
    }
    if port == 0 {
        return Err("--server_port is required".into());
    }
    if !client::CASES.contains(&case.as_str()) {
        return Err(format!(
            "--test_case {case:?} is not one of: {}",
            client::CASES.join(", ")
        ));
    }
    Ok(Flags { host, port, case })
}

#[tokio::main]
async fn main() {
    let flags = match parse() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("interop_client: {e}");
            std::process::exit(2);
        }
    };
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
