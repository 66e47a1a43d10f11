//! The builtin console and JSON calls over HTTP/1.1 on the service port:
//! every page as HTML and as JSON, values that match the calls just made,
//! flags set and refused, bad HTTP input answered 4xx and closed, and the
//! console off or on an internal port.

#[path = "support/http1.rs"]
mod http1;
mod support;

use std::time::Duration;

use http1::Http1;
use keel::server::{Console, ServingStatus};
use keel::{Channel, Code};
use serde_json::Value;
use support::{EchoServiceClient, request, start};

fn find_method<'a>(status: &'a Value, path: &str) -> &'a Value {
    status["services"]
        .as_array()
        .expect("services")
        .iter()
        .flat_map(|s| s["methods"].as_array().expect("methods"))
        .find(|m| m["path"] == path)
        .unwrap_or_else(|| panic!("{path} not in /status: {status}"))
}

fn var<'a>(vars: &'a Value, name: &str) -> &'a Value {
    vars["vars"]
        .as_array()
        .expect("vars")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in /vars"))
}

#[tokio::test]
async fn every_page_answers_html_and_json() {
    let fixture = start(|b| b).await;
    let mut http = Http1::connect(fixture.server.local_addr()).await;
    for page in [
        "/",
        "/status",
        "/vars",
        "/vars/keel_server_calls_total",
        "/rpcz",
        "/pools",
        "/memory",
        "/connections",
        "/invokers",
        "/flags",
    ] {
        let html = http.get(page).await;
        assert_eq!(html.status, 200, "{page}: {}", html.text());
        assert_eq!(
            html.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{page}"
        );
        let text = html.text();
        assert!(text.starts_with("<!DOCTYPE html>"), "{page}");
        assert!(
            text.contains("<a href=\"/status\">"),
            "{page} links the pages"
        );
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{page} fetches nothing from elsewhere"
        );
        let json = http.get(&format!("{page}?format=json")).await;
        assert_eq!(json.status, 200, "{page}");
        assert_eq!(json.header("content-type"), Some("application/json"));
        assert!(json.json().is_object(), "{page}");
        let accept = http
            .request("GET", page, &[("Accept", "application/json")], b"")
            .await;
        assert_eq!(
            accept.header("content-type"),
            Some("application/json"),
            "{page}"
        );
        assert!(accept.json().is_object(), "{page}");
    }
    let index = http.get("/?format=json").await.json();
    assert_eq!(index["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        index["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "example.EchoService")
    );
    let metrics = http.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let missing = http.get("/nope?format=json").await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].as_str().unwrap().contains("/nope"));
    assert_eq!(http.get("/vars/no_such_var").await.status, 404);
    assert_eq!(
        http.request("DELETE", "/status", &[], b"").await.status,
        405
    );
}

#[tokio::test]
async fn status_and_metrics_count_the_calls_just_made() {
    let fixture = start(|b| b).await;
    let channel = Channel::new(&fixture.addr()).expect("addr");
    let client = EchoServiceClient::new(&channel);
    for _ in 0..7 {
        client.echo(&request("hello")).await.expect("echo");
    }
    for _ in 0..2 {
        let err = client.echo(&request("fail")).await.expect_err("fails");
        assert_eq!(err.code(), Code::new(4242));
    }
    let mut http = Http1::connect(fixture.server.local_addr()).await;
    let status = http.get("/status?format=json").await.json();
    let echo = find_method(&status, "/example.EchoService/Echo");
    assert_eq!(echo["calls"], 9);
    assert_eq!(echo["errors"], 2);
    assert_eq!(echo["kind"], "unary");
    assert_eq!(echo["errors_by_code"][0]["code"], 4242);
    assert_eq!(echo["errors_by_code"][0]["count"], 2);
    assert_eq!(echo["total"]["calls"], 9);
    assert!(echo["total"]["max_us"].as_u64().unwrap() >= echo["total"]["p50_us"].as_u64().unwrap());
    assert_eq!(echo["concurrency"], 0);

    // The sampler's windows catch up within a few seconds.
    let mut last_minute = Value::Null;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        let status = http.get("/status?format=json").await.json();
        let echo = find_method(&status, "/example.EchoService/Echo");
        if echo["minute"]["calls"] == 9 {
            last_minute = echo.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last_minute["minute"]["errors"], 2, "{last_minute}");
    assert!(!last_minute["qps_series"].as_array().unwrap().is_empty());

    let metrics = http.get("/metrics").await.text();
    let line = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let labels = "service=\"example.EchoService\",method=\"Echo\"";
    assert_eq!(
        line(&format!("keel_server_method_calls_total{{{labels}}}")),
        9.0
    );
    assert_eq!(
        line(&format!(
            "keel_server_method_errors_total{{{labels},code=\"4242\""
        )),
        2.0
    );
    assert_eq!(
        line(&format!("keel_server_handling_seconds_count{{{labels}}}")),
        9.0
    );
    assert_eq!(
        line(&format!(
            "keel_server_handling_seconds_bucket{{{labels},le=\"+Inf\"}}"
        )),
        9.0
    );
    // Buckets are cumulative.
    let buckets: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("keel_server_handling_seconds_bucket{{{labels}")))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert!(line("keel_server_calls_total ") >= 9.0);
    assert!(line("keel_server_received_bytes_total ") > 0.0);
}

