//! Routing policy files: YAML → compiled policy (the path `PolicyStore` load and reload take),
//! then decisions on a few fixed requests, so compiled conditions are evaluated too.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use edge_gateway::routing::{
    DataClassification, EdgeHealth, PolicySet, RequestScores, ScoreSource, Signals,
};
use libfuzzer_sys::fuzz_target;

static UPSTREAMS: LazyLock<Vec<String>> =
    LazyLock::new(|| vec!["cloud".to_string(), "backup".to_string()]);

static REQUESTS: LazyLock<Vec<Signals>> = LazyLock::new(|| {
    let mut out = Vec::new();
    for (class, risk, complexity, tokens, available) in [
        (DataClassification::Public, 0.0, 0.0, 10, true),
        (DataClassification::Restricted, 95.0, 0.9, 100_000, false),
        (DataClassification::Confidential, 80.0, 0.72, 4096, true),
    ] {
        let scores = RequestScores {
            data_classification: class,
            data_classification_source: ScoreSource::Header,
            risk_score: risk,
            risk_score_source: ScoreSource::Metadata,
            complexity_score: complexity,
            complexity_score_source: ScoreSource::Heuristic,
        };
        let edge = EdgeHealth {
            available,
            queue_depth: 3,
            memory_pressure: 0.5,
            context_limit: 2048,
        };
        let mut s = Signals::new(&scores, tokens, "edge-tiny-genai", edge);
        s.api_key = Some("mes-line-3".into());
        out.push(s);
    }
    out
});

fuzz_target!(|data: &[u8]| {
    let Ok(policy) = PolicySet::compile(Path::new("fuzz.yaml"), data, &UPSTREAMS) else {
        return;
    };
    for request in REQUESTS.iter() {
        let _ = policy.decide(request);
    }
});
