//! Quality evaluation: a JSONL set of prompts with one check each (`exact`, `contains`,
//! `json_valid`, `regex`), run greedily against a model, scored, and recorded in the package
//! manifest so promotion can refuse a version below the configured threshold.
//!
//! Item format (one JSON object per line; `#` lines and blank lines are skipped):
//! `{"id": "..", "messages": [{"role": "user", "content": ".."}] | "prompt": "..",
//!   "system_prompt": "name@version"?, "max_tokens": 32?, "check": {"type": "contains", "value": ".."}}`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::GovernanceError;
use super::files::sha256_hex;
use super::manifest::{CheckScore, PromptRef, QualityReport};
use super::prompts::PromptRegistry;

/// Tokens generated per item unless it says otherwise.
pub const DEFAULT_MAX_TOKENS: usize = 32;
/// Most items in one set (an eval run is a batch job, but not an unbounded one).
const MAX_ITEMS: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem {
    id: String,
    #[serde(default)]
    messages: Option<Vec<RawMessage>>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    system_prompt: Option<String>,
    #[serde(default)]
    max_tokens: Option<usize>,
    check: RawCheck,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessage {
    role: String,
    content: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    ignore_case: bool,
}

/// What an item checks its output for.
#[derive(Debug, Clone)]
pub enum Check {
    /// The trimmed output equals the value.
    Exact {
        value: String,
        ignore_case: bool,
    },
    Contains {
        value: String,
        ignore_case: bool,
    },
    /// The trimmed output parses as JSON.
    JsonValid,
    Regex(regex::Regex),
}

impl Check {
    /// The check kind, as in the report.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Exact { .. } => "exact",
            Check::Contains { .. } => "contains",
            Check::JsonValid => "json_valid",
            Check::Regex(_) => "regex",
        }
    }

    /// True when `output` passes.
    pub fn passes(&self, output: &str) -> bool {
        let fold = |s: &str, ic: bool| if ic { s.to_lowercase() } else { s.to_string() };
        match self {
            Check::Exact { value, ignore_case } => {
                fold(output.trim(), *ignore_case) == fold(value.trim(), *ignore_case)
            }
            Check::Contains { value, ignore_case } => {
                fold(output, *ignore_case).contains(&fold(value, *ignore_case))
            }
            Check::JsonValid => serde_json::from_str::<serde_json::Value>(output.trim()).is_ok(),
            Check::Regex(re) => re.is_match(output),
        }
    }
}

/// One chat message of an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// What to send the model for one item.
#[derive(Debug, Clone)]
pub enum EvalInput {
    Chat(Vec<Message>),
    Text(String),
}

/// One checked prompt.
#[derive(Debug, Clone)]
pub struct EvalItem {
    pub id: String,
    pub input: EvalInput,
    /// `name@version` of the system prompt applied, if any.
    pub system_prompt: Option<String>,
    pub max_tokens: usize,
    pub check: Check,
}

/// A loaded evaluation set.
#[derive(Debug, Clone)]
pub struct EvalSet {
    pub file: PathBuf,
    pub sha256: String,
    pub items: Vec<EvalItem>,
}

impl EvalSet {
    /// Reads and checks `path`; errors name the line.
    pub fn load(path: &Path, prompts: &PromptRegistry) -> Result<Self, GovernanceError> {
        let bytes = std::fs::read(path).map_err(|e| GovernanceError::io(path, e))?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| GovernanceError::manifest(path, "not UTF-8"))?;
        Self::from_text(path, text, prompts)
    }

    /// Parses the text of the set at `path` (named in errors). Pure: the fuzzers' entry.
    pub fn from_text(
        path: &Path,
        text: &str,
        prompts: &PromptRegistry,
    ) -> Result<Self, GovernanceError> {
        let mut items = Vec::new();
        let mut ids = std::collections::BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |m: String| GovernanceError::manifest(path, format!("line {}: {m}", i + 1));
            let raw: RawItem = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
            if !ids.insert(raw.id.clone()) {
                return Err(bad(format!("duplicate id '{}'", raw.id)));
            }
            items.push(item(raw, prompts).map_err(bad)?);
            if items.len() > MAX_ITEMS {
                return Err(bad(format!("more than {MAX_ITEMS} items")));
            }
        }
        if items.is_empty() {
            return Err(GovernanceError::manifest(path, "the set has no items"));
        }
        Ok(Self {
            file: path.to_path_buf(),
            sha256: sha256_hex(text.as_bytes()),
            items,
        })
    }
}

