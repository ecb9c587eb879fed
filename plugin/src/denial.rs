//! A refused image, as data. Rendered once into the kubelet message, the audit record's reason
//! and the log line, so the three can never disagree.

use std::{fmt, time::Duration};

use tonic::Status;

use crate::{
    policy::{predicate, NoMatch},
    reference::{Digest, InvalidReference, Reference},
    registry::RegistryError,
    verify::{AttestationOutcome, AttestationResult, Unattested, Unverified},
};

/// Why an image may not be pulled.
#[derive(Debug, Clone)]
pub struct Denial {
    /// The normalized reference, with the digest once it is known.
    pub image: String,
    /// The rule that decided; `None` when no rule matched.
    pub rule: Option<String>,
    pub cause: Cause,
    /// The rule's `signatureRepository`: named in a denial for what was (not) found there.
    pub signatures_in: Option<String>,
}

/// What refused the image, one variant per reason. It chooses the prefix kubelet turns into the
/// pod's status reason, and renders the reason once.
#[derive(Debug, Clone)]
pub enum Cause {
    /// The name asked is no image reference.
    NotAReference(InvalidReference),
    /// No rule matched, and `noMatch` refuses.
    NoRule(NoMatch),
    /// The rule that matched is `action: deny`.
    RuleDenies,
    /// The registry could not be asked (`RegistryUnavailable`), or answered something that
    /// cannot be trusted.
    Registry(RegistryError),
    /// Verification did not finish within `verifyTimeout`.
    Timeout(Duration),
    /// No signature satisfies the rule; with the hosts that answered when a mirror of
    /// containerd's registry host configuration was among them.
    Unverified(Unverified, Option<String>),
    /// The image is signed, but the rule's attestations do not all hold: each as checked.
    Attestations(Vec<AttestationOutcome>),
    /// The rule requires no signature (`requireSignature: false`), and its attestations, which
    /// must then prove the image, do not all hold: each as checked.
    Unattested(Unattested),
    /// `ImageStatus`: the image is in containerd but was not verified under the policy in force.
    NotAdmitted { image_id: String },
}

// === impl Denial ===

impl Denial {
    /// The name a denial gives the image: `repo@digest` once a digest was judged (SPEC §5), else
    /// `fallback`, the name as asked.
    pub fn image_name(reference: Option<&Reference>, digest: Option<&Digest>, fallback: &str) -> String {
        match (reference, digest) {
            (Some(r), Some(d)) => r.pinned(d),
            _ => fallback.to_string(),
        }
    }

    /// The gRPC error kubelet gets: `UNKNOWN`, so kubelet shows the message's prefix as the reason.
    pub fn status(&self) -> Status {
        Status::unknown(self.to_string())
    }
}

impl fmt::Display for Denial {
    /// `SignatureValidationFailed: <image>: rule "apps": <reason>`, on one line; without a rule
    /// the reason says why none decided.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: ", self.cause.prefix(), self.image)?;
        if let Some(rule) = &self.rule {
            write!(f, "rule {rule:?}: ")?;
        }
        // What was found depends on where it was looked for, when that is not beside the image.
        if let (Some(repository), Cause::Unverified(..) | Cause::Attestations(_) | Cause::Unattested(_)) =
            (&self.signatures_in, &self.cause)
        {
            write!(f, "signatures in {repository}: ")?;
        }
        // One line: kubelet shows the message in pod events and status.
        let reason = self.cause.to_string();
        for (i, line) in reason.lines().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(line)?;
        }
        Ok(())
    }
}

// === impl Cause ===

impl Cause {
    /// The prefix kubelet recognizes (SPEC §5): `RegistryUnavailable` when nothing could be
    /// verified because the registry could not be asked in time; `SignatureValidationFailed`
    /// for everything the policy refuses.
    pub fn prefix(&self) -> &'static str {
        match self {
            Cause::Registry(RegistryError::Unavailable(_)) | Cause::Timeout(_) => "RegistryUnavailable",
            _ => "SignatureValidationFailed",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::NotAReference(e) => write!(f, "not an image reference: {e}"),
            Cause::NoRule(no_match) => write!(f, "no rule matches: noMatch is {no_match}"),
            Cause::RuleDenies => f.write_str("the rule denies it"),
            Cause::Registry(e) => write!(f, "{e}"),
            Cause::Timeout(limit) => write!(
                f,
                "verification did not finish within verifyTimeout ({})",
                humantime::format_duration(*limit)
            ),
            Cause::Unverified(unverified, None) => write!(f, "{unverified}"),
            Cause::Unverified(unverified, Some(hosts)) => {
                write!(f, "{unverified}; registry hosts that answered: {hosts}")
            }
            Cause::Attestations(outcomes) => failed_attestations(f, outcomes),
            Cause::Unattested(Unattested { outcomes }) if outcomes.is_empty() => {
                f.write_str("the rule requires no signature and no attestation: nothing proves the image")
            }
            Cause::Unattested(Unattested { outcomes }) => {
                f.write_str("no signature required, but the attestations that must prove the image do not: ")?;
                failed_attestations(f, outcomes)
            }
            Cause::NotAdmitted { image_id } => write!(
                f,
                "image {image_id} is in containerd but was not verified under the policy in force"
            ),
        }
    }
}

