//! Accuracy of the routing signal scorers on the labelled evaluation set
//! `policies/eval/signals.jsonl` (kept apart from the exemplars in `policies/exemplars/`), with
//! the real embedding model and ONNX Runtime. Prints precision/recall for "needs cloud"
//! (complexity_score above the default policy's 0.72), "high risk" (risk_score >= 80, the
//! default policy's review threshold) and personal data, for the semantic scorers and the keyword
//! heuristics side by side:
//!
//!     cargo test --test signal_accuracy -- --nocapture
//!
//! Asserts that the PII detector catches every structured identifier in the set (recall 1.0,
//! every expected kind) and floors on the semantic scorers.

#![expect(clippy::expect_used, reason = "tests fail loudly")]

use std::path::PathBuf;

use edge_gateway::embeddings::{EmbedInput, EmbeddingPackage, Encoder, EncoderOptions};
use edge_gateway::engine::runtime;
use edge_gateway::routing::{
    DataClassification, ExemplarFiles, HeuristicScorer, PiiDetector, PiiKind,
};
use serde_json::Value;

/// Thresholds of `policies/default.yaml`.
const COMPLEX_TASK: f64 = 0.72;
const HIGH_RISK: f64 = 80.0;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

struct Item {
    text: String,
    needs_cloud: bool,
    high_risk: bool,
    personal: bool,
    pii: Vec<PiiKind>,
}

fn eval_set() -> Vec<Item> {
    std::fs::read_to_string(repo("policies/eval/signals.jsonl"))
        .expect("eval set")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("jsonl line");
            Item {
                text: v["text"].as_str().expect("text").to_string(),
                needs_cloud: v["needs_cloud"].as_bool().expect("needs_cloud"),
                high_risk: v["high_risk"].as_bool().expect("high_risk"),
                personal: v["personal"].as_bool().expect("personal"),
                pii: v["pii"]
                    .as_array()
                    .expect("pii")
                    .iter()
                    .map(|k| PiiKind::parse(k.as_str().expect("kind")).expect("known kind"))
                    .collect(),
            }
        })
        .collect()
}

#[derive(Default)]
struct Confusion {
    tp: usize,
    fp: usize,
    fn_: usize,
    tn: usize,
}

