//! The shipped routing policies, loaded from `policies/` on disk: their own test cases pass,
//! restricted data never reaches a cloud route, and hot reload keeps the previous policy when
//! a new file is broken.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_gateway::routing::{
    run_policy_tests_to, DataClassification, EdgeHealth, PolicyError, PolicySet, PolicyStore,
    ReloadCounts, Route, SignalExtractor, Signals, UpstreamCircuit,
};
use edge_gateway::upstream::CircuitState;

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn upstreams() -> Vec<String> {
    vec!["cloud".to_owned()]
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "edge-gateway-routing-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("temp dir {}: {e}", dir.display()));
    dir
}

/// Polls `check` until it holds or `timeout` passes.
fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    check()
}

#[test]
fn shipped_policies_pass_their_tests() {
    let mut out = Vec::new();
    let report = run_policy_tests_to(&policies_dir(), &upstreams(), &mut out);
    let text = String::from_utf8_lossy(&out);
    let report = report.unwrap_or_else(|e| panic!("policy tests could not run: {e}\n{text}"));
    assert!(report.success(), "{text}");
    assert_eq!(report.failed, 0, "{text}");
    assert!(report.passed >= 20, "{text}");
    assert!(
        report.untested.is_empty(),
        "every policy has tests:\n{text}"
    );
    assert_eq!(report.warnings, 0, "{text}");
    assert!(text.contains("policy tests: "), "{text}");
}

#[test]
fn default_policy_has_the_documented_rules_in_order() {
    let p = PolicySet::load(&policies_dir().join("default.yaml"), &upstreams())
        .unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = p.rule_ids().collect();
    assert_eq!(
        ids,
        [
            "restricted-stays-on-edge",
            "too-long-for-edge",
            "high-risk-to-review",
            "complex-to-cloud"
        ]
    );
    assert_eq!(p.version.len(), 12);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn default_policy_names_file_line_and_rule_for_an_unknown_upstream() {
    let path = policies_dir().join("default.yaml");
    let err = PolicySet::load(&path, &["openai".to_owned()]).expect_err("no `cloud` upstream");
    let PolicyError::Invalid { diagnostics, .. } = &err else {
        panic!("expected Invalid, got {err}")
    };
    let first = &diagnostics[0];
    assert_eq!(first.rule.as_deref(), Some("too-long-for-edge"));
    assert!(first.message.contains("unknown upstream `cloud`"), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("{}:{}:", path.display(), first.line)),
        "{text}"
    );
}

fn signals(class: DataClassification) -> Signals {
    Signals {
        data_classification: class,
        risk_score: 0.0,
        complexity_score: 0.0,
        estimated_tokens: 100,
        model: "edge-tiny-genai".to_owned(),
        api_key: None,
        tenant: None,
        edge: EdgeHealth {
            available: true,
            queue_depth: 0,
            memory_pressure: 0.0,
            context_limit: 2048,
        },
        upstreams: Vec::new(),
    }
}

