//! A compiled policy ([`PolicySet`]) and its evaluator: first matching rule wins, then the
//! route's availability is checked and the fallback chain walked, then the restricted-data
//! guard has the last word. Evaluation allocates only for the returned [`Decision`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::compile;
use super::error::{Diagnostic, PolicyError};
use super::signals::{DataClassification, Signals};
use crate::upstream::CircuitState;

/// `Decision::rule_id` when no rule matched and the policy's `default` applied.
pub const DEFAULT_RULE_ID: &str = "default";

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// The local ONNX model.
    Edge,
    /// The named cloud upstream (`upstreams.<name>` in the configuration).
    Cloud(Arc<str>),
    /// Held for a person to review.
    HumanReview,
    /// Refused, with a message for the client.
    Reject(Arc<str>),
}

impl Route {
    /// Low-cardinality name for metrics and logs: `edge`, `cloud`, `human_review`, `reject`.
    pub fn kind(&self) -> &'static str {
        match self {
            Route::Edge => "edge",
            Route::Cloud(_) => "cloud",
            Route::HumanReview => "human_review",
            Route::Reject(_) => "reject",
        }
    }

    /// Why this route cannot take the request now, if it cannot. Human review and reject are
    /// always available; the edge needs to be up and the request to fit its context window; a
    /// cloud upstream needs a circuit that is not open (half-open lets the trial through).
    pub fn unavailable(&self, s: &Signals) -> Option<Unavailable> {
        match self {
            Route::Edge => edge_unavailable(s),
            Route::Cloud(name) => (s.circuit(name) == CircuitState::Open)
                .then(|| Unavailable::CircuitOpen(Arc::clone(name))),
            Route::HumanReview | Route::Reject(_) => None,
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Edge => f.write_str("edge"),
            Route::Cloud(name) => write!(f, "cloud:{name}"),
            Route::HumanReview => f.write_str("human_review"),
            Route::Reject(message) => write!(f, "reject ({message})"),
        }
    }
}

fn edge_unavailable(s: &Signals) -> Option<Unavailable> {
    if !s.edge.available {
        return Some(Unavailable::EdgeDown);
    }
    (s.estimated_tokens > s.edge.context_limit).then_some(Unavailable::ExceedsEdgeContext {
        tokens: s.estimated_tokens,
        limit: s.edge.context_limit,
    })
}

/// Why a route could not take the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// `edge_available` is false.
    EdgeDown,
    /// `estimated_tokens` exceeds `edge_context_limit`.
    ExceedsEdgeContext { tokens: u64, limit: u64 },
    /// The upstream's circuit breaker is open.
    CircuitOpen(Arc<str>),
}

impl Unavailable {
    /// Kind of the route that could not take the request (`edge` or `cloud`), for metrics.
    pub fn route_kind(&self) -> &'static str {
        match self {
            Unavailable::EdgeDown | Unavailable::ExceedsEdgeContext { .. } => "edge",
            Unavailable::CircuitOpen(_) => "cloud",
        }
    }

    /// Low-cardinality reason for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Unavailable::EdgeDown => "edge_down",
            Unavailable::ExceedsEdgeContext { .. } => "exceeds_edge_context",
            Unavailable::CircuitOpen(_) => "circuit_open",
        }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::EdgeDown => f.write_str("the edge model is unavailable"),
            Unavailable::ExceedsEdgeContext { tokens, limit } => write!(
                f,
                "the request needs {tokens} tokens but the edge model's context holds {limit}"
            ),
            Unavailable::CircuitOpen(name) => {
                write!(f, "cloud upstream `{name}` is unavailable (circuit open)")
            }
        }
    }
}

/// How the decided route came about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The rule's (or default's) own route.
    Matched,
    /// The rule's route was unavailable; a fallback was taken.
    Fallback { unavailable: Unavailable },
    /// The route and every fallback were unavailable; the decision is a reject.
    NoRouteAvailable { unavailable: Unavailable },
    /// The rule sent restricted data to the cloud; the guard replaced it with the edge or,
    /// when the edge cannot serve it, a reject.
    RestrictedGuard { edge: Option<Unavailable> },
    /// Restricted data routed to the edge that the edge cannot serve: rejected, never escalated.
    RestrictedEdgeUnavailable { unavailable: Unavailable },
}

