//! `keel demo` through the real binary: it prints the console's URL and
//! a churn section (connections and invokers come back), and with
//! `--serve` keeps the server up so the console shows the demo's calls.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Kills the demo (by its PID, which this test started) however the test ends.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the demo's server");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read");
    reply
}

#[test]
fn demo_prints_the_console_and_serve_keeps_it_up() {
    let child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["demo", "--duration", "0.3", "--concurrency", "8", "--serve"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run keel demo");
    let mut demo = Demo(child);
    let stdout = demo.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut console = None;
    let mut serving = false;
    let mut report = Vec::new();
    while !serving {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the demo prints its report and that it keeps serving");
        if let Some(url) = line.trim().strip_prefix("console: http://") {
            console = url.split('/').next().map(str::to_owned);
        }
        serving = line.contains("serving on");
        report.push(line);
    }
    // The churn section: channels and invokers created and dropped, and
    // their connections and invokers gone again.
    let churn = |what: &str| {
        report
            .iter()
            .find(|l| l.trim_start().starts_with(what))
            .unwrap_or_else(|| panic!("a {what} line in {report:#?}"))
    };
    assert!(churn("channels").ends_with("(back)"), "{report:#?}");
    assert!(churn("invokers").ends_with("(back)"), "{report:#?}");
    assert!(
        churn("rpcz spans").contains("taken from the pool"),
        "{report:#?}"
    );
    assert!(churn("live heap after").ends_with("bytes"), "{report:#?}");
    let addr = console.expect("a console URL line");
    let status = get(&addr, "/status?format=json");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let body = &status[status.find("\r\n\r\n").expect("a body") + 4..];
    let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
    let echo = json["services"]
        .as_array()
        .expect("services")
        .iter()
        .flat_map(|s| s["methods"].as_array().expect("methods"))
        .find(|m| m["path"] == "/example.EchoService/Echo")
        .expect("the echo method");
    assert!(
        echo["calls"].as_u64().expect("calls") > 2_000,
        "the demo's calls are counted: {echo}"
    );
    let page = get(&addr, "/");
    assert!(page.contains("<!DOCTYPE html>"), "{page}");
}
