//! Versioned system prompts: `prompts/<name>/<version>.yaml` files holding a Jinja `template`
//! (and optional `description` and declared `variables`), compiled once at load. A request
//! picks one with `metadata.prompt` (`name` or `name@version`) and fills its variables from
//! `metadata.prompt_variables`; the rendered text becomes the first system message.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::Environment;

use super::error::GovernanceError;
use super::files::sha256_hex;
use super::manifest::{is_label, PromptRef};
use crate::routing::yaml::{self, Value};

/// Longest rendered prompt; a template that loops must not build megabytes per request.
const MAX_RENDERED_BYTES: usize = 16 * 1024;
/// Template instructions per render (minijinja fuel).
const FUEL: u64 = 50_000;
/// Longest prompt file accepted.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// One prompt version.
#[derive(Debug, Clone)]
pub struct PromptVersion {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    /// Variables the template needs; a request missing one is refused.
    pub variables: Vec<String>,
    /// SHA-256 of the file: what the manifest's `prompts` and the audit log record.
    pub sha256: String,
    pub file: PathBuf,
    key: String,
}

impl PromptVersion {
    /// `name@version`, as in headers and metric labels.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    pub fn reference(&self) -> PromptRef {
        PromptRef {
            name: self.name.clone(),
            version: self.version.clone(),
            sha256: self.sha256.clone(),
        }
    }
}

/// Why a request's prompt selection is refused (a 400 naming `metadata.prompt…`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct PromptError {
    pub param: &'static str,
    pub message: String,
}

fn prompt_err(param: &'static str, message: impl Into<String>) -> PromptError {
    PromptError {
        param,
        message: message.into(),
    }
}

/// All prompt versions found in the prompts directory.
pub struct PromptRegistry {
    dir: PathBuf,
    /// name → versions, ascending by [`compare_versions`].
    versions: BTreeMap<String, Vec<PromptVersion>>,
    /// name → version used when a request names no version.
    defaults: BTreeMap<String, String>,
    env: Environment<'static>,
}

impl std::fmt::Debug for PromptRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptRegistry")
            .field("dir", &self.dir)
            .field("prompts", &self.labels())
            .finish()
    }
}

impl PromptRegistry {
    /// An empty registry (no prompts directory).
    pub fn empty() -> Self {
        Self {
            dir: PathBuf::new(),
            versions: BTreeMap::new(),
            defaults: BTreeMap::new(),
            env: new_env(),
        }
    }

    /// Loads every `<name>/<version>.yaml` under `dir`; `defaults` pins the version used when
    /// a request names none (else the highest). A missing `dir` is an empty registry.
    pub fn load(dir: &Path, defaults: &BTreeMap<String, String>) -> Result<Self, GovernanceError> {
        let mut registry = Self {
            dir: dir.to_path_buf(),
            ..Self::empty()
        };
        if !dir.is_dir() {
            if !defaults.is_empty() {
                return Err(GovernanceError::manifest(
                    dir,
                    "prompts.defaults names prompts but the prompts directory does not exist",
                ));
            }
            return Ok(registry);
        }
        let mut names = read_dir_sorted(dir)?;
        names.retain(|p| p.is_dir());
        for name_dir in names {
            let name = file_label(&name_dir)?;
            let mut versions = Vec::new();
            for file in read_dir_sorted(&name_dir)? {
                if file.extension().and_then(|e| e.to_str()) != Some("yaml") {
                    continue;
                }
                let version = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .filter(|s| is_label(s))
                    .ok_or_else(|| {
                        GovernanceError::manifest(
                            &file,
                            "the file name must be <version>.yaml, with a version of A-Z a-z 0-9 . _ - +",
                        )
                    })?
                    .to_string();
                versions.push(registry.compile(&name, &version, &file)?);
            }
            versions.sort_by(|a, b| compare_versions(&a.version, &b.version));
            if !versions.is_empty() {
                registry.versions.insert(name, versions);
            }
        }
        for (name, version) in defaults {
            let known = registry
                .versions
                .get(name)
                .is_some_and(|v| v.iter().any(|p| &p.version == version));
            if !known {
                return Err(GovernanceError::manifest(
                    dir,
                    format!("prompts.defaults.{name}: no file {name}/{version}.yaml"),
                ));
            }
        }
        registry.defaults = defaults.clone();
        Ok(registry)
    }

