//! The console in a real browser: Debian's headless Chromium, driven over
//! its DevTools protocol (`support/chromium.rs`), against a Keel echo
//! server in this process.
//!
//! ```text
//!   canary page   a script error and console.error are caught (the check works)
//!   /rpcz         its sampling form POSTs /flags rpcz_target=1000000
//!   calls         ok, fail:1003, and last fail:2001 (the call rpcz must show)
//!   every page    loads 200 with no script exception, console error or
//!                 failed resource; /status and /vars draw charts with a
//!                 line; /rpcz lists the last call and draws its tree;
//!                 /vars's filter form filters
//!   screenshot    of /status, at target/console-status.png
//! ```
//!
//! Chromium must be installed (`.ci/run` installs it): when it is missing
//! the test fails saying so, as the interop tests do without their Python.

#[path = "support/chromium.rs"]
mod chromium;
#[path = "support/console.rs"]
mod console;

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use chromium::{Browser, Visit, png_size};
use console::{ECHO_PATH, EchoServer};
use serde_json::Value;

/// How long the browser may take for everything it does.
const BROWSER_RUN: Duration = Duration::from_secs(120);
/// How long the console's sampler (one point a second) may take to chart
/// the calls, and the rpcz store to hold their trees.
const SAMPLED: Duration = Duration::from_secs(15);

/// The workspace's `target/` (the screenshot is kept there for a person to
/// look at, whatever `CARGO_TARGET_DIR` says).
fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// Polls `check` (every 50 ms) until it gives a value, for at most `limit`.
fn poll<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Fails unless the page answered 200 and reported nothing wrong.
fn assert_clean(visit: &Visit) {
    assert_eq!(visit.status, Some(200), "{}: {visit:?}", visit.url);
    assert!(
        visit.errors.is_empty(),
        "{} reported errors in the browser:\n{}",
        visit.url,
        visit.errors.join("\n")
    );
}

/// Every `svg.chart` of the page as the browser laid it out.
const CHARTS: &str = "[...document.querySelectorAll('svg.chart')].map(svg => {
    const line = svg.querySelector('polyline');
    const box = svg.getBoundingClientRect();
    const drawn = line ? line.getBBox() : {width: 0, height: 0};
    return {points: line ? line.points.numberOfItems : 0, width: box.width,
            height: box.height, line_width: drawn.width, line_height: drawn.height};
})";

/// Checks the page's charts: at least `at_least`, each laid out with a
/// line of two points or more across it, and one line that rises (a
/// figure that changed while it was charted). Returns how many.
fn assert_charts(browser: &mut Browser, page: &str, at_least: usize) -> usize {
    let charts = browser.evaluate(CHARTS);
    let charts = charts.as_array().expect("an array of charts");
    assert!(
        charts.len() >= at_least,
        "{page}: {} charts, want {at_least} or more",
        charts.len()
    );
    for chart in charts {
        let number = |key: &str| chart[key].as_f64().unwrap_or(0.0);
        assert!(
            number("width") > 0.0 && number("height") > 0.0,
            "{page}: a chart not laid out: {chart}"
        );
        assert!(
            number("points") >= 2.0,
            "{page}: a chart with no line: {chart}"
        );
        assert!(
            number("line_width") > 0.0,
            "{page}: a line of no length: {chart}"
        );
    }
    assert!(
        charts
            .iter()
            .any(|c| c["line_height"].as_f64().unwrap_or(0.0) > 0.0),
        "{page}: every chart is flat, though calls were made: {charts:?}"
    );
    charts.len()
}

