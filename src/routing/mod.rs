//! Routing: per-request signals, the declarative policy language (`policies/*.yaml`), its
//! compiler and evaluator, hot reload, and the policy test runner. Decides whether a request runs
//! on the edge, goes to a cloud upstream, goes to human review, or is rejected.
//!
//! Flow per request: [`SignalExtractor::extract_with`] reads the scores (header, `metadata`,
//! else the semantic scorers over the request's embedding, else the heuristics) and raises the
//! classification when [`PiiDetector`] finds personal identifiers; the caller adds
//! edge/upstream health into [`Signals`], and [`PolicyStore::decide`] returns a [`Decision`]. Restricted data never gets a cloud route,
//! whatever a policy says: the compiler warns and the evaluator enforces it.

pub mod config;
pub mod error;
pub mod heuristics;
pub mod metrics_names;
pub mod pii;
pub mod policy;
pub mod policy_tests;
pub mod semantic;
pub mod signals;
pub mod store;

mod compile;
pub(crate) mod yaml;

pub use config::{RawRouting, RoutingConfigError, RoutingSettings, ScorerMode};
pub use error::{Diagnostic, PolicyError, SignalError};
pub use heuristics::HeuristicScorer;
pub use pii::{PiiDetector, PiiFindings, PiiKind};
pub use policy::{Decision, PolicySet, Reason, RejectKind, Route, Unavailable, DEFAULT_RULE_ID};
pub use policy_tests::{run_policy_tests, run_policy_tests_to, TestReport};
pub use semantic::{ExemplarError, ExemplarFiles, SemanticScorer, SemanticScores};
pub use signals::{
    DataClassification, EdgeHealth, Extraction, HeaderLookup, OwnedHeaders, RequestScores,
    ScoreSource, SignalExtractor, Signals, UpstreamCircuit,
};
pub use store::{PolicyStore, PolicyWatcher, ReloadCounts};
