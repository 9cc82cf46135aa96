//! Retry timing: exponential backoff with full jitter, and reading an upstream's `Retry-After`.

use std::time::Duration;

use rand::Rng;
use reqwest::header::HeaderMap;

/// Delay before retry number `retry` (0 = first retry): uniform in `0..=min(max, base * 2^retry)`.
/// Full jitter spreads the retries of many clients that failed together (AWS architecture blog,
/// "Exponential Backoff And Jitter").
pub fn backoff(base: Duration, max: Duration, retry: u32, rng: &mut impl Rng) -> Duration {
    let ceiling = backoff_ceiling(base, max, retry);
    let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rng.random_range(0..=ceiling_ms))
}

/// Upper bound of [`backoff`] for retry number `retry`.
pub fn backoff_ceiling(base: Duration, max: Duration, retry: u32) -> Duration {
    let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

/// The wait an upstream asked for: OpenAI's `retry-after-ms`, else `Retry-After` in seconds.
/// HTTP-date values are ignored (the normal backoff applies), as hosted LLM APIs send seconds.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(wait) = text("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
    {
        return Some(wait);
    }
    let secs = text("retry-after")?.parse::<u64>().ok()?;
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use reqwest::header::HeaderValue;

    #[test]
    fn ceiling_doubles_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        let ceilings: Vec<u128> = (0..6)
            .map(|r| backoff_ceiling(base, max, r).as_millis())
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff_ceiling(base, max, u32::MAX), max);
    }

    #[test]
    fn backoff_stays_within_the_ceiling_and_varies() {
        let mut rng = StdRng::seed_from_u64(7);
        let base = Duration::from_millis(50);
        let max = Duration::from_secs(1);
        let samples: Vec<Duration> = (0..200).map(|_| backoff(base, max, 2, &mut rng)).collect();
        assert!(samples.iter().all(|d| *d <= Duration::from_millis(200)));
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 20, "jitter spreads delays");
    }

    #[test]
    fn retry_after_prefers_milliseconds_then_seconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
    }

    #[test]
    fn unparsable_retry_after_is_ignored() {
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        h.insert("retry-after-ms", HeaderValue::from_static("-5"));
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after-ms", HeaderValue::from_static("1e300"));
        assert_eq!(retry_after(&h), None, "overflow does not panic");
    }
}
