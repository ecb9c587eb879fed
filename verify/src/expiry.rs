//! When trust material stops being valid: the window of each Fulcio CA, Rekor and CT log key
//! and timestamp authority in a trusted root, and, for what a policy's authorities need, the
//! moment the first needed kind runs out. `pullgate doctor` reports the kinds one by one; the
//! `pullgate_trust_material_expiry_timestamp_seconds` gauge shows the moment.

use jiff::Timestamp;
use sigstore_trust_root::{trusted_root::CertChain, TrustedRoot};
use sigstore_types::TimeRange;
use x509_cert::{der::Decode, Certificate};

use super::TrustMaterial;
use crate::Tlog;

#[cfg(test)]
mod tests;

/// Which kinds of trust material a policy's authorities cannot verify without.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrustNeeds {
    /// Keyless: the certificate must chain to a Fulcio CA.
    pub ca: bool,
    /// Keyless: the certificate's SCT needs a CT log key.
    pub ctlog: bool,
    /// `tlog: required`: a Rekor entry must verify.
    pub tlog: bool,
    /// Keyless with `tlog: ignore`: the signing time can only come from a timestamp authority.
    pub tsa: bool,
}

/// When one trust anchor may be used: its `validFor`, narrowed by its certificates' validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
}

/// One kind of trust anchor in a root: its name, why the policy needs it (`None` when it does
/// not), and the window of each anchor of that kind (an error for one whose certificates do not
/// parse).
#[derive(Debug, Clone)]
pub struct AnchorKind {
    pub name: &'static str,
    pub needed_because: Option<&'static str>,
    pub windows: Vec<Result<Window, String>>,
}

/// Where the anchors of one kind stand at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// None is valid: the last to end before the moment ended then (`None`: none has ended, so
    /// none has started yet).
    NoneValid { ended: Option<Timestamp> },
    /// `count` are valid, and the last of them to go ends `until` (`None`: never).
    Valid { count: usize, until: Option<Timestamp> },
}

// === impl TrustNeeds ===

impl TrustNeeds {
    /// What authorities, as `(keyless, tlog)`, need from the trusted root.
    pub fn of(authorities: impl IntoIterator<Item = (bool, Tlog)>) -> Self {
        authorities
            .into_iter()
            .fold(Self::default(), |mut needs, (keyless, tlog)| {
                needs.ca |= keyless;
                needs.ctlog |= keyless;
                needs.tlog |= tlog == Tlog::Required;
                needs.tsa |= keyless && tlog == Tlog::Ignore;
                needs
            })
    }
}

// === impl Window ===

impl Window {
    fn of(valid_for: Option<&TimeRange>) -> Self {
        Self {
            start: valid_for.map(|r| r.start),
            end: valid_for.and_then(|r| r.end),
        }
    }

    pub fn contains(&self, at: Timestamp) -> bool {
        self.start.is_none_or(|s| s <= at) && self.end.is_none_or(|e| at <= e)
    }

    /// Narrowed to also lie within `[start, end]`.
    fn narrow(self, start: Timestamp, end: Timestamp) -> Self {
        Self {
            start: Some(self.start.map_or(start, |s| s.max(start))),
            end: Some(self.end.map_or(end, |e| e.min(end))),
        }
    }
}

// === impl TrustMaterial ===

impl TrustMaterial {
    /// [`expiry_timestamp`] of this material's root.
    pub fn expiry_timestamp(&self, needs: TrustNeeds, now: Timestamp) -> f64 {
        expiry_timestamp(self.root(), needs, now)
    }
}

/// Where `windows` stand at `now`.
pub fn standing(windows: &[Window], now: Timestamp) -> Standing {
    let current: Vec<&Window> = windows.iter().filter(|w| w.contains(now)).collect();
    if current.is_empty() {
        let ended = windows.iter().filter_map(|w| w.end).filter(|end| *end < now).max();
        return Standing::NoneValid { ended };
    }
    // A window with no end never expires; otherwise what counts is the last to go.
    let until = if current.iter().any(|w| w.end.is_none()) {
        None
    } else {
        current.iter().filter_map(|w| w.end).max()
    };
    Standing::Valid {
        count: current.len(),
        until,
    }
}

