//! Model-based routing scores: `complexity_score`, `risk_score` and a personal-data score,
//! computed from the request's embedding by small classifier heads over labelled exemplars that
//! policy authors edit (`policies/exemplars/*.yaml`). The heads are trained at startup from the
//! exemplar embeddings (a fraction of a second), so an edited file takes effect at the next start
//! with no separate training step; `check-config` validates the files.
//!
//! Per file: multinomial logistic regression over the groups (L2-regularised, class-balanced,
//! full-batch gradient descent with momentum from zero weights: deterministic). A request's score
//! is the probability-weighted mean of the group scores, except that a confident prediction (one
//! group at or above `confident`, default 0.7) takes that group's score exactly — so a request
//! that is clearly a money transfer scores 80 and meets a policy's `risk_score: {gte: 80}`, which
//! a mean with any doubt left in it never would. A measured comparison with nearest-neighbour
//! voting (worse precision on every signal) is in the README.
//!
//! Training runs in the dual (the weights are a combination of the exemplars), so each step
//! costs exemplars² rather than exemplars × dimensions; that keeps startup fast even in debug
//! builds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::signals::DataClassification;
use super::yaml;
use crate::embeddings::{EmbedError, EmbedInput, Encoder};

/// File names inside the exemplar directory.
pub const COMPLEXITY_FILE: &str = "complexity.yaml";
pub const RISK_FILE: &str = "risk.yaml";
pub const PII_FILE: &str = "pii.yaml";

/// An exemplar file is unusable; the message names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ExemplarError {
    #[error("exemplar file {}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("exemplar file {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("embedding the exemplars of {}: {source}", path.display())]
    Embed { path: PathBuf, source: EmbedError },
}

/// One group of exemplars sharing a label and a score.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExemplarGroup {
    pub label: String,
    pub score: f64,
    pub texts: Vec<String>,
}

/// An exemplar file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExemplarFile {
    #[serde(default)]
    description: Option<String>,
    /// Probability from which a prediction takes its group's score exactly.
    #[serde(default = "default_confident")]
    confident: f64,
    /// pii.yaml only: personal-data score at or above which the classification is raised.
    #[serde(default)]
    threshold: Option<f64>,
    /// pii.yaml only: also require that the text names someone.
    #[serde(default)]
    require_name: Option<bool>,
    /// pii.yaml only: the classification a detection raises the request to.
    #[serde(default)]
    raise_to: Option<String>,
    groups: Vec<ExemplarGroup>,
}

fn default_confident() -> f64 {
    0.7
}

/// A validated exemplar file (texts, not yet embedded).
#[derive(Debug, Clone)]
pub struct ExemplarSet {
    pub path: PathBuf,
    /// The file's own description of what its groups mean.
    pub description: Option<String>,
    pub confident: f64,
    pub groups: Vec<ExemplarGroup>,
}

/// The three exemplar files, validated; [`ExemplarFiles::embed`] turns them into scorers.
#[derive(Debug, Clone)]
pub struct ExemplarFiles {
    pub complexity: ExemplarSet,
    pub risk: ExemplarSet,
    pub pii: ExemplarSet,
    pub pii_threshold: f64,
    pub pii_require_name: bool,
    pub pii_raise_to: DataClassification,
}

impl ExemplarFiles {
    /// Reads and validates `dir/{complexity,risk,pii}.yaml` (no model needed: `check-config`
    /// uses this too).
    pub fn load(dir: &Path) -> Result<Self, ExemplarError> {
        let (complexity, _) = load_set(&dir.join(COMPLEXITY_FILE), 1.0)?;
        let (risk, _) = load_set(&dir.join(RISK_FILE), 100.0)?;
        let pii_path = dir.join(PII_FILE);
        let (pii, raw) = load_set(&pii_path, 1.0)?;
        let invalid = |message: String| ExemplarError::Invalid {
            path: pii_path.clone(),
            message,
        };
        let pii_threshold = raw
            .threshold
            .ok_or_else(|| invalid("threshold: required (personal-data score 0-1)".into()))?;
        if !(0.0..=1.0).contains(&pii_threshold) {
            return Err(invalid("threshold: must be 0..=1".into()));
        }
        let raise = raw.raise_to.as_deref().unwrap_or("restricted");
        let pii_raise_to = DataClassification::parse(raise).ok_or_else(|| {
            invalid(format!(
                "raise_to: `{raise}` is not one of public, internal, confidential, restricted"
            ))
        })?;
        Ok(Self {
            complexity,
            risk,
            pii,
            pii_threshold,
            pii_require_name: raw.require_name.unwrap_or(true),
            pii_raise_to,
        })
    }

