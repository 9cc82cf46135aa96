//! Compiles a policy file into a [`PolicySet`]: schema checks (unknown fields, types, value
//! ranges, settings references, upstream names), rule-set checks (duplicate ids, rules after a
//! catch-all), and the restricted-data analysis. Every problem becomes a [`Diagnostic`] with
//! file, line, column and rule, and all of a file's problems are reported together.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::error::{Diagnostic, PolicyError};
use super::policy::{
    CmpOp, Cond, NumOperand, NumSignal, PolicySet, Route, Rule, StrSignal, Target,
};
use super::signals::{circuit_bit, parse_circuit, DataClassification};
use super::yaml::{self, Key, Node, Pos, Value};
use crate::upstream::CircuitState;

/// Hex digits of the SHA-256 kept as the policy version.
const VERSION_HEX_DIGITS: usize = 12;

/// Signal names for "unknown signal" messages.
const SIGNAL_NAMES: &str = "data_classification, risk_score, complexity_score, estimated_tokens, \
     model, api_key, tenant, queue_depth, memory_pressure, edge_available, edge_context_limit, \
     upstreams.<name>.circuit";

/// `version` of a policy: a prefix of the SHA-256 of its bytes.
pub(crate) fn version_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(VERSION_HEX_DIGITS);
    for b in digest.iter().take(VERSION_HEX_DIGITS / 2) {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// Parses `bytes` as YAML, reporting encoding and syntax problems as diagnostics of `ctx`.
pub(crate) fn parse_document(ctx: &mut Ctx<'_>, bytes: &[u8]) -> Option<Node> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        ctx.error(Pos { line: 1, col: 1 }, "the file is not UTF-8 text");
        return None;
    };
    match yaml::parse(text) {
        Ok(Some(root)) => Some(root),
        Ok(None) => {
            ctx.error(Pos { line: 1, col: 1 }, "the file is empty");
            None
        }
        Err(e) => {
            ctx.error(e.pos, e.message);
            None
        }
    }
}

pub(crate) fn compile(
    path: &Path,
    bytes: &[u8],
    upstreams: &[String],
) -> Result<PolicySet, PolicyError> {
    let mut ctx = Ctx::new(path, upstreams);
    let compiled = parse_document(&mut ctx, bytes).and_then(|root| {
        let mut c = PolicyCompiler {
            ctx: &mut ctx,
            settings: BTreeMap::new(),
        };
        c.policy(&root)
    });
    let warnings = ctx.finish(path)?;
    let Some((description, rules, default)) = compiled else {
        // Unreachable in practice: every `None` above recorded an error, so `finish` failed.
        return Err(PolicyError::Invalid {
            path: path.to_path_buf(),
            diagnostics: Vec::new(),
        });
    };
    Ok(PolicySet {
        version: version_of(bytes),
        source_path: path.to_path_buf(),
        warnings,
        description,
        rules,
        default,
        default_id: Arc::from(super::policy::DEFAULT_RULE_ID),
    })
}

