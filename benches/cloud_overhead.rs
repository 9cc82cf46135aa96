//! Added latency of the gateway on the cloud path: the same chat request sent at a fixed rate
//! straight to a fast local fake upstream, and through the gateway (routed to that upstream by
//! `x-complexity-score: 0.9`), in one run: one-second blocks of each in turn, so both paths see
//! the same phases of a noisy host. Prints p50/p99 of both and the difference, then each path's
//! tail (p90, p99.9, max, requests over 5 ms).
//!
//! A third path, the bare relay, is the floor any proxy pays on the host: an actix-web server
//! with the gateway's worker count that forwards the body with a reqwest client per worker (as
//! the gateway keeps its upstream pools) and returns the answer, nothing else. Every hop across threads costs a wake-up, and on a
//! virtual machine whose idle vCPUs take milliseconds to wake now and then, those hops, not
//! the gateway's work, decide p99. "over relay" is what the gateway adds beyond that floor.
//! The gateway's own time is what its `Server-Timing` header reports per request: from its
//! handler taking the request to the response head, less the upstream call. It leaves out
//! the legs between the client and the gateway, and so the host's wake-ups on them.
//!
//! ```text
//! cargo build --release --bin edge-gateway
//! cargo bench --bench cloud_overhead -- [--rates 100,1000] [--seconds 5] [--scorer auto|heuristic]
//!     [--gateway PATH]   # another gateway binary (default target/release, then target/debug)
//! ```
//!
//! `--scorer heuristic` measures the gateway's own plumbing; `auto` (the default configuration)
//! adds the semantic routing scorers, which embed the prompt (cached for repeats).

use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;

fn main() {
    if let Err(e) = run() {
        eprintln!("cloud_overhead bench: {e}");
        std::process::exit(1);
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The fake upstream: a canned chat completion, answered immediately.
fn start_fake_upstream() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    std::thread::spawn(move || {
        let body = json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        .to_string();
        let _ = actix_web::rt::System::new().block_on(async move {
            HttpServer::new(move || {
                let body = body.clone();
                App::new().route(
                    "/v1/chat/completions",
                    // Taking the request body matters: actix closes a connection whose
                    // request was not read, so every request would pay a new TCP connection.
                    web::post().to(move |_request: web::Bytes| {
                        let body = body.clone();
                        async move {
                            HttpResponse::Ok()
                                .content_type("application/json")
                                .body(body)
                        }
                    }),
                )
            })
            .workers(1)
            // As production servers do; without it Nagle holds a response's second write
            // until the gateway's delayed ACK, up to 40 ms.
            .tcp_nodelay(true)
            .listen(listener)?
            .run()
            .await
        });
    });
    Ok(port)
}

/// The bare relay: body in, the same body to the upstream, the upstream's answer out.
fn start_relay(upstream: u16, workers: usize) -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let build = || {
        reqwest::Client::builder()
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
    };
    // Built here so a failure is reported; each worker then builds its own.
    let first = build().map_err(|e| e.to_string())?;
    let url = format!("http://127.0.0.1:{upstream}/v1/chat/completions");
    std::thread::spawn(move || {
        let _ = actix_web::rt::System::new().block_on(async move {
            HttpServer::new(move || {
                // Per worker (the factory runs on each worker's thread), as the gateway keeps
                // its upstream pools: a shared pool would add cross-worker hops to the floor.
                let client = build().unwrap_or_else(|_| first.clone());
                let url = url.clone();
                App::new().route(
                    "/v1/chat/completions",
                    web::post().to(move |request: web::Bytes| {
                        let (client, url) = (client.clone(), url.clone());
                        async move {
                            let answer = async {
                                client
                                    .post(url)
                                    .header("content-type", "application/json")
                                    .body(request)
                                    .send()
                                    .await?
                                    .bytes()
                                    .await
                            };
                            match answer.await {
                                Ok(body) => HttpResponse::Ok()
                                    .content_type("application/json")
                                    .body(body),
                                Err(e) => HttpResponse::BadGateway().body(e.to_string()),
                            }
                        }
                    }),
                )
            })
            .workers(workers)
            .tcp_nodelay(true)
            .listen(listener)?
            .run()
            .await
        });
    });
    Ok(port)
}

/// Requests over 5 ms in a histogram of the gateway's `/metrics` (summed over label sets):
/// `(count, over 5 ms)`. 5 ms is a bucket bound of both histograms read here.
fn over_5ms(metrics: &str, name: &str) -> (u64, u64) {
    let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
    let (mut count, mut within) = (0.0, 0.0);
    for line in metrics.lines() {
        if line.starts_with(&format!("{name}_count")) {
            count += value(line).unwrap_or(0.0);
        } else if line.starts_with(&format!("{name}_bucket")) && line.contains("le=\"0.005\"") {
            within += value(line).unwrap_or(0.0);
        }
    }
    (count as u64, (count - within) as u64)
}