fn item(raw: RawItem, prompts: &PromptRegistry) -> Result<EvalItem, String> {
    let input = match (raw.messages, raw.prompt) {
        (Some(m), None) if !m.is_empty() => EvalInput::Chat(
            m.into_iter()
                .map(|m| Message {
                    role: m.role,
                    content: m.content,
                })
                .collect(),
        ),
        (None, Some(p)) if !p.is_empty() => EvalInput::Text(p),
        _ => return Err("give exactly one of a non-empty `messages` or `prompt`".into()),
    };
    let system_prompt = match raw.system_prompt {
        Some(sel) => {
            if matches!(input, EvalInput::Text(_)) {
                return Err("system_prompt applies to `messages` items only".into());
            }
            Some(prompts.resolve(&sel).map_err(|e| e.message)?.label())
        }
        None => None,
    };
    let value = raw.check.value;
    let need =
        |v: Option<String>| v.ok_or_else(|| format!("check {} needs a value", raw.check.kind));
    let check = match raw.check.kind.as_str() {
        "exact" => Check::Exact {
            value: need(value)?,
            ignore_case: raw.check.ignore_case,
        },
        "contains" => Check::Contains {
            value: need(value)?,
            ignore_case: raw.check.ignore_case,
        },
        "json_valid" => Check::JsonValid,
        "regex" => Check::Regex(
            regex::RegexBuilder::new(&need(value)?)
                .case_insensitive(raw.check.ignore_case)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("check regex: {e}"))?,
        ),
        other => {
            return Err(format!(
                "unknown check type '{other}' (exact, contains, json_valid, regex)"
            ))
        }
    };
    let max_tokens = raw.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    if max_tokens == 0 || max_tokens > 4096 {
        return Err("max_tokens must be 1-4096".into());
    }
    Ok(EvalItem {
        id: raw.id,
        input,
        system_prompt,
        max_tokens,
        check,
    })
}

/// Result of one item.
#[derive(Debug, Clone)]
pub struct ItemOutcome {
    pub id: String,
    pub check: &'static str,
    pub passed: bool,
    /// The model's output, or why it produced none.
    pub output: Result<String, String>,
}

/// Result of a whole set on one target.
#[derive(Debug, Clone)]
pub struct EvalRun {
    pub items: Vec<ItemOutcome>,
    pub passed: usize,
    pub total: usize,
    pub by_check: BTreeMap<String, CheckScore>,
}

impl EvalRun {
    pub fn score(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.passed as f64 / self.total as f64
        }
    }

    /// The manifest's `quality` for this run of `set`.
    pub fn report(&self, set: &EvalSet) -> QualityReport {
        QualityReport {
            score: self.score(),
            passed: self.passed,
            total: self.total,
            data: set
                .file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            data_sha256: set.sha256.clone(),
            by_check: self.by_check.clone(),
            evaluated_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string(),
            cloud: None,
        }
    }
}

/// Runs every item through `generate` (which applies the item's system prompt and returns
/// the model's text) and scores the outputs. An item whose generation fails counts as failed.
pub fn run(
    set: &EvalSet,
    mut generate: impl FnMut(&EvalItem) -> Result<String, String>,
) -> EvalRun {
    let mut by_check: BTreeMap<String, CheckScore> = BTreeMap::new();
    let mut items = Vec::with_capacity(set.items.len());
    let mut passed = 0;
    for item in &set.items {
        let output = generate(item);
        let ok = output.as_ref().is_ok_and(|o| item.check.passes(o));
        let score = by_check
            .entry(item.check.kind().to_string())
            .or_insert(CheckScore {
                passed: 0,
                total: 0,
            });
        score.total += 1;
        if ok {
            score.passed += 1;
            passed += 1;
        }
        items.push(ItemOutcome {
            id: item.id.clone(),
            check: item.check.kind(),
            passed: ok,
            output,
        });
    }
    EvalRun {
        total: items.len(),
        items,
        passed,
        by_check,
    }
}