    /// Embeds every exemplar with `encoder` and trains the heads (blocking: call at startup,
    /// off the executor).
    pub fn embed(&self, encoder: &Encoder) -> Result<SemanticScorer, ExemplarError> {
        self.embed_cached(encoder, None)
    }

    /// Like [`ExemplarFiles::embed`], reusing heads saved in `cache_dir` by an earlier start with
    /// the same model file and exemplar content (and saving new ones there), so restarts skip
    /// embedding the exemplars. A missing, stale or unreadable cache entry is rebuilt.
    pub fn embed_cached(
        &self,
        encoder: &Encoder,
        cache_dir: Option<&Path>,
    ) -> Result<SemanticScorer, ExemplarError> {
        let build = |set: &ExemplarSet| ExemplarClassifier::build_cached(set, encoder, cache_dir);
        Ok(SemanticScorer {
            complexity: build(&self.complexity)?,
            risk: build(&self.risk)?,
            pii: build(&self.pii)?,
            pii_threshold: self.pii_threshold,
            pii_require_name: self.pii_require_name,
            pii_raise_to: self.pii_raise_to,
        })
    }
}

fn load_set(path: &Path, max_score: f64) -> Result<(ExemplarSet, RawExemplarFile), ExemplarError> {
    let text = std::fs::read_to_string(path).map_err(|source| ExemplarError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |message: String| ExemplarError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let node = yaml::parse(&text)
        .map_err(|e| invalid(format!("{}:{}: {}", e.pos.line, e.pos.col, e.message)))?
        .ok_or_else(|| invalid("is empty".into()))?;
    let raw: RawExemplarFile = serde_path_to_error::deserialize(to_json(&node))
        .map_err(|e| invalid(format!("{}: {}", e.path(), e.inner())))?;
    if !(raw.confident > 0.0 && raw.confident <= 1.0) {
        return Err(invalid("confident: must be in (0, 1]".into()));
    }
    if raw.groups.len() < 2 {
        return Err(invalid(
            "groups: need at least two groups to tell apart".into(),
        ));
    }
    for (i, g) in raw.groups.iter().enumerate() {
        if g.label.trim().is_empty() {
            return Err(invalid(format!("groups[{i}].label: must not be empty")));
        }
        if raw.groups[..i].iter().any(|h| h.label == g.label) {
            return Err(invalid(format!(
                "groups[{i}].label: duplicate `{}`",
                g.label
            )));
        }
        if !(0.0..=max_score).contains(&g.score) {
            return Err(invalid(format!(
                "groups[{i}].score: must be 0..={max_score}"
            )));
        }
        if g.texts.is_empty() {
            return Err(invalid(format!("groups[{i}].texts: must not be empty")));
        }
        if let Some(j) = g.texts.iter().position(|t| t.trim().is_empty()) {
            return Err(invalid(format!(
                "groups[{i}].texts[{j}]: must not be empty"
            )));
        }
    }
    let set = ExemplarSet {
        path: path.to_path_buf(),
        description: raw.description.clone(),
        confident: raw.confident,
        groups: raw.groups.clone(),
    };
    Ok((set, raw))
}

/// The positioned YAML tree as JSON, so the typed shape above is checked by serde (with the
/// failing field's path in the message). Plain scalars become numbers or booleans when they
/// read as such; quoted ones stay strings.
fn to_json(node: &yaml::Node) -> Value {
    match &node.value {
        yaml::Value::Scalar { text, plain } => {
            if *plain {
                if node.is_null() {
                    return Value::Null;
                }
                if let Some(b) = node.boolean() {
                    return Value::Bool(b);
                }
                if let Some(n) = node.number() {
                    if n.integer {
                        if let Ok(i) = text.parse::<i64>() {
                            return Value::from(i);
                        }
                    }
                    return serde_json::Number::from_f64(n.value)
                        .map_or_else(|| Value::String(text.clone()), Value::Number);
                }
            }
            Value::String(text.clone())
        }
        yaml::Value::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        yaml::Value::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.name.clone(), to_json(v)))
                .collect(),
        ),
    }
}

/// First bytes of a cached head (bump the digit when the format or the training changes).
const CACHE_MAGIC: &[u8; 8] = b"EGEXEMP1";

