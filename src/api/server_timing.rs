//! The `Server-Timing` response header (W3C Server Timing) on routed chat and completion
//! responses: how long the gateway spent deciding the route, waiting on cloud upstreams, and in
//! all until the response head, so a caller or a load tester can tell the gateway's own time
//! from the upstream's and from the network on either side, per request.

use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::HttpResponse;

/// Header name (lower case, as HTTP/2 and `HeaderName::from_static` want it).
pub const SERVER_TIMING_HEADER: &str = "server-timing";

/// Durations of one request, measured by the handler.
#[derive(Debug, Clone, Copy)]
pub struct ServerTiming {
    started: Instant,
    route: Duration,
    upstream: Option<Duration>,
}

impl ServerTiming {
    /// Starts the clock at `started` (when the handler took the request).
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            route: Duration::ZERO,
            upstream: None,
        }
    }

    /// Time to a decision: tokenization, scoring, policy evaluation, the audit append.
    pub fn set_route(&mut self, route: Duration) {
        self.route = route;
    }

    /// Time waiting on upstreams, summed over attempts (a failed upstream before a fallback
    /// counts too: the caller waited for it).
    pub fn add_upstream(&mut self, spent: Duration) {
        self.upstream = Some(self.upstream.unwrap_or_default() + spent);
    }

    /// The header value: `route;dur=…, upstream;dur=…, total;dur=…` in milliseconds; `total`
    /// runs to now (the response head: for a stream, before its first chunk).
    pub fn value(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut v = format!("route;dur={:.3}", ms(self.route));
        if let Some(up) = self.upstream {
            v.push_str(&format!(", upstream;dur={:.3}", ms(up)));
        }
        v.push_str(&format!(", total;dur={:.3}", ms(self.started.elapsed())));
        v
    }

    /// Sets the header on `response`.
    pub fn stamp(&self, response: &mut HttpResponse) {
        if let Ok(v) = HeaderValue::from_str(&self.value()) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(SERVER_TIMING_HEADER), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn durations(value: &str) -> Vec<(String, f64)> {
        value
            .split(", ")
            .map(|m| {
                let (name, dur) = m.split_once(";dur=").unwrap_or((m, "nan"));
                (name.to_string(), dur.parse().unwrap_or(f64::NAN))
            })
            .collect()
    }

    #[test]
    fn edge_requests_have_no_upstream_metric() {
        let mut t = ServerTiming::new(Instant::now());
        t.set_route(Duration::from_micros(1500));
        let d = durations(&t.value());
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0], ("route".to_string(), 1.5));
        assert_eq!(d[1].0, "total");
    }

    #[test]
    fn upstream_attempts_add_up_and_total_covers_them() {
        let started = Instant::now() - Duration::from_millis(50);
        let mut t = ServerTiming::new(started);
        t.set_route(Duration::from_millis(2));
        t.add_upstream(Duration::from_millis(10));
        t.add_upstream(Duration::from_micros(20_250));
        let d = durations(&t.value());
        assert_eq!(
            d.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["route", "upstream", "total"]
        );
        assert_eq!(d[1].1, 30.25);
        assert!(d[2].1 >= 50.0, "{d:?}");
    }
}