/// Diagnostics collected while reading one file, and the configured upstream names. Shared by
/// the policy compiler and the policy test loader.
pub(crate) struct Ctx<'a> {
    file: String,
    upstreams: &'a [String],
    /// The rule being read, named in diagnostics.
    pub rule: Option<String>,
    /// The policy test case being read, named at the start of diagnostic messages.
    pub case: Option<String>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl<'a> Ctx<'a> {
    pub fn new(path: &Path, upstreams: &'a [String]) -> Self {
        Ctx {
            file: path.display().to_string(),
            upstreams,
            rule: None,
            case: None,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn diagnostic(&self, pos: Pos, message: String) -> Diagnostic {
        let message = match &self.case {
            Some(case) => format!("case \"{case}\": {message}"),
            None => message,
        };
        Diagnostic {
            file: self.file.clone(),
            line: pos.line,
            column: pos.col,
            rule: self.rule.clone(),
            message,
        }
    }

    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        let d = self.diagnostic(pos, message.into());
        self.errors.push(d);
    }

    pub fn warn(&mut self, pos: Pos, message: impl Into<String>) {
        let d = self.diagnostic(pos, message.into());
        self.warnings.push(d);
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The warnings, or every error as [`PolicyError::Invalid`].
    pub fn finish(self, path: &Path) -> Result<Vec<Diagnostic>, PolicyError> {
        if self.errors.is_empty() {
            Ok(self.warnings)
        } else {
            Err(PolicyError::Invalid {
                path: path.to_path_buf(),
                diagnostics: self.errors,
            })
        }
    }

    /// The entries of a mapping, or an error naming what was expected.
    pub fn map<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [(Key, Node)]> {
        match &node.value {
            Value::Map(entries) => Some(entries),
            _ => {
                self.error(
                    node.pos,
                    format!("{what} must be a mapping, found {}", node.kind()),
                );
                None
            }
        }
    }

    /// The items of a list, or an error naming what was expected.
    pub fn seq<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.error(
                    node.pos,
                    format!("{what} must be a list, found {}", node.kind()),
                );
                None
            }
        }
    }

    /// Reports every key of `entries` not in `allowed`.
    pub fn check_fields(&mut self, entries: &[(Key, Node)], allowed: &[&str], what: &str) {
        for (key, _) in entries {
            if !allowed.contains(&key.name.as_str()) {
                self.error(
                    key.pos,
                    format!(
                        "unknown field `{}` in {what}; expected one of: {}",
                        key.name,
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    /// A configured upstream's name, or an error listing the configured ones.
    pub fn upstream(&mut self, name: &str, pos: Pos) -> Option<Arc<str>> {
        if self.upstreams.iter().any(|u| u == name) {
            return Some(Arc::from(name));
        }
        let configured = if self.upstreams.is_empty() {
            "none are configured".to_owned()
        } else {
            format!("configured: {}", self.upstreams.join(", "))
        };
        self.error(pos, format!("unknown upstream `{name}` ({configured})"));
        None
    }

    /// A route: `edge`, `human_review`, `{cloud: <upstream>}` or `{reject: <message>}`.
    pub fn route(&mut self, node: &Node) -> Option<Route> {
        const EXPECTED: &str =
            "expected `edge`, `human_review`, `{cloud: <upstream>}` or `{reject: <message>}`";
        match &node.value {
            Value::Scalar { text, .. } => match text.as_str() {
                "edge" => Some(Route::Edge),
                "human_review" => Some(Route::HumanReview),
                "cloud" => {
                    self.error(
                        node.pos,
                        "`cloud` needs an upstream: write `{cloud: <upstream>}`",
                    );
                    None
                }
                "reject" => {
                    self.error(
                        node.pos,
                        "`reject` needs a message for the client: write `{reject: <message>}`",
                    );
                    None
                }
                other => {
                    self.error(node.pos, format!("unknown route `{other}`; {EXPECTED}"));
                    None
                }
            },
            Value::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                match key.name.as_str() {
                    "cloud" => {
                        let Some(name) = value.scalar().filter(|_| !value.is_null()) else {
                            self.error(value.pos, "`cloud` takes an upstream name");
                            return None;
                        };
                        self.upstream(name, value.pos).map(Route::Cloud)
                    }
                    "reject" => {
                        let Some(message) = value.scalar().filter(|m| !m.trim().is_empty()) else {
                            self.error(value.pos, "`reject` takes a non-empty message");
                            return None;
                        };
                        Some(Route::Reject(Arc::from(message)))
                    }
                    other => {
                        self.error(key.pos, format!("unknown route `{other}`; {EXPECTED}"));
                        None
                    }
                }
            }
            _ => {
                self.error(node.pos, format!("invalid route; {EXPECTED}"));
                None
            }
        }
    }

    /// A signal name, resolved.
    pub fn signal(&mut self, key: &Key) -> Option<SignalKind> {
        let name = key.name.as_str();
        if let Some(rest) = name.strip_prefix("upstreams.") {
            let Some(upstream) = rest.strip_suffix(".circuit").filter(|u| !u.is_empty()) else {
                self.error(
                    key.pos,
                    format!(
                        "unknown signal `{name}`; upstream signals are `upstreams.<name>.circuit`"
                    ),
                );
                return None;
            };
            return self.upstream(upstream, key.pos).map(SignalKind::Circuit);
        }
        if let Some(n) = NumSignal::ALL.into_iter().find(|n| n.name() == name) {
            return Some(SignalKind::Num(n));
        }
        match name {
            "data_classification" => Some(SignalKind::Class),
            "edge_available" => Some(SignalKind::EdgeAvailable),
            "model" => Some(SignalKind::Str(StrSignal::Model)),
            "tenant" => Some(SignalKind::Str(StrSignal::Tenant)),
            "api_key" => Some(SignalKind::Str(StrSignal::ApiKey)),
            _ => {
                self.error(
                    key.pos,
                    format!("unknown signal `{name}`; known signals: {SIGNAL_NAMES}"),
                );
                None
            }
        }
    }

    /// A number for `signal`, checked against the signal's range.
    pub fn number(&mut self, signal: NumSignal, node: &Node, origin: &str) -> Option<f64> {
        let (max, integer) = signal.range();
        let range = match (max, integer) {
            (Some(max), _) => format!("a number from 0 to {max}"),
            (None, true) => "a whole number of 0 or more".to_owned(),
            (None, false) => "a number of 0 or more".to_owned(),
        };
        let Some(n) = node.number() else {
            self.error(
                node.pos,
                format!(
                    "{}: expected {range}, found `{}`{origin}",
                    signal.name(),
                    node.scalar().unwrap_or(node.kind())
                ),
            );
            return None;
        };
        let in_range = n.value >= 0.0 && max.is_none_or(|m| n.value <= m);
        if !in_range || (integer && !n.integer) {
            self.error(
                node.pos,
                format!(
                    "{}: {}{origin} is out of range; expected {range}",
                    signal.name(),
                    n.value
                ),
            );
            return None;
        }
        Some(n.value)
    }

    pub fn classification(&mut self, node: &Node, origin: &str) -> Option<DataClassification> {
        let level = node
            .scalar()
            .filter(|t| DataClassification::ALL.iter().any(|c| c.as_str() == *t))
            .and_then(DataClassification::parse);
        if level.is_none() {
            self.error(
                node.pos,
                format!(
                    "data_classification: unknown level `{}`{origin}; expected public, internal, confidential or restricted",
                    node.scalar().unwrap_or(node.kind())
                ),
            );
        }
        level
    }

    pub fn circuit(&mut self, node: &Node, origin: &str) -> Option<CircuitState> {
        let state = node.scalar().and_then(parse_circuit);
        if state.is_none() {
            self.error(
                node.pos,
                format!(
                    "circuit: unknown state `{}`{origin}; expected closed, half_open or open",
                    node.scalar().unwrap_or(node.kind())
                ),
            );
        }
        state
    }

    pub fn boolean(&mut self, node: &Node, origin: &str) -> Option<bool> {
        let b = node.boolean();
        if b.is_none() {
            self.error(
                node.pos,
                format!(
                    "edge_available: expected true or false, found `{}`{origin}",
                    node.scalar().unwrap_or(node.kind())
                ),
            );
        }
        b
    }

    pub fn string(&mut self, node: &Node, name: &str, origin: &str) -> Option<Arc<str>> {
        match node.scalar() {
            Some(text) if !node.is_null() => Some(Arc::from(text)),
            _ => {
                self.error(
                    node.pos,
                    format!("{name}: expected a string, found {}{origin}", node.kind()),
                );
                None
            }
        }
    }
}

/// A resolved signal name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SignalKind {
    Num(NumSignal),
    Class,
    EdgeAvailable,
    Str(StrSignal),
    Circuit(Arc<str>),
}

impl SignalKind {
    fn name(&self) -> String {
        match self {
            SignalKind::Num(n) => n.name().to_owned(),
            SignalKind::Class => "data_classification".to_owned(),
            SignalKind::EdgeAvailable => "edge_available".to_owned(),
            SignalKind::Str(StrSignal::Model) => "model".to_owned(),
            SignalKind::Str(StrSignal::Tenant) => "tenant".to_owned(),
            SignalKind::Str(StrSignal::ApiKey) => "api_key".to_owned(),
            SignalKind::Circuit(u) => format!("upstreams.{u}.circuit"),
        }
    }
}

/// An operator of a signal test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Cmp(CmpOp),
    In,
    NotIn,
}

fn parse_op(name: &str) -> Option<Op> {
    Some(match name {
        "eq" | "==" => Op::Cmp(CmpOp::Eq),
        "ne" | "!=" => Op::Cmp(CmpOp::Ne),
        "lt" | "<" => Op::Cmp(CmpOp::Lt),
        "lte" | "<=" => Op::Cmp(CmpOp::Le),
        "gt" | ">" => Op::Cmp(CmpOp::Gt),
        "gte" | ">=" => Op::Cmp(CmpOp::Ge),
        "in" => Op::In,
        "not_in" => Op::NotIn,
        _ => return None,
    })
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Cmp(CmpOp::Eq) => "eq",
        Op::Cmp(CmpOp::Ne) => "ne",
        Op::Cmp(CmpOp::Lt) => "lt",
        Op::Cmp(CmpOp::Le) => "lte",
        Op::Cmp(CmpOp::Gt) => "gt",
        Op::Cmp(CmpOp::Ge) => "gte",
        Op::In => "in",
        Op::NotIn => "not_in",
    }
}

