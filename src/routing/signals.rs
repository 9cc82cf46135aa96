//! Per-request routing signals ([`Signals`]) and how the request's own scores are read: headers,
//! then the body's `metadata`, then the built-in heuristics ([`SignalExtractor`]).
//!
//! Precedence, chosen so that no single source can weaken a safety signal:
//! - `data_classification`: the **most restrictive** of `x-data-classification` and
//!   `metadata.data_classification`; `internal` when neither is sent. A label can be raised by
//!   either layer (the calling service or the proxy in front of it) but never lowered. The PII
//!   detector then raises it further — to `restricted` for a structured identifier in the
//!   user text, to the exemplar file's `raise_to` for a high personal-data score — and never
//!   lowers it either.
//! - `risk_score`: the **highest** of `x-risk-score` and `metadata.risk_score`; when neither is
//!   sent, the semantic scorer (if the embedding model is available) else the heuristic one.
//! - `complexity_score`: `x-complexity-score` wins over `metadata.complexity_score` (the proxy
//!   that sets headers is the deployment's authority, and complexity only trades cost for
//!   quality); when neither is sent, the semantic scorer else the heuristic one.
//!
//! Every value that is sent is validated, including one that loses; a bad one is a
//! [`SignalError`] naming the header or `metadata.<key>`, which handlers answer with a 400.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::error::{PolicyError, SignalError};
use super::heuristics::HeuristicScorer;
use super::pii::{PiiDetector, PiiFindings};
use super::semantic::SemanticScores;
use crate::upstream::CircuitState;

/// Header carrying the data classification.
pub const DATA_CLASSIFICATION_HEADER: &str = "x-data-classification";
/// Header carrying the risk score (0–100).
pub const RISK_SCORE_HEADER: &str = "x-risk-score";
/// Header carrying the complexity score (0–1).
pub const COMPLEXITY_SCORE_HEADER: &str = "x-complexity-score";

const META_CLASSIFICATION: &str = "metadata.data_classification";
const META_RISK: &str = "metadata.risk_score";
const META_COMPLEXITY: &str = "metadata.complexity_score";

/// How sensitive the request's data is, least to most. Ordered, so policies can say
/// `data_classification: {gte: confidential}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DataClassification {
    Public,
    Internal,
    Confidential,
    /// Must never leave the edge: no cloud route, no cloud fallback.
    Restricted,
}

impl DataClassification {
    /// Every level, least to most sensitive.
    pub const ALL: [DataClassification; 4] = [
        DataClassification::Public,
        DataClassification::Internal,
        DataClassification::Confidential,
        DataClassification::Restricted,
    ];

    /// The spelling used in policies, headers and metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            DataClassification::Public => "public",
            DataClassification::Internal => "internal",
            DataClassification::Confidential => "confidential",
            DataClassification::Restricted => "restricted",
        }
    }

    /// Parses a level, ignoring ASCII case and surrounding spaces (`Restricted` from a header).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        Self::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(text))
    }

    /// Bit of this level in a set of levels.
    pub(crate) fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for DataClassification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a circuit state as policies spell it.
pub(crate) fn parse_circuit(text: &str) -> Option<CircuitState> {
    match text {
        "closed" => Some(CircuitState::Closed),
        "half_open" => Some(CircuitState::HalfOpen),
        "open" => Some(CircuitState::Open),
        _ => None,
    }
}

/// Bit of a circuit state in a set of states.
pub(crate) fn circuit_bit(state: CircuitState) -> u8 {
    match state {
        CircuitState::Closed => 1,
        CircuitState::HalfOpen => 2,
        CircuitState::Open => 4,
    }
}

/// One cloud upstream's breaker state, as the caller saw it for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamCircuit {
    pub name: Arc<str>,
    pub state: CircuitState,
}

/// Health of the local engine for this request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdgeHealth {
    /// The model is loaded and its queue accepts work.
    pub available: bool,
    /// Generations waiting for a worker.
    pub queue_depth: u64,
    /// Memory use of the edge host, 0–1.
    pub memory_pressure: f64,
    /// Largest prompt + completion the edge model accepts, in tokens.
    pub context_limit: u64,
}