impl Reason {
    /// Low-cardinality name for metrics and policy tests.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::Matched => "matched",
            Reason::Fallback { .. } => "fallback",
            Reason::NoRouteAvailable { .. } => "no_route",
            Reason::RestrictedGuard { .. } => "restricted_guard",
            Reason::RestrictedEdgeUnavailable { .. } => "restricted_edge_unavailable",
        }
    }

    /// Every label, for validating policy test expectations.
    pub const LABELS: [&'static str; 5] = [
        "matched",
        "fallback",
        "no_route",
        "restricted_guard",
        "restricted_edge_unavailable",
    ];
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Matched => f.write_str("matched"),
            Reason::Fallback { unavailable } => write!(f, "fallback: {unavailable}"),
            Reason::NoRouteAvailable { unavailable } => {
                write!(f, "no route available: {unavailable}")
            }
            Reason::RestrictedGuard { edge: None } => {
                f.write_str("restricted data may not go to the cloud; kept on the edge")
            }
            Reason::RestrictedGuard { edge: Some(why) } => write!(
                f,
                "restricted data may not go to the cloud and the edge cannot serve it: {why}"
            ),
            Reason::RestrictedEdgeUnavailable { unavailable } => write!(
                f,
                "restricted data must stay on the edge, which cannot serve it: {unavailable}"
            ),
        }
    }
}

/// What kind of refusal a [`Route::Reject`] decision is, so handlers can pick a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// The policy refuses this request (a `reject:` route): 403 `policy_rejected`.
    Policy,
    /// Nothing can serve it right now (circuits open, edge down): 503 with `Retry-After`.
    Unavailable,
    /// Restricted data too long for the edge model: 400 `context_length_exceeded`; the client
    /// must shorten the prompt or `max_tokens`, since the cloud is not an option.
    TooLongForEdge,
}

/// The outcome of evaluating a policy for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub route: Route,
    /// The matching rule's id, or [`DEFAULT_RULE_ID`].
    pub rule_id: Arc<str>,
    /// Routes to try, in order, if dispatching to `route` fails (e.g. the cloud call fails
    /// after the decision). Not yet checked for availability; never contains a cloud route
    /// for restricted data (always empty for restricted data).
    pub fallbacks: Vec<Route>,
    pub reason: Reason,
}

impl Decision {
    /// For a reject, what kind it is; `None` for other routes.
    pub fn reject_kind(&self) -> Option<RejectKind> {
        if !matches!(self.route, Route::Reject(_)) {
            return None;
        }
        Some(match &self.reason {
            Reason::Matched | Reason::Fallback { .. } => RejectKind::Policy,
            Reason::RestrictedGuard {
                edge: Some(Unavailable::ExceedsEdgeContext { .. }),
            }
            | Reason::RestrictedEdgeUnavailable {
                unavailable: Unavailable::ExceedsEdgeContext { .. },
            } => RejectKind::TooLongForEdge,
            Reason::NoRouteAvailable { .. }
            | Reason::RestrictedGuard { .. }
            | Reason::RestrictedEdgeUnavailable { .. } => RejectKind::Unavailable,
        })
    }
}

/// A route and the fallbacks to try, in order, when it is unavailable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub route: Route,
    pub fallbacks: Box<[Route]>,
}

/// A compiled `when` condition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cond {
    All(Box<[Cond]>),
    Any(Box<[Cond]>),
    Not(Box<Cond>),
    /// `signal op operand` over numbers.
    Num {
        signal: NumSignal,
        op: CmpOp,
        rhs: NumOperand,
    },
    /// Classification is in a set (every comparison compiles to a set of levels).
    Class {
        set: u8,
    },
    EdgeAvailable(bool),
    /// A string signal is (or, negated, is not) one of `values`. An absent value is in no set.
    Str {
        signal: StrSignal,
        values: Box<[Arc<str>]>,
        negate: bool,
    },
    /// An upstream's circuit state is in a set.
    Circuit {
        upstream: Arc<str>,
        set: u8,
    },
}