/// Name of a set's cache file: SHA-256 over the model version, the training constants and
/// everything in the set that training reads.
fn cache_key(set: &ExemplarSet, model_version: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(CACHE_MAGIC);
    field(model_version.as_bytes());
    for c in [
        INPUT_SCALE,
        L2,
        STEP_SIZE,
        MOMENTUM,
        STEPS as f64,
        set.confident,
    ] {
        field(&c.to_le_bytes());
    }
    for g in &set.groups {
        field(g.label.as_bytes());
        field(&g.score.to_le_bytes());
        for t in &g.texts {
            field(t.as_bytes());
        }
    }
    let digest: [u8; 32] = h.finalize().into();
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Input scale: embeddings are unit vectors, so logits need a gain to separate groups.
const INPUT_SCALE: f64 = 10.0;
/// L2 penalty on the weights.
const L2: f64 = 0.01;
/// Gradient-descent steps, step size and momentum: converged for a few hundred exemplars.
const STEPS: usize = 300;
const STEP_SIZE: f64 = 0.5;
const MOMENTUM: f64 = 0.9;

/// A classifier head over one exemplar file, plus the exemplars themselves for "nearest".
#[derive(Debug)]
pub struct ExemplarClassifier {
    dims: usize,
    /// `[dims, groups]`, row-major; already multiplied by [`INPUT_SCALE`].
    weights: Vec<f64>,
    bias: Vec<f64>,
    group_scores: Vec<f64>,
    labels: Vec<Arc<str>>,
    confident: f64,
    /// Row-major `[exemplars, dims]`, normalised; and the group of each.
    exemplars: Vec<f32>,
    exemplar_group: Vec<usize>,
}

/// What a classifier head says about one request.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassScore {
    /// The score the signal takes (see the module docs).
    pub score: f64,
    /// The most probable group and its probability.
    pub label: Arc<str>,
    pub probability: f64,
    /// The group of the single most similar exemplar, and that cosine similarity.
    pub nearest: Arc<str>,
    pub similarity: f64,
}

impl ExemplarClassifier {
    /// Loads the head for `set` from `cache_dir`, or builds it and saves it there.
    fn build_cached(
        set: &ExemplarSet,
        encoder: &Encoder,
        cache_dir: Option<&Path>,
    ) -> Result<Self, ExemplarError> {
        let Some(dir) = cache_dir else {
            return Self::build(set, encoder);
        };
        let file = dir.join(format!(
            "{}.bin",
            cache_key(set, &encoder.package().version_key())
        ));
        let dims = encoder.package().dimensions;
        if let Some(head) = std::fs::read(&file)
            .ok()
            .and_then(|bytes| Self::decode(&bytes, set, dims))
        {
            return Ok(head);
        }
        let head = Self::build(set, encoder)?;
        if let Err(e) = head.save(dir, &file) {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot cache the exemplar embeddings");
        }
        Ok(head)
    }

    /// Writes the head under a unique temporary name and renames it into place, so a
    /// concurrent start never reads half a file.
    fn save(&self, dir: &Path, file: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut out = Vec::with_capacity(
            32 + self.exemplars.len() * 4 + (self.weights.len() + self.bias.len()) * 8,
        );
        out.extend_from_slice(CACHE_MAGIC);
        for n in [self.exemplar_group.len(), self.dims, self.bias.len()] {
            out.extend_from_slice(&(n as u64).to_le_bytes());
        }
        for x in &self.exemplars {
            out.extend_from_slice(&x.to_le_bytes());
        }
        for x in self.weights.iter().chain(&self.bias) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        let tmp = file.with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
        std::fs::write(&tmp, &out)?;
        std::fs::rename(&tmp, file)
    }

    /// Reads a head written by [`ExemplarClassifier::save`]; `None` if it does not fit `set`.
    fn decode(bytes: &[u8], set: &ExemplarSet, dims: usize) -> Option<Self> {
        let rest = bytes.strip_prefix(CACHE_MAGIC)?;
        let mut words = rest.chunks_exact(8);
        let mut next_u64 = || -> Option<usize> {
            let w: [u8; 8] = words.next()?.try_into().ok()?;
            usize::try_from(u64::from_le_bytes(w)).ok()
        };
        let (n, d, g) = (next_u64()?, next_u64()?, next_u64()?);
        let exemplar_group: Vec<usize> = set
            .groups
            .iter()
            .enumerate()
            .flat_map(|(i, grp)| std::iter::repeat_n(i, grp.texts.len()))
            .collect();
        if n != exemplar_group.len() || d != dims || g != set.groups.len() {
            return None;
        }
        let body = rest.get(24..)?;
        let vec_bytes = n * d * 4;
        let expected = vec_bytes + (d * g + g) * 8;
        if body.len() != expected {
            return None;
        }
        let exemplars = body[..vec_bytes]
            .chunks_exact(4)
            .map(|c| c.try_into().map(f32::from_le_bytes))
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        let floats = body[vec_bytes..]
            .chunks_exact(8)
            .map(|c| c.try_into().map(f64::from_le_bytes))
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        let (weights, bias) = floats.split_at(d * g);
        Some(Self {
            dims: d,
            weights: weights.to_vec(),
            bias: bias.to_vec(),
            group_scores: set.groups.iter().map(|grp| grp.score).collect(),
            labels: set
                .groups
                .iter()
                .map(|grp| Arc::from(grp.label.as_str()))
                .collect(),
            confident: set.confident,
            exemplars,
            exemplar_group,
        })
    }