impl Confusion {
    fn add(&mut self, predicted: bool, actual: bool) {
        match (predicted, actual) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, true) => self.fn_ += 1,
            (false, false) => self.tn += 1,
        }
    }
    fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }
    fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }
    fn line(&self, name: &str) -> String {
        format!(
            "{name:<44} precision {:.3}  recall {:.3}  (tp {} fp {} fn {} tn {})",
            self.precision(),
            self.recall(),
            self.tp,
            self.fp,
            self.fn_,
            self.tn
        )
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

#[test]
fn scorer_accuracy_on_the_labelled_evaluation_set() {
    let items = eval_set();
    assert!(items.len() >= 100, "evaluation set too small");
    let exemplars = ExemplarFiles::load(&repo("policies/exemplars")).expect("exemplars");
    // The evaluation set must stay unseen by the scorers.
    for set in [&exemplars.complexity, &exemplars.risk, &exemplars.pii] {
        for g in &set.groups {
            for t in &g.texts {
                assert!(
                    !items.iter().any(|i| i.text == *t),
                    "evaluation text is also an exemplar: {t}"
                );
            }
        }
    }
    let env = runtime::environment(None).expect("ONNX Runtime (run `make ort`)");
    let package = EmbeddingPackage::load(&repo("onnx/models/all-minilm-l6-v2-int8"), None)
        .expect("embedding package");
    let encoder = Encoder::start(
        env,
        package,
        &EncoderOptions {
            workers: 1,
            max_queue: 8,
            run_batch: 32,
            max_input_tokens: 256,
            cache_max_bytes: 0,
            intra_threads: 2,
        },
    )
    .expect("encoder");
    let scorer = exemplars.embed(&encoder).expect("exemplars embed");
    let heuristics = HeuristicScorer::new().expect("heuristics");
    let detector = PiiDetector::new().expect("pii detector");
    let vectors = encoder
        .embed_blocking(
            items
                .iter()
                .map(|i| EmbedInput::Text(i.text.clone()))
                .collect(),
            true,
        )
        .expect("embed eval set");

    let mut cloud_sem = Confusion::default();
    let mut cloud_heur = Confusion::default();
    let mut risk_sem = Confusion::default();
    let mut risk_heur = Confusion::default();
    let mut structured = Confusion::default();
    let mut personal_sem = Confusion::default();
    let mut personal_all = Confusion::default();
    let mut missed_kinds = Vec::new();
    let mut mistakes = Vec::new();
    for (item, v) in items.iter().zip(&vectors) {
        let s = scorer.score(&v.vector);
        let text = [item.text.as_str()];
        let found = detector.scan(&text);
        let sem_cloud = s.complexity.score > COMPLEX_TASK;
        let sem_risk = s.risk.score >= HIGH_RISK;
        let sem_personal = s.raise_to == Some(DataClassification::Restricted)
            && (!s.require_name || detector.names_someone(&text));
        cloud_sem.add(sem_cloud, item.needs_cloud);
        cloud_heur.add(
            heuristics.complexity_score(&text) > COMPLEX_TASK,
            item.needs_cloud,
        );
        risk_sem.add(sem_risk, item.high_risk);
        risk_heur.add(heuristics.risk_score(&text) >= HIGH_RISK, item.high_risk);
        structured.add(!found.is_empty(), !item.pii.is_empty());
        personal_sem.add(sem_personal, item.personal && item.pii.is_empty());
        personal_all.add(sem_personal || !found.is_empty(), item.personal);
        for kind in &item.pii {
            if !found.contains(*kind) {
                missed_kinds.push(format!("{kind} in {:?}", item.text));
            }
        }
        if sem_cloud != item.needs_cloud || sem_risk != item.high_risk {
            mistakes.push(format!(
                "  complexity {:.2} (cloud {}) risk {:5.1} (high {}) groups {}/{}: {}",
                s.complexity.score,
                item.needs_cloud,
                s.risk.score,
                item.high_risk,
                s.complexity.label,
                s.risk.label,
                item.text
            ));
        }
    }
    println!(
        "signal scorer accuracy on policies/eval/signals.jsonl ({} items)",
        items.len()
    );
    println!(
        "{}",
        cloud_sem.line("needs cloud (complexity > 0.72), semantic")
    );
    println!(
        "{}",
        cloud_heur.line("needs cloud (complexity > 0.72), heuristic")
    );
    println!("{}", risk_sem.line("high risk (risk >= 80), semantic"));
    println!("{}", risk_heur.line("high risk (risk >= 80), heuristic"));
    println!("{}", structured.line("structured PII (pattern detector)"));
    println!(
        "{}",
        personal_sem.line("unstructured personal data, semantic")
    );
    println!(
        "{}",
        personal_all.line("personal data, detector + semantic")
    );
    println!("semantic mistakes:\n{}", mistakes.join("\n"));

    assert!(
        missed_kinds.is_empty(),
        "structured identifiers missed: {missed_kinds:#?}"
    );
    assert_eq!(structured.recall(), 1.0);
    assert!(
        structured.precision() >= 0.95,
        "{}",
        structured.line("structured")
    );
    assert!(
        cloud_sem.precision() >= 0.75 && cloud_sem.recall() >= 0.75,
        "{}",
        cloud_sem.line("cloud")
    );
    assert!(
        risk_sem.precision() >= 0.6 && risk_sem.recall() >= 0.8,
        "{}",
        risk_sem.line("risk")
    );
    assert!(
        personal_all.recall() >= 0.9,
        "{}",
        personal_all.line("personal")
    );
}
