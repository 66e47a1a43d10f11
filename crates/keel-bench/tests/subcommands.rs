//! keel-bench's subcommands run through the real binary with the smallest
//! settings: `scaling` and `pingpong` finish and print their tables, and
//! `scaling` writes its plot.
//! What they measure is not checked (benchmarks print figures; they never
//! assert them).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A bound on one run, so that a hung benchmark fails the test instead of
/// hanging it.
const BOUND: Duration = Duration::from_secs(120);

/// Runs `keel-bench <args>` to its end (killing it after [`BOUND`]) and
/// returns its stdout; fails the test if it fails.
fn keel_bench(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keel-bench starts");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keel-bench {args:?} did not finish within {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (
        out.join().expect("stdout read"),
        err.join().expect("stderr read"),
    );
    assert!(
        status.success(),
        "keel-bench {args:?}: {status}\n{out}\n{err}"
    );
    out
}

#[test]
fn scaling_prints_its_table_and_writes_a_plot() {
    let svg = std::env::temp_dir().join(format!("keel-bench-scaling-{}.svg", std::process::id()));
    let svg_arg = svg.to_str().expect("a UTF-8 temporary path");
    let out = keel_bench(&[
        "scaling",
        "--seconds",
        "0.05",
        "--rounds",
        "1",
        "--connections",
        "1,2",
        "--in-flight",
        "1,2",
        "--svg",
        svg_arg,
    ]);
    for heading in ["conns", "in flight", "QPS", "p99 us", "keel/tonic"] {
        assert!(out.contains(heading), "no {heading:?} in\n{out}");
    }
    // 1x1, 1x2 and 2x1: 2 connections cannot share 1 call.
    let rows = out
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .count();
    assert_eq!(rows, 3, "{out}");
    assert!(out.contains(&format!("plot: {}", svg.display())), "{out}");
    let text = std::fs::read_to_string(&svg).expect("the plot was written");
    let _ = std::fs::remove_file(PathBuf::from(&svg));
    assert!(text.starts_with("<?xml") && text.trim_end().ends_with("</svg>"));
    assert_eq!(text.matches("<svg").count(), 1);
    assert_eq!(text.matches("<g ").count(), text.matches("</g>").count());
    // A line per framework and connection count, in each of two panels.
    assert_eq!(text.matches("<polyline").count(), 2 * 2 * 2, "{text}");
}

#[test]
fn pingpong_prints_raw_keel_tonic_and_the_target() {
    let out = keel_bench(&["pingpong", "--seconds", "0.05", "--rounds", "1"]);
    for heading in [
        "per second",
        "of raw",
        "server CPU us/call",
        "keel/raw",
        "tonic/raw",
        "1x1: keel >= 95% of raw ping-pong",
    ] {
        assert!(out.contains(heading), "no {heading:?} in\n{out}");
    }
    for row in ["raw ", "keel ", "tonic "] {
        assert!(
            out.lines().any(|l| l.starts_with(row)),
            "no {row:?} row in\n{out}"
        );
    }
}