/// Everything a policy can test about one request. Built by the caller per request; the
/// evaluator only reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Signals {
    pub data_classification: DataClassification,
    /// 0–100.
    pub risk_score: f64,
    /// 0–1.
    pub complexity_score: f64,
    /// Prompt tokens plus the completion budget (`max_tokens` or the default).
    pub estimated_tokens: u64,
    /// The `model` the client asked for.
    pub model: String,
    /// Name of the API key the request was authorized with (`auth.keys[i].name`, the
    /// authenticator's `Principal::key_name`), never the key itself: keys are secrets and policy
    /// files are not. `None` when the gateway does not authenticate.
    pub api_key: Option<Arc<str>>,
    /// Tenant the request belongs to, if the gateway knows it.
    pub tenant: Option<Arc<str>>,
    pub edge: EdgeHealth,
    /// Breaker state per configured upstream; an upstream missing here counts as `closed` (the
    /// client's own breaker still refuses calls while it is open).
    pub upstreams: Vec<UpstreamCircuit>,
}

impl Signals {
    /// Signals from the request's scores and the gateway's current health.
    pub fn new(
        scores: &RequestScores,
        estimated_tokens: u64,
        model: impl Into<String>,
        edge: EdgeHealth,
    ) -> Self {
        Signals {
            data_classification: scores.data_classification,
            risk_score: scores.risk_score,
            complexity_score: scores.complexity_score,
            estimated_tokens,
            model: model.into(),
            api_key: None,
            tenant: None,
            edge,
            upstreams: Vec::new(),
        }
    }

    /// The breaker state of upstream `name`; `closed` when the caller did not report it.
    pub fn circuit(&self, name: &str) -> CircuitState {
        self.upstreams
            .iter()
            .find(|u| &*u.name == name)
            .map_or(CircuitState::Closed, |u| u.state)
    }
}

/// Where a score came from, for logs and traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreSource {
    Header,
    Metadata,
    /// Computed from the prompt by [`HeuristicScorer`].
    Heuristic,
    /// Computed from the prompt's embedding by the exemplar scorers (`routing::semantic`).
    Semantic,
    /// Raised by the PII detector: a structured identifier in the prompt.
    PiiDetector,
    /// Nothing was sent and there is no heuristic (classification defaults to `internal`).
    Default,
}

impl ScoreSource {
    /// Lowercase name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ScoreSource::Header => "header",
            ScoreSource::Metadata => "metadata",
            ScoreSource::Heuristic => "heuristic",
            ScoreSource::Semantic => "semantic",
            ScoreSource::PiiDetector => "pii_detector",
            ScoreSource::Default => "default",
        }
    }
}

/// The request's own routing scores and where each came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestScores {
    pub data_classification: DataClassification,
    pub data_classification_source: ScoreSource,
    pub risk_score: f64,
    pub risk_score_source: ScoreSource,
    pub complexity_score: f64,
    pub complexity_score_source: ScoreSource,
}

/// A request's scores plus what the content scorers found, for the explain endpoint and the
/// review record (kinds and scores only, never the matched text).
#[derive(Debug, Clone, PartialEq)]
pub struct Extraction {
    pub scores: RequestScores,
    /// Structured identifiers found in the user text.
    pub pii: PiiFindings,
    /// The semantic scores, when the embedding model scored this request.
    pub semantic: Option<SemanticScores>,
}

/// Read access to request headers, so extraction works on actix's `HeaderMap` and on plain
/// pairs in tests without the routing layer depending on a request type.
pub trait HeaderLookup {
    /// The first value of header `name` (lowercase), as raw bytes.
    fn header(&self, name: &str) -> Option<&[u8]>;
}

impl HeaderLookup for actix_web::http::header::HeaderMap {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(|v| v.as_bytes())
    }
}

