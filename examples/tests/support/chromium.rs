//! Headless Chromium (Debian's `chromium`) driven over its DevTools
//! protocol, on a pipe rather than a WebSocket:
//!
//! ```text
//!   test ──JSON command\0──► fd 3 ┐
//!                                ├ chromium --remote-debugging-pipe
//!   test ◄─JSON message\0─── fd 4 ┘   (one page, attached with flatten:
//!                                     every message names its session)
//! ```
//!
//! `sh -c 'exec chromium ... 3<&0 4>&1'` hands the child's stdin and stdout
//! to Chromium as fds 3 and 4, so no `unsafe` fd juggling is needed here.
//! Chromium runs as root here, so without its sandbox, in a process group
//! of its own whose id is its PID: every wait is bounded by one deadline,
//! and the group is killed by that id when the browser is dropped,
//! whatever the outcome.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// Finds Debian's `chromium` on `PATH`, or fails the test saying how to
/// get it: as with the interop tests' Python, a missing peer is a failure,
/// never a silent skip.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            let ci = if std::env::var("CI").is_ok_and(|v| v == "true") {
                " (CI=true: .ci/run should have installed it)"
            } else {
                ""
            };
            panic!(
                "chromium is not on PATH{ci}: the console's browser test runs Debian's \
                 headless Chromium; install it with `apt-get install chromium` \
                 (.ci/run does so when it is missing)"
            )
        })
}

/// What went wrong on a page while it loaded: script exceptions, console
/// errors, errors the browser logged (a resource that failed), and the
/// document's own HTTP status.
#[derive(Debug, Default)]
pub struct Visit {
    pub url: String,
    pub status: Option<u64>,
    pub mime_type: String,
    pub errors: Vec<String>,
}

/// A headless Chromium with one page open.
pub struct Browser {
    child: Child,
    commands: ChildStdin,
    messages: mpsc::Receiver<Value>,
    stderr: Arc<Mutex<String>>,
    profile: PathBuf,
    session: String,
    next_id: u64,
    deadline: Instant,
    /// Events of the page since the last navigation.
    events: Vec<Value>,
}

