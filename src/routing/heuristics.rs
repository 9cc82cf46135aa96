//! Built-in heuristic scorers for `complexity_score` and `risk_score`, used when a request sends
//! neither a header nor a `metadata` value. Deterministic and cheap: one pass of a keyword
//! automaton built at startup (no regex compilation per request). A later issue replaces them
//! with a model; until then the formulas below are the documented contract
//! (`policies/README.md`, "Heuristic scores").

use aho_corasick::{AhoCorasick, MatchKind};

use super::error::PolicyError;

/// Words asking for reasoning rather than recall.
const REASONING_KEYWORDS: &[&str] = &[
    "analyze",
    "analyse",
    "architecture",
    "compare",
    "derive",
    "design",
    "evaluate",
    "explain why",
    "implications",
    "optimize",
    "optimise",
    "plan",
    "proof",
    "prove",
    "reason about",
    "root cause",
    "step by step",
    "strategy",
    "trade-off",
    "trade-offs",
    "tradeoff",
    "troubleshoot",
    "why does",
    "why is",
];

/// Signs of source code or code-related work.
const CODE_KEYWORDS: &[&str] = &[
    "```",
    "algorithm",
    "class ",
    "compile",
    "debug",
    "def ",
    "fn ",
    "function",
    "regex",
    "refactor",
    "select ",
    "sql",
    "stack trace",
    "traceback",
    "#include",
    "=>",
];

/// A risk category: the score it implies and the phrases that reveal it.
struct RiskCategory {
    score: f64,
    keywords: &'static [&'static str],
}

/// Risk categories from the routing issue. A prompt scores the highest matching category, plus
/// [`EXTRA_CATEGORY_BONUS`] per further category, capped at 100; no match scores 0.
const RISK_CATEGORIES: &[RiskCategory] = &[
    // Medical dosage: wrong numbers harm patients.
    RiskCategory {
        score: 90.0,
        keywords: &[
            "contraindicated",
            "contraindication",
            "dosage",
            "dose",
            "doses",
            "dosing",
            "drug interaction",
            "insulin",
            "mcg",
            "mg",
            "mg/kg",
            "milligrams",
            "overdose",
            "prescribe",
            "prescription",
            "titrate",
        ],
    },
    // Safety-critical operations: machinery, energy, pressure.
    RiskCategory {
        score: 90.0,
        keywords: &[
            "bypass the interlock",
            "confined space",
            "emergency shutdown",
            "gas leak",
            "high voltage",
            "interlock",
            "live wire",
            "lockout",
            "override the safety",
            "pressure vessel",
            "safety valve",
            "tagout",
        ],
    },
    // Financial transfers: money that moves is hard to get back.
    RiskCategory {
        score: 80.0,
        keywords: &[
            "bank account",
            "iban",
            "payment order",
            "routing number",
            "send money",
            "swift code",
            "transfer funds",
            "transfer money",
            "wire transfer",
        ],
    },
    // Legal: advice with liability attached.
    RiskCategory {
        score: 60.0,
        keywords: &[
            "attorney",
            "court",
            "lawsuit",
            "lawyer",
            "legal advice",
            "liability",
            "litigation",
            "sue",
        ],
    },
];

/// Added per matched risk category beyond the first.
const EXTRA_CATEGORY_BONUS: f64 = 5.0;

/// Complexity weights (sum 1.0) and the feature counts at which each feature saturates.
const LENGTH_WEIGHT: f64 = 0.30;
const LENGTH_SATURATION_WORDS: f64 = 400.0;
const QUESTION_WEIGHT: f64 = 0.10;
const QUESTION_SATURATION: f64 = 3.0;
const REASONING_WEIGHT: f64 = 0.35;
const REASONING_SATURATION: f64 = 3.0;
const CODE_WEIGHT: f64 = 0.25;
const CODE_SATURATION: f64 = 3.0;

/// The keyword automatons behind the heuristic scores; build once with [`HeuristicScorer::new`].
#[derive(Debug)]
pub struct HeuristicScorer {
    reasoning: AhoCorasick,
    code: AhoCorasick,
    /// One automaton for every risk keyword; `risk_category[pattern]` maps a match back.
    risk: AhoCorasick,
    risk_category: Vec<usize>,
    /// Per pattern of `risk`: whether each end needs a word boundary.
    risk_bounds: Vec<(bool, bool)>,
    reasoning_bounds: Vec<(bool, bool)>,
    code_bounds: Vec<(bool, bool)>,
}

impl HeuristicScorer {
    /// Builds the automatons (ASCII case-insensitive, leftmost-longest).
    pub fn new() -> Result<Self, PolicyError> {
        let risk_patterns: Vec<&str> = RISK_CATEGORIES
            .iter()
            .flat_map(|c| c.keywords.iter().copied())
            .collect();
        let risk_category = RISK_CATEGORIES
            .iter()
            .enumerate()
            .flat_map(|(i, c)| std::iter::repeat_n(i, c.keywords.len()))
            .collect();
        Ok(HeuristicScorer {
            reasoning: automaton(REASONING_KEYWORDS)?,
            code: automaton(CODE_KEYWORDS)?,
            risk_bounds: bounds(&risk_patterns),
            risk: automaton(&risk_patterns)?,
            risk_category,
            reasoning_bounds: bounds(REASONING_KEYWORDS),
            code_bounds: bounds(CODE_KEYWORDS),
        })
    }