    fn build(set: &ExemplarSet, encoder: &Encoder) -> Result<Self, ExemplarError> {
        let mut texts = Vec::new();
        let mut exemplar_group = Vec::new();
        for (g, grp) in set.groups.iter().enumerate() {
            for t in &grp.texts {
                texts.push(EmbedInput::Text(t.clone()));
                exemplar_group.push(g);
            }
        }
        let embedded =
            encoder
                .embed_blocking(texts, true)
                .map_err(|source| ExemplarError::Embed {
                    path: set.path.clone(),
                    source,
                })?;
        let dims = encoder.package().dimensions;
        let mut exemplars = Vec::with_capacity(embedded.len() * dims);
        for e in &embedded {
            exemplars.extend_from_slice(&e.vector);
        }
        Ok(Self::train(
            dims,
            exemplars,
            exemplar_group,
            set.groups.iter().map(|g| g.score).collect(),
            set.groups
                .iter()
                .map(|g| Arc::from(g.label.as_str()))
                .collect(),
            set.confident,
        ))
    }

    /// Fits the head on `exemplars` (`[n, dims]`) labelled with `group`.
    fn train(
        dims: usize,
        exemplars: Vec<f32>,
        group: Vec<usize>,
        group_scores: Vec<f64>,
        labels: Vec<Arc<str>>,
        confident: f64,
    ) -> Self {
        let n = group.len();
        let g_count = group_scores.len();
        // Gram matrix of the scaled inputs: the dual form's only use of the embeddings.
        let rows: Vec<&[f32]> = exemplars.chunks_exact(dims).collect();
        let mut gram = vec![0f64; n * n];
        for i in 0..n {
            for j in i..n {
                let dot: f64 = rows[i]
                    .iter()
                    .zip(rows[j])
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                let v = dot * INPUT_SCALE * INPUT_SCALE;
                gram[i * n + j] = v;
                gram[j * n + i] = v;
            }
        }
        // Class-balanced sample weights, so a large group does not swamp a small one.
        let mut counts = vec![0usize; g_count];
        for &g in &group {
            counts[g] += 1;
        }
        let sample_weight: Vec<f64> = group
            .iter()
            .map(|&g| n as f64 / (g_count as f64 * counts[g].max(1) as f64) / n as f64)
            .collect();
        // W = Xᵀ·A (representer theorem): gradient descent on A equals it on W from zero.
        let mut alpha = vec![0f64; n * g_count];
        let mut bias = vec![0f64; g_count];
        let mut v_alpha = vec![0f64; n * g_count];
        let mut v_bias = vec![0f64; g_count];
        let mut logits = vec![0f64; g_count];
        let mut grad = vec![0f64; n * g_count];
        for _ in 0..STEPS {
            for i in 0..n {
                for (c, l) in logits.iter_mut().enumerate() {
                    *l = bias[c]
                        + (0..n)
                            .map(|j| gram[i * n + j] * alpha[j * g_count + c])
                            .sum::<f64>();
                }
                softmax(&mut logits);
                for c in 0..g_count {
                    let target = if group[i] == c { 1.0 } else { 0.0 };
                    grad[i * g_count + c] = (logits[c] - target) * sample_weight[i];
                }
            }
            for c in 0..g_count {
                let gb: f64 = (0..n).map(|i| grad[i * g_count + c]).sum();
                v_bias[c] = MOMENTUM * v_bias[c] - STEP_SIZE * gb;
                bias[c] += v_bias[c];
            }
            for k in 0..n * g_count {
                v_alpha[k] = MOMENTUM * v_alpha[k] - STEP_SIZE * (grad[k] + L2 * alpha[k]);
                alpha[k] += v_alpha[k];
            }
        }
        // Back to primal weights for scoring: W[d][c] = scale · Σᵢ xᵢ[d] · A[i][c], times the
        // input scale once more since requests are scaled the same way.
        let mut weights = vec![0f64; dims * g_count];
        for (i, row) in rows.iter().enumerate() {
            for (d, &x) in row.iter().enumerate() {
                for c in 0..g_count {
                    weights[d * g_count + c] +=
                        INPUT_SCALE * INPUT_SCALE * f64::from(x) * alpha[i * g_count + c];
                }
            }
        }
        Self {
            dims,
            weights,
            bias,
            group_scores,
            labels,
            confident,
            exemplars,
            exemplar_group: group,
        }
    }

