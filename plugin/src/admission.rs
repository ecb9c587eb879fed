//! Permission to pull: what the gate hands containerd's side, and the only way a `PullImage`
//! reaches containerd (`Upstream::pull` in cri/). A verified admission pins the digest
//! that was verified; a waiver forwards kubelet's request unchanged.

use crate::verify::Verified;

/// Permission to pull. The verified kind pins the digest; the waived kind forwards kubelet's
/// request unchanged and only exists for `action: allow` and non-enforcing modes.
pub enum Admission {
    Verified(Verified),
    Waived(Waiver),
}

/// Why an image is pulled without a verified digest. Only the gate makes these.
pub struct Waiver {
    reason: String,
}

// === impl Waiver ===

impl Waiver {
    /// A pull without verification, for `reason`. For the gate alone: anything else that
    /// makes one opens a way around verification.
    pub(crate) fn new(reason: String) -> Self {
        Self { reason }
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }
}