/// The routing headers of a request, copied out so extraction can run on the blocking pool.
#[derive(Debug, Clone, Default)]
pub struct OwnedHeaders(Vec<(&'static str, Vec<u8>)>);

impl OwnedHeaders {
    /// Copies the signal headers out of `headers`.
    pub fn from_lookup(headers: &(impl HeaderLookup + ?Sized)) -> Self {
        OwnedHeaders(
            [
                DATA_CLASSIFICATION_HEADER,
                RISK_SCORE_HEADER,
                COMPLEXITY_SCORE_HEADER,
            ]
            .into_iter()
            .filter_map(|name| headers.header(name).map(|v| (name, v.to_vec())))
            .collect(),
        )
    }
}

impl HeaderLookup for OwnedHeaders {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_slice())
    }
}

impl HeaderLookup for [(&str, &str)] {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    }
}

/// Reads a request's routing scores. Holds the heuristic scorers and the PII detector, whose
/// automatons and regexes are built once here (at startup), never per request.
#[derive(Debug, Clone)]
pub struct SignalExtractor {
    heuristics: Arc<HeuristicScorer>,
    pii: Arc<PiiDetector>,
}

impl SignalExtractor {
    /// Builds the heuristic scorers and the PII detector.
    pub fn new() -> Result<Self, PolicyError> {
        Ok(SignalExtractor {
            heuristics: Arc::new(HeuristicScorer::new()?),
            pii: Arc::new(PiiDetector::new()?),
        })
    }

    /// The PII detector.
    pub fn pii(&self) -> &PiiDetector {
        &self.pii
    }

    /// The heuristic scorers, for callers that want a score directly.
    pub fn heuristics(&self) -> &HeuristicScorer {
        &self.heuristics
    }

    /// Reads `data_classification`, `risk_score` and `complexity_score` from `headers` and
    /// the body's `metadata` (see the module docs for precedence), computing the missing scores
    /// from `prompt` (the user-authored text of the request; system prompts would make every
    /// request look alike). Values may be JSON numbers or numeric strings, since OpenAI's
    /// `metadata` only carries strings.
    pub fn extract(
        &self,
        metadata: Option<&Value>,
        headers: &(impl HeaderLookup + ?Sized),
        prompt: &[&str],
    ) -> Result<RequestScores, SignalError> {
        self.extract_with(metadata, headers, prompt, None)
            .map(|e| e.scores)
    }