    /// Complexity 0–1: 0.30·min(words/400, 1) + 0.10·min(questions/3, 1)
    /// + 0.35·min(reasoning keywords/3, 1) + 0.25·min(code signs/3, 1).
    pub fn complexity_score(&self, prompt: &[&str]) -> f64 {
        let mut words = 0usize;
        let mut questions = 0usize;
        let mut reasoning = 0usize;
        let mut code = 0usize;
        for text in prompt {
            words += text.split_whitespace().count();
            questions += text.matches('?').count();
            reasoning += count_words(&self.reasoning, &self.reasoning_bounds, text);
            code += count_words(&self.code, &self.code_bounds, text);
        }
        let feature = |count: usize, saturation: f64| (count as f64 / saturation).min(1.0);
        let score = LENGTH_WEIGHT * feature(words, LENGTH_SATURATION_WORDS)
            + QUESTION_WEIGHT * feature(questions, QUESTION_SATURATION)
            + REASONING_WEIGHT * feature(reasoning, REASONING_SATURATION)
            + CODE_WEIGHT * feature(code, CODE_SATURATION);
        score.clamp(0.0, 1.0)
    }

    /// Risk 0–100: the highest matching category's score (medical dosage 90, safety-critical
    /// 90, financial transfer 80, legal 60) plus 5 per further matching category, capped at
    /// 100; 0 when nothing matches.
    pub fn risk_score(&self, prompt: &[&str]) -> f64 {
        let mut matched = [false; RISK_CATEGORIES.len()];
        for text in prompt {
            for m in self.risk.find_iter(*text) {
                let pattern = m.pattern().as_usize();
                let Some(&(start, end)) = self.risk_bounds.get(pattern) else {
                    continue;
                };
                if !at_word_bounds(text, m.start(), m.end(), start, end) {
                    continue;
                }
                if let Some(&category) = self.risk_category.get(pattern) {
                    if let Some(slot) = matched.get_mut(category) {
                        *slot = true;
                    }
                }
            }
        }
        let mut best = 0.0_f64;
        let mut count = 0usize;
        for (category, hit) in RISK_CATEGORIES.iter().zip(matched) {
            if hit {
                best = best.max(category.score);
                count += 1;
            }
        }
        if count == 0 {
            return 0.0;
        }
        (best + EXTRA_CATEGORY_BONUS * (count - 1) as f64).min(100.0)
    }
}

fn automaton(patterns: &[&str]) -> Result<AhoCorasick, PolicyError> {
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostLongest)
        .build(patterns)
        .map_err(|e| PolicyError::Scorers(e.to_string()))
}

/// Whether each end of each pattern must sit on a word boundary: only ends that are
/// alphanumeric, so `mg` does not match inside `img` while a code fence matches anywhere.
fn bounds(patterns: &[&str]) -> Vec<(bool, bool)> {
    patterns
        .iter()
        .map(|p| {
            let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
            (word(p.chars().next()), word(p.chars().last()))
        })
        .collect()
}

fn count_words(automaton: &AhoCorasick, bounds: &[(bool, bool)], text: &str) -> usize {
    automaton
        .find_iter(text)
        .filter(|m| {
            bounds
                .get(m.pattern().as_usize())
                .is_some_and(|&(s, e)| at_word_bounds(text, m.start(), m.end(), s, e))
        })
        .count()
}

fn at_word_bounds(
    text: &str,
    start: usize,
    end: usize,
    check_start: bool,
    check_end: bool,
) -> bool {
    let is_word = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
    let bytes = text.as_bytes();
    let before_ok = !check_start || start == 0 || !is_word(bytes.get(start - 1));
    let after_ok = !check_end || !is_word(bytes.get(end));
    before_ok && after_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scorer() -> HeuristicScorer {
        HeuristicScorer::new().expect("automatons build")
    }

    #[test]
    fn short_plain_questions_are_simple() {
        let s = scorer().complexity_score(&["What time does the clinic open?"]);
        assert!(s < 0.1, "{s}");
    }

    #[test]
    fn long_reasoning_and_code_prompts_are_complex() {
        let filler = "word ".repeat(400);
        let prompt = format!(
            "{filler} Explain why this fails, compare two designs step by step and analyze the \
             trade-offs. Is it the algorithm? Or the regex? ```fn main() {{}}``` Why? Debug it."
        );
        let s = scorer().complexity_score(&[&prompt]);
        assert!(s > 0.9, "{s}");
    }

    #[test]
    fn complexity_is_deterministic_and_bounded() {
        let x = scorer();
        let text = "design a plan? prove it? ``` ``` ``` ``` ".repeat(200);
        let a = x.complexity_score(&[&text]);
        assert_eq!(a, x.complexity_score(&[&text]));
        assert!((0.0..=1.0).contains(&a));
        assert_eq!(x.complexity_score(&[]), 0.0);
    }

    #[test]
    fn risk_categories_score_as_documented() {
        let x = scorer();
        assert_eq!(x.risk_score(&["Summarize the shift report"]), 0.0);
        assert_eq!(x.risk_score(&["What insulin DOSAGE for a child?"]), 90.0);
        assert_eq!(x.risk_score(&["Walk me through lockout/tagout"]), 90.0);
        assert_eq!(
            x.risk_score(&["Prepare a wire transfer to the supplier"]),
            80.0
        );
        assert_eq!(x.risk_score(&["Can the customer sue us?"]), 60.0);
        // Two categories: the higher plus the bonus.
        assert_eq!(
            x.risk_score(&["Our lawyer asks about the wire transfer"]),
            85.0
        );
        // Four categories: capped.
        assert_eq!(
            x.risk_score(&["dose", "high voltage", "iban", "court"]),
            100.0
        );
    }

    #[test]
    fn keywords_match_whole_words_only() {
        let x = scorer();
        // `mg` inside `img`, `sue` inside `issue`, `court` inside `courtyard`.
        assert_eq!(x.risk_score(&["the img tag issue in the courtyard"]), 0.0);
        assert_eq!(x.risk_score(&["give 5 mg twice"]), 90.0);
    }
}