impl Cond {
    pub fn eval(&self, s: &Signals) -> bool {
        match self {
            Cond::All(parts) => parts.iter().all(|c| c.eval(s)),
            Cond::Any(parts) => parts.iter().any(|c| c.eval(s)),
            Cond::Not(inner) => !inner.eval(s),
            Cond::Num { signal, op, rhs } => {
                let rhs = match rhs {
                    NumOperand::Const(v) => *v,
                    NumOperand::Signal(other) => other.get(s),
                };
                op.apply(signal.get(s), rhs)
            }
            Cond::Class { set } => set & s.data_classification.bit() != 0,
            Cond::EdgeAvailable(expected) => s.edge.available == *expected,
            Cond::Str {
                signal,
                values,
                negate,
            } => {
                let found = signal
                    .get(s)
                    .is_some_and(|v| values.iter().any(|x| &**x == v));
                found != *negate
            }
            Cond::Circuit { upstream, set } => {
                set & super::signals::circuit_bit(s.circuit(upstream)) != 0
            }
        }
    }

    /// Three-valued evaluation knowing only that the data is restricted: `Some(true)` if the
    /// condition holds for every restricted request, `Some(false)` if for none, `None` if it
    /// depends on other signals. The compiler uses it to find rules that can send restricted
    /// data to the cloud.
    pub fn for_restricted(&self) -> Option<bool> {
        match self {
            Cond::All(parts) => {
                let mut all_true = true;
                for p in parts.iter() {
                    match p.for_restricted() {
                        Some(false) => return Some(false),
                        Some(true) => {}
                        None => all_true = false,
                    }
                }
                all_true.then_some(true)
            }
            Cond::Any(parts) => {
                let mut all_false = true;
                for p in parts.iter() {
                    match p.for_restricted() {
                        Some(true) => return Some(true),
                        Some(false) => {}
                        None => all_false = false,
                    }
                }
                all_false.then_some(false)
            }
            Cond::Not(inner) => inner.for_restricted().map(|v| !v),
            Cond::Class { set } => Some(set & DataClassification::Restricted.bit() != 0),
            Cond::Num { .. } | Cond::EdgeAvailable(_) | Cond::Str { .. } | Cond::Circuit { .. } => {
                None
            }
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn apply(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
        }
    }
}

/// The right-hand side of a numeric comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum NumOperand {
    Const(f64),
    Signal(NumSignal),
}

/// Numeric signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumSignal {
    RiskScore,
    ComplexityScore,
    EstimatedTokens,
    EdgeContextLimit,
    QueueDepth,
    MemoryPressure,
}

impl NumSignal {
    pub const ALL: [NumSignal; 6] = [
        NumSignal::RiskScore,
        NumSignal::ComplexityScore,
        NumSignal::EstimatedTokens,
        NumSignal::EdgeContextLimit,
        NumSignal::QueueDepth,
        NumSignal::MemoryPressure,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NumSignal::RiskScore => "risk_score",
            NumSignal::ComplexityScore => "complexity_score",
            NumSignal::EstimatedTokens => "estimated_tokens",
            NumSignal::EdgeContextLimit => "edge_context_limit",
            NumSignal::QueueDepth => "queue_depth",
            NumSignal::MemoryPressure => "memory_pressure",
        }
    }

    /// Upper bound of the signal's range (`None`: unbounded), and whether it is a whole number.
    /// Every numeric signal starts at 0.
    pub fn range(self) -> (Option<f64>, bool) {
        match self {
            NumSignal::RiskScore => (Some(100.0), false),
            NumSignal::ComplexityScore | NumSignal::MemoryPressure => (Some(1.0), false),
            NumSignal::EstimatedTokens | NumSignal::EdgeContextLimit | NumSignal::QueueDepth => {
                (None, true)
            }
        }
    }

    fn get(self, s: &Signals) -> f64 {
        match self {
            NumSignal::RiskScore => s.risk_score,
            NumSignal::ComplexityScore => s.complexity_score,
            NumSignal::EstimatedTokens => s.estimated_tokens as f64,
            NumSignal::EdgeContextLimit => s.edge.context_limit as f64,
            NumSignal::QueueDepth => s.edge.queue_depth as f64,
            NumSignal::MemoryPressure => s.edge.memory_pressure,
        }
    }
}

/// String signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrSignal {
    Model,
    ApiKey,
    Tenant,
}