    /// Like [`SignalExtractor::extract`], with the request's semantic scores (when the embedding
    /// model scored it) replacing the heuristics for missing scores, and the PII detector
    /// raising the classification. CPU work proportional to the prompt: call it from the
    /// blocking pool.
    pub fn extract_with(
        &self,
        metadata: Option<&Value>,
        headers: &(impl HeaderLookup + ?Sized),
        prompt: &[&str],
        semantic: Option<&SemanticScores>,
    ) -> Result<Extraction, SignalError> {
        let meta = metadata_object(metadata)?;
        let meta_field = |key: &str| meta.and_then(|m| m.get(key)).filter(|v| !v.is_null());

        let class_header = header_text(headers, DATA_CLASSIFICATION_HEADER)?
            .map(|t| classification(t, DATA_CLASSIFICATION_HEADER))
            .transpose()?;
        let class_meta = meta_field("data_classification")
            .map(|v| match v {
                Value::String(s) => classification(s, META_CLASSIFICATION),
                _ => Err(SignalError::new(
                    META_CLASSIFICATION,
                    "must be one of public, internal, confidential, restricted",
                )),
            })
            .transpose()?;
        let (mut data_classification, mut data_classification_source) =
            match (class_header, class_meta) {
                (Some(h), Some(m)) if m > h => (m, ScoreSource::Metadata),
                (Some(h), _) => (h, ScoreSource::Header),
                (None, Some(m)) => (m, ScoreSource::Metadata),
                (None, None) => (DataClassification::Internal, ScoreSource::Default),
            };
        // Detections only ever raise the label, so no source can use them to weaken it.
        let pii = self.pii.scan(prompt);
        if !pii.is_empty() && DataClassification::Restricted > data_classification {
            data_classification = DataClassification::Restricted;
            data_classification_source = ScoreSource::PiiDetector;
        }
        let named = |s: &SemanticScores| !s.require_name || self.pii.names_someone(prompt);
        if let Some(raised) = semantic.filter(|s| named(s)).and_then(|s| s.raise_to) {
            if raised > data_classification {
                data_classification = raised;
                data_classification_source = ScoreSource::Semantic;
            }
        }

        let risk_header = header_text(headers, RISK_SCORE_HEADER)?
            .map(|t| score_text(t, RISK_SCORE_HEADER, 100.0))
            .transpose()?;
        let risk_meta = meta_field("risk_score")
            .map(|v| score_json(v, META_RISK, 100.0))
            .transpose()?;
        let (risk_score, risk_score_source) = match (risk_header, risk_meta) {
            (Some(h), Some(m)) if m > h => (m, ScoreSource::Metadata),
            (Some(h), _) => (h, ScoreSource::Header),
            (None, Some(m)) => (m, ScoreSource::Metadata),
            (None, None) => match semantic {
                Some(s) => (s.risk.score, ScoreSource::Semantic),
                None => (self.heuristics.risk_score(prompt), ScoreSource::Heuristic),
            },
        };

        let complexity_header = header_text(headers, COMPLEXITY_SCORE_HEADER)?
            .map(|t| score_text(t, COMPLEXITY_SCORE_HEADER, 1.0))
            .transpose()?;
        let complexity_meta = meta_field("complexity_score")
            .map(|v| score_json(v, META_COMPLEXITY, 1.0))
            .transpose()?;
        let (complexity_score, complexity_score_source) = match (complexity_header, complexity_meta)
        {
            (Some(h), _) => (h, ScoreSource::Header),
            (None, Some(m)) => (m, ScoreSource::Metadata),
            (None, None) => match semantic {
                Some(s) => (s.complexity.score, ScoreSource::Semantic),
                None => (
                    self.heuristics.complexity_score(prompt),
                    ScoreSource::Heuristic,
                ),
            },
        };

        Ok(Extraction {
            scores: RequestScores {
                data_classification,
                data_classification_source,
                risk_score,
                risk_score_source,
                complexity_score,
                complexity_score_source,
            },
            pii,
            semantic: semantic.cloned(),
        })
    }
}

fn metadata_object(
    metadata: Option<&Value>,
) -> Result<Option<&serde_json::Map<String, Value>>, SignalError> {
    match metadata {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(SignalError::new("metadata", "must be an object")),
    }
}

fn header_text<'h>(
    headers: &'h (impl HeaderLookup + ?Sized),
    name: &'static str,
) -> Result<Option<&'h str>, SignalError> {
    let Some(raw) = headers.header(name) else {
        return Ok(None);
    };
    let text = std::str::from_utf8(raw)
        .map_err(|_| SignalError::new(name, "must be ASCII text"))?
        .trim();
    if text.is_empty() {
        return Err(SignalError::new(name, "must not be empty"));
    }
    Ok(Some(text))
}

fn classification(text: &str, param: &'static str) -> Result<DataClassification, SignalError> {
    DataClassification::parse(text).ok_or_else(|| {
        SignalError::new(
            param,
            format!("`{text}` is not one of public, internal, confidential, restricted"),
        )
    })
}

fn score_text(text: &str, param: &'static str, max: f64) -> Result<f64, SignalError> {
    let value = text.trim().parse::<f64>().map_err(|_| {
        SignalError::new(param, format!("`{text}` is not a number from 0 to {max}"))
    })?;
    in_range(value, param, max)
}

fn score_json(value: &Value, param: &'static str, max: f64) -> Result<f64, SignalError> {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(v) => in_range(v, param, max),
            None => Err(SignalError::new(
                param,
                format!("must be a number from 0 to {max}"),
            )),
        },
        Value::String(s) => score_text(s, param, max),
        _ => Err(SignalError::new(
            param,
            format!("must be a number from 0 to {max}"),
        )),
    }
}