#[test]
fn restricted_request_never_routes_to_cloud_with_the_shipped_policy() {
    let p = PolicySet::load(&policies_dir().join("default.yaml"), &upstreams())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut s = signals(DataClassification::Restricted);
    for risk in [0.0, 80.0, 100.0] {
        for complexity in [0.0, 0.8, 1.0] {
            for tokens in [10, 2048, 2049, 1_000_000] {
                for available in [true, false] {
                    for circuit in [
                        CircuitState::Closed,
                        CircuitState::HalfOpen,
                        CircuitState::Open,
                    ] {
                        s.risk_score = risk;
                        s.complexity_score = complexity;
                        s.estimated_tokens = tokens;
                        s.edge.available = available;
                        s.upstreams = vec![UpstreamCircuit {
                            name: "cloud".into(),
                            state: circuit,
                        }];
                        let d = p.decide(&s);
                        let can_serve = available && tokens <= 2048;
                        let expected_edge = matches!(d.route, Route::Edge);
                        assert_eq!(expected_edge, can_serve, "{s:?} -> {d:?}");
                        if !can_serve {
                            assert!(matches!(d.route, Route::Reject(_)), "{s:?} -> {d:?}");
                        }
                        assert!(d.fallbacks.is_empty(), "{d:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn header_classification_and_heuristic_risk_drive_the_decision() {
    let p = PolicySet::load(&policies_dir().join("default.yaml"), &upstreams())
        .unwrap_or_else(|e| panic!("{e}"));
    let x = SignalExtractor::new().expect("scorers");
    let prompt = ["What insulin dosage should a 30 kg child get?"];

    let scores = x.extract(None, &[][..], &prompt).expect("valid");
    let edge = signals(DataClassification::Internal).edge;
    let d = p.decide(&Signals::new(&scores, 100, "edge-tiny-genai", edge));
    assert_eq!(d.route, Route::HumanReview, "risk {}", scores.risk_score);

    let headers = [("x-data-classification", "restricted")];
    let scores = x.extract(None, &headers[..], &prompt).expect("valid");
    let d = p.decide(&Signals::new(&scores, 100, "edge-tiny-genai", edge));
    assert_eq!(d.route, Route::Edge);
    assert_eq!(&*d.rule_id, "restricted-stays-on-edge");
}

const V1: &str = "rules:\n  - id: risky\n    when: {risk_score: {gte: 80}}\n    route: human_review\ndefault: edge\n";
const V2: &str = "rules:\n  - id: risky\n    when: {risk_score: {gte: 50}}\n    route: human_review\ndefault: edge\n";
const BROKEN: &str =
    "rules:\n  - id: risky\n    when: {risk_score: {gte: 500}}\n    route: human_review\ndefault: edge\n";

#[test]
fn reload_keeps_the_previous_policy_when_the_file_breaks() {
    let dir = temp_dir("reload");
    let path = dir.join("policy.yaml");
    std::fs::write(&path, V1).expect("write");
    let store = PolicyStore::load(&path, &upstreams()).unwrap_or_else(|e| panic!("{e}"));
    let v1 = store.version();
    let mut s = signals(DataClassification::Internal);
    s.risk_score = 60.0;
    assert_eq!(store.decide(&s).route, Route::Edge);

    std::fs::write(&path, BROKEN).expect("write");
    let err = store.reload().expect_err("broken policy");
    let text = err.to_string();
    assert!(text.contains("policy.yaml:3:"), "{text}");
    assert!(text.contains("rule \"risky\""), "{text}");
    assert_eq!(store.version(), v1, "old policy still active");
    assert_eq!(store.decide(&s).route, Route::Edge);
    assert_eq!(store.reload_counts(), ReloadCounts { ok: 0, failed: 1 });

    std::fs::write(&path, V2).expect("write");
    let v2 = store.reload().unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(v2, v1);
    assert_eq!(store.version(), v2);
    assert_eq!(store.decide(&s).route, Route::HumanReview);
    assert_eq!(store.reload_counts(), ReloadCounts { ok: 1, failed: 1 });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn watcher_reloads_on_change_and_counts_a_broken_file_once() {
    let dir = temp_dir("watch");
    let path = dir.join("policy.yaml");
    std::fs::write(&path, V1).expect("write");
    let store = Arc::new(PolicyStore::load(&path, &upstreams()).unwrap_or_else(|e| panic!("{e}")));
    let v1 = store.version();
    let watcher = store.watch(Duration::from_millis(20)).expect("watcher");

    std::fs::write(&path, BROKEN).expect("write");
    assert!(
        eventually(Duration::from_secs(10), || store.reload_counts().failed
            == 1),
        "broken file noticed: {:?}",
        store.reload_counts()
    );
    // Several more ticks over the same broken content: not retried, not recounted.
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(store.reload_counts(), ReloadCounts { ok: 0, failed: 1 });
    assert_eq!(store.version(), v1);

    std::fs::write(&path, V2).expect("write");
    assert!(
        eventually(Duration::from_secs(10), || store.version() != v1),
        "fixed file reloaded"
    );
    assert_eq!(store.reload_counts(), ReloadCounts { ok: 1, failed: 1 });

    drop(watcher);
    std::fs::write(&path, V1).expect("write");
    std::thread::sleep(Duration::from_millis(100));
    assert_ne!(store.version(), v1, "a dropped watcher no longer reloads");
    let _ = std::fs::remove_dir_all(&dir);
}