fn text_of(browser: &mut Browser, selector: &str) -> String {
    let script = format!(
        "(document.querySelector({}) || {{innerText: ''}}).innerText",
        Value::from(selector)
    );
    browser
        .evaluate(&script)
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The echo method's entry of `/status`'s JSON.
fn echo_status(server: &EchoServer) -> Value {
    let status = server.get("/status?format=json").json();
    status["services"]
        .as_array()
        .expect("services")
        .iter()
        .flat_map(|s| s["methods"].as_array().expect("methods"))
        .find(|m| m["path"] == ECHO_PATH)
        .cloned()
        .unwrap_or_else(|| panic!("{ECHO_PATH} not in /status: {status}"))
}

fn calls_series(server: &EchoServer) -> Vec<f64> {
    server
        .get("/vars/keel_server_calls_total?format=json")
        .json()["series"]
        .as_array()
        .expect("series")
        .iter()
        .filter_map(Value::as_f64)
        .collect()
}

#[test]
fn console_pages_load_and_draw_in_headless_chromium() {
    let started = Instant::now();
    let chromium = chromium::chromium();
    let server = EchoServer::start();
    let target = target_dir();
    let profile = target.join(format!("console-browser/profile-{}", std::process::id()));
    let mut browser = Browser::launch(&chromium, profile, BROWSER_RUN);

    // The check itself: a page with a script error and a console error is
    // caught, so a clean page below means a clean page.
    let canary = browser.open(
        "data:text/html,<title>canary</title><script>console.error('canary says');\
         no_such_function()</script>",
    );
    let reported = canary.errors.join("\n");
    assert!(
        reported.contains("canary says") && reported.contains("no_such_function"),
        "the browser's error report misses what the canary did: {canary:?}"
    );
    let blank = browser.screenshot();

    // Tracing on, through /rpcz's own form (a POST of /flags).
    assert_clean(&browser.open(&server.url("/rpcz")));
    let set = browser.submit("input[name=rpcz_target]", "1000000");
    assert_clean(&set);
    assert!(set.url.ends_with("/flags"), "{set:?}");
    let flags = server.get("/flags?format=json").json();
    let target_flag = flags["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .find(|f| f["name"] == "rpcz_target")
        .cloned()
        .expect("rpcz_target");
    assert_eq!(target_flag["value"], 1_000_000, "{flags}");

    // Calls, once the sampler has a first point, so that the charts can
    // show them arrive; the last one fails with 2001, and rpcz must show it.
    poll(SAMPLED, "a first point of keel_server_calls_total", || {
        (!calls_series(&server).is_empty()).then_some(())
    });
    for i in 0..40 {
        server.echo_ok(&format!("hello {i}"));
    }
    for _ in 0..3 {
        server.echo_fail(1003);
    }
    server.echo_fail(2001);
    poll(SAMPLED, "the calls in /status's and /vars's series", || {
        let qps = echo_status(&server)["qps_series"].clone();
        let qps_seen = qps
            .as_array()
            .is_some_and(|s| s.iter().any(|v| v.as_f64().unwrap_or(0.0) > 0.0));
        let series = calls_series(&server);
        let rose = series.first() != series.last();
        (qps_seen && rose).then_some(())
    });
    let newest = poll(SAMPLED, "the last call's tree in the rpcz store", || {
        let rpcz = server.get("/rpcz?format=json").json();
        let newest = rpcz["traces"].get(0)?.clone();
        (newest["status"] == 2001).then_some(newest)
    });
    let method = newest["method"].as_str().expect("method").to_owned();
    assert_eq!(method, ECHO_PATH, "{newest}");
    let href = newest["href"].as_str().expect("href").to_owned();

    // /status: the charts, and the screenshot.
    let status = browser.open(&server.url("/status"));
    assert_clean(&status);
    assert_charts(&mut browser, "/status", 1);
    // The echo method's row: its errors by code, and its chart in the
    // window, so that the screenshot shows it.
    let echo_row = browser.evaluate(&format!(
        "(() => {{ const cell = document.querySelector('td[title=\"{ECHO_PATH}\"]'); \
           if (!cell) return null; const row = cell.closest('tr'); \
           const chart = row.querySelector('svg.chart').getBoundingClientRect(); \
           return {{text: row.innerText, right: chart.right, bottom: chart.bottom, \
                    width: innerWidth, height: innerHeight}}; }})()"
    ));
    let row = echo_row["text"].as_str().unwrap_or_default();
    assert!(
        row.contains("EREQUEST (1003): 3") && row.contains("EINTERNAL (2001): 1"),
        "/status's row of {ECHO_PATH}: {echo_row}"
    );
    let figure = |key: &str| echo_row[key].as_f64().unwrap_or(f64::NAN);
    assert!(
        figure("right") <= figure("width") && figure("bottom") <= figure("height"),
        "{ECHO_PATH}'s chart is out of the 1280x900 window: {echo_row}"
    );
    let png = browser.screenshot();
    let shot = target.join("console-status.png");
    std::fs::write(&shot, &png).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    assert_eq!(png_size(&png), Some((1280, 900)), "{}", shot.display());
    assert!(
        png.len() > 10_000 && png.len() > 2 * blank.len(),
        "{} is {} bytes, a blank page {}: the page drew next to nothing",
        shot.display(),
        png.len(),
        blank.len()
    );

    // /vars: a chart for every variable; one of them, alone.
    assert_clean(&browser.open(&server.url("/vars")));
    let listed = server.get("/vars?format=json").json()["vars"]
        .as_array()
        .expect("vars")
        .len();
    let charts = assert_charts(&mut browser, "/vars", listed);
    assert_eq!(charts, listed, "one chart per variable");
    // Its filter box, used as a person would.
    let filtered = browser.submit("#filter", "errors");
    assert_clean(&filtered);
    assert!(filtered.url.contains("q=errors"), "{filtered:?}");
    let shown = server.get("/vars?format=json&q=errors").json()["vars"]
        .as_array()
        .expect("vars")
        .len();
    assert!(shown >= 1 && shown < listed, "{shown} of {listed}");
    assert_eq!(
        browser
            .evaluate("document.querySelectorAll('svg.chart').length")
            .as_u64(),
        Some(shown as u64),
        "the filtered page charts only the variables named like errors"
    );
    assert_clean(&browser.open(&server.url("/vars/keel_server_calls_total")));
    assert_charts(&mut browser, "/vars/keel_server_calls_total", 1);

    // /rpcz: the last call listed first, linked to its tree, drawn.
    assert_clean(&browser.open(&server.url("/rpcz")));
    let first_row = browser.evaluate(
        "(() => { const a = document.querySelector('a[href^=\"/rpcz?trace=\"]'); \
           return a ? {href: a.getAttribute('href'), row: a.closest('tr').innerText} : null; })()",
    );
    assert_eq!(first_row["href"], href.as_str(), "{first_row}");
    let row = first_row["row"].as_str().unwrap_or_default();
    assert!(row.contains(&method) && row.contains("2001"), "{row:?}");
    assert_clean(&browser.open(&server.url(&href)));
    let tree = text_of(&mut browser, "pre.trace");
    assert!(tree.contains(&method), "the drawn tree: {tree:?}");

    // The other pages load cleanly too.
    for page in [
        "/",
        "/pools",
        "/memory",
        "/connections",
        "/invokers",
        "/flags",
    ] {
        assert_clean(&browser.open(&server.url(page)));
        assert!(
            text_of(&mut browser, "nav").contains("/status"),
            "{page} has the console's links"
        );
    }
    for (page, shows) in [
        ("/health", "OK"),
        ("/metrics", "keel_server_method_calls_total"),
    ] {
        let visit = browser.open(&server.url(page));
        assert_clean(&visit);
        assert_eq!(visit.mime_type, "text/plain", "{page}");
        assert!(text_of(&mut browser, "body").contains(shows), "{page}");
    }
    drop(browser);
    println!(
        "browser test: {:?}, screenshot {} ({} bytes)",
        started.elapsed(),
        shot.display(),
        png.len()
    );
}