/// Whether `a op b` for ordered values.
fn ordered<T: Ord>(op: CmpOp, a: T, b: T) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
    }
}

/// A `settings` entry.
struct Setting {
    node: Node,
    key_pos: Pos,
    used: bool,
}

/// An operand after `$setting` resolution; `origin` is appended to messages about it.
struct Operand {
    node: Node,
    origin: String,
}

/// What the rule-set checks need to know about a rule, even one with errors.
struct RuleInfo {
    id: Option<Arc<str>>,
    id_pos: Pos,
    catch_all: bool,
    compiled: Option<(Rule, Pos, Vec<Pos>)>,
}

struct PolicyCompiler<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    settings: BTreeMap<String, Setting>,
}

type Compiled = (Option<String>, Vec<Rule>, Target);

impl PolicyCompiler<'_, '_> {
    fn policy(&mut self, root: &Node) -> Option<Compiled> {
        let entries = self.ctx.map(root, "a policy file")?;
        self.ctx.check_fields(
            entries,
            &["description", "settings", "rules", "default"],
            "the policy",
        );
        let field = |name: &str| entries.iter().find(|(k, _)| k.name == name);

        let description = field("description").and_then(|(_, v)| self.text(v, "description"));
        if let Some((_, node)) = field("settings") {
            self.settings(node);
        }
        let infos = match field("rules") {
            Some((_, node)) => self.rules(node),
            None => {
                self.ctx
                    .error(root.pos, "missing `rules` (a list of rules; may be empty)");
                Vec::new()
            }
        };
        self.ctx.rule = Some(super::policy::DEFAULT_RULE_ID.to_owned());
        let default = match field("default") {
            Some((_, node)) => self.default(node),
            None => {
                self.ctx.rule = None;
                self.ctx.error(
                    root.pos,
                    "missing `default` (the route when no rule matches)",
                );
                None
            }
        };
        self.ctx.rule = None;

        self.check_rule_set(&infos, field("default").map(|(k, _)| k.pos));
        for (name, s) in &self.settings {
            if !s.used {
                self.ctx
                    .warn(s.key_pos, format!("setting `{name}` is never used"));
            }
        }
        if self.ctx.has_errors() {
            return None;
        }
        let default = default?;
        let compiled: Vec<(Rule, Pos, Vec<Pos>)> =
            infos.into_iter().filter_map(|i| i.compiled).collect();
        self.restricted_analysis(&compiled, &default, field("default").map(|(_, v)| v.pos));
        let rules = compiled.into_iter().map(|(r, ..)| r).collect();
        Some((description, rules, default))
    }