    /// Number of exemplars.
    pub fn len(&self) -> usize {
        self.exemplar_group.len()
    }

    /// True with no exemplars (never, once built).
    pub fn is_empty(&self) -> bool {
        self.exemplar_group.is_empty()
    }

    /// Group probabilities for a normalised embedding.
    pub fn probabilities(&self, query: &[f32]) -> Vec<f64> {
        let g_count = self.group_scores.len();
        let mut logits = self.bias.clone();
        for (d, &x) in query.iter().enumerate().take(self.dims) {
            for (c, l) in logits.iter_mut().enumerate() {
                *l += f64::from(x) * self.weights[d * g_count + c];
            }
        }
        softmax(&mut logits);
        logits
    }

    /// Scores a normalised embedding.
    pub fn score(&self, query: &[f32]) -> ClassScore {
        let p = self.probabilities(query);
        let (best, &best_p) = p
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap_or((0, &0.0));
        let score = if best_p >= self.confident {
            self.group_scores.get(best).copied().unwrap_or(0.0)
        } else {
            p.iter().zip(&self.group_scores).map(|(p, s)| p * s).sum()
        };
        let (nearest, similarity) = self
            .exemplars
            .chunks_exact(self.dims)
            .zip(&self.exemplar_group)
            .map(|(v, &g)| (g, f64::from(crate::embeddings::dot(v, query))))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, 0.0));
        let label_of = |g: usize| self.labels.get(g).cloned().unwrap_or_else(|| Arc::from(""));
        ClassScore {
            score,
            label: label_of(best),
            probability: best_p,
            nearest: label_of(nearest),
            similarity,
        }
    }
}

fn softmax(v: &mut [f64]) {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    if sum > 0.0 {
        v.iter_mut().for_each(|x| *x /= sum);
    }
}

/// The three scorers over one embedding model.
#[derive(Debug)]
pub struct SemanticScorer {
    pub complexity: ExemplarClassifier,
    pub risk: ExemplarClassifier,
    pub pii: ExemplarClassifier,
    /// Personal-data score from which the classification is raised.
    pub pii_threshold: f64,
    /// The raise also needs the text to name someone ([`super::PiiDetector::names_someone`]).
    pub pii_require_name: bool,
    pub pii_raise_to: DataClassification,
}

/// What the semantic scorers say about one request.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticScores {
    pub complexity: ClassScore,
    pub risk: ClassScore,
    pub personal_data: ClassScore,
    /// The classification a personal-data score at or above the threshold raises the request
    /// to (subject to `require_name`, checked against the text by the signal extractor).
    pub raise_to: Option<DataClassification>,
    pub require_name: bool,
}

impl SemanticScorer {
    /// Scores one normalised embedding of the request's user text.
    pub fn score(&self, embedding: &[f32]) -> SemanticScores {
        let mut complexity = self.complexity.score(embedding);
        complexity.score = complexity.score.clamp(0.0, 1.0);
        let mut risk = self.risk.score(embedding);
        risk.score = risk.score.clamp(0.0, 100.0);
        let mut personal_data = self.pii.score(embedding);
        personal_data.score = personal_data.score.clamp(0.0, 1.0);
        let raise_to = (personal_data.score >= self.pii_threshold).then_some(self.pii_raise_to);
        SemanticScores {
            complexity,
            risk,
            personal_data,
            raise_to,
            require_name: self.pii_require_name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).expect("write");
    }

