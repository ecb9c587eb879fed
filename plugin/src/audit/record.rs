//! What one audit record says about one decision.

use std::time::Duration;

use serde::Serialize;

use super::peer_refusals::{Refused, MAX_PEERS};
use crate::verify::{AttestationOutcome, AttestationResult, Evidence};

/// One decision, as written to the audit log. `seq`, `time` and `prev` are added by the log.
///
/// Every key is written in every record, `null` where a value is unknown or does not apply, so
/// log pipelines see one schema (SPEC §6).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub event: Event,
    pub image: String,
    pub digest: Option<String>,
    pub namespace: String,
    pub pod: String,
    pub rule: Option<String>,
    pub mode: String,
    pub decision: Decision,
    pub reason: String,
    /// What became of a pull; `None` for other events.
    pub outcome: Option<Outcome>,
    /// Why the pull failed, with [`Outcome::Failed`].
    pub error: Option<String>,
    pub signatures: Vec<Signature>,
    pub attestations: Vec<Attested>,
    /// On a denial, each signature found that did not count, and why.
    pub rejected: Vec<String>,
    pub duration_ms: f64,
    pub cache: &'static str,
    /// How many refused connections a `peer-refused` record stands for; `None` for other
    /// events.
    pub count: Option<u64>,
}

/// A signature that counted, as the audit log spells it. The log's own shape, filled from
/// verify's evidence: renaming a field in verify cannot change the log's format.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Signature {
    pub authority: String,
    /// `key`, `keyless` or `notation`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tlog_index: Option<u64>,
    /// `tlog`, `tsa`, `tlog+tsa` or `none`; for `notation`, `tsa` (a trusted countersignature
    /// fixed the time the chain was checked at) or `now`.
    pub time_source: &'static str,
    /// The verified signing time, unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<i64>,
    /// A Notation signature's signing scheme: `notary.x509` or `notary.x509.signingAuthority`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<&'static str>,
}

/// One attestation requirement as checked, as the audit log spells it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Attested {
    pub name: String,
    pub predicate_type: String,
    /// `pass` or `fail`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// A `PullImage` decision.
    Pull,
    /// An `ImageStatus` answered "not present" because the image was not verified.
    StatusHidden,
    /// A connection refused because its peer's uid is not in `socket.allowedUids`.
    PeerRefused,
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

/// What became of a pull the record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// containerd pulled the image.
    Pulled,
    /// The policy denied it; containerd was not asked.
    Denied,
    /// The policy let it go, but containerd's pull did not succeed.
    Failed,
}

// === impl Decision ===

impl Decision {
    /// The decision as the record's `decision` field spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Warn => "warn",
            Self::AuditDeny => "audit-deny",
        }
    }
}

// === impl Signature, Attested ===

impl From<&Evidence> for Signature {
    fn from(evidence: &Evidence) -> Self {
        Self {
            authority: evidence.authority.clone(),
            kind: evidence.kind,
            subject: evidence.subject.clone(),
            issuer: evidence.issuer.clone(),
            tlog_index: evidence.tlog_index,
            time_source: evidence.time_source,
            signed_at: evidence.signed_at,
            scheme: evidence.scheme,
        }
    }
}

impl From<&AttestationOutcome> for Attested {
    fn from(outcome: &AttestationOutcome) -> Self {
        Self {
            name: outcome.name.clone(),
            predicate_type: outcome.predicate_type.clone(),
            result: match outcome.result {
                AttestationResult::Pass => "pass",
                AttestationResult::Fail => "fail",
            },
            reason: outcome.reason.clone(),
            signature: outcome.signature.as_ref().map(Signature::from),
        }
    }
}

/// What the gate judged about one image, for [`Record::pull`]: the record's shape (which keys
/// are set for which event) is decided here, not by each caller.
#[derive(Debug, Clone)]
pub struct Judged {
    /// The image as asked, normalized.
    pub image: String,
    pub digest: Option<String>,
    pub rule: Option<String>,
    /// `enforce`, `warn` or `audit`.
    pub mode: String,
    pub decision: Decision,
    pub reason: String,
    pub signatures: Vec<Signature>,
    pub attestations: Vec<Attested>,
    pub rejected: Vec<String>,
    /// How the verification cache answered: `hit`, `miss`, `shared` or `none`.
    pub cache: &'static str,
}

// === impl Record ===

impl Record {
    /// The record of one `PullImage` decision (also what `pullgate verify` prints). Its
    /// `outcome` is set by the gate once it knows what became of the pull.
    pub fn pull(judged: Judged, namespace: &str, pod: &str, duration: Duration) -> Self {
        Self {
            event: Event::Pull,
            image: judged.image,
            digest: judged.digest,
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            rule: judged.rule,
            mode: judged.mode,
            decision: judged.decision,
            reason: judged.reason,
            outcome: None,
            error: None,
            signatures: judged.signatures,
            attestations: judged.attestations,
            rejected: judged.rejected,
            duration_ms: duration.as_secs_f64() * 1000.0,
            cache: judged.cache,
            count: None,
        }
    }