impl StrSignal {
    fn get(self, s: &Signals) -> Option<&str> {
        match self {
            StrSignal::Model => Some(&s.model),
            StrSignal::ApiKey => s.api_key.as_deref(),
            StrSignal::Tenant => s.tenant.as_deref(),
        }
    }
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rule {
    pub id: Arc<str>,
    /// `None`: matches every request.
    pub when: Option<Cond>,
    pub target: Target,
    /// Versioned system prompt (`name` or `name@version`) applied to requests this rule
    /// matches, unless the request chose one.
    pub prompt: Option<Arc<str>>,
}

/// A compiled, validated policy file. Cheap to share (`Arc`) and immutable: a reload builds a
/// new one.
#[derive(Debug)]
pub struct PolicySet {
    /// First 12 hex digits of the SHA-256 of the file's bytes: identifies exactly what runs.
    pub version: String,
    pub source_path: PathBuf,
    /// Problems that do not stop the policy from loading (e.g. a rule that could send restricted
    /// data to the cloud, which the evaluator's guard overrides). Log them at load.
    pub warnings: Vec<Diagnostic>,
    pub(crate) description: Option<String>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) default: Target,
    /// [`DEFAULT_RULE_ID`], allocated once so default decisions only bump a count.
    pub(crate) default_id: Arc<str>,
}

impl PolicySet {
    /// Reads and compiles the policy at `path`. `upstreams` are the configured cloud upstream
    /// names; routes and signals naming any other upstream are errors.
    pub fn load(path: &Path, upstreams: &[String]) -> Result<PolicySet, PolicyError> {
        let bytes = std::fs::read(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::compile(path, &bytes, upstreams)
    }

    /// Compiles policy source `bytes`; `path` is used in messages and kept as `source_path`.
    pub fn compile(
        path: &Path,
        bytes: &[u8],
        upstreams: &[String],
    ) -> Result<PolicySet, PolicyError> {
        compile::compile(path, bytes, upstreams)
    }

    /// The file's `description`, if it has one.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Rule ids in evaluation order.
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| &*r.id)
    }

    /// The prompt the rule with id `rule_id` applies, if any.
    pub fn prompt_of(&self, rule_id: &str) -> Option<&Arc<str>> {
        self.rules
            .iter()
            .find(|r| &*r.id == rule_id)
            .and_then(|r| r.prompt.as_ref())
    }

    /// Every (rule id, prompt) pair, to check the prompts exist.
    pub fn rule_prompts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.rules
            .iter()
            .filter_map(|r| r.prompt.as_deref().map(|p| (&*r.id, p)))
    }

    /// Decides where a request goes: the first rule whose `when` holds (else `default`), its
    /// route if available or else the first available fallback (else a reject), and finally
    /// the restricted-data guard, which no rule can bypass.
    pub fn decide(&self, s: &Signals) -> Decision {
        let (rule_id, target) = self
            .rules
            .iter()
            .find(|r| r.when.as_ref().is_none_or(|c| c.eval(s)))
            .map_or((None, &self.default), |r| (Some(&r.id), &r.target));
        let rule_id = Arc::clone(rule_id.unwrap_or(&self.default_id));
        if s.data_classification == DataClassification::Restricted {
            return decide_restricted(rule_id, target, s);
        }
        let Some(unavailable) = target.route.unavailable(s) else {
            return Decision {
                route: target.route.clone(),
                rule_id,
                fallbacks: target.fallbacks.to_vec(),
                reason: Reason::Matched,
            };
        };
        for (i, fallback) in target.fallbacks.iter().enumerate() {
            if fallback.unavailable(s).is_none() {
                return Decision {
                    route: fallback.clone(),
                    rule_id,
                    fallbacks: target.fallbacks.get(i + 1..).unwrap_or_default().to_vec(),
                    reason: Reason::Fallback { unavailable },
                };
            }
        }
        let message = format!("no route can serve this request now: {unavailable}");
        Decision {
            route: Route::Reject(message.into()),
            rule_id,
            fallbacks: Vec::new(),
            reason: Reason::NoRouteAvailable { unavailable },
        }
    }
}