/// When the trust material in `root` stops being valid for a policy that `needs` what it does,
/// in unix seconds: for each kind of anchor needed, the end of the last one valid at `now`,
/// and the earliest of those. `+∞` when none of them ends (or nothing is needed); the last end
/// before `now`, or 0, when a needed kind has no valid anchor.
pub fn expiry_timestamp(root: &TrustedRoot, needs: TrustNeeds, now: Timestamp) -> f64 {
    let seconds = |t: Timestamp| t.as_second() as f64;
    anchor_kinds(root, needs)
        .into_iter()
        .filter(|kind| kind.needed_because.is_some())
        .map(|kind| {
            // An anchor whose certificates do not parse verifies nothing.
            let windows: Vec<Window> = kind.windows.into_iter().flatten().collect();
            match standing(&windows, now) {
                Standing::NoneValid { ended } => ended.map_or(0.0, seconds),
                Standing::Valid { until, .. } => until.map_or(f64::INFINITY, seconds),
            }
        })
        .fold(f64::INFINITY, f64::min)
}

/// Each kind of trust anchor in `root`, with why a policy that `needs` what it does needs it.
pub fn anchor_kinds(root: &TrustedRoot, needs: TrustNeeds) -> [AnchorKind; 4] {
    [
        AnchorKind {
            name: "Fulcio CA",
            needed_because: needs.ca.then_some("keyless authorities need one"),
            windows: root
                .certificate_authorities
                .iter()
                .map(|ca| certified_window(ca.valid_for.as_ref(), &ca.cert_chain))
                .collect(),
        },
        AnchorKind {
            name: "Rekor log key",
            needed_because: needs.tlog.then_some("authorities with tlog: required need one"),
            windows: root
                .tlogs
                .iter()
                .map(|log| Ok(Window::of(log.public_key.valid_for.as_ref())))
                .collect(),
        },
        AnchorKind {
            name: "CT log key",
            // A root that lists no CT log asks for no SCT (SPEC §4); one that lists some needs
            // a key valid now.
            needed_because: (needs.ctlog && !root.ctlogs.is_empty())
                .then_some("keyless authorities need one for the certificate's SCT"),
            windows: root
                .ctlogs
                .iter()
                .map(|log| Ok(Window::of(log.public_key.valid_for.as_ref())))
                .collect(),
        },
        AnchorKind {
            name: "timestamp authority",
            // Without a Rekor log in the root, a timestamp is a keyless signature's only
            // signing time, whatever the authority's tlog says.
            needed_because: if needs.ca && root.tlogs.is_empty() {
                Some("keyless authorities need one: the root lists no Rekor log")
            } else {
                needs.tsa.then_some("keyless authorities with tlog: ignore need one")
            },
            windows: root
                .timestamp_authorities
                .iter()
                .map(|tsa| certified_window(tsa.valid_for.as_ref(), &tsa.cert_chain))
                .collect(),
        },
    ]
}

/// A CA's or TSA's window: its `validFor`, within the notBefore/notAfter of every certificate
/// of its chain, since a chain with an expired certificate no longer verifies anything new.
fn certified_window(valid_for: Option<&TimeRange>, chain: &CertChain) -> Result<Window, String> {
    let mut window = Window::of(valid_for);
    for (i, entry) in chain.certificates.iter().enumerate() {
        let cert = Certificate::from_der(entry.raw_bytes.as_bytes())
            .map_err(|e| format!("certificate {i} of its chain does not parse: {e}"))?;
        let validity = &cert.tbs_certificate.validity;
        let time = |t: x509_cert::time::Time| {
            Timestamp::try_from(t.to_system_time()).map_err(|e| format!("certificate {i}: {e}"))
        };
        window = window.narrow(time(validity.not_before)?, time(validity.not_after)?);
    }
    Ok(window)
}
