//! The review record, its states and the allowed transitions between them, and the route a
//! reviewer approves a request onto.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use super::ReviewError;

/// Where a review is in its life.
///
/// ```text
/// pending ──approve──▶ approved ──complete──▶ completed
///    │                     └──────fail──────▶ failed
///    └────reject───▶ rejected
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewState {
    /// Waiting for a reviewer.
    Pending,
    /// A reviewer approved it onto a route; it has not finished running yet.
    Approved,
    /// A reviewer rejected it; it never runs.
    Rejected,
    /// It ran on the approved route; `result_json` holds the response.
    Completed,
    /// Running it on the approved route failed; `result_json` holds the error.
    Failed,
}

impl ReviewState {
    /// Every state, in life-cycle order.
    pub const ALL: [ReviewState; 5] = [
        ReviewState::Pending,
        ReviewState::Approved,
        ReviewState::Rejected,
        ReviewState::Completed,
        ReviewState::Failed,
    ];

    /// The name stored in the database and shown in APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewState::Pending => "pending",
            ReviewState::Approved => "approved",
            ReviewState::Rejected => "rejected",
            ReviewState::Completed => "completed",
            ReviewState::Failed => "failed",
        }
    }

    /// Whether a review in this state may move to `next`.
    pub fn can_become(self, next: ReviewState) -> bool {
        matches!(
            (self, next),
            (ReviewState::Pending, ReviewState::Approved)
                | (ReviewState::Pending, ReviewState::Rejected)
                | (ReviewState::Approved, ReviewState::Completed)
                | (ReviewState::Approved, ReviewState::Failed)
        )
    }

    /// No transition leaves this state.
    pub fn is_final(self) -> bool {
        ReviewState::ALL.iter().all(|&next| !self.can_become(next))
    }
}

impl fmt::Display for ReviewState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReviewState {
    type Err = ReviewError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReviewState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| ReviewError::InvalidInput {
                field: "state",
                message: format!(
                    "'{s}' is not one of pending, approved, rejected, completed, failed"
                ),
            })
    }
}

/// The route a reviewer sends an approved request to. Written `edge` or `cloud:<name>`.
///
/// Only the syntax is checked here; whether upstream `<name>` exists is the caller's check,
/// since the configured upstreams are not the store's business.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ApprovedRoute {
    /// The local ONNX model.
    Edge,
    /// The named cloud upstream (`upstreams.<name>`).
    Cloud(String),
}

impl ApprovedRoute {
    /// Parses `edge` or `cloud:<name>`; `<name>` uses the upstream name alphabet (a-z, 0-9,
    /// '-', '_').
    pub fn parse(s: &str) -> Result<Self, ReviewError> {
        let invalid = || ReviewError::InvalidInput {
            field: "route",
            message: format!("'{s}' is not 'edge' or 'cloud:<upstream name>'"),
        };
        if s == "edge" {
            return Ok(ApprovedRoute::Edge);
        }
        let Some(name) = s.strip_prefix("cloud:") else {
            return Err(invalid());
        };
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(invalid());
        }
        Ok(ApprovedRoute::Cloud(name.to_owned()))
    }
}

impl fmt::Display for ApprovedRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApprovedRoute::Edge => f.write_str("edge"),
            ApprovedRoute::Cloud(name) => write!(f, "cloud:{name}"),
        }
    }
}

impl FromStr for ApprovedRoute {
    type Err = ReviewError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApprovedRoute::parse(s)
    }
}

impl Serialize for ApprovedRoute {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What a handler hands over when the policy routes a request to human review.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReview {
    /// The API surface the request came in on (`chat.completions`, `completions`), so an
    /// approved request can be replayed on the same one.
    pub endpoint: String,
    /// The request body as received (after validation).
    pub request_json: serde_json::Value,
    /// The routing signals that sent it to review (risk score, token estimate, ...), for the
    /// reviewer.
    pub signals_json: serde_json::Value,
    /// The policy rule that matched; `None` when review was the default action.
    pub rule_id: Option<String>,
}

/// One stored review. Serializes as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Review {
    /// `rev_` + 32 lower-case hex digits.
    pub id: String,
    /// Unix seconds, like OpenAI's `created`.
    pub created_at: i64,
    /// Unix seconds of the last state change.
    pub updated_at: i64,
    pub state: ReviewState,
    pub endpoint: String,
    pub request_json: serde_json::Value,
    pub signals_json: serde_json::Value,
    pub rule_id: Option<String>,
    /// Who approved or rejected it (the API key name of the reviewer).
    pub reviewer: Option<String>,
    pub decision_note: Option<String>,
    /// Set once approved.
    pub approved_route: Option<ApprovedRoute>,
    /// The response (completed) or `{"error": {"message": ...}}` (failed).
    pub result_json: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_documented_transitions_are_allowed() {
        use ReviewState::*;
        let allowed = [
            (Pending, Approved),
            (Pending, Rejected),
            (Approved, Completed),
            (Approved, Failed),
        ];
        for from in ReviewState::ALL {
            for to in ReviewState::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        assert!(Rejected.is_final() && Completed.is_final() && Failed.is_final());
        assert!(!Pending.is_final() && !Approved.is_final());
    }

    #[test]
    fn state_names_round_trip() {
        for state in ReviewState::ALL {
            assert_eq!(
                state.as_str().parse::<ReviewState>().expect("parses"),
                state
            );
            assert_eq!(
                serde_json::to_value(state).expect("serializes"),
                state.as_str()
            );
        }
        assert!("Pending".parse::<ReviewState>().is_err());
    }

    #[test]
    fn routes_parse_and_print_the_same() {
        for text in ["edge", "cloud:cloud", "cloud:eu-west_2"] {
            let route = ApprovedRoute::parse(text).expect(text);
            assert_eq!(route.to_string(), text);
            assert_eq!(serde_json::to_value(&route).expect("serializes"), text);
        }
        assert_eq!(
            ApprovedRoute::parse("cloud:openai").expect("valid"),
            ApprovedRoute::Cloud("openai".into())
        );
    }

    #[test]
    fn malformed_routes_are_rejected() {
        for text in [
            "",
            "Edge",
            "cloud",
            "cloud:",
            "cloud:Open",
            "cloud:a b",
            "human_review",
        ] {
            let err = ApprovedRoute::parse(text).expect_err(text);
            assert!(
                matches!(err, ReviewError::InvalidInput { field: "route", .. }),
                "{text}: {err}"
            );
        }
    }
}
