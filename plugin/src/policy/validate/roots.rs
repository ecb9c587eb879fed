//! The trusted roots of a policy: `spec.trustedRoot` and `spec.trustedRoots` read and checked,
//! each keyless authority given the root it names, and authorities refused whose root could
//! never give them a signing time.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    super::{Authority, AuthorityKind, Tlog, DEFAULT_ROOT, MAX_TRUSTED_ROOTS, MAX_TRUSTED_ROOT_BYTES},
    Validator,
};
use crate::{file::read_bounded, verify::TrustMaterial};

/// A trusted root the policy names; `trust` is `None` when it did not load (already reported).
pub(super) struct RootSlot {
    pub(super) name: String,
    pub(super) path: PathBuf,
    pub(super) trust: Option<Arc<TrustMaterial>>,
}

// === impl Validator ===

impl Validator<'_> {
    /// `spec.trustedRoots`: each name checked and each root read, in the order of their names.
    pub(super) fn named_roots(&mut self, roots: BTreeMap<String, String>) {
        if !self.bounded("spec.trustedRoots", "trusted roots", roots.len(), MAX_TRUSTED_ROOTS) {
            return;
        }
        for (name, path) in roots {
            let field = format!("spec.trustedRoots.{name}");
            if !self.name(&field, &name) {
                continue;
            }
            if name == DEFAULT_ROOT {
                let message = format!("the name {DEFAULT_ROOT:?} stands for spec.trustedRoot; choose another");
                self.error(&field, message);
                continue;
            }
            self.root(&field, name, Path::new(&path));
        }
    }

    /// Reads one trusted root into [`Validator::roots`], a slot even when it does not load, so
    /// that authorities naming it are not also told the name is unknown.
    pub(super) fn root(&mut self, field: &str, name: String, path: &Path) {
        let Some(path) = self.path(field, path) else {
            return;
        };
        let trust = self.trust_material(field, &path);
        self.roots.push(RootSlot { name, path, trust });
    }

    /// Reads a Sigstore trusted root; it is part of the policy's generation.
    pub(super) fn trust_material(&mut self, field: &str, path: &Path) -> Option<Arc<TrustMaterial>> {
        let shown = path.display();
        let bytes = match read_bounded(path, MAX_TRUSTED_ROOT_BYTES) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.error(field, format!("{shown}: {e}"));
                return None;
            }
        };
        self.hash_part(&bytes);
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|e| e.to_string())
            .and_then(TrustMaterial::from_json);
        match parsed {
            Ok(trust) => Some(Arc::new(trust)),
            Err(e) => {
                self.error(field, format!("{shown}: {e}"));
                None
            }
        }
    }

    /// The root a keyless authority names (`spec.trustedRoot` when it names none); `None`, with
    /// the error recorded unless the root itself failed to load, when there is no such root.
    pub(super) fn keyless_root(&mut self, field: &str, name: Option<&str>) -> Option<Arc<TrustMaterial>> {
        let wanted = name.unwrap_or(DEFAULT_ROOT);
        if let Some(slot) = self.roots.iter().find(|slot| slot.name == wanted) {
            return slot.trust.clone();
        }
        match name {
            None => self.error(
                field,
                "keyless authorities need spec.trustedRoot (a Sigstore trusted_root.json), \
                 or keyless.trustedRoot naming one of spec.trustedRoots",
            ),
            Some(name) => {
                let known: Vec<&str> = self.roots.iter().map(|slot| slot.name.as_str()).collect();
                let known = match known.as_slice() {
                    [] => "the policy names no trusted root".to_string(),
                    names => format!("known: {}", names.join(", ")),
                };
                let message = format!("unknown trusted root {name:?}; {known}");
                self.error(&format!("{field}.trustedRoot"), message);
            }
        }
        None
    }

    /// An authority whose root lacks what it needs could never admit anything: refused at load
    /// rather than denying every pull. `explicit_tlog` is whether the policy wrote `tlog`.
    pub(super) fn signing_time_sources(&mut self, field: &str, authority: &Authority, explicit_tlog: bool) {
        let keyless = match &authority.kind {
            AuthorityKind::Keyless(keyless) => Some(keyless),
            AuthorityKind::Key(_) | AuthorityKind::Notation(_) => None,
        };
        let default = self.roots.iter().find(|slot| slot.name == DEFAULT_ROOT);
        let trust = match keyless {
            Some(keyless) => keyless.trusted_root.clone(),
            None => default.and_then(|slot| slot.trust.clone()),
        };
        let Some(trust) = trust else {
            return;
        };
        let label = match self
            .roots
            .iter()
            .find(|slot| slot.trust.as_ref().is_some_and(|t| Arc::ptr_eq(t, &trust)))
        {
            Some(slot) if slot.name == DEFAULT_ROOT => format!("spec.trustedRoot {}", slot.path.display()),
            Some(slot) => format!("trusted root {:?} ({})", slot.name, slot.path.display()),
            None => "the trusted root".to_string(),
        };
        let root = trust.root();
        let tlog_field = if explicit_tlog {
            format!("{field}.tlog")
        } else {
            format!("{field}.keyless")
        };
        if authority.tlog == Tlog::Required && root.tlogs.is_empty() {
            let (default, instead) = match keyless {
                Some(_) => (
                    if explicit_tlog {
                        ""
                    } else {
                        " (the default for keyless)"
                    },
                    "set tlog: ignore to take the signing time from its timestamp authority",
                ),
                None => ("", "set tlog: optional or ignore"),
            };
            let message = format!("{label} lists no Rekor log, so tlog: required{default} can never be met; {instead}");
            self.error(&tlog_field, message);
            return;
        }
        if keyless.is_none() {
            return;
        }
        if root.certificate_authorities.is_empty() {
            let message = format!("{label} lists no Fulcio CA, so no keyless signature verifies under it");
            self.error(&format!("{field}.keyless"), message);
        }
        let logged = authority.tlog != Tlog::Ignore && !root.tlogs.is_empty();
        if !logged && root.timestamp_authorities.is_empty() {
            let message = format!(
                "{label} lists no timestamp authority, so with tlog: {} a keyless signature has no verified signing time",
                authority.tlog
            );
            self.error(&tlog_field, message);
        }
    }
}
