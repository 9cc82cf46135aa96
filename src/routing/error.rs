//! Errors of the routing layer: [`PolicyError`] for policy files (each problem a [`Diagnostic`]
//! naming file, line, column and rule) and [`SignalError`] for a request's bad routing signal.

use std::fmt;
use std::path::PathBuf;

/// One problem found in a policy or policy-test file, located precisely enough to fix it
/// without searching: `policies/default.yaml:12:20: rule "high-risk": ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as the path it was loaded from.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The rule (or test case) the problem is in: its id, or `rules[N]` when it has none.
    pub rule: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(rule) = &self.rule {
            write!(f, "rule \"{rule}\": ")?;
        }
        f.write_str(&self.message)
    }
}

/// Why a policy (or its tests) could not be loaded or run. Never a panic: a bad file is one of
/// these, and a running gateway keeps its previous policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy file {}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was read but is not a valid policy (or test file); every problem found is listed.
    #[error("{}", render_invalid(path, diagnostics))]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
    /// The policy directory given to the test runner is unusable.
    #[error("policy directory {}: {message}", path.display())]
    Directory { path: PathBuf, message: String },
    /// The keyword automatons of the heuristic scorers could not be built.
    #[error("heuristic scorers: {0}")]
    Scorers(String),
    #[error("policy watcher: {0}")]
    Watcher(std::io::Error),
    #[error("writing the policy test report: {0}")]
    Report(std::io::Error),
}

fn render_invalid(path: &std::path::Path, diagnostics: &[Diagnostic]) -> String {
    let mut out = format!(
        "{} is invalid ({} error{}):",
        path.display(),
        diagnostics.len(),
        if diagnostics.len() == 1 { "" } else { "s" }
    );
    for d in diagnostics {
        out.push_str("\n  ");
        out.push_str(&d.to_string());
    }
    out
}

/// A routing signal sent with a request (header or `metadata` key) has an unusable value.
/// Handlers turn it into a 400 with `param` set to the header or `metadata.<key>` name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct SignalError {
    /// `x-risk-score`, `metadata.risk_score`, ...
    pub param: &'static str,
    pub message: String,
}

impl SignalError {
    pub(crate) fn new(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            param,
            message: message.into(),
        }
    }
}