    fn compile(
        &mut self,
        name: &str,
        version: &str,
        file: &Path,
    ) -> Result<PromptVersion, GovernanceError> {
        let meta = std::fs::metadata(file).map_err(|e| GovernanceError::io(file, e))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(GovernanceError::manifest(
                file,
                format!("larger than {MAX_FILE_BYTES} bytes"),
            ));
        }
        let bytes = std::fs::read(file).map_err(|e| GovernanceError::io(file, e))?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| GovernanceError::manifest(file, "not UTF-8"))?;
        let parsed = PromptFile::parse(text).map_err(|m| GovernanceError::manifest(file, m))?;
        let key = format!("{name}@{version}");
        self.env
            .add_template_owned(key.clone(), parsed.template)
            .map_err(|e| GovernanceError::manifest(file, format!("template: {e}")))?;
        Ok(PromptVersion {
            name: name.to_string(),
            version: version.to_string(),
            description: parsed.description,
            variables: parsed.variables,
            sha256: sha256_hex(&bytes),
            file: file.to_path_buf(),
            key,
        })
    }

    /// Every `name@version`, sorted.
    pub fn labels(&self) -> Vec<String> {
        self.versions
            .values()
            .flatten()
            .map(PromptVersion::label)
            .collect()
    }

    /// Every version, for the audit log and `GET /admin/prompts`.
    pub fn all(&self) -> impl Iterator<Item = &PromptVersion> {
        self.versions.values().flatten()
    }

    /// The prompt a selector (`name` or `name@version`) names.
    pub fn resolve(&self, selector: &str) -> Result<&PromptVersion, PromptError> {
        let (name, version) = match selector.split_once('@') {
            Some((n, v)) => (n, Some(v)),
            None => (selector, None),
        };
        let versions = self.versions.get(name).ok_or_else(|| {
            prompt_err(
                "metadata.prompt",
                format!(
                    "unknown prompt '{name}' (known: {})",
                    self.names().join(", ")
                ),
            )
        })?;
        let wanted = version.or_else(|| self.defaults.get(name).map(String::as_str));
        match wanted {
            Some(v) => versions.iter().find(|p| p.version == v).ok_or_else(|| {
                prompt_err(
                    "metadata.prompt",
                    format!(
                        "prompt '{name}' has no version '{v}' (versions: {})",
                        versions
                            .iter()
                            .map(|p| p.version.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            }),
            None => versions
                .last()
                .ok_or_else(|| prompt_err("metadata.prompt", "no versions")),
        }
    }

    fn names(&self) -> Vec<&str> {
        self.versions.keys().map(String::as_str).collect()
    }

    /// Renders `prompt` with `variables` (strings, numbers or booleans from
    /// `metadata.prompt_variables`).
    pub fn render(
        &self,
        prompt: &PromptVersion,
        variables: Option<&serde_json::Value>,
    ) -> Result<String, PromptError> {
        const PARAM: &str = "metadata.prompt_variables";
        let vars = match variables {
            None | Some(serde_json::Value::Null) => serde_json::Map::new(),
            Some(serde_json::Value::Object(m)) => m.clone(),
            Some(_) => return Err(prompt_err(PARAM, "must be an object")),
        };
        for (k, v) in &vars {
            if !matches!(
                v,
                serde_json::Value::String(_)
                    | serde_json::Value::Number(_)
                    | serde_json::Value::Bool(_)
            ) {
                return Err(prompt_err(
                    PARAM,
                    format!("{k}: values must be strings, numbers or booleans"),
                ));
            }
        }
        if let Some(missing) = prompt.variables.iter().find(|v| !vars.contains_key(*v)) {
            return Err(prompt_err(
                PARAM,
                format!("prompt {} needs the variable '{missing}'", prompt.label()),
            ));
        }
        let template = self
            .env
            .get_template(&prompt.key)
            .map_err(|e| prompt_err("metadata.prompt", e.to_string()))?;
        let text = template
            .render(minijinja::Value::from_serialize(&vars))
            .map_err(|e| prompt_err(PARAM, format!("rendering {}: {e}", prompt.label())))?;
        if text.len() > MAX_RENDERED_BYTES {
            return Err(prompt_err(
                PARAM,
                format!(
                    "prompt {} rendered to more than {MAX_RENDERED_BYTES} bytes",
                    prompt.label()
                ),
            ));
        }
        Ok(text)
    }
}

/// Parses a prompt file's text and compiles its template, as loading does; then renders it
/// with `variables`. Pure: the fuzzers' entry.
pub fn check_prompt_text(
    text: &str,
    variables: Option<&serde_json::Value>,
) -> Result<String, String> {
    let parsed = PromptFile::parse(text)?;
    let mut registry = PromptRegistry::empty();
    registry
        .env
        .add_template_owned("p@1".to_string(), parsed.template)
        .map_err(|e| format!("template: {e}"))?;
    let prompt = PromptVersion {
        name: "p".into(),
        version: "1".into(),
        description: parsed.description,
        variables: parsed.variables,
        sha256: sha256_hex(text.as_bytes()),
        file: PathBuf::from("p/1.yaml"),
        key: "p@1".into(),
    };
    registry.render(&prompt, variables).map_err(|e| e.message)
}

fn new_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env
}

/// The fields of a prompt file.
struct PromptFile {
    template: String,
    description: Option<String>,
    variables: Vec<String>,
}

impl PromptFile {
    fn parse(text: &str) -> Result<Self, String> {
        let at = |p: yaml::Pos, m: String| format!("line {}: {m}", p.line);
        let root = yaml::parse(text)
            .map_err(|e| at(e.pos, e.message))?
            .ok_or("empty file: expected `template:`")?;
        let Value::Map(entries) = root.value else {
            return Err(at(root.pos, "expected a mapping with `template:`".into()));
        };
        let mut file = PromptFile {
            template: String::new(),
            description: None,
            variables: Vec::new(),
        };
        let mut seen_template = false;
        for (key, node) in entries {
            match key.name.as_str() {
                "template" => {
                    file.template = node
                        .scalar()
                        .ok_or_else(|| at(node.pos, "template must be text".into()))?
                        .to_string();
                    seen_template = true;
                }
                "description" => {
                    file.description = Some(
                        node.scalar()
                            .ok_or_else(|| at(node.pos, "description must be text".into()))?
                            .to_string(),
                    );
                }
                "variables" => {
                    let Value::Seq(items) = &node.value else {
                        return Err(at(node.pos, "variables must be a list of names".into()));
                    };
                    for item in items {
                        let name = item
                            .plain()
                            .filter(|n| !n.is_empty())
                            .ok_or_else(|| at(item.pos, "a variable must be a name".into()))?;
                        file.variables.push(name.to_string());
                    }
                }
                other => {
                    return Err(at(
                        key.pos,
                        format!(
                            "unknown field '{other}' (expected template, description, variables)"
                        ),
                    ))
                }
            }
        }
        if !seen_template || file.template.trim().is_empty() {
            return Err("template is missing or empty".into());
        }
        Ok(file)
    }
}

/// Entries of `dir`, sorted, without hidden ones: a Kubernetes ConfigMap volume keeps its
/// real files in `..<timestamp>/` and `..data`, which are not prompts.
fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, GovernanceError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| GovernanceError::io(dir, e))? {
        let entry = entry.map_err(|e| GovernanceError::io(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

fn file_label(path: &Path) -> Result<String, GovernanceError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .filter(|n| is_label(n) && !n.contains('@'))
        .map(str::to_string)
        .ok_or_else(|| {
            GovernanceError::manifest(
                path,
                "a prompt directory name must be 1-64 characters of A-Z a-z 0-9 . _ - +",
            )
        })
}

/// Orders versions by their numeric and text parts (`2` < `10`, `1.9` < `1.10`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| {
        s.split(['.', '-', '_', '+'])
            .map(|p| p.trim_start_matches(['v', 'V']).to_string())
            .collect::<Vec<_>>()
    };
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(i), Ok(j)) => i.cmp(&j),
            _ => x.cmp(y),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    pa.len().cmp(&pb.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("eg-prompts-{tag}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn hidden_entries_such_as_configmap_internals_are_skipped() {
        let dir = tempdir("hidden");
        write(&dir, "..2026_12_01/p/1.yaml", "template: hidden\n");
        write(&dir, "p/1.yaml", "template: shown\n");
        write(&dir, "p/.1.yaml.swp", "not yaml");
        let r = PromptRegistry::load(&dir, &BTreeMap::new()).unwrap();
        assert_eq!(r.labels(), ["p@1"]);
    }

    #[test]
    fn versions_sort_numerically() {
        let mut v = vec!["10", "2", "1.10", "1.9", "v3"];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(v, ["1.9", "1.10", "2", "v3", "10"]);
    }

    #[test]
    fn resolves_latest_pinned_and_explicit_versions_and_renders() {
        let dir = tempdir("ok");
        write(
            &dir,
            "triage/1.yaml",
            "template: Old {{ site }}\nvariables: [site]\n",
        );
        write(
            &dir,
            "triage/2.yaml",
            "description: new\ntemplate: New at {{ site }}.\nvariables: [site]\n",
        );
        let r = PromptRegistry::load(&dir, &BTreeMap::new()).unwrap();
        assert_eq!(r.labels(), ["triage@1", "triage@2"]);
        assert_eq!(r.resolve("triage").unwrap().version, "2");
        assert_eq!(r.resolve("triage@1").unwrap().version, "1");
        let pinned =
            PromptRegistry::load(&dir, &BTreeMap::from([("triage".into(), "1".into())])).unwrap();
        assert_eq!(pinned.resolve("triage").unwrap().version, "1");
        let p = r.resolve("triage").unwrap();
        let vars = serde_json::json!({"site": "line 3"});
        assert_eq!(r.render(p, Some(&vars)).unwrap(), "New at line 3.");
        let err = r.render(p, None).unwrap_err();
        assert!(err.message.contains("'site'"), "{err}");
        assert!(r
            .resolve("nope")
            .unwrap_err()
            .message
            .contains("unknown prompt"));
        assert!(r
            .resolve("triage@9")
            .unwrap_err()
            .message
            .contains("no version '9'"));
        let err = r
            .render(p, Some(&serde_json::json!({"site": {"x": 1}})))
            .unwrap_err();
        assert_eq!(err.param, "metadata.prompt_variables");
    }

    #[test]
    fn broken_files_are_refused_naming_the_file() {
        for (body, needle) in [
            ("template: '{{ unclosed'\n", "template"),
            ("descr: x\ntemplate: hi\n", "unknown field 'descr'"),
            ("description: only\n", "template is missing"),
            ("template: [a, b]\n", "template must be text"),
        ] {
            let dir = tempdir("bad");
            write(&dir, "p/1.yaml", body);
            let err = PromptRegistry::load(&dir, &BTreeMap::new())
                .unwrap_err()
                .to_string();
            assert!(err.contains("1.yaml") && err.contains(needle), "{err}");
        }
        let dir = tempdir("pin");
        write(&dir, "p/1.yaml", "template: hi\n");
        let err = PromptRegistry::load(&dir, &BTreeMap::from([("p".into(), "2".into())]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("prompts.defaults.p"), "{err}");
    }

    #[test]
    fn runaway_templates_are_bounded() {
        let dir = tempdir("fuel");
        write(
            &dir,
            "loop/1.yaml",
            "template: \"{% for i in range(100000) %}xxxxxxxx{% endfor %}\"\n",
        );
        let r = PromptRegistry::load(&dir, &BTreeMap::new()).unwrap();
        let p = r.resolve("loop").unwrap();
        assert!(r.render(p, None).is_err());
    }
}