    fn temp_dir() -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("edge-gateway-exemplars-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn shipped_exemplar_files_are_valid() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/exemplars");
        let files = ExemplarFiles::load(&dir).expect("valid exemplars");
        assert!(files.complexity.groups.len() >= 2);
        assert_eq!(files.pii_raise_to, DataClassification::Restricted);
    }

    #[test]
    fn invalid_files_name_the_file_and_field() {
        let dir = temp_dir();
        let good = "groups:\n  - {label: a, score: 0.1, texts: [x]}\n  - {label: b, score: 0.9, texts: [y]}\n";
        write(&dir, COMPLEXITY_FILE, good);
        write(&dir, RISK_FILE, "groups:\n  - {label: a, score: 120, texts: [x]}\n  - {label: b, score: 0, texts: [y]}\n");
        write(&dir, PII_FILE, &format!("threshold: 0.5\n{good}"));
        let err = ExemplarFiles::load(&dir).expect_err("score out of range");
        let msg = err.to_string();
        assert!(
            msg.contains("risk.yaml") && msg.contains("groups[0].score"),
            "{msg}"
        );

        write(
            &dir,
            RISK_FILE,
            "groups:\n  - {label: a, score: 1, textz: [x]}\n",
        );
        let msg = ExemplarFiles::load(&dir)
            .expect_err("unknown field")
            .to_string();
        assert!(msg.contains("risk.yaml") && msg.contains("textz"), "{msg}");

        write(&dir, RISK_FILE, good);
        write(&dir, PII_FILE, good);
        let msg = ExemplarFiles::load(&dir)
            .expect_err("no threshold")
            .to_string();
        assert!(
            msg.contains("pii.yaml") && msg.contains("threshold"),
            "{msg}"
        );
        write(
            &dir,
            PII_FILE,
            &format!("threshold: 0.5\nraise_to: secret\n{good}"),
        );
        let msg = ExemplarFiles::load(&dir)
            .expect_err("bad level")
            .to_string();
        assert!(msg.contains("raise_to"), "{msg}");
        write(&dir, PII_FILE, &format!("threshold: 0.5\n{good}"));
        assert!(ExemplarFiles::load(&dir).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn trained_head_separates_groups_and_confident_predictions_take_the_group_score() {
        // Two groups in 3 dimensions, a few noisy exemplars each.
        let exemplars = vec![
            1.0, 0.0, 0.0, 0.9, 0.1, 0.0, 0.95, 0.0, 0.1, //
            0.0, 1.0, 0.0, 0.1, 0.9, 0.0, 0.0, 0.95, 0.1,
        ];
        let head = ExemplarClassifier::train(
            3,
            exemplars,
            vec![0, 0, 0, 1, 1, 1],
            vec![80.0, 0.0],
            vec![Arc::from("transfer"), Arc::from("none")],
            0.7,
        );
        let s = head.score(&[1.0, 0.0, 0.0]);
        assert_eq!(&*s.label, "transfer");
        assert_eq!(&*s.nearest, "transfer");
        assert!(s.probability >= 0.7, "{s:?}");
        assert_eq!(
            s.score, 80.0,
            "a confident prediction takes the group score"
        );
        let s = head.score(&[0.0, 1.0, 0.0]);
        assert_eq!(s.score, 0.0);
        // Half-way: no confident group, the probability-weighted mean.
        let mid = std::f32::consts::FRAC_1_SQRT_2;
        let s = head.score(&[mid, mid, 0.0]);
        assert!(s.score > 5.0 && s.score < 75.0, "{s:?}");
        let p = head.probabilities(&[mid, mid, 0.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);

        // The cache round-trips the head for the same set, and refuses another shape.
        let set = ExemplarSet {
            path: PathBuf::from("x.yaml"),
            description: None,
            confident: 0.7,
            groups: vec![
                ExemplarGroup {
                    label: "transfer".into(),
                    score: 80.0,
                    texts: vec!["a".into(), "b".into(), "c".into()],
                },
                ExemplarGroup {
                    label: "none".into(),
                    score: 0.0,
                    texts: vec!["d".into(), "e".into(), "f".into()],
                },
            ],
        };
        let dir = temp_dir();
        let file = dir.join(format!("{}.bin", cache_key(&set, "m:1:2")));
        head.save(&dir, &file).expect("save");
        let bytes = std::fs::read(&file).expect("read");
        let back = ExemplarClassifier::decode(&bytes, &set, 3).expect("decodes");
        assert_eq!(back.score(&[mid, mid, 0.0]), head.score(&[mid, mid, 0.0]));
        assert!(ExemplarClassifier::decode(&bytes, &set, 4).is_none());
        assert!(ExemplarClassifier::decode(&bytes[..bytes.len() - 1], &set, 3).is_none());
        assert_ne!(cache_key(&set, "m:1:2"), cache_key(&set, "m:1:3"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