/// The prompt versions a set uses, for the manifest's `prompts`.
pub fn prompts_used(set: &EvalSet, prompts: &PromptRegistry) -> Vec<PromptRef> {
    let mut out: Vec<PromptRef> = Vec::new();
    for label in set.items.iter().filter_map(|i| i.system_prompt.as_deref()) {
        if out
            .iter()
            .any(|p| format!("{}@{}", p.name, p.version) == label)
        {
            continue;
        }
        if let Ok(p) = prompts.resolve(label) {
            out.push(p.reference());
        }
    }
    out
}

/// The messages to send for a chat item: its system prompt (rendered without variables)
/// first, then the item's messages.
pub fn chat_messages(
    item: &EvalItem,
    messages: &[Message],
    prompts: &PromptRegistry,
) -> Result<Vec<Message>, String> {
    let mut out = Vec::with_capacity(messages.len() + 1);
    if let Some(label) = &item.system_prompt {
        let p = prompts.resolve(label).map_err(|e| e.message)?;
        out.push(Message {
            role: "system".into(),
            content: prompts.render(p, None).map_err(|e| e.message)?,
        });
    }
    out.extend(messages.iter().cloned());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_from(text: &str) -> Result<EvalSet, GovernanceError> {
        let p = std::env::temp_dir().join(format!("eg-eval-{}.jsonl", uuid::Uuid::new_v4()));
        std::fs::write(&p, text).unwrap();
        EvalSet::load(&p, &PromptRegistry::empty())
    }

    #[test]
    fn checks_score_outputs() {
        let set = set_from(concat!(
            "# comment\n",
            r#"{"id":"a","prompt":"x","check":{"type":"exact","value":"Hello"}}"#, "\n",
            r#"{"id":"b","prompt":"x","check":{"type":"contains","value":"WORLD","ignore_case":true}}"#, "\n",
            r#"{"id":"c","prompt":"x","check":{"type":"json_valid"}}"#, "\n",
            r#"{"id":"d","messages":[{"role":"user","content":"x"}],"check":{"type":"regex","value":"^\\d+$"}}"#, "\n",
        ))
        .unwrap();
        let outputs = BTreeMap::from([
            ("a", Ok(" Hello \n".to_string())),
            ("b", Ok("hello world".to_string())),
            ("c", Ok("{\"k\": 1".to_string())),
            ("d", Err("engine failed".to_string())),
        ]);
        let run = run(&set, |item| outputs[item.id.as_str()].clone());
        assert_eq!((run.passed, run.total), (2, 4));
        assert_eq!(run.score(), 0.5);
        assert_eq!(
            run.by_check["json_valid"],
            CheckScore {
                passed: 0,
                total: 1
            }
        );
        assert_eq!(
            run.by_check["exact"],
            CheckScore {
                passed: 1,
                total: 1
            }
        );
        let report = run.report(&set);
        assert_eq!(report.data_sha256.len(), 64);
    }

    #[test]
    fn bad_items_name_their_line() {
        for (line, needle) in [
            (
                r#"{"id":"a","check":{"type":"exact","value":"x"}}"#,
                "exactly one",
            ),
            (
                r#"{"id":"a","prompt":"p","check":{"type":"fuzzy"}}"#,
                "unknown check type",
            ),
            (
                r#"{"id":"a","prompt":"p","check":{"type":"regex","value":"("}}"#,
                "regex",
            ),
            (
                r#"{"id":"a","prompt":"p","check":{"type":"contains"}}"#,
                "needs a value",
            ),
            (
                r#"{"id":"a","prompt":"p","extra":1,"check":{"type":"json_valid"}}"#,
                "unknown field",
            ),
            (
                r#"{"id":"a","prompt":"p","system_prompt":"x","check":{"type":"json_valid"}}"#,
                "messages",
            ),
        ] {
            let err = set_from(&format!("\n{line}\n")).unwrap_err().to_string();
            assert!(err.contains("line 2") && err.contains(needle), "{err}");
        }
        assert!(set_from("").unwrap_err().to_string().contains("no items"));
    }
}