    fn settings(&mut self, node: &Node) {
        let Some(entries) = self.ctx.map(node, "`settings`") else {
            return;
        };
        for (key, value) in entries {
            let valid_name = key
                .name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                self.ctx.error(
                    key.pos,
                    format!(
                        "setting name `{}` must be letters, digits and `_`, not starting with a digit",
                        key.name
                    ),
                );
                continue;
            }
            let scalar_ok = |n: &Node| matches!(n.value, Value::Scalar { .. }) && !n.is_null();
            let ok = match &value.value {
                Value::Scalar { .. } => scalar_ok(value),
                Value::Seq(items) => !items.is_empty() && items.iter().all(scalar_ok),
                Value::Map(_) => false,
            };
            if !ok {
                self.ctx.error(
                    value.pos,
                    format!(
                        "setting `{}` must be a value or a non-empty list of values, found {}",
                        key.name,
                        value.kind()
                    ),
                );
                continue;
            }
            self.settings.insert(
                key.name.clone(),
                Setting {
                    node: value.clone(),
                    key_pos: key.pos,
                    used: false,
                },
            );
        }
    }

    fn rules(&mut self, node: &Node) -> Vec<RuleInfo> {
        let Some(items) = self.ctx.seq(node, "`rules`") else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let info = self.rule(i, item);
                self.ctx.rule = None;
                info
            })
            .collect()
    }

    fn rule(&mut self, index: usize, node: &Node) -> Option<RuleInfo> {
        self.ctx.rule = Some(format!("rules[{index}]"));
        let entries = self.ctx.map(node, "a rule")?;
        let field = |name: &str| entries.iter().find(|(k, _)| k.name == name);

        let (id, id_pos) = match field("id") {
            Some((_, v)) => (self.rule_id(v), v.pos),
            None => {
                self.ctx.error(node.pos, "missing `id`");
                (None, node.pos)
            }
        };
        if let Some(id) = &id {
            self.ctx.rule = Some(id.to_string());
        }
        self.ctx.check_fields(
            entries,
            &["id", "description", "when", "route", "fallback", "prompt"],
            "a rule",
        );
        if let Some((_, v)) = field("description") {
            self.text(v, "description");
        }
        let prompt = field("prompt").and_then(|(_, v)| self.prompt(v));
        // `Ok(None)`: no `when`, the rule matches every request; `Err`: a `when` with errors.
        let when = match field("when") {
            None => Ok(None),
            Some((_, v)) => self.condition(v).map(Some).ok_or(()),
        };
        let catch_all = matches!(when, Ok(None));
        let target = match field("route") {
            Some((_, route)) => self.target(route, field("fallback").map(|(_, v)| v)),
            None => {
                self.ctx.error(node.pos, "missing `route`");
                None
            }
        };
        let compiled = match (&id, when, target) {
            (Some(id), Ok(when), Some((target, route_pos, fallback_pos))) => Some((
                Rule {
                    id: Arc::clone(id),
                    when,
                    target,
                    prompt,
                },
                route_pos,
                fallback_pos,
            )),
            _ => None,
        };
        Some(RuleInfo {
            id,
            id_pos,
            catch_all,
            compiled,
        })
    }

    /// A free-text field (`description`): any scalar.
    fn text(&mut self, node: &Node, name: &str) -> Option<String> {
        let text = node.scalar().map(str::to_owned);
        if text.is_none() {
            self.ctx.error(
                node.pos,
                format!("`{name}` must be text, found {}", node.kind()),
            );
        }
        text
    }

    /// `prompt: name` or `prompt: name@version`: the versioned system prompt the rule applies.
    /// Whether it exists is checked against the prompts directory when the gateway starts.
    fn prompt(&mut self, node: &Node) -> Option<Arc<str>> {
        let text = self.text(node, "prompt")?;
        let (name, version) = text.split_once('@').unwrap_or((text.as_str(), "x"));
        let label = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
        };
        if !label(name) || !label(version) {
            self.ctx.error(
                node.pos,
                "`prompt` must be a prompt name or name@version (letters, digits, `-`, `_`, `.`, `+`)",
            );
            return None;
        }
        Some(Arc::from(text))
    }

    fn rule_id(&mut self, node: &Node) -> Option<Arc<str>> {
        let id = node.scalar().filter(|_| !node.is_null());
        let valid = id.is_some_and(|id| {
            !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
        let Some(id) = id.filter(|_| valid) else {
            self.ctx.error(
                node.pos,
                "`id` must be letters, digits, `-`, `_` or `.` (it is a metrics label)",
            );
            return None;
        };
        if id == super::policy::DEFAULT_RULE_ID {
            self.ctx.error(
                node.pos,
                "`default` is reserved for the policy's default route; choose another id",
            );
            return None;
        }
        Some(Arc::from(id))
    }

    /// A route and its fallbacks, with the positions of each for later diagnostics.
    fn target(&mut self, route: &Node, fallback: Option<&Node>) -> Option<(Target, Pos, Vec<Pos>)> {
        let primary = self.ctx.route(route);
        let mut fallbacks: Vec<(Route, Pos)> = Vec::new();
        let mut ok = primary.is_some();
        if let Some(node) = fallback {
            if let Some(items) = self.ctx.seq(node, "`fallback`") {
                for item in items {
                    match self.ctx.route(item) {
                        Some(r) => fallbacks.push((r, item.pos)),
                        None => ok = false,
                    }
                }
            } else {
                ok = false;
            }
        }
        let primary = primary?;
        // Each route in the chain must be able to matter: not a repeat, and not after a route
        // that is always available (human review and reject never are unavailable).
        let mut earlier: Vec<&Route> = vec![&primary];
        for (r, pos) in &fallbacks {
            if let Some(always) = earlier
                .iter()
                .find(|e| matches!(e, Route::HumanReview | Route::Reject(_)))
            {
                self.ctx.error(
                    *pos,
                    format!(
                        "fallback `{r}` is never used: `{}` before it is always available",
                        always.kind()
                    ),
                );
                ok = false;
            } else if earlier.contains(&r) {
                self.ctx
                    .error(*pos, format!("fallback `{r}` repeats an earlier route"));
                ok = false;
            }
            earlier.push(r);
        }
        if !ok {
            return None;
        }
        let positions = fallbacks.iter().map(|(_, p)| *p).collect();
        Some((
            Target {
                route: primary,
                fallbacks: fallbacks.into_iter().map(|(r, _)| r).collect(),
            },
            route.pos,
            positions,
        ))
    }

    /// `default: <route>` or `default: {route: <route>, fallback: [...]}`.
    fn default(&mut self, node: &Node) -> Option<Target> {
        if let Value::Map(entries) = &node.value {
            if entries.iter().any(|(k, _)| k.name == "route") {
                self.ctx
                    .check_fields(entries, &["route", "fallback"], "`default`");
                let field = |name: &str| entries.iter().find(|(k, _)| k.name == name);
                let (_, route) = field("route")?;
                return self
                    .target(route, field("fallback").map(|(_, v)| v))
                    .map(|(t, ..)| t);
            }
        }
        self.target(node, None).map(|(t, ..)| t)
    }

    fn condition(&mut self, node: &Node) -> Option<Cond> {
        let entries = match &node.value {
            Value::Map(entries) if !entries.is_empty() => entries,
            Value::Map(_) => {
                self.ctx.error(
                    node.pos,
                    "empty condition; omit `when` to match every request",
                );
                return None;
            }
            _ => {
                self.ctx.error(
                    node.pos,
                    format!(
                        "a condition must be a mapping of signals (or all/any/not) to tests, found {}",
                        node.kind()
                    ),
                );
                return None;
            }
        };
        let mut parts = Vec::with_capacity(entries.len());
        let mut ok = true;
        for (key, value) in entries {
            let part = match key.name.as_str() {
                "all" | "any" => self.combinator(key, value),
                "not" => self.condition(value).map(|c| Cond::Not(Box::new(c))),
                _ => self.signal_test(key, value),
            };
            match part {
                Some(p) => parts.push(p),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        Some(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Cond::All(parts.into_boxed_slice())
        })
    }

    fn combinator(&mut self, key: &Key, value: &Node) -> Option<Cond> {
        let what = format!("`{}`", key.name);
        let items = self.ctx.seq(value, &what)?;
        if items.is_empty() {
            self.ctx.error(
                value.pos,
                format!("`{}` needs at least one condition", key.name),
            );
            return None;
        }
        let mut parts = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items {
            match self.condition(item) {
                Some(c) => parts.push(c),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        let parts = parts.into_boxed_slice();
        Some(if key.name == "all" {
            Cond::All(parts)
        } else {
            Cond::Any(parts)
        })
    }

    /// `<signal>: <value>` (equality), `<signal>: [a, b]` (membership) or
    /// `<signal>: {<op>: <operand>, ...}` (every test must hold).
    fn signal_test(&mut self, key: &Key, value: &Node) -> Option<Cond> {
        let signal = self.ctx.signal(key)?;
        match &value.value {
            Value::Map(ops) if ops.is_empty() => {
                self.ctx
                    .error(value.pos, format!("`{}` has no tests", key.name));
                None
            }
            Value::Map(ops) => {
                let mut parts = Vec::with_capacity(ops.len());
                let mut ok = true;
                for (op_key, operand) in ops {
                    let Some(op) = parse_op(&op_key.name) else {
                        self.ctx.error(
                            op_key.pos,
                            format!(
                                "unknown operator `{}`; expected eq, ne, lt, lte, gt, gte, in, not_in (or ==, !=, <, <=, >, >=)",
                                op_key.name
                            ),
                        );
                        ok = false;
                        continue;
                    };
                    match self.leaf(&signal, op, operand) {
                        Some(c) => parts.push(c),
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                Some(if parts.len() == 1 {
                    parts.remove(0)
                } else {
                    Cond::All(parts.into_boxed_slice())
                })
            }
            Value::Seq(_) => self.leaf(&signal, Op::In, value),
            Value::Scalar { .. } => self.leaf(&signal, Op::Cmp(CmpOp::Eq), value),
        }
    }

    /// Resolves `$name` to the setting's value.
    fn operand(&mut self, node: &Node) -> Option<Operand> {
        let Some(name) = node.plain().and_then(|t| t.strip_prefix('$')) else {
            return Some(Operand {
                node: node.clone(),
                origin: String::new(),
            });
        };
        let Some(setting) = self.settings.get_mut(name) else {
            let known: Vec<&str> = self.settings.keys().map(String::as_str).collect();
            let known = if known.is_empty() {
                "there are no settings".to_owned()
            } else {
                format!("settings: {}", known.join(", "))
            };
            self.ctx
                .error(node.pos, format!("unknown setting `${name}` ({known})"));
            return None;
        };
        setting.used = true;
        let mut resolved = setting.node.clone();
        let origin = format!(" (from setting `{name}`, line {})", setting.key_pos.line);
        // Report problems where the setting is used: that is the rule they affect.
        reposition(&mut resolved, node.pos);
        Some(Operand {
            node: resolved,
            origin,
        })
    }

    /// The values of an `in` / `not_in` list (literal or from a setting).
    fn list(&mut self, node: &Node, op: Op, signal: &SignalKind) -> Option<(Vec<Node>, String)> {
        let operand = self.operand(node)?;
        match operand.node.value {
            Value::Seq(items) if !items.is_empty() => Some((items, operand.origin)),
            _ => {
                self.ctx.error(
                    node.pos,
                    format!(
                        "{}: `{}` needs a non-empty list{}",
                        signal.name(),
                        op_name(op),
                        operand.origin
                    ),
                );
                None
            }
        }
    }

    /// A single value (literal or from a setting), not a list.
    fn single(&mut self, node: &Node, signal: &SignalKind, op: Op) -> Option<Operand> {
        let operand = self.operand(node)?;
        if matches!(operand.node.value, Value::Scalar { .. }) {
            return Some(operand);
        }
        self.ctx.error(
            node.pos,
            format!(
                "{}: `{}` takes a single value, found {}{}",
                signal.name(),
                op_name(op),
                operand.node.kind(),
                operand.origin
            ),
        );
        None
    }

    fn leaf(&mut self, signal: &SignalKind, op: Op, node: &Node) -> Option<Cond> {
        match signal {
            SignalKind::Num(n) => self.num_leaf(*n, op, node),
            SignalKind::Class => self.class_leaf(op, node),
            SignalKind::EdgeAvailable => {
                let Op::Cmp(cmp @ (CmpOp::Eq | CmpOp::Ne)) = op else {
                    return self.bad_op(signal, op, node, "eq or ne");
                };
                let operand = self.single(node, signal, op)?;
                let b = self.ctx.boolean(&operand.node, &operand.origin)?;
                Some(Cond::EdgeAvailable(if cmp == CmpOp::Eq { b } else { !b }))
            }
            SignalKind::Str(s) => {
                let name = signal.name();
                let (values, negate) = match op {
                    Op::Cmp(cmp @ (CmpOp::Eq | CmpOp::Ne)) => {
                        let operand = self.single(node, signal, op)?;
                        let v = self.ctx.string(&operand.node, &name, &operand.origin)?;
                        (vec![v], cmp == CmpOp::Ne)
                    }
                    Op::In | Op::NotIn => {
                        let (items, origin) = self.list(node, op, signal)?;
                        let values: Option<Vec<_>> = items
                            .iter()
                            .map(|i| self.ctx.string(i, &name, &origin))
                            .collect();
                        (values?, op == Op::NotIn)
                    }
                    Op::Cmp(_) => return self.bad_op(signal, op, node, "eq, ne, in or not_in"),
                };
                Some(Cond::Str {
                    signal: *s,
                    values: values.into_boxed_slice(),
                    negate,
                })
            }
            SignalKind::Circuit(upstream) => {
                let states: Vec<CircuitState> = match op {
                    Op::Cmp(CmpOp::Eq | CmpOp::Ne) => {
                        let operand = self.single(node, signal, op)?;
                        vec![self.ctx.circuit(&operand.node, &operand.origin)?]
                    }
                    Op::In | Op::NotIn => {
                        let (items, origin) = self.list(node, op, signal)?;
                        let states: Option<Vec<_>> =
                            items.iter().map(|i| self.ctx.circuit(i, &origin)).collect();
                        states?
                    }
                    Op::Cmp(_) => return self.bad_op(signal, op, node, "eq, ne, in or not_in"),
                };
                let mut set = states.into_iter().fold(0u8, |acc, s| acc | circuit_bit(s));
                if matches!(op, Op::Cmp(CmpOp::Ne) | Op::NotIn) {
                    set = !set & 0b111;
                }
                Some(Cond::Circuit {
                    upstream: Arc::clone(upstream),
                    set,
                })
            }
        }
    }

    fn bad_op(&mut self, signal: &SignalKind, op: Op, node: &Node, allowed: &str) -> Option<Cond> {
        self.ctx.error(
            node.pos,
            format!(
                "{}: operator `{}` does not apply; use {allowed}",
                signal.name(),
                op_name(op)
            ),
        );
        None
    }

    fn num_leaf(&mut self, signal: NumSignal, op: Op, node: &Node) -> Option<Cond> {
        let Op::Cmp(cmp) = op else {
            return self.bad_op(
                &SignalKind::Num(signal),
                op,
                node,
                "eq, ne, lt, lte, gt or gte (numeric signals take ranges, not lists)",
            );
        };
        let operand = self.single(node, &SignalKind::Num(signal), op)?;
        // A bare signal name compares two signals: `estimated_tokens: {gt: edge_context_limit}`.
        if let Some(other) = operand
            .node
            .plain()
            .and_then(|t| NumSignal::ALL.into_iter().find(|n| n.name() == t))
        {
            return Some(Cond::Num {
                signal,
                op: cmp,
                rhs: NumOperand::Signal(other),
            });
        }
        let value = self.ctx.number(signal, &operand.node, &operand.origin)?;
        Some(Cond::Num {
            signal,
            op: cmp,
            rhs: NumOperand::Const(value),
        })
    }

    fn class_leaf(&mut self, op: Op, node: &Node) -> Option<Cond> {
        let levels = DataClassification::ALL;
        let set = match op {
            Op::Cmp(cmp) => {
                let operand = self.single(node, &SignalKind::Class, op)?;
                let v = self.ctx.classification(&operand.node, &operand.origin)?;
                levels
                    .into_iter()
                    .filter(|l| ordered(cmp, *l, v))
                    .fold(0u8, |acc, l| acc | l.bit())
            }
            Op::In | Op::NotIn => {
                let (items, origin) = self.list(node, op, &SignalKind::Class)?;
                let chosen: Option<Vec<_>> = items
                    .iter()
                    .map(|i| self.ctx.classification(i, &origin))
                    .collect();
                let set = chosen?.into_iter().fold(0u8, |acc, l| acc | l.bit());
                if op == Op::NotIn {
                    !set & levels.into_iter().fold(0u8, |acc, l| acc | l.bit())
                } else {
                    set
                }
            }
        };
        if set == 0 {
            self.ctx.warn(
                node.pos,
                "this data_classification test matches no level, so it is never true",
            );
        }
        Some(Cond::Class { set })
    }

    /// Duplicate ids, rules after a catch-all, and an unreachable default.
    fn check_rule_set(&mut self, infos: &[RuleInfo], default_pos: Option<Pos>) {
        let mut seen: BTreeMap<&str, Pos> = BTreeMap::new();
        for info in infos {
            let Some(id) = &info.id else { continue };
            if let Some(first) = seen.get(&**id) {
                self.ctx.rule = Some(id.to_string());
                self.ctx.error(
                    info.id_pos,
                    format!("duplicate rule id (first at line {})", first.line),
                );
            } else {
                seen.insert(id, info.id_pos);
            }
        }
        let Some(catch_all) = infos.iter().position(|i| i.catch_all) else {
            self.ctx.rule = None;
            return;
        };
        let (catcher, catcher_pos) = (
            infos[catch_all].id.as_deref().unwrap_or("?").to_owned(),
            infos[catch_all].id_pos,
        );
        for info in &infos[catch_all + 1..] {
            self.ctx.rule = info.id.as_deref().map(str::to_owned);
            self.ctx.error(
                info.id_pos,
                format!(
                    "unreachable: rule `{catcher}` (line {}) has no `when`, so it matches every request first",
                    catcher_pos.line
                ),
            );
        }
        if let Some(pos) = default_pos {
            self.ctx.rule = Some(super::policy::DEFAULT_RULE_ID.to_owned());
            self.ctx.warn(
                pos,
                format!("`default` is never used: rule `{catcher}` matches every request"),
            );
        }
        self.ctx.rule = None;
    }

    /// Warns about every cloud route or fallback that restricted data could reach: rules whose
    /// `when` does not exclude restricted data, before the first rule that catches all of it,
    /// and the default if nothing does. The evaluator's guard overrides them at run time; the
    /// warning tells the author the policy does not say what they probably meant.
    fn restricted_analysis(
        &mut self,
        rules: &[(Rule, Pos, Vec<Pos>)],
        default: &Target,
        default_pos: Option<Pos>,
    ) {
        const ADVICE: &str =
            "restricted data can reach this cloud route (its `when` does not exclude \
             data_classification: restricted and no earlier rule catches restricted data); the \
             evaluator will keep such requests on the edge or reject them. Put a restricted rule \
             first or add `data_classification: {lt: restricted}`";
        for (rule, route_pos, fallback_pos) in rules {
            let verdict = rule.when.as_ref().map_or(Some(true), Cond::for_restricted);
            if verdict == Some(false) {
                continue;
            }
            self.ctx.rule = Some(rule.id.to_string());
            if matches!(rule.target.route, Route::Cloud(_)) {
                self.ctx.warn(*route_pos, ADVICE);
            }
            for (fb, pos) in rule.target.fallbacks.iter().zip(fallback_pos) {
                if matches!(fb, Route::Cloud(_)) {
                    self.ctx.warn(*pos, format!("fallback: {ADVICE}"));
                }
            }
            if verdict == Some(true) {
                self.ctx.rule = None;
                return;
            }
        }
        self.ctx.rule = Some(super::policy::DEFAULT_RULE_ID.to_owned());
        let pos = default_pos.unwrap_or(Pos { line: 1, col: 1 });
        if std::iter::once(&default.route)
            .chain(default.fallbacks.iter())
            .any(|r| matches!(r, Route::Cloud(_)))
        {
            self.ctx.warn(pos, ADVICE);
        }
        self.ctx.rule = None;
    }
}

/// Moves a node (and its children) to `pos`, so messages about a setting's value point at the
/// place the setting is used.
fn reposition(node: &mut Node, pos: Pos) {
    node.pos = pos;
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|i| reposition(i, pos)),
        Value::Map(entries) => entries.iter_mut().for_each(|(_, v)| reposition(v, pos)),
        Value::Scalar { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstreams() -> Vec<String> {
        vec!["cloud".to_owned()]
    }

    fn compile_str(yaml: &str) -> Result<PolicySet, PolicyError> {
        compile(Path::new("policies/p.yaml"), yaml.as_bytes(), &upstreams())
    }

    /// The diagnostics of a policy that must fail.
    fn errors(yaml: &str) -> Vec<Diagnostic> {
        match compile_str(yaml) {
            Ok(_) => panic!("policy should be invalid:\n{yaml}"),
            Err(PolicyError::Invalid { diagnostics, .. }) => diagnostics,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    /// Asserts exactly one error, at `line`, in `rule`, whose message contains `needle`; and
    /// that the rendered message carries file:line and the rule id.
    fn assert_one_error(yaml: &str, line: usize, rule: Option<&str>, needle: &str) {
        let errs = errors(yaml);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        let e = &errs[0];
        assert_eq!(e.line, line, "{e}");
        assert_eq!(e.rule.as_deref(), rule, "{e}");
        assert!(e.message.contains(needle), "`{needle}` not in: {e}");
        let rendered = e.to_string();
        assert!(
            rendered.starts_with(&format!("policies/p.yaml:{line}:")),
            "{rendered}"
        );
        if let Some(rule) = rule {
            assert!(rendered.contains(&format!("rule \"{rule}\"")), "{rendered}");
        }
    }

    #[test]
    fn version_is_a_content_hash_prefix() {
        let v = version_of(b"rules: []\ndefault: edge\n");
        assert_eq!(v.len(), VERSION_HEX_DIGITS);
        assert!(v.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(v, version_of(b"rules: []\ndefault: human_review\n"));
        let p = compile_str("rules: []\ndefault: edge\n").expect("valid");
        assert_eq!(p.version, v);
    }

    #[test]
    fn unknown_fields_are_errors_with_position() {
        assert_one_error(
            "rules:\n  - id: a\n    route: edge\n    rout: edge\ndefault: edge\n",
            4,
            Some("a"),
            "unknown field `rout`",
        );
        assert_one_error(
            "rules: []\ndefault: edge\nthresholds: {}\n",
            3,
            None,
            "unknown field `thresholds`",
        );
    }

    #[test]
    fn out_of_range_thresholds_are_errors() {
        assert_one_error(
            "rules:\n  - id: risky\n    when: {risk_score: {gte: 120}}\n    route: human_review\ndefault: edge\n",
            3,
            Some("risky"),
            "risk_score: 120",
        );
        assert_one_error(
            "rules:\n  - id: c\n    when:\n      complexity_score: {gt: 1.5}\n    route: edge\ndefault: edge\n",
            4,
            Some("c"),
            "expected a number from 0 to 1",
        );
        assert_one_error(
            "rules:\n  - id: t\n    when: {estimated_tokens: {gt: 10.5}}\n    route: edge\ndefault: edge\n",
            3,
            Some("t"),
            "whole number",
        );
        assert_one_error(
            "rules:\n  - id: q\n    when: {risk_score: \"80\"}\n    route: edge\ndefault: edge\n",
            3,
            Some("q"),
            "expected a number",
        );
    }

    #[test]
    fn bad_setting_values_are_reported_where_used() {
        let yaml = "settings:\n  high_risk: 180\nrules:\n  - id: hr\n    when: {risk_score: {gte: $high_risk}}\n    route: human_review\ndefault: edge\n";
        assert_one_error(yaml, 5, Some("hr"), "from setting `high_risk`, line 2");
        assert_one_error(
            "rules:\n  - id: hr\n    when: {risk_score: {gte: $nope}}\n    route: human_review\ndefault: edge\n",
            3,
            Some("hr"),
            "unknown setting `$nope`",
        );
    }

    #[test]
    fn unknown_classification_signal_operator_and_upstream_are_errors() {
        assert_one_error(
            "rules:\n  - id: a\n    when: {data_classification: secret}\n    route: edge\ndefault: edge\n",
            3,
            Some("a"),
            "unknown level `secret`",
        );
        assert_one_error(
            "rules:\n  - id: a\n    when: {risk: 3}\n    route: edge\ndefault: edge\n",
            3,
            Some("a"),
            "unknown signal `risk`",
        );
        assert_one_error(
            "rules:\n  - id: a\n    when: {risk_score: {above: 3}}\n    route: edge\ndefault: edge\n",
            3,
            Some("a"),
            "unknown operator `above`",
        );
        assert_one_error(
            "rules:\n  - id: a\n    route: {cloud: openai}\ndefault: edge\n",
            3,
            Some("a"),
            "unknown upstream `openai` (configured: cloud)",
        );
        assert_one_error(
            "rules:\n  - id: a\n    when: {upstreams.openai.circuit: open}\n    route: edge\ndefault: edge\n",
            3,
            Some("a"),
            "unknown upstream `openai`",
        );
        assert_one_error(
            "rules: []\ndefault:\n  route: edge\n  fallback: [{cloud: nope}]\n",
            4,
            Some("default"),
            "unknown upstream `nope`",
        );
    }

    #[test]
    fn operators_must_fit_the_signal() {
        assert_one_error(
            "rules:\n  - id: a\n    when: {model: {gt: x}}\n    route: edge\ndefault: edge\n",
            3,
            Some("a"),
            "operator `gt` does not apply",
        );
        assert_one_error(
            "rules:\n  - id: a\n    when: {risk_score: [1, 2]}\n    route: edge\ndefault: edge\n",
            3,
            Some("a"),
            "operator `in` does not apply",
        );
        assert_one_error(
            "rules:\n  - id: a\n    when: {edge_available: yes}\n    route: edge\ndefault: edge\n",
            3,
            Some("a"),
            "expected true or false",
        );
    }

    #[test]
    fn duplicate_ids_are_errors_naming_the_first() {
        assert_one_error(
            "rules:\n  - id: a\n    when: {risk_score: 1}\n    route: edge\n  - id: a\n    when: {risk_score: 2}\n    route: edge\ndefault: edge\n",
            5,
            Some("a"),
            "duplicate rule id (first at line 2)",
        );
    }

    #[test]
    fn rules_after_a_catch_all_are_unreachable() {
        let errs = errors(
            "rules:\n  - id: all\n    route: edge\n  - id: later\n    when: {risk_score: 1}\n    route: human_review\ndefault: edge\n",
        );
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].line, 4);
        assert_eq!(errs[0].rule.as_deref(), Some("later"));
        assert!(errs[0].message.contains("unreachable: rule `all` (line 2)"));
    }

    #[test]
    fn every_problem_in_a_file_is_reported() {
        let errs = errors(
            "rules:\n  - id: a\n    when: {risk_score: 200}\n    route: nowhere\n  - route: edge\ndefault: cloud\n",
        );
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6], "{errs:#?}");
        assert_eq!(errs[2].rule.as_deref(), Some("rules[1]"));
        assert!(errs[2].message.contains("missing `id`"));
    }

    #[test]
    fn structural_problems_are_errors_not_panics() {
        for (yaml, needle) in [
            ("", "empty"),
            ("- a\n- b\n", "must be a mapping"),
            ("rules: {}\ndefault: edge\n", "`rules` must be a list"),
            ("rules: []\n", "missing `default`"),
            ("default: edge\n", "missing `rules`"),
            ("rules: [\n", "YAML syntax"),
            (
                "rules:\n  - id: a\n    when: {}\n    route: edge\ndefault: edge\n",
                "empty condition",
            ),
            (
                "rules:\n  - id: a\n    when: {any: []}\n    route: edge\ndefault: edge\n",
                "at least one",
            ),
            (
                "rules:\n  - id: a b\n    route: edge\ndefault: edge\n",
                "`id` must be",
            ),
            (
                "rules:\n  - id: default\n    route: edge\ndefault: edge\n",
                "reserved",
            ),
            ("rules: []\ndefault: cloud\n", "needs an upstream"),
            ("rules: []\ndefault: {reject: \"\"}\n", "non-empty message"),
            (
                "rules:\n  - id: a\n    route: human_review\n    fallback: [edge]\ndefault: edge\n",
                "never used",
            ),
            (
                "rules:\n  - id: a\n    route: edge\n    fallback: [edge]\ndefault: edge\n",
                "repeats",
            ),
            (
                "settings: {x: {a: 1}}\nrules: []\ndefault: edge\n",
                "must be a value",
            ),
            (
                "rules:\n  - id: \"\"\n    route: edge\ndefault: edge\n",
                "`id` must be",
            ),
            (
                "description: [a]\nrules: []\ndefault: edge\n",
                "`description` must be text",
            ),
        ] {
            let errs = errors(yaml);
            assert!(
                errs.iter().any(|e| e.message.contains(needle)),
                "`{needle}` not in {errs:#?}"
            );
        }
        let err = compile(Path::new("p.yaml"), &[0xff, 0xfe], &upstreams()).expect_err("binary");
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }

    #[test]
    fn cloud_routes_reachable_by_restricted_data_are_warnings() {
        let p = compile_str(
            "rules:\n  - id: complex\n    when: {complexity_score: {gt: 0.7}}\n    route: {cloud: cloud}\n    fallback: [edge]\ndefault: edge\n",
        )
        .expect("loads with a warning");
        assert_eq!(p.warnings.len(), 1, "{:#?}", p.warnings);
        let w = &p.warnings[0];
        assert_eq!((w.line, w.rule.as_deref()), (4, Some("complex")));
        assert!(w
            .message
            .contains("restricted data can reach this cloud route"));

        // A restricted rule first, or an explicit exclusion, silences it.
        for yaml in [
            "rules:\n  - id: r\n    when: {data_classification: restricted}\n    route: edge\n  - id: complex\n    when: {complexity_score: {gt: 0.7}}\n    route: {cloud: cloud}\ndefault: {route: edge, fallback: [{cloud: cloud}]}\n",
            "rules:\n  - id: complex\n    when: {complexity_score: {gt: 0.7}, data_classification: {lt: restricted}}\n    route: {cloud: cloud}\ndefault: edge\n",
            "rules:\n  - id: complex\n    when: {not: {data_classification: [restricted]}, complexity_score: {gt: 0.7}}\n    route: {cloud: cloud}\ndefault: edge\n",
        ] {
            let p = compile_str(yaml).expect("valid");
            assert!(p.warnings.is_empty(), "{:#?}", p.warnings);
        }

        // A cloud default with nothing catching restricted data, and a cloud fallback.
        let p = compile_str(
            "rules:\n  - id: e\n    when: {risk_score: {lt: 10}}\n    route: edge\n    fallback: [{cloud: cloud}]\ndefault: {cloud: cloud}\n",
        )
        .expect("valid");
        let rules: Vec<_> = p
            .warnings
            .iter()
            .map(|w| (w.line, w.rule.clone()))
            .collect();
        assert_eq!(
            rules,
            vec![(5, Some("e".to_owned())), (6, Some("default".to_owned()))]
        );
    }

    #[test]
    fn unused_settings_and_dead_defaults_are_warnings() {
        let p = compile_str(
            "settings:\n  spare: 3\nrules:\n  - id: all\n    route: edge\ndefault: human_review\n",
        )
        .expect("valid");
        let msgs: Vec<&str> = p.warnings.iter().map(|w| w.message.as_str()).collect();
        assert!(
            msgs.iter().any(|m| m.contains("`spare` is never used")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.contains("`default` is never used")),
            "{msgs:?}"
        );
    }

    #[test]
    fn classification_comparisons_compile_to_level_sets() {
        let p = compile_str(
            "rules:\n  - id: a\n    when: {data_classification: {gte: confidential}}\n    route: human_review\ndefault: edge\n",
        )
        .expect("valid");
        let Some(Cond::Class { set }) = &p.rules[0].when else {
            panic!("expected a class set")
        };
        assert_eq!(
            *set,
            DataClassification::Confidential.bit() | DataClassification::Restricted.bit()
        );
    }
}