impl Browser {
    /// Starts Chromium with a fresh profile in `profile` (removed again on
    /// drop), a 1280×900 window, and every wait ending by `limit` from now.
    pub fn launch(chromium: &Path, profile: PathBuf, limit: Duration) -> Browser {
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("a profile directory under target/");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>&2"#)
            .arg(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
                "--window-size=1280,900",
                "--hide-scrollbars",
                "--mute-audio",
                // This machine's network is closed: nothing but loopback.
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let commands = child.stdin.take().expect("piped");
        let output = child.stdout.take().expect("piped");
        let errors = child.stderr.take().expect("piped");
        let stderr = Arc::new(Mutex::new(String::new()));
        let log = stderr.clone();
        thread::spawn(move || {
            for line in BufReader::new(errors).lines().map_while(Result::ok) {
                let mut all = log.lock().unwrap_or_else(PoisonError::into_inner);
                all.push_str(&line);
                all.push('\n');
            }
        });
        let (tx, messages) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(output);
            let mut message = Vec::new();
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                if message.last() == Some(&0) {
                    message.pop();
                }
                match serde_json::from_slice::<Value>(&message) {
                    Ok(value) => {
                        if tx.send(value).is_err() {
                            break;
                        }
                    }
                    Err(e) => eprintln!("chromium sent a message that is not JSON: {e}"),
                }
                message.clear();
            }
        });
        let mut browser = Browser {
            child,
            commands,
            messages,
            stderr,
            profile,
            session: String::new(),
            next_id: 0,
            deadline: Instant::now() + limit,
            events: Vec::new(),
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].clone();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        for domain in ["Page", "Runtime", "Log", "Network"] {
            browser.call(&format!("{domain}.enable"), json!({}));
        }
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser
    }

    /// What Chromium printed on stderr so far (for failure messages).
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The next message, or a failure past the deadline.
    fn next_message(&mut self, waiting_for: &str) -> Value {
        let left = self.deadline.saturating_duration_since(Instant::now());
        match self.messages.recv_timeout(left) {
            Ok(message) => message,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "chromium: no answer to {waiting_for} before the deadline; stderr:\n{}",
                self.stderr()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                "chromium exited while the test waited for {waiting_for}; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// Sends one command (to the page once attached, else to the browser)
    /// and returns its result; events read meanwhile are kept.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            command["sessionId"] = Value::from(self.session.clone());
        }
        let mut bytes = serde_json::to_vec(&command).expect("JSON");
        bytes.push(0);
        if let Err(e) = self
            .commands
            .write_all(&bytes)
            .and_then(|()| self.commands.flush())
        {
            panic!(
                "chromium: cannot send {method}: {e}; stderr:\n{}",
                self.stderr()
            );
        }
        loop {
            let message = self.next_message(method);
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("chromium: {method} failed: {error}");
                }
                return message["result"].clone();
            }
            if message.get("method").is_some() {
                self.events.push(message);
            }
        }
    }

    /// Opens `url` and waits for its load event; returns what the page's
    /// load reported.
    pub fn open(&mut self, url: &str) -> Visit {
        self.events.clear();
        let navigated = self.call("Page.navigate", json!({"url": url}));
        if let Some(error) = navigated.get("errorText") {
            panic!("chromium cannot open {url}: {error}");
        }
        while !self
            .events
            .iter()
            .any(|e| e["method"] == "Page.loadEventFired")
        {
            let message = self.next_message(&format!("the load of {url}"));
            if message.get("method").is_some() {
                self.events.push(message);
            }
        }
        // A round trip, so that whatever the page reported before it
        // answers is read too.
        self.evaluate("document.readyState");
        self.visit(url)
    }

    /// Submits the page's form that holds the element `selector`, and
    /// waits for the page it leads to.
    pub fn submit(&mut self, selector: &str, value: &str) -> Visit {
        self.events.clear();
        let script = format!(
            "(() => {{ const input = document.querySelector({s}); \
               if (!input || !input.form) return false; \
               input.value = {v}; input.form.requestSubmit(); return true; }})()",
            s = Value::from(selector),
            v = Value::from(value),
        );
        let submitted = self.evaluate(&script);
        assert_eq!(submitted, true, "no form holds {selector}");
        while !self
            .events
            .iter()
            .any(|e| e["method"] == "Page.loadEventFired")
        {
            let message = self.next_message(&format!("the form of {selector}"));
            if message.get("method").is_some() {
                self.events.push(message);
            }
        }
        self.evaluate("document.readyState");
        let url = self.evaluate("location.href");
        self.visit(url.as_str().unwrap_or_default())
    }

    /// Sorts the events since the last navigation into a [`Visit`].
    fn visit(&self, url: &str) -> Visit {
        let mut visit = Visit {
            url: url.to_owned(),
            ..Visit::default()
        };
        for event in &self.events {
            let params = &event["params"];
            match event["method"].as_str().unwrap_or_default() {
                "Runtime.exceptionThrown" => {
                    let details = &params["exceptionDetails"];
                    let what = details["exception"]["description"]
                        .as_str()
                        .or(details["text"].as_str())
                        .unwrap_or("an exception");
                    visit.errors.push(format!("uncaught: {what}"));
                }
                "Runtime.consoleAPICalled"
                    if params["type"] == "error" || params["type"] == "assert" =>
                {
                    visit
                        .errors
                        .push(format!("console.{}: {}", params["type"], params["args"]));
                }
                "Log.entryAdded" if params["entry"]["level"] == "error" => {
                    let entry = &params["entry"];
                    visit
                        .errors
                        .push(format!("logged: {} ({})", entry["text"], entry["url"]));
                }
                "Network.loadingFailed" => {
                    visit
                        .errors
                        .push(format!("failed to load: {}", params["errorText"]));
                }
                "Network.responseReceived" if params["type"] == "Document" => {
                    visit.status = params["response"]["status"].as_u64();
                    visit.mime_type = params["response"]["mimeType"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                }
                _ => {}
            }
        }
        visit
    }

    /// Evaluates `expression` in the page and returns its value.
    pub fn evaluate(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        if let Some(details) = result.get("exceptionDetails") {
            panic!("{expression} threw: {details}");
        }
        result["result"]["value"].clone()
    }

    /// A PNG of the page as the window shows it.
    pub fn screenshot(&mut self) -> Vec<u8> {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let data = shot["data"].as_str().expect("base64 data");
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("a screenshot in base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Asked to close, Chromium ends its helpers and reaps them itself;
        // a few seconds at most, then it is killed whatever it is doing.
        let close = br#"{"id":0,"method":"Browser.close","params":{}}"#;
        if self
            .commands
            .write_all(close)
            .and_then(|()| self.commands.write_all(b"\0"))
            .and_then(|()| self.commands.flush())
            .is_ok()
        {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                thread::sleep(Duration::from_millis(20));
            }
        }
        // The group's id is the browser's PID (process_group(0)): its
        // renderers and helpers go with it.
        let pid = self.child.id();
        let _ = self.child.kill();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The width and height a PNG's header gives, if `png` is one.
pub fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if png.len() < 24 || &png[..8] != SIGNATURE || &png[12..16] != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes(png[16..20].try_into().ok()?);
    let height = u32::from_be_bytes(png[20..24].try_into().ok()?);
    Some((width, height))
}
