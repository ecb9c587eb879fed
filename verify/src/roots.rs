//! Several trusted roots: a keyless authority is checked against its own root
//! (`keyless.trustedRoot`) and nothing else, every other authority against the default one.
//!
//! The checks of this crate take one root and the authorities it serves, so a rule's
//! authorities are split by root and each part is checked on its own: a certificate, log entry
//! or timestamp of one Sigstore instance can then never count for an authority that named
//! another.

use crate::{Authority, AuthorityKind, TrustMaterial};

// === impl Authority ===

impl Authority {
    /// The trust material this authority's signatures are checked against: a keyless
    /// authority's own root, else `default`.
    pub fn trust<'a>(&'a self, default: Option<&'a TrustMaterial>) -> Option<&'a TrustMaterial> {
        match &self.kind {
            AuthorityKind::Keyless(keyless) => keyless.trusted_root.as_deref().or(default),
            AuthorityKind::Key(_) => default,
            // Notation signatures are judged by their own trust store, never a Sigstore root.
            AuthorityKind::Notation(_) => None,
        }
    }
}

/// Runs `check` once per root with the Sigstore authorities that use it, in the order each root
/// first appears among `authorities`. Notation authorities are left out: no Sigstore signature
/// can count for them, and a rule of Notation authorities alone runs no check. The common case,
/// one root for all, passes `authorities` as is.
pub(crate) fn each_root<'a, T>(
    authorities: &'a [Authority],
    default: Option<&'a TrustMaterial>,
    mut check: impl FnMut(&[Authority], Option<&'a TrustMaterial>) -> T,
) -> Vec<T> {
    let same = |a: Option<&TrustMaterial>, b: Option<&TrustMaterial>| match (a, b) {
        (Some(a), Some(b)) => std::ptr::eq(a, b),
        (None, None) => true,
        _ => false,
    };
    let sigstore = |a: &&Authority| a.kind.is_sigstore();
    let mixed = authorities.iter().any(|a| !a.kind.is_sigstore());
    let mut roots: Vec<Option<&'a TrustMaterial>> = Vec::new();
    for authority in authorities.iter().filter(sigstore) {
        let root = authority.trust(default);
        if !roots.iter().any(|r| same(*r, root)) {
            roots.push(root);
        }
    }
    match roots.as_slice() {
        [] if !mixed => vec![check(authorities, default)],
        [root] if !mixed => vec![check(authorities, *root)],
        _ => roots
            .iter()
            .map(|root| {
                let part: Vec<Authority> = authorities
                    .iter()
                    .filter(sigstore)
                    .filter(|a| same(a.trust(default), *root))
                    .cloned()
                    .collect();
                check(&part, *root)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
