//! What one audit record says about one decision.

use serde::Serialize;

use crate::verify::{AttestationOutcome, Evidence};

/// One decision, as written to the audit log. `seq`, `time` and `prev` are added by the log.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub event: Event,
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub namespace: String,
    pub pod: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub mode: String,
    pub decision: Decision,
    pub reason: String,
    pub signatures: Vec<Evidence>,
    pub attestations: Vec<AttestationOutcome>,
    pub duration_ms: f64,
    pub cache: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// A `PullImage` decision.
    Pull,
    /// An `ImageStatus` answered "not present" because the image was not verified.
    StatusHidden,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    Allow,
    Deny,
    /// Would have been denied; allowed because the mode is `warn`.
    Warn,
    /// Would have been denied; allowed and recorded because the mode is `audit`.
    AuditDeny,
}