#[tokio::test]
async fn vars_have_history_and_a_filter() {
    let fixture = start(|b| b).await;
    let mut http = Http1::connect(fixture.server.local_addr()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let vars = http.get("/vars?format=json").await.json();
        let series = var(&vars, "keel_server_connections")["series"]
            .as_array()
            .unwrap()
            .len();
        if series >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no history after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let vars = http.get("/vars?format=json").await.json();
    assert!(
        var(&vars, "keel_server_connections")["value"]
            .as_f64()
            .unwrap()
            >= 1.0
    );
    let filtered = http.get("/vars?q=pool&format=json").await.json();
    let names: Vec<&str> = filtered["vars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n.contains("pool")),
        "{names:?}"
    );
    let html = http.get("/vars").await.text();
    assert!(html.contains("<svg class=\"chart\""), "charts are drawn");
    assert!(html.contains("id=\"filter\""), "a filter box");
}

#[tokio::test]
async fn rpcz_lists_and_draws_a_traced_call() {
    let fixture = start(|b| b).await;
    let mut http = Http1::connect(fixture.server.local_addr()).await;
    let set = http
        .post("/flags?format=json", b"rpcz_target=1000000")
        .await;
    assert_eq!(set.status, 200, "{}", set.text());
    let channel = Channel::new(&fixture.addr()).expect("addr");
    let client = EchoServiceClient::new(&channel);
    let mut found = None;
    for _ in 0..200 {
        client.echo(&request("traced")).await.expect("echo");
        let list = http
            .get("/rpcz?format=json&method=/example.EchoService/Echo")
            .await
            .json();
        if let Some(trace) = list["traces"].as_array().and_then(|t| t.first()) {
            found = Some(trace.clone());
            break;
        }
    }
    let trace = found.expect("a traced call in /rpcz");
    let id = trace["trace_id"].as_str().unwrap();
    let tree = http.get(&format!("/rpcz?trace={id}&format=json")).await;
    assert_eq!(tree.status, 200);
    assert_eq!(tree.json()["trace_id"], id);
    let drawn = http.get(&format!("/rpcz?trace={id}")).await.text();
    assert!(
        drawn.contains("<pre class=\"trace\">"),
        "an indented timeline"
    );
    assert!(drawn.contains("/example.EchoService/Echo"));
    assert_eq!(http.get("/rpcz?trace=zz&format=json").await.status, 400);
    assert_eq!(
        http.get("/rpcz?trace=0000000000000001&format=json")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn flags_are_set_validated_and_applied() {
    let fixture = start(|b| b).await;
    let mut http = Http1::connect(fixture.server.local_addr()).await;
    let flags = http.get("/flags?format=json").await.json();
    let names: Vec<&str> = flags["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"rpcz_target"));
    assert!(names.contains(&"max_concurrency./example.EchoService/Echo"));

    // A bad value changes nothing, and says what the flag takes.
    let bad = http
        .post("/flags?format=json", b"max_concurrency=3&rpcz_target=lots")
        .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"]
            .as_str()
            .unwrap()
            .contains("rpcz_target takes")
    );
    let unknown = http.post("/flags?format=json", b"nonsense=1").await;
    assert_eq!(unknown.status, 400);
    let fixed = http.post("/flags?format=json", b"max_body_size=10").await;
    assert_eq!(fixed.status, 400);
    let flags = http.get("/flags?format=json").await.json();
    let global = flags["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "max_concurrency")
        .unwrap();
    assert_eq!(
        global["value"], "unlimited",
        "the bad request changed nothing"
    );

    // A method's limit set at run time applies to the next call.
    let set = http
        .post(
            "/flags?format=json",
            br#"{"max_concurrency./example.EchoService/Echo": 1}"#,
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.text());
    let channel = Channel::new(&fixture.addr()).expect("addr");
    let client = EchoServiceClient::new(&channel);
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.echo(&request("gate")).await }
    });
    fixture.gated.notified().await;
    let err = client
        .echo(&request("x"))
        .await
        .expect_err("over the limit");
    assert_eq!(err.code(), Code::ELIMIT);
    fixture.gate.add_permits(1);
    held.await.unwrap().expect("the held call ends");
    let cleared = http
        .post(
            "/flags?format=json",
            b"name=max_concurrency./example.EchoService/Echo&value=unlimited",
        )
        .await;
    assert_eq!(cleared.status, 200);
    client.echo(&request("x")).await.expect("no limit any more");
}

#[tokio::test]
async fn health_follows_the_servers_health() {
    let fixture = start(|b| b).await;
    let mut http = Http1::connect(fixture.server.local_addr()).await;
    assert_eq!(http.get("/health").await.status, 200);
    fixture.server.health().set("", ServingStatus::NotServing);
    assert_eq!(http.get("/health").await.status, 503);
    fixture.server.health().set("", ServingStatus::Serving);
    assert_eq!(http.get("/health").await.status, 200);
}

#[tokio::test]
async fn connections_and_invokers_are_listed() {
    let fixture = start(|b| b).await;
    let addr = fixture.server.local_addr();
    let channel = Channel::new(&format!("list://{addr}")).expect("list");
    EchoServiceClient::new(&channel)
        .echo(&request("x"))
        .await
        .expect("echo");
    let mut http = Http1::connect(addr).await;
    let connections = http.get("/connections?format=json").await.json();
    let all = connections["connections"].as_array().unwrap();
    assert!(
        all.iter()
            .any(|c| c["protocol"] == "http" && c["side"] == "server" && c["in_flight"] == 1),
        "this request's connection: {connections}"
    );
    assert!(all.iter().any(|c| c["protocol"] == "baidu_std"
        && c["side"] == "server"
        && c["bytes_in"].as_u64().unwrap() > 0));
    // A call held in its handler: the client's connection counts it.
    let gated = fixture.gated.notified();
    let held = tokio::spawn({
        let client = EchoServiceClient::new(&channel);
        async move { client.echo(&request("gate")).await }
    });
    gated.await;
    let connections = http.get("/connections?format=json").await.json();
    assert!(
        connections["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["protocol"] == "baidu_std" && c["side"] == "client" && c["in_flight"] == 1),
        "the client's connection with a call in flight: {connections}"
    );
    fixture.gate.add_permits(1);
    held.await.expect("task").expect("the held call");
    let pools = http.get("/pools?format=json").await.json();
    assert!(
        pools["pools"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["bytes_returned"].is_u64()),
        "every pool says what it gave back: {pools}"
    );
    let invokers = http.get("/invokers?format=json").await.json();
    let mine = invokers["invokers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["channel"].as_str().unwrap().contains(&addr.to_string()))
        .unwrap_or_else(|| panic!("the channel's invoker: {invokers}"));
    assert_eq!(mine["state"], "available");
    assert!(mine["calls"].as_u64().unwrap() >= 1);
    drop(channel);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let invokers = http.get("/invokers?format=json").await.json();
        let left = invokers["invokers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["channel"].as_str().unwrap().contains(&addr.to_string()));
        if !left {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "invoker still listed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn json_calls_reach_any_method() {
    let fixture = start(|b| b).await;
    let mut http = Http1::connect(fixture.server.local_addr()).await;
    let path = "/example.EchoService/Echo";
    let ok = http.post(path, br#"{"message": "hi"}"#).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json(), serde_json::json!({"message": "hi"}));
    // A missing required field (proto2) is a bad request, as over baidu_std.
    let missing = http.post(path, b"").await;
    assert_eq!(missing.status, 400);
    assert!(
        missing.json()["message"]
            .as_str()
            .unwrap()
            .contains("missing required field")
    );

    let cases: [(&str, &[u8], u16, i64); 4] = [
        (
            "/example.EchoService/Echo",
            br#"{"mesage": "typo"}"#,
            400,
            1003,
        ),
        ("/example.EchoService/Echo", b"{not json", 400, 1003),
        ("/example.EchoService/Nope", b"{}", 404, 1002),
        ("/example.NoService/Echo", b"{}", 404, 1001),
    ];
    for (path, body, status, code) in cases {
        let reply = http.post(path, body).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        let json = reply.json();
        assert_eq!(json["code"], code, "{json}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(reply.header("keel-code"), Some(code.to_string().as_str()));
    }
    let typo = http.post(path, br#"{"mesage": "typo"}"#).await.json();
    assert!(
        typo["message"].as_str().unwrap().contains("mesage"),
        "{typo}"
    );

    let failed = http.post(path, br#"{"message": "fail"}"#).await;
    assert_eq!(failed.status, 500);
    assert_eq!(failed.json()["code"], 4242);

    let timed_out = http
        .request(
            "POST",
            path,
            &[("x-timeout-ms", "30")],
            br#"{"message": "stall"}"#,
        )
        .await;
    assert_eq!(timed_out.status, 504, "{}", timed_out.text());
    assert_eq!(timed_out.json()["name"], "ERPCTIMEDOUT");

    let streaming = http.post("/grpc.health.v1.Health/Watch", b"{}").await;
    assert_eq!(streaming.status, 501, "{}", streaming.text());

    // The builtin health check answers JSON too.
    let health = http.post("/grpc.health.v1.Health/Check", b"{}").await;
    assert_eq!(health.json(), serde_json::json!({"status": "SERVING"}));

    // Counted like every other call, bad JSON as EREQUEST.
    let status = http.get("/status?format=json").await.json();
    let echo = find_method(&status, path);
    assert_eq!(echo["calls"], 7, "{echo}");
    assert_eq!(echo["errors"], 6, "{echo}");
}

#[tokio::test]
async fn bad_http_is_answered_4xx_and_closed_and_the_server_lives_on() {
    let fixture = start(|b| b.max_body_size(1024)).await;
    let addr = fixture.server.local_addr();

    let mut big_body = Http1::connect(addr).await;
    let reply = big_body
        .post("/example.EchoService/Echo", &vec![b' '; 4096])
        .await;
    assert_eq!(reply.status, 413);
    assert!(big_body.closed().await);

    let mut big_head = Http1::connect(addr).await;
    let header = format!(
        "GET /status HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    big_head.send_raw(header.as_bytes()).await;
    let reply = big_head.read_reply().await.expect("an answer");
    assert_eq!(reply.status, 431);
    assert!(big_head.closed().await);

    let mut bad_line = Http1::connect(addr).await;
    bad_line
        .send_raw(b"GET /status HTTP/9.9 nonsense\r\n\r\n")
        .await;
    if let Some(reply) = bad_line.read_reply().await {
        assert!((400..500).contains(&reply.status), "{}", reply.status);
    }
    assert!(bad_line.closed().await);

    let mut good = Http1::connect(addr).await;
    assert_eq!(good.get("/status").await.status, 200);
    let channel = Channel::new(&fixture.addr()).expect("addr");
    EchoServiceClient::new(&channel)
        .echo(&request("still"))
        .await
        .expect("baidu_std still served");
}

#[tokio::test]
async fn the_console_can_be_off_or_on_an_internal_port_only() {
    let off = start(|b| b.console(Console::Off)).await;
    let mut http = Http1::connect(off.server.local_addr()).await;
    assert_eq!(http.get("/status").await.status, 404);
    let ok = http
        .post("/example.EchoService/Echo", br#"{"message":"x"}"#)
        .await;
    assert_eq!(ok.status, 200, "JSON calls stay on");

    let internal =
        start(|b| b.console(Console::InternalPort("127.0.0.1:0".parse().unwrap()))).await;
    let mut public = Http1::connect(internal.server.local_addr()).await;
    assert_eq!(public.get("/vars").await.status, 404);
    let inside = internal.server.internal_addr().expect("an internal port");
    let mut private = Http1::connect(inside).await;
    assert_eq!(private.get("/vars").await.status, 200);
    assert_eq!(private.get("/metrics").await.status, 200);
}
