//! Policy tests: YAML files `<dir>/tests/<policy>.yaml` listing cases of input signals and the
//! expected decision, run against `<dir>/<policy>.yaml` by [`run_policy_tests`] (the
//! `edge-gateway policy test [DIR]` command), so policy changes are reviewed with their effect.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::compile::{parse_document, Ctx, SignalKind};
use super::error::PolicyError;
use super::policy::{Decision, NumSignal, PolicySet, Reason, Route, StrSignal};
use super::signals::{DataClassification, EdgeHealth, Signals, UpstreamCircuit};
use super::yaml::{Node, Value};

/// Context limit of the baseline signals; cases about long prompts set their own.
const BASELINE_CONTEXT_LIMIT: u64 = 4096;

/// Counts from a policy test run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestReport {
    /// Policy files loaded.
    pub policies: usize,
    pub passed: usize,
    pub failed: usize,
    /// Policies with no test file.
    pub untested: Vec<PathBuf>,
    /// Compiler warnings across all policies.
    pub warnings: usize,
}

impl TestReport {
    /// True when every case passed (warnings and untested policies do not fail a run).
    pub fn success(&self) -> bool {
        self.failed == 0
    }
}

/// Loads every policy `<dir>/*.yaml` with `upstreams` as the configured upstream names, runs
/// its cases from `<dir>/tests/<name>.yaml`, prints a pass/fail report to stdout and returns the
/// counts. An unreadable or invalid policy or test file is an error; a failing case is counted.
pub fn run_policy_tests(dir: &Path, upstreams: &[String]) -> Result<TestReport, PolicyError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_policy_tests_to(dir, upstreams, &mut out)
}

/// [`run_policy_tests`] writing the report to `out`.
pub fn run_policy_tests_to(
    dir: &Path,
    upstreams: &[String],
    out: &mut dyn Write,
) -> Result<TestReport, PolicyError> {
    let policies = yaml_files(dir)?;
    if policies.is_empty() {
        return Err(PolicyError::Directory {
            path: dir.to_path_buf(),
            message: "no policy files (*.yaml)".to_owned(),
        });
    }
    let tests_dir = dir.join("tests");
    let test_files = if tests_dir.is_dir() {
        yaml_files(&tests_dir)?
    } else {
        Vec::new()
    };
    for t in &test_files {
        if !policies.iter().any(|p| p.file_stem() == t.file_stem()) {
            return Err(PolicyError::Directory {
                path: dir.to_path_buf(),
                message: format!("test file {} has no policy of the same name", t.display()),
            });
        }
    }

    let mut report = TestReport::default();
    for path in &policies {
        let policy = PolicySet::load(path, upstreams)?;
        report.policies += 1;
        report.warnings += policy.warnings.len();
        w(
            out,
            format_args!(
                "policy {} (version {}, {} rules)",
                path.display(),
                policy.version,
                policy.rule_ids().count()
            ),
        )?;
        for warning in &policy.warnings {
            w(out, format_args!("  warning: {warning}"))?;
        }
        let Some(test_file) = test_files
            .iter()
            .find(|t| t.file_stem() == path.file_stem())
        else {
            w(
                out,
                format_args!(
                    "  no tests (add {})",
                    tests_dir.join(file_name(path)).display()
                ),
            )?;
            report.untested.push(path.clone());
            continue;
        };
        for case in load_cases(test_file, upstreams)? {
            let decision = policy.decide(&case.signals);
            match case.expect.mismatch(&decision) {
                None => {
                    report.passed += 1;
                    w(out, format_args!("  ok    {}", case.name))?;
                }
                Some(expected) => {
                    report.failed += 1;
                    w(
                        out,
                        format_args!(
                            "  FAIL  {} ({}:{})\n        expected {expected}\n        got      {}",
                            case.name,
                            test_file.display(),
                            case.line,
                            describe(&decision)
                        ),
                    )?;
                }
            }
        }
    }
    w(
        out,
        format_args!(
            "policy tests: {} passed, {} failed; {} {} ({} without tests), {} warning{}",
            report.passed,
            report.failed,
            report.policies,
            if report.policies == 1 {
                "policy"
            } else {
                "policies"
            },
            report.untested.len(),
            report.warnings,
            if report.warnings == 1 { "" } else { "s" }
        ),
    )?;
    Ok(report)
}