/// Restricted data: never the cloud, never a fallback. A cloud route becomes the edge if the
/// edge can serve the request; an edge that cannot serve it means a reject, not escalation.
/// Routes the policy wrote explicitly as `human_review` or `reject` stand.
fn decide_restricted(rule_id: Arc<str>, target: &Target, s: &Signals) -> Decision {
    let (route, reason) = match &target.route {
        Route::Cloud(_) => match edge_unavailable(s) {
            None => (Route::Edge, Reason::RestrictedGuard { edge: None }),
            Some(why) => {
                let reason = Reason::RestrictedGuard { edge: Some(why) };
                (Route::Reject(reason.to_string().into()), reason)
            }
        },
        Route::Edge => match edge_unavailable(s) {
            None => (Route::Edge, Reason::Matched),
            Some(unavailable) => {
                let reason = Reason::RestrictedEdgeUnavailable { unavailable };
                (Route::Reject(reason.to_string().into()), reason)
            }
        },
        other @ (Route::HumanReview | Route::Reject(_)) => (other.clone(), Reason::Matched),
    };
    Decision {
        route,
        rule_id,
        fallbacks: Vec::new(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::signals::{EdgeHealth, UpstreamCircuit};

    fn upstreams() -> Vec<String> {
        vec!["cloud".to_owned(), "backup".to_owned()]
    }

    fn policy(yaml: &str) -> PolicySet {
        PolicySet::compile(Path::new("test.yaml"), yaml.as_bytes(), &upstreams())
            .unwrap_or_else(|e| panic!("policy compiles: {e}"))
    }

    fn signals() -> Signals {
        Signals {
            data_classification: DataClassification::Internal,
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
                context_limit: 1000,
            },
            upstreams: Vec::new(),
        }
    }

    fn open(name: &str) -> UpstreamCircuit {
        UpstreamCircuit {
            name: name.into(),
            state: CircuitState::Open,
        }
    }

    const DEFAULT_LIKE: &str = r#"
settings:
  high_risk: 80
  complex: 0.72
rules:
  - id: restricted-on-edge
    when: {data_classification: restricted}
    route: edge
  - id: too-long
    when: {estimated_tokens: {gt: edge_context_limit}}
    route: {cloud: cloud}
  - id: high-risk
    when: {risk_score: {gte: $high_risk}}
    route: human_review
  - id: complex
    when: {complexity_score: {gt: $complex}}
    route: {cloud: cloud}
    fallback: [edge]
default:
  route: edge
  fallback: [{cloud: cloud}]
"#;

    #[test]
    fn first_matching_rule_wins_else_default() {
        let p = policy(DEFAULT_LIKE);
        let mut s = signals();
        let d = p.decide(&s);
        assert_eq!((d.route, &*d.rule_id), (Route::Edge, DEFAULT_RULE_ID));
        assert_eq!(d.fallbacks, vec![Route::Cloud("cloud".into())]);

        s.risk_score = 80.0;
        s.complexity_score = 0.9;
        let d = p.decide(&s);
        assert_eq!((d.route, &*d.rule_id), (Route::HumanReview, "high-risk"));

        s.risk_score = 79.0;
        let d = p.decide(&s);
        assert_eq!(d.route, Route::Cloud("cloud".into()));
        assert_eq!(&*d.rule_id, "complex");
        assert_eq!(d.fallbacks, vec![Route::Edge]);
        assert_eq!(d.reason, Reason::Matched);
    }

    #[test]
    fn thresholds_compare_exactly_at_the_boundary() {
        let p = policy(DEFAULT_LIKE);
        let mut s = signals();
        s.complexity_score = 0.72;
        assert_eq!(&*p.decide(&s).rule_id, DEFAULT_RULE_ID);
        s.complexity_score = 0.7201;
        assert_eq!(&*p.decide(&s).rule_id, "complex");
        s.complexity_score = 0.0;
        s.estimated_tokens = 1000;
        assert_eq!(&*p.decide(&s).rule_id, DEFAULT_RULE_ID);
        s.estimated_tokens = 1001;
        assert_eq!(&*p.decide(&s).rule_id, "too-long");
    }

    #[test]
    fn unavailable_route_takes_the_first_available_fallback() {
        let p = policy(DEFAULT_LIKE);
        let mut s = signals();
        s.complexity_score = 0.9;
        s.upstreams.push(open("cloud"));
        let d = p.decide(&s);
        assert_eq!(d.route, Route::Edge);
        assert_eq!(
            d.reason,
            Reason::Fallback {
                unavailable: Unavailable::CircuitOpen("cloud".into())
            }
        );
        assert!(d.fallbacks.is_empty());

        // Half-open lets the trial request through.
        s.upstreams[0].state = CircuitState::HalfOpen;
        assert_eq!(p.decide(&s).route, Route::Cloud("cloud".into()));
    }

    #[test]
    fn exhausted_fallbacks_reject_as_unavailable() {
        let p = policy(DEFAULT_LIKE);
        let mut s = signals();
        s.complexity_score = 0.9;
        s.edge.available = false;
        s.upstreams.push(open("cloud"));
        let d = p.decide(&s);
        assert!(matches!(d.route, Route::Reject(_)), "{d:?}");
        assert_eq!(d.reason.label(), "no_route");
        assert_eq!(d.reject_kind(), Some(RejectKind::Unavailable));
    }

    #[test]
    fn restricted_data_too_long_for_the_edge_is_rejected_not_escalated() {
        let p = policy(DEFAULT_LIKE);
        let mut s = signals();
        s.data_classification = DataClassification::Restricted;
        s.estimated_tokens = 5000;
        let d = p.decide(&s);
        let Route::Reject(message) = &d.route else {
            panic!("expected a reject, got {d:?}")
        };
        assert!(message.contains("restricted"), "{message}");
        assert!(message.contains("5000"), "{message}");
        assert_eq!(&*d.rule_id, "restricted-on-edge");
        assert_eq!(d.reject_kind(), Some(RejectKind::TooLongForEdge));
        assert!(d.fallbacks.is_empty());

        s.estimated_tokens = 10;
        s.edge.available = false;
        let d = p.decide(&s);
        assert_eq!(d.reason.label(), "restricted_edge_unavailable");
        assert_eq!(d.reject_kind(), Some(RejectKind::Unavailable));
    }

    /// A policy that forgets restricted data entirely; the evaluator must still keep it off the
    /// cloud, whichever way the rules, fallbacks and default point.
    const CLOUD_HAPPY: &str = r#"
rules:
  - id: everything-complex-to-cloud
    when: {complexity_score: {gte: 0.5}}
    route: {cloud: cloud}
    fallback: [{cloud: backup}, human_review]
  - id: edge-first
    when: {risk_score: {lt: 50}}
    route: edge
    fallback: [{cloud: cloud}]
default: {cloud: backup}
"#;

    #[test]
    fn restricted_data_never_gets_a_cloud_route_or_fallback() {
        let p = policy(CLOUD_HAPPY);
        assert!(
            !p.warnings.is_empty(),
            "the compiler flags cloud routes reachable by restricted data"
        );
        let mut s = signals();
        s.data_classification = DataClassification::Restricted;
        for complexity in [0.0, 0.9] {
            for risk in [0.0, 90.0] {
                for tokens in [10, 5000] {
                    for edge in [true, false] {
                        for cloud_open in [false, true] {
                            s.complexity_score = complexity;
                            s.risk_score = risk;
                            s.estimated_tokens = tokens;
                            s.edge.available = edge;
                            s.upstreams = if cloud_open {
                                vec![open("cloud")]
                            } else {
                                vec![]
                            };
                            let d = p.decide(&s);
                            assert!(
                                matches!(d.route, Route::Edge | Route::Reject(_)),
                                "{s:?} -> {d:?}"
                            );
                            assert!(d.fallbacks.is_empty(), "{d:?}");
                            if d.route == Route::Edge {
                                assert!(edge && tokens <= 1000, "{s:?} -> {d:?}");
                            }
                        }
                    }
                }
            }
        }
        s.complexity_score = 0.9;
        s.estimated_tokens = 10;
        s.edge.available = true;
        s.upstreams.clear();
        let d = p.decide(&s);
        assert_eq!(d.route, Route::Edge);
        assert_eq!(d.reason, Reason::RestrictedGuard { edge: None });
        assert_eq!(&*d.rule_id, "everything-complex-to-cloud");
    }

    #[test]
    fn confidential_data_may_use_the_cloud() {
        let p = policy(CLOUD_HAPPY);
        let mut s = signals();
        s.data_classification = DataClassification::Confidential;
        s.complexity_score = 0.9;
        assert_eq!(p.decide(&s).route, Route::Cloud("cloud".into()));
    }

    #[test]
    fn conditions_cover_every_signal_and_combinator() {
        let p = policy(
            r#"
settings:
  tenants: [acme, globex]
rules:
  - id: combo
    when:
      all:
        - data_classification: {gte: confidential, lt: restricted}
        - any:
            - tenant: {in: $tenants}
            - model: {eq: big-model}
        - not: {upstreams.cloud.circuit: open}
        - edge_available: true
        - queue_depth: {lte: 3}
        - memory_pressure: {"<": 0.9}
    route: {cloud: cloud}
default: edge
"#,
        );
        let mut s = signals();
        s.data_classification = DataClassification::Confidential;
        s.tenant = Some("acme".into());
        assert_eq!(&*p.decide(&s).rule_id, "combo");
        s.tenant = None;
        assert_eq!(&*p.decide(&s).rule_id, DEFAULT_RULE_ID);
        s.model = "big-model".into();
        assert_eq!(&*p.decide(&s).rule_id, "combo");
        s.edge.queue_depth = 4;
        assert_eq!(&*p.decide(&s).rule_id, DEFAULT_RULE_ID);
        s.edge.queue_depth = 3;
        s.edge.memory_pressure = 0.95;
        assert_eq!(&*p.decide(&s).rule_id, DEFAULT_RULE_ID);
        s.edge.memory_pressure = 0.5;
        s.upstreams.push(UpstreamCircuit {
            name: "cloud".into(),
            state: CircuitState::HalfOpen,
        });
        assert_eq!(&*p.decide(&s).rule_id, "combo");
        s.upstreams[0].state = CircuitState::Open;
        assert_eq!(&*p.decide(&s).rule_id, DEFAULT_RULE_ID);
        s.upstreams.clear();
        s.data_classification = DataClassification::Public;
        assert_eq!(&*p.decide(&s).rule_id, DEFAULT_RULE_ID);
        s.data_classification = DataClassification::Confidential;
        s.edge.available = false;
        assert_eq!(&*p.decide(&s).rule_id, DEFAULT_RULE_ID);
    }

    #[test]
    fn absent_tenant_is_in_no_list() {
        let p = policy(
            r#"
rules:
  - id: not-acme
    when: {tenant: {ne: acme}}
    route: human_review
default: edge
"#,
        );
        let mut s = signals();
        assert_eq!(&*p.decide(&s).rule_id, "not-acme");
        s.tenant = Some("acme".into());
        assert_eq!(&*p.decide(&s).rule_id, DEFAULT_RULE_ID);
    }

    #[test]
    fn api_key_names_route_per_caller() {
        let p = policy(
            r#"
rules:
  - id: ci-stays-local
    when: {api_key: [ci, load-test]}
    route: edge
  - id: others-complex-to-cloud
    when: {complexity_score: {gt: 0.5}, data_classification: {lt: restricted}}
    route: {cloud: cloud}
default: edge
"#,
        );
        let mut s = signals();
        s.complexity_score = 0.9;
        s.api_key = Some("ci".into());
        assert_eq!(&*p.decide(&s).rule_id, "ci-stays-local");
        s.api_key = Some("alice".into());
        assert_eq!(&*p.decide(&s).rule_id, "others-complex-to-cloud");
        s.api_key = None;
        assert_eq!(&*p.decide(&s).rule_id, "others-complex-to-cloud");
    }

    #[test]
    fn policy_reject_routes_carry_their_message() {
        let p = policy(
            r#"
rules:
  - id: no-public-big-model
    when: {model: big-model, data_classification: public}
    route: {reject: "big-model is not available for public data"}
default: edge
"#,
        );
        let mut s = signals();
        s.model = "big-model".into();
        s.data_classification = DataClassification::Public;
        let d = p.decide(&s);
        assert_eq!(
            d.route,
            Route::Reject("big-model is not available for public data".into())
        );
        assert_eq!(d.reject_kind(), Some(RejectKind::Policy));
    }
}