/// The gateway's own histograms: where its slow requests spent their time.
async fn gateway_histograms(client: &reqwest::Client, port: u16) -> [(u64, u64); 2] {
    let text = match client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
    {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    [
        over_5ms(&text, "edge_gateway_request_duration_seconds"),
        over_5ms(&text, "edge_gateway_upstream_request_duration_seconds"),
    ]
}

/// The gateway's own time in a response's `Server-Timing` (ms): `total` less `upstream`, and
/// of that the `route` part (tokenization, scoring, policy, audit append).
fn own_time(r: &reqwest::Response) -> Option<(f64, f64)> {
    let value = r.headers().get("server-timing")?.to_str().ok()?;
    let metric = |name: &str| {
        value.split(", ").find_map(|m| {
            m.strip_prefix(name)?
                .strip_prefix(";dur=")?
                .parse::<f64>()
                .ok()
        })
    };
    Some((
        metric("total")? - metric("upstream").unwrap_or(0.0),
        metric("route")?,
    ))
}

/// Sends `rate` requests per second for `seconds` (open loop) and returns sorted latencies in
/// ms, and the gateway's own time of each response that reported one (`Server-Timing`).
async fn measure(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    rate: u64,
    seconds: u64,
) -> (Vec<f64>, Vec<(f64, f64)>) {
    let body = json!({"model": "edge-tiny-genai", "messages": [{"role": "user", "content": "Plan the week"}], "max_tokens": 8});
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let total = rate * seconds;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let mut req = client.post(url).json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            // Read the whole body: that is when a client has its answer, and hyper returns a
            // connection to the pool only once its response was consumed. Dropping it unread
            // would open a new connection per request and time TCP setup, not the gateway.
            let (ok, own) = match req.send().await {
                Ok(r) => {
                    let own = own_time(&r);
                    (r.status().is_success() && r.bytes().await.is_ok(), own)
                }
                Err(_) => (false, None),
            };
            (ok, t.elapsed().as_secs_f64() * 1000.0, own)
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut own_times = Vec::new();
    let mut failures = 0;
    for t in tasks {
        match t.await {
            Ok((true, ms, own)) => {
                latencies.push(ms);
                own_times.extend(own);
            }
            _ => failures += 1,
        }
    }
    if failures > 0 {
        eprintln!("  {failures} failed requests at {rate} rps to {url}");
    }
    latencies.sort_by(f64::total_cmp);
    (latencies, own_times)
}

fn run() -> Result<(), String> {
    let mut rates = vec![100u64, 1000];
    let mut seconds = 5u64;
    let mut scorer = "auto".to_string();
    let mut gateway_bin: Option<String> = None;
    let mut args = std::env::args().skip(1);
    let test_mode = !std::env::args().any(|a| a == "--bench");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rates" => {
                rates = args
                    .next()
                    .ok_or("--rates needs a value")?
                    .split(',')
                    .map(|r| r.parse().map_err(|e| format!("{e}")))
                    .collect::<Result<_, String>>()?
            }
            "--seconds" => {
                seconds = args
                    .next()
                    .ok_or("--seconds needs a value")?
                    .parse()
                    .map_err(|e| format!("{e}"))?
            }
            "--scorer" => scorer = args.next().ok_or("--scorer needs a value")?,
            "--gateway" => gateway_bin = Some(args.next().ok_or("--gateway needs a path")?),
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if test_mode {
        // `cargo test --all-targets`: keep it to a smoke run.
        rates = vec![20];
        seconds = 1;
    }
    let bin = match &gateway_bin {
        Some(path) if std::path::Path::new(path).is_file() => path.as_str(),
        Some(path) => return Err(format!("--gateway {path}: no such file")),
        None => ["target/release/edge-gateway", "target/debug/edge-gateway"]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file())
            .ok_or("build the gateway first: cargo build --release --bin edge-gateway")?,
    };
    let upstream = start_fake_upstream()?;
    // server.http_workers' default.
    let relay = start_relay(upstream, 2)?;
    let gateway_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let review_db =
        std::env::temp_dir().join(format!("edge-gateway-bench-{gateway_port}/reviews.db"));
    let mut child = std::process::Command::new(bin)
        .args(["serve"])
        .env(
            "EDGE_GATEWAY__SERVER__LISTEN",
            format!("127.0.0.1:{gateway_port}"),
        )
        .env(
            "EDGE_GATEWAY__UPSTREAMS__CLOUD__BASE_URL",
            format!("http://127.0.0.1:{upstream}/v1"),
        )
        .env("EDGE_GATEWAY__LOGGING__LEVEL", "error")
        .env("EDGE_GATEWAY__ROUTING__SCORER", &scorer)
        .env("EDGE_GATEWAY__REVIEW__DB_PATH", &review_db)
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {bin}: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = runtime.block_on(async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(2048).build().map_err(|e| e.to_string())?;
        let ready = format!("http://127.0.0.1:{gateway_port}/readyz");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !client.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
            if Instant::now() > deadline {
                return Err("gateway not ready".to_string());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let direct = format!("http://127.0.0.1:{upstream}/v1/chat/completions");
        let via = format!("http://127.0.0.1:{gateway_port}/v1/chat/completions");
        let relayed = format!("http://127.0.0.1:{relay}/v1/chat/completions");
        let cloud = [("x-complexity-score", "0.9")];
        // Warm both connection pools.
        let _ = measure(&client, &direct, &[], 50, 1).await;
        let _ = measure(&client, &via, &cloud, 50, 1).await;
        let _ = measure(&client, &relayed, &[], 50, 1).await;
        let mut report = Vec::new();
        for &rate in &rates {
            // One-second blocks, direct and via the gateway in turn: a slow phase of the host
            // then falls on both paths instead of on whichever ran second.
            let before = gateway_histograms(&client, gateway_port).await;
            let (mut d, mut r, mut g, mut own) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..seconds {
                d.extend(measure(&client, &direct, &[], rate, 1).await.0);
                r.extend(measure(&client, &relayed, &[], rate, 1).await.0);
                let (latencies, own_times) = measure(&client, &via, &cloud, rate, 1).await;
                g.extend(latencies);
                own.extend(own_times);
            }
            d.sort_by(f64::total_cmp);
            r.sort_by(f64::total_cmp);
            g.sort_by(f64::total_cmp);
            let mut route: Vec<f64> = own.iter().map(|&(_, route)| route).collect();
            let mut own: Vec<f64> = own.into_iter().map(|(own, _)| own).collect();
            route.sort_by(f64::total_cmp);
            own.sort_by(f64::total_cmp);
            if d.is_empty() || r.is_empty() || g.is_empty() {
                return Err(format!("no successful requests at {rate} rps"));
            }
            let (d50, d99, g50, g99) = (percentile(&d, 0.5), percentile(&d, 0.99), percentile(&g, 0.5), percentile(&g, 0.99));
            println!(
                "{rate:>5} rps: direct p50 {d50:.3} ms p99 {d99:.3} ms | via gateway p50 {g50:.3} ms p99 {g99:.3} ms | added p50 {:.3} ms p99 {:.3} ms",
                g50 - d50,
                g99 - d99
            );
            let (r50, r99) = (percentile(&r, 0.5), percentile(&r, 0.99));
            println!(
                "        bare relay: p50 {r50:.3} ms p99 {r99:.3} ms, added p50 {:.3} ms p99 {:.3} ms | gateway over relay p50 {:.3} ms p99 {:.3} ms",
                r50 - d50,
                r99 - d99,
                g50 - r50,
                g99 - r99
            );
            for (name, v) in [("direct", &d), ("bare relay", &r), ("via gateway", &g)] {
                let over_5ms = v.iter().filter(|&&ms| ms > 5.0).count();
                println!(
                    "        {name}: p90 {:.3} ms p99.9 {:.3} ms max {:.3} ms, {over_5ms} of {} over 5 ms",
                    percentile(v, 0.9),
                    percentile(v, 0.999),
                    v[v.len() - 1],
                    v.len()
                );
            }
            if own.len() != g.len() {
                return Err(format!(
                    "{} of {} gateway responses had no Server-Timing header",
                    g.len() - own.len(),
                    g.len()
                ));
            }
            let (o50, o99) = (percentile(&own, 0.5), percentile(&own, 0.99));
            println!(
                "        the gateway's own time (Server-Timing total less upstream): p50 {o50:.3} ms p99 {o99:.3} ms p99.9 {:.3} ms; of it routing p50 {:.3} ms p99 {:.3} ms",
                percentile(&own, 0.999),
                percentile(&route, 0.5),
                percentile(&route, 0.99)
            );
            let after = gateway_histograms(&client, gateway_port).await;
            let [handler, upstream_leg] = [0, 1].map(|i| after[i].1.saturating_sub(before[i].1));
            println!(
                "        over 5 ms as the gateway saw them: {handler} in its handler, {upstream_leg} of those in the upstream call"
            );
            report.push(json!({"rps": rate, "direct_p50_ms": d50, "direct_p99_ms": d99, "gateway_p50_ms": g50,
                "gateway_p99_ms": g99, "added_p50_ms": g50 - d50, "added_p99_ms": g99 - d99,
                "relay_p50_ms": r50, "relay_p99_ms": r99, "over_relay_p50_ms": g50 - r50, "over_relay_p99_ms": g99 - r99,
                "own_p50_ms": o50, "own_p99_ms": o99}));
        }
        println!("{}", json!({"bench": "cloud_overhead", "scorer": scorer, "results": report}));
        Ok(())
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(review_db.parent().unwrap_or(&review_db));
    result
}