fn w(out: &mut dyn Write, args: std::fmt::Arguments<'_>) -> Result<(), PolicyError> {
    writeln!(out, "{args}").map_err(PolicyError::Report)
}

fn file_name(path: &Path) -> &std::ffi::OsStr {
    path.file_name().unwrap_or_default()
}

/// `*.yaml` / `*.yml` files directly in `dir`, sorted.
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let entries = std::fs::read_dir(dir).map_err(|source| PolicyError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| PolicyError::Read {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn describe(d: &Decision) -> String {
    let fallbacks = if d.fallbacks.is_empty() {
        "none".to_owned()
    } else {
        d.fallbacks
            .iter()
            .map(Route::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "route {}, rule {}, reason {} (fallbacks: {fallbacks})",
        d.route,
        d.rule_id,
        d.reason.label()
    )
}

/// One test case.
struct Case {
    name: String,
    line: usize,
    signals: Signals,
    expect: Expect,
}

/// What a case expects; unset parts are not checked.
struct Expect {
    /// `None`: any reject (written `route: reject`).
    route: Option<Route>,
    rule: Option<String>,
    reason: Option<String>,
    fallbacks: Option<Vec<Route>>,
}

impl Expect {
    /// `None` when `d` matches; otherwise the expectation, rendered for the report.
    fn mismatch(&self, d: &Decision) -> Option<String> {
        let route_ok = match &self.route {
            Some(r) => *r == d.route,
            None => matches!(d.route, Route::Reject(_)),
        };
        let ok = route_ok
            && self.rule.as_deref().is_none_or(|r| r == &*d.rule_id)
            && self.reason.as_deref().is_none_or(|r| r == d.reason.label())
            && self.fallbacks.as_ref().is_none_or(|f| *f == d.fallbacks);
        if ok {
            return None;
        }
        let mut text = match &self.route {
            Some(r) => format!("route {r}"),
            None => "route reject (any message)".to_owned(),
        };
        if let Some(rule) = &self.rule {
            text.push_str(&format!(", rule {rule}"));
        }
        if let Some(reason) = &self.reason {
            text.push_str(&format!(", reason {reason}"));
        }
        if let Some(f) = &self.fallbacks {
            let list: Vec<String> = f.iter().map(Route::to_string).collect();
            text.push_str(&format!(" (fallbacks: {})", list.join(", ")));
        }
        Some(text)
    }
}

/// The signals every case starts from: an idle, healthy edge with a 4096-token context, every
/// upstream closed, `internal` data scoring 0, an empty model name, no API key and no tenant.
fn baseline() -> Signals {
    Signals {
        data_classification: DataClassification::Internal,
        risk_score: 0.0,
        complexity_score: 0.0,
        estimated_tokens: 0,
        model: String::new(),
        api_key: None,
        tenant: None,
        edge: EdgeHealth {
            available: true,
            queue_depth: 0,
            memory_pressure: 0.0,
            context_limit: BASELINE_CONTEXT_LIMIT,
        },
        upstreams: Vec::new(),
    }
}

fn load_cases(path: &Path, upstreams: &[String]) -> Result<Vec<Case>, PolicyError> {
    let bytes = std::fs::read(path).map_err(|source| PolicyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut ctx = Ctx::new(path, upstreams);
    let cases = parse_document(&mut ctx, &bytes).and_then(|root| cases(&mut ctx, &root));
    ctx.finish(path)?;
    Ok(cases.unwrap_or_default())
}

fn cases(ctx: &mut Ctx<'_>, root: &Node) -> Option<Vec<Case>> {
    let entries = ctx.map(root, "a policy test file")?;
    ctx.check_fields(entries, &["defaults", "cases"], "a policy test file");
    let field = |name: &str| entries.iter().find(|(k, _)| k.name == name);
    let mut base = baseline();
    if let Some((_, node)) = field("defaults") {
        apply_signals(ctx, node, &mut base);
    }
    let Some((_, list)) = field("cases") else {
        ctx.error(root.pos, "missing `cases` (a list of test cases)");
        return None;
    };
    let items = ctx.seq(list, "`cases`")?;
    if items.is_empty() {
        ctx.error(list.pos, "`cases` is empty");
    }
    let mut out: Vec<Case> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        ctx.case = Some(format!("cases[{i}]"));
        if let Some(case) = case(ctx, item, &base) {
            if let Some(first) = out.iter().find(|c| c.name == case.name) {
                ctx.error(
                    item.pos,
                    format!("duplicate case name (first at line {})", first.line),
                );
            }
            out.push(case);
        }
        ctx.case = None;
    }
    Some(out)
}

fn case(ctx: &mut Ctx<'_>, node: &Node, base: &Signals) -> Option<Case> {
    let entries = ctx.map(node, "a test case")?;
    let field = |name: &str| entries.iter().find(|(k, _)| k.name == name);
    let name = match field("name").and_then(|(_, v)| v.scalar().filter(|_| !v.is_null())) {
        Some(name) => {
            ctx.case = Some(name.to_owned());
            Some(name.to_owned())
        }
        None => {
            ctx.error(node.pos, "missing `name`");
            None
        }
    };
    ctx.check_fields(entries, &["name", "signals", "expect"], "a test case");
    let mut signals = base.clone();
    if let Some((_, node)) = field("signals") {
        apply_signals(ctx, node, &mut signals);
    }
    let expect = match field("expect") {
        Some((_, node)) => expect(ctx, node),
        None => {
            ctx.error(node.pos, "missing `expect`");
            None
        }
    };
    Some(Case {
        name: name?,
        line: node.pos.line,
        signals,
        expect: expect?,
    })
}

fn apply_signals(ctx: &mut Ctx<'_>, node: &Node, s: &mut Signals) {
    let Some(entries) = ctx.map(node, "`signals`") else {
        return;
    };
    for (key, value) in entries {
        let Some(signal) = ctx.signal(key) else {
            continue;
        };
        match signal {
            SignalKind::Num(n) => {
                let Some(v) = ctx.number(n, value, "") else {
                    continue;
                };
                // Whole-number signals were checked to be integers of 0 or more.
                let whole = v as u64;
                match n {
                    NumSignal::RiskScore => s.risk_score = v,
                    NumSignal::ComplexityScore => s.complexity_score = v,
                    NumSignal::MemoryPressure => s.edge.memory_pressure = v,
                    NumSignal::EstimatedTokens => s.estimated_tokens = whole,
                    NumSignal::EdgeContextLimit => s.edge.context_limit = whole,
                    NumSignal::QueueDepth => s.edge.queue_depth = whole,
                }
            }
            SignalKind::Class => {
                if let Some(c) = ctx.classification(value, "") {
                    s.data_classification = c;
                }
            }
            SignalKind::EdgeAvailable => {
                if let Some(b) = ctx.boolean(value, "") {
                    s.edge.available = b;
                }
            }
            SignalKind::Str(StrSignal::Model) => {
                if let Some(m) = ctx.string(value, "model", "") {
                    s.model = m.to_string();
                }
            }
            SignalKind::Str(StrSignal::ApiKey) => {
                s.api_key = optional_string(ctx, value, "api_key");
            }
            SignalKind::Str(StrSignal::Tenant) => {
                s.tenant = optional_string(ctx, value, "tenant");
            }
            SignalKind::Circuit(name) => {
                let Some(state) = ctx.circuit(value, "") else {
                    continue;
                };
                s.upstreams.retain(|u| u.name != name);
                s.upstreams.push(UpstreamCircuit { name, state });
            }
        }
    }
}

/// A string signal that may be absent: `~` (or an empty value) unsets it.
fn optional_string(ctx: &mut Ctx<'_>, value: &Node, name: &str) -> Option<Arc<str>> {
    if value.is_null() {
        return None;
    }
    ctx.string(value, name, "")
}

fn expect(ctx: &mut Ctx<'_>, node: &Node) -> Option<Expect> {
    let entries = ctx.map(node, "`expect`")?;
    ctx.check_fields(
        entries,
        &["route", "rule", "reason", "fallbacks"],
        "`expect`",
    );
    let field = |name: &str| entries.iter().find(|(k, _)| k.name == name);
    let route = match field("route") {
        Some((_, r)) if r.plain() == Some("reject") => Some(None),
        Some((_, r)) => ctx.route(r).map(Some),
        None => {
            ctx.error(node.pos, "missing `route`");
            None
        }
    };
    let rule = field("rule").and_then(|(_, v)| {
        let rule = v.scalar().filter(|_| !v.is_null()).map(str::to_owned);
        if rule.is_none() {
            ctx.error(v.pos, "`rule` must be a rule id or `default`");
        }
        rule
    });
    let reason = field("reason").and_then(|(_, v)| {
        let reason = v.scalar().filter(|r| Reason::LABELS.contains(r));
        if reason.is_none() {
            ctx.error(
                v.pos,
                format!("`reason` must be one of: {}", Reason::LABELS.join(", ")),
            );
        }
        reason.map(str::to_owned)
    });
    let fallbacks = match field("fallbacks") {
        None => Some(None),
        Some((_, v)) => match &v.value {
            Value::Seq(items) => {
                let routes: Option<Vec<Route>> = items.iter().map(|i| ctx.route(i)).collect();
                routes.map(Some)
            }
            _ => {
                ctx.error(v.pos, "`fallbacks` must be a list of routes");
                None
            }
        },
    };
    Some(Expect {
        route: route?,
        rule,
        reason,
        fallbacks: fallbacks?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "edge-gateway-policy-tests-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tests")).expect("temp dir");
        dir
    }

    const POLICY: &str = "rules:\n  - id: risky\n    when: {risk_score: {gte: 80}}\n    route: human_review\ndefault: edge\n";

    fn run(dir: &Path) -> (Result<TestReport, PolicyError>, String) {
        let mut out = Vec::new();
        let r = run_policy_tests_to(dir, &["cloud".to_owned()], &mut out);
        (r, String::from_utf8(out).expect("utf-8 report"))
    }

    #[test]
    fn passing_and_failing_cases_are_counted_and_reported() {
        let dir = temp_dir("counts");
        std::fs::write(dir.join("p.yaml"), POLICY).expect("write");
        std::fs::write(
            dir.join("tests/p.yaml"),
            r#"
cases:
  - name: high risk goes to review
    signals: {risk_score: 80}
    expect: {route: human_review, rule: risky, reason: matched}
  - name: wrong on purpose
    signals: {risk_score: 79}
    expect: {route: human_review}
"#,
        )
        .expect("write");
        let (report, text) = run(&dir);
        let report = report.expect("runs");
        assert_eq!((report.passed, report.failed), (1, 1), "{text}");
        assert!(!report.success());
        assert!(text.contains("  ok    high risk goes to review"), "{text}");
        assert!(text.contains("  FAIL  wrong on purpose"), "{text}");
        assert!(text.contains("got      route edge, rule default"), "{text}");
        assert!(text.contains("tests/p.yaml:6"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn invalid_test_files_name_file_line_and_case() {
        let dir = temp_dir("invalid");
        std::fs::write(dir.join("p.yaml"), POLICY).expect("write");
        std::fs::write(
            dir.join("tests/p.yaml"),
            "cases:\n  - name: bad signal\n    signals: {risk_score: 300}\n    expect: {route: edge}\n",
        )
        .expect("write");
        let (report, _) = run(&dir);
        let err = report.expect_err("invalid test file").to_string();
        assert!(err.contains("tests/p.yaml:3:"), "{err}");
        assert!(err.contains("case \"bad signal\""), "{err}");
        assert!(err.contains("risk_score: 300"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn untested_policies_and_orphan_tests_are_reported() {
        let dir = temp_dir("untested");
        std::fs::write(dir.join("p.yaml"), POLICY).expect("write");
        let (report, text) = run(&dir);
        let report = report.expect("runs");
        assert_eq!(report.untested.len(), 1);
        assert!(report.success());
        assert!(text.contains("no tests"), "{text}");

        std::fs::write(dir.join("tests/q.yaml"), "cases: []\n").expect("write");
        let (report, _) = run(&dir);
        assert!(matches!(report, Err(PolicyError::Directory { .. })));

        let empty = temp_dir("empty");
        let (report, _) = run(&empty);
        assert!(matches!(report, Err(PolicyError::Directory { .. })));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&empty);
    }
}