/// `attestation "sbom" (CycloneDX SBOM, https://cyclonedx.org/bom): why`, for each that failed.
fn failed_attestations(f: &mut fmt::Formatter<'_>, outcomes: &[AttestationOutcome]) -> fmt::Result {
    let failed = outcomes.iter().filter(|o| o.result != AttestationResult::Pass);
    for (i, o) in failed.enumerate() {
        if i > 0 {
            f.write_str("; ")?;
        }
        write!(
            f,
            "attestation {:?} ({}): {}",
            o.name,
            predicate::describe(&o.predicate_type),
            o.reason.as_deref().unwrap_or("failed")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_kubelet_message() {
        let d = Denial {
            image: "127.0.0.1:5000/signed/app@sha256:ab".into(),
            rule: Some("apps".into()),
            cause: Cause::RuleDenies,
            signatures_in: None,
        };
        assert_eq!(
            d.to_string(),
            "SignatureValidationFailed: 127.0.0.1:5000/signed/app@sha256:ab: rule \"apps\": the rule denies it"
        );
        assert_eq!(d.status().code(), tonic::Code::Unknown);
        let r = Denial {
            cause: Cause::Registry(RegistryError::Unavailable("a\nb".into())),
            rule: None,
            ..d
        };
        assert_eq!(
            r.to_string(),
            "RegistryUnavailable: 127.0.0.1:5000/signed/app@sha256:ab: a b"
        );
        let t = Denial {
            cause: Cause::Timeout(Duration::from_secs(10)),
            ..r
        };
        assert!(t.to_string().starts_with("RegistryUnavailable: "), "{t}");
    }

    #[test]
    fn a_rule_without_signature_or_attestation_is_refused_as_proving_nothing() {
        let d = Denial {
            image: "ghcr.io/org/app@sha256:ab".into(),
            rule: Some("github".into()),
            cause: Cause::Unattested(Unattested { outcomes: Vec::new() }),
            signatures_in: None,
        };
        assert_eq!(
            d.to_string(),
            "SignatureValidationFailed: ghcr.io/org/app@sha256:ab: rule \"github\": the rule requires no signature \
             and no attestation: nothing proves the image"
        );
    }

    /// Behind a mirror the denial names the hosts that answered; it is still a policy denial.
    #[test]
    fn a_missing_signature_behind_a_mirror_names_the_hosts_that_answered() {
        let unverified = Unverified {
            authorities: vec!["release-key".into()],
            rejections: Vec::new(),
        };
        let d = Denial {
            image: "registry.invalid:5000/app@sha256:ab".into(),
            rule: Some("apps".into()),
            cause: Cause::Unverified(unverified, Some("10.0.0.5:5000".into())),
            signatures_in: None,
        };
        assert_eq!(
            d.to_string(),
            "SignatureValidationFailed: registry.invalid:5000/app@sha256:ab: rule \"apps\": no signature from authority \"release-key\" (no signatures found); registry hosts that answered: 10.0.0.5:5000"
        );
    }

    /// A rule's signatureRepository is named where what was found depends on it, and only there.
    #[test]
    fn names_the_signature_repository_it_looked_in() {
        let unverified = Denial {
            image: "127.0.0.1:5000/apps/app@sha256:ab".into(),
            rule: Some("apps".into()),
            cause: Cause::Unverified(
                Unverified {
                    authorities: vec!["release".into()],
                    rejections: Vec::new(),
                },
                None,
            ),
            signatures_in: Some("127.0.0.1:5001/sigs/app".into()),
        };
        assert_eq!(
            unverified.to_string(),
            "SignatureValidationFailed: 127.0.0.1:5000/apps/app@sha256:ab: rule \"apps\": \
             signatures in 127.0.0.1:5001/sigs/app: no signature from authority \"release\" (no signatures found)"
        );
        let unreachable = Denial {
            cause: Cause::Registry(RegistryError::Unavailable("http://127.0.0.1:5001/v2/: refused".into())),
            ..unverified
        };
        assert!(!unreachable.to_string().contains("signatures in"), "{unreachable}");
    }
}
