//! Routing: per-request signals, the declarative policy language (`policies/*.yaml`), its
//! compiler and evaluator, hot reload, and the policy test runner. Decides whether a request runs
//! on the edge, goes to a cloud upstream, goes to human review, or is rejected.
//!
//! Flow per request: [`SignalExtractor::extract`] reads the scores (header, `metadata`, or
//! heuristics), the caller adds edge/upstream health into [`Signals`], and
//! [`PolicyStore::decide`] returns a [`Decision`]. Restricted data never gets a cloud route,
//! whatever a policy says: the compiler warns and the evaluator enforces it.

pub mod config;
pub mod error;
pub mod heuristics;
pub mod metrics_names;
pub mod policy;
pub mod policy_tests;
pub mod signals;
pub mod store;

mod compile;
mod yaml;

pub use config::{RawRouting, RoutingConfigError, RoutingSettings};
pub use error::{Diagnostic, PolicyError, SignalError};
pub use heuristics::HeuristicScorer;
pub use policy::{Decision, PolicySet, Reason, RejectKind, Route, Unavailable, DEFAULT_RULE_ID};
pub use policy_tests::{run_policy_tests, run_policy_tests_to, TestReport};
pub use signals::{
    DataClassification, EdgeHealth, HeaderLookup, RequestScores, ScoreSource, SignalExtractor,
    Signals, UpstreamCircuit,
};
pub use store::{PolicyStore, PolicyWatcher, ReloadCounts};