    /// The record of an `ImageStatus` answered "not present": `image` (the name it was judged
    /// by) is in containerd but was not verified under the policy in force. Hiding is enforced
    /// whatever the policy's mode says, since only enforced rules hide.
    pub fn status_hidden(
        image: String,
        digest: Option<String>,
        rule: Option<String>,
        reason: String,
        duration: Duration,
    ) -> Self {
        Self {
            image,
            digest,
            rule,
            duration_ms: duration.as_secs_f64() * 1000.0,
            ..Self::enforced_denial(Event::StatusHidden, reason)
        }
    }

    /// The record of `count` connections refused from `who` (at most one a second per peer).
    pub fn peer_refused(who: Refused, count: u64) -> Self {
        let reason = match who {
            Refused::Peer(Some(uid)) => format!("uid {uid} is not in socket.allowedUids"),
            Refused::Peer(None) => "the peer's credentials could not be read".to_string(),
            Refused::Others => {
                format!("peers beyond the first {MAX_PEERS} uids refused at once are not in socket.allowedUids")
            }
        };
        Self {
            count: Some(count),
            ..Self::enforced_denial(Event::PeerRefused, reason)
        }
    }

    /// A denial no policy mode can soften (hiding an image, refusing a peer), with nothing
    /// judged: no image, pod, rule or evidence.
    fn enforced_denial(event: Event, reason: String) -> Self {
        Self {
            event,
            image: String::new(),
            digest: None,
            namespace: String::new(),
            pod: String::new(),
            rule: None,
            mode: "enforce".to_string(),
            decision: Decision::Deny,
            reason,
            outcome: None,
            error: None,
            signatures: Vec::new(),
            attestations: Vec::new(),
            rejected: Vec::new(),
            duration_ms: 0.0,
            cache: "none",
            count: None,
        }
    }

    /// The record as `pullgate verify` prints it for a person: the decision, then what was
    /// checked, one fact per line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, text: &str| out.push_str(&format!("  {label:<9}{text}\n"));
        line("rule", self.rule.as_deref().unwrap_or("(none matched)"));
        line("mode", &self.mode);
        line("reason", &self.reason);
        if let Some(digest) = &self.digest {
            line("digest", digest);
        }
        for evidence in &self.signatures {
            line("signed", &signer(evidence));
            for detail in evidence_details(evidence) {
                line("", &detail);
            }
        }
        for rejected in &self.rejected {
            line("rejected", rejected);
        }
        for outcome in &self.attestations {
            let result = if outcome.result == "pass" { "pass" } else { "FAIL" };
            line(
                "attested",
                &format!(
                    "{:?} {result}: {}",
                    outcome.name,
                    crate::policy::predicate::describe(&outcome.predicate_type)
                ),
            );
            if let Some(reason) = &outcome.reason {
                line("", reason);
            }
            if let Some(evidence) = &outcome.signature {
                line("", &format!("by {}", signer(evidence)));
                for detail in evidence_details(evidence) {
                    line("", &detail);
                }
            }
        }
        let decision = match self.decision {
            Decision::Allow => "ALLOW",
            Decision::Deny => "DENY",
            Decision::Warn => "WARN",
            Decision::AuditDeny => "AUDIT-DENY",
        };
        format!("{decision:<10} {}\n{out}", self.image)
    }
}

fn signer(evidence: &Signature) -> String {
    format!("authority {:?} ({})", evidence.authority, evidence.kind)
}

/// Subject, issuer, log entry and signing time, as far as the evidence has them.
fn evidence_details(evidence: &Signature) -> Vec<String> {
    let mut details = Vec::new();
    if let Some(subject) = &evidence.subject {
        details.push(format!("  subject  {subject}"));
    }
    if let Some(issuer) = &evidence.issuer {
        details.push(format!("  issuer   {issuer}"));
    }
    if let Some(scheme) = evidence.scheme {
        // A Notation signature: no log; the chain was checked now or at a TSA's time.
        details.push(format!(
            "  scheme   {scheme} (chain checked at: {})",
            evidence.time_source
        ));
    } else {
        let index = evidence.tlog_index.map_or_else(|| "-".to_string(), |i| i.to_string());
        details.push(format!(
            "  tlog     {index} (signing time from: {})",
            evidence.time_source
        ));
    }
    if let Some(at) = evidence.signed_at.and_then(|s| u64::try_from(s).ok()) {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at);
        details.push(format!("  signed   {}", humantime::format_rfc3339_seconds(at)));
    }
    details
}