fn in_range(value: f64, param: &'static str, max: f64) -> Result<f64, SignalError> {
    if value.is_finite() && (0.0..=max).contains(&value) {
        Ok(value)
    } else {
        Err(SignalError::new(
            param,
            format!("{value} is outside 0 to {max}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn extractor() -> SignalExtractor {
        SignalExtractor::new().expect("scorers build")
    }

    const NO_HEADERS: &[(&str, &str)] = &[];

    #[test]
    fn classification_is_ordered_and_parses_case_insensitively() {
        assert!(DataClassification::Restricted > DataClassification::Confidential);
        assert!(DataClassification::Internal > DataClassification::Public);
        assert_eq!(
            DataClassification::parse(" Restricted "),
            Some(DataClassification::Restricted)
        );
        assert_eq!(DataClassification::parse("secret"), None);
    }

    #[test]
    fn absent_signals_use_default_classification_and_heuristics() {
        let s = extractor()
            .extract(None, NO_HEADERS, &["What is on the menu today?"])
            .expect("valid");
        assert_eq!(s.data_classification, DataClassification::Internal);
        assert_eq!(s.data_classification_source, ScoreSource::Default);
        assert_eq!(s.risk_score_source, ScoreSource::Heuristic);
        assert_eq!(s.complexity_score_source, ScoreSource::Heuristic);
        assert!(s.complexity_score < 0.2, "{}", s.complexity_score);
        assert_eq!(s.risk_score, 0.0);
    }

    #[test]
    fn metadata_values_may_be_numbers_or_numeric_strings() {
        let meta = json!({"data_classification": "confidential", "risk_score": "85", "complexity_score": 0.5});
        let s = extractor()
            .extract(Some(&meta), NO_HEADERS, &[])
            .expect("valid");
        assert_eq!(s.data_classification, DataClassification::Confidential);
        assert_eq!(s.risk_score, 85.0);
        assert_eq!(s.risk_score_source, ScoreSource::Metadata);
        assert_eq!(s.complexity_score, 0.5);
    }

    #[test]
    fn classification_takes_the_most_restrictive_source() {
        let meta = json!({"data_classification": "restricted"});
        let headers = [(DATA_CLASSIFICATION_HEADER, "public")];
        let s = extractor()
            .extract(Some(&meta), &headers[..], &[])
            .expect("valid");
        assert_eq!(s.data_classification, DataClassification::Restricted);
        assert_eq!(s.data_classification_source, ScoreSource::Metadata);

        let meta = json!({"data_classification": "public"});
        let headers = [(DATA_CLASSIFICATION_HEADER, "Confidential")];
        let s = extractor()
            .extract(Some(&meta), &headers[..], &[])
            .expect("valid");
        assert_eq!(s.data_classification, DataClassification::Confidential);
        assert_eq!(s.data_classification_source, ScoreSource::Header);
    }

    #[test]
    fn risk_takes_the_highest_source_and_complexity_prefers_the_header() {
        let meta = json!({"risk_score": 90, "complexity_score": 0.9});
        let headers = [(RISK_SCORE_HEADER, "20"), (COMPLEXITY_SCORE_HEADER, "0.1")];
        let s = extractor()
            .extract(Some(&meta), &headers[..], &[])
            .expect("valid");
        assert_eq!(s.risk_score, 90.0);
        assert_eq!(s.complexity_score, 0.1);
        assert_eq!(s.complexity_score_source, ScoreSource::Header);
    }

    #[test]
    fn explicit_scores_override_the_heuristics() {
        let headers = [(RISK_SCORE_HEADER, "5")];
        let s = extractor()
            .extract(None, &headers[..], &["What insulin dosage should I give?"])
            .expect("valid");
        assert_eq!(s.risk_score, 5.0);
        assert_eq!(s.risk_score_source, ScoreSource::Header);
    }

    /// Metadata, headers, and the `param` the error must name.
    type BadCase<'a> = (Value, Vec<(&'a str, &'a str)>, &'a str);

    #[test]
    fn bad_values_name_the_field() {
        let x = extractor();
        let cases: Vec<BadCase<'_>> = vec![
            (json!({"risk_score": 101}), vec![], "metadata.risk_score"),
            (json!({"risk_score": "high"}), vec![], "metadata.risk_score"),
            (
                json!({"complexity_score": 1.5}),
                vec![],
                "metadata.complexity_score",
            ),
            (
                json!({"complexity_score": true}),
                vec![],
                "metadata.complexity_score",
            ),
            (
                json!({"data_classification": "secret"}),
                vec![],
                "metadata.data_classification",
            ),
            (
                json!({"data_classification": 3}),
                vec![],
                "metadata.data_classification",
            ),
            (json!("restricted"), vec![], "metadata"),
            (
                json!({}),
                vec![(RISK_SCORE_HEADER, "-1")],
                RISK_SCORE_HEADER,
            ),
            (
                json!({}),
                vec![(RISK_SCORE_HEADER, "NaN")],
                RISK_SCORE_HEADER,
            ),
            (
                json!({}),
                vec![(COMPLEXITY_SCORE_HEADER, "")],
                COMPLEXITY_SCORE_HEADER,
            ),
            (
                json!({}),
                vec![(DATA_CLASSIFICATION_HEADER, "top-secret")],
                DATA_CLASSIFICATION_HEADER,
            ),
            // A bad value is an error even when another source would have won.
            (
                json!({"risk_score": 300}),
                vec![(RISK_SCORE_HEADER, "10")],
                "metadata.risk_score",
            ),
        ];
        for (meta, headers, param) in cases {
            let err = x
                .extract(Some(&meta), &headers[..], &[])
                .expect_err("invalid");
            assert_eq!(err.param, param, "{meta} {headers:?}: {err}");
        }
    }

    #[test]
    fn null_metadata_values_count_as_absent() {
        let meta = json!({"risk_score": null, "cache": false});
        let s = extractor()
            .extract(Some(&meta), NO_HEADERS, &[])
            .expect("valid");
        assert_eq!(s.risk_score_source, ScoreSource::Heuristic);
    }

    #[test]
    fn actix_header_map_is_a_header_source() {
        use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static(DATA_CLASSIFICATION_HEADER),
            HeaderValue::from_static("restricted"),
        );
        let s = extractor().extract(None, &headers, &[]).expect("valid");
        assert_eq!(s.data_classification, DataClassification::Restricted);
    }

    #[test]
    fn structured_pii_raises_classification_but_never_lowers_it() {
        let x = extractor();
        let card = ["Charge card 4242 4242 4242 4242 please"];
        let s = x.extract(None, NO_HEADERS, &card).expect("valid");
        assert_eq!(s.data_classification, DataClassification::Restricted);
        assert_eq!(s.data_classification_source, ScoreSource::PiiDetector);
        // A header saying `public` cannot lower what the detector found.
        let public = [(DATA_CLASSIFICATION_HEADER, "public")];
        let s = x.extract(None, &public[..], &card).expect("valid");
        assert_eq!(s.data_classification, DataClassification::Restricted);
        // Nothing found: the header stands.
        let s = x
            .extract(None, &public[..], &["Charge the usual account"])
            .expect("valid");
        assert_eq!(s.data_classification, DataClassification::Public);
        assert_eq!(s.data_classification_source, ScoreSource::Header);
    }

    #[test]
    fn owned_headers_copy_only_signal_headers() {
        let pairs = [
            (RISK_SCORE_HEADER, "70"),
            ("authorization", "Bearer secret"),
        ];
        let owned = OwnedHeaders::from_lookup(&pairs[..]);
        assert_eq!(owned.header(RISK_SCORE_HEADER), Some(&b"70"[..]));
        assert_eq!(owned.header("authorization"), None);
    }

    #[test]
    fn unknown_upstreams_count_as_closed() {
        let scores = extractor().extract(None, NO_HEADERS, &[]).expect("valid");
        let mut s = Signals::new(
            &scores,
            10,
            "m",
            EdgeHealth {
                available: true,
                queue_depth: 0,
                memory_pressure: 0.0,
                context_limit: 100,
            },
        );
        s.upstreams.push(UpstreamCircuit {
            name: "cloud".into(),
            state: CircuitState::Open,
        });
        assert_eq!(s.circuit("cloud"), CircuitState::Open);
        assert_eq!(s.circuit("other"), CircuitState::Closed);
    }
}
