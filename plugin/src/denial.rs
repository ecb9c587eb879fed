//! A refused image, as data. Rendered once into the kubelet message, the audit record's reason
//! and the log line, so the three can never disagree.

use std::fmt;

use tonic::Status;

/// Why an image may not be pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The normalized reference, with the digest once it is known.
    pub image: String,
    /// The rule that decided; `None` when no rule matched.
    pub rule: Option<String>,
    pub kind: DenialKind,
    pub reason: String,
}

/// The class of a denial; it chooses the prefix kubelet turns into the pod's status reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialKind {
    /// The policy refuses the image: `SignatureValidationFailed`.
    Policy,
    /// Signatures could not be fetched, so nothing could be verified: `RegistryUnavailable`.
    RegistryUnavailable,
}

impl Denial {
    /// The prefix kubelet recognizes (SPEC §5).
    pub fn prefix(&self) -> &'static str {
        match self.kind {
            DenialKind::Policy => "SignatureValidationFailed",
            DenialKind::RegistryUnavailable => "RegistryUnavailable",
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
        write!(f, "{}: {}: ", self.prefix(), self.image)?;
        if let Some(rule) = &self.rule {
            write!(f, "rule {rule:?}: ")?;
        }
        // One line: kubelet shows the message in pod events and status.
        for (i, line) in self.reason.lines().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(line)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_kubelet_message() {
        let d = Denial {
            image: "127.0.0.1:5000/signed/app@sha256:ab".into(),
            rule: Some("apps".into()),
            kind: DenialKind::Policy,
            reason: "no signature from authority \"release-key\"".into(),
        };
        assert_eq!(
            d.to_string(),
            "SignatureValidationFailed: 127.0.0.1:5000/signed/app@sha256:ab: rule \"apps\": no signature from authority \"release-key\""
        );
        assert_eq!(d.status().code(), tonic::Code::Unknown);
        let r = Denial {
            kind: DenialKind::RegistryUnavailable,
            rule: None,
            reason: "a\nb".into(),
            ..d
        };
        assert_eq!(
            r.to_string(),
            "RegistryUnavailable: 127.0.0.1:5000/signed/app@sha256:ab: a b"
        );
    }
}
