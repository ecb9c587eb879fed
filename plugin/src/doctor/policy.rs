//! The policy and the trust material it names: the policy loads, and each kind of trust
//! anchor its authorities need is valid now and not about to expire.

use std::{
    fs,
    path::{Path, PathBuf},
};

use jiff::{SignedDuration, Timestamp};
use sigstore_trust_root::TrustedRoot;

use super::Check;
use crate::{
    policy::{Policy, PolicyErrors, Tlog, DEFAULT_ROOT, MAX_TRUSTED_ROOT_BYTES},
    verify::{
        expiry::{self, AnchorKind, Standing, Window},
        TrustNeeds,
    },
};

/// Trust material that expires sooner than this is worth a warning: time to fetch a new root.
const EXPIRY_WARNING: SignedDuration = SignedDuration::from_hours(30 * 24);

/// The policy loads and validates, with its trusted root.
pub(super) fn policy_loads(path: &Path, loaded: &Result<Policy, PolicyErrors>) -> Check {
    match loaded {
        Ok(policy) => {
            let rules = policy.rules().len();
            Check::ok(format!(
                "policy {} loads: {:?}, {rules} rule{}, hash {}",
                path.display(),
                policy.name(),
                if rules == 1 { "" } else { "s" },
                policy.hash()
            ))
        }
        Err(errors) => {
            let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
            Check::fail(
                format!("policy does not load: {}", all.join("; ")),
                format!(
                    "correct it (`pullgate policy check {}` lists every error), then reload pullgate (SIGHUP); a running pullgate keeps its last good policy",
                    path.display()
                ),
            )
        }
    }
}

/// The trust material the policy names is valid now and not about to expire, kind by kind and
/// root by root (`spec.trustedRoot`, then each of `spec.trustedRoots`).
///
/// When the policy does not load, its roots and authorities are still read from the YAML, so
/// an expired root is reported beside the policy's other errors.
pub(super) fn trust_material(policy_path: &Path, policy: Option<&Policy>, now: Timestamp) -> Vec<Check> {
    let roots: Vec<RawRoot> = match policy {
        Some(policy) => policy
            .roots()
            .iter()
            .map(|root| RawRoot {
                name: root.name().to_string(),
                path: Some(root.path().to_owned()),
                needs: policy.root_needs(root),
            })
            .collect(),
        None => match raw_trust_needs(policy_path) {
            Some(found) => found,
            None => return Vec::new(),
        },
    };
    let mut checks = Vec::new();
    for RawRoot { name, path, needs } in roots {
        // A keyless authority without a trusted root is a policy error, reported there.
        let Some(path) = path else { continue };
        let loaded = policy
            .and_then(|p| p.roots().iter().find(|r| r.name() == name))
            .map(|r| Ok(r.trust().root().clone()));
        match loaded.unwrap_or_else(|| read_trusted_root(&path)) {
            Ok(root) => {
                if name != DEFAULT_ROOT && needs == TrustNeeds::default() {
                    checks.push(Check::warn(
                        format!(
                            "trusted root {name:?} ({}) is in spec.trustedRoots, but no authority names it",
                            path.display()
                        ),
                        "name it in a keyless authority's trustedRoot, or remove it from spec.trustedRoots",
                    ));
                }
                checks.extend(root_expiry(&name, &path, &root, needs, now));
            }
            Err(e) => checks.push(Check::fail(
                format!("trusted root {}: {e}", label(&name, &path)),
                "install Sigstore's trusted_root.json there (the TUF target of that name) and reload pullgate",
            )),
        }
    }
    if checks.is_empty() && policy.is_some() {
        checks.push(Check::ok("policy names no trustedRoot: key authorities only"));
    }
    checks
}

/// A root as messages name it: `spec.trustedRoot` by its path, the others by name and path.
fn label(name: &str, path: &Path) -> String {
    match name {
        DEFAULT_ROOT => path.display().to_string(),
        name => format!("{name:?} ({})", path.display()),
    }
}

/// The checks of each kind of trust material in `spec.trustedRoot`'s `root`, at `now`.
#[cfg(test)]
pub(super) fn trust_expiry(root_path: &Path, root: &TrustedRoot, needs: TrustNeeds, now: Timestamp) -> Vec<Check> {
    root_expiry(DEFAULT_ROOT, root_path, root, needs, now)
}

/// The checks of each kind of trust material in the root called `name`, at `now`.
fn root_expiry(name: &str, root_path: &Path, root: &TrustedRoot, needs: TrustNeeds, now: Timestamp) -> Vec<Check> {
    let label = label(name, root_path);
    expiry::anchor_kinds(root, needs)
        .into_iter()
        .filter_map(|kind| expiry_of_kind(&label, root_path, kind, now))
        .collect()
}

/// One kind of trust anchor: FAIL when the policy needs it and none is valid now, warn when
/// the last valid one ends within [`EXPIRY_WARNING`]. `None` for a kind neither present nor
/// needed.
fn expiry_of_kind(root: &str, root_path: &Path, kind: AnchorKind, now: Timestamp) -> Option<Check> {
    let AnchorKind {
        name: kind,
        needed_because,
        windows,
    } = kind;
    let renew = format!(
        "install a current trusted_root.json at {} (the TUF target of that name of its Sigstore instance) and reload pullgate (SIGHUP)",
        root_path.display()
    );
    if let Some(e) = windows.iter().find_map(|w| w.as_ref().err()) {
        return Some(Check::fail(format!("trusted root {root}: a {kind}: {e}"), renew));
    }
    let windows: Vec<Window> = windows.into_iter().flatten().collect();
    if windows.is_empty() {
        return needed_because.map(|why| {
            Check::fail(
                format!("trusted root {root} names no {kind}; {why}"),
                format!("use a trusted_root.json that lists one: {renew}"),
            )
        });
    }
    let (count, until) = match expiry::standing(&windows, now) {
        Standing::Valid { count, until } => (count, until),
        Standing::NoneValid { ended } => {
            let state = match ended {
                Some(end) => format!("the last one expired {end}"),
                None => "none has started yet".to_string(),
            };
            let message = format!("no {kind} in trusted root {root} is valid now: {state}");
            return Some(match needed_because {
                Some(why) => Check::fail(format!("{message}; {why}"), renew),
                None => Check::warn(format!("{message} (no authority of the policy needs one)"), renew),
            });
        }
    };
    let plural = if count == 1 { "" } else { "s" };
    Some(match until {
        None => Check::ok(format!(
            "trust {root}: {count} {kind}{plural} valid now, with no end date"
        )),
        Some(end) if end.duration_since(now) < EXPIRY_WARNING => {
            let days = end.duration_since(now).as_secs() / 86_400;
            Check::warn(
                format!("trust: the last valid {kind} in {root} expires {end} (in {days} days)"),
                format!("before then, {renew}"),
            )
        }
        Some(end) => Check::ok(format!("trust {root}: {count} {kind}{plural} valid now, until {end}")),
    })
}

/// One trusted root of a policy and what the authorities that use it need.
#[derive(Debug)]
pub(super) struct RawRoot {
    pub name: String,
    /// `None` for [`DEFAULT_ROOT`] when the policy has no `spec.trustedRoot`.
    pub path: Option<PathBuf>,
    pub needs: TrustNeeds,
}

/// The roots a policy names (`spec.trustedRoot` first, as [`DEFAULT_ROOT`], always present;
/// paths resolved against the policy's directory) and what the authorities need of each, read
/// leniently from a policy file that does not validate. `None` when it is not even YAML.
pub(super) fn raw_trust_needs(policy_path: &Path) -> Option<Vec<RawRoot>> {
    let text = fs::read_to_string(policy_path).ok()?;
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).ok()?;
    let spec = doc.get("spec")?;
    let base = policy_path.parent().unwrap_or(Path::new("."));
    let mut roots = vec![RawRoot {
        name: DEFAULT_ROOT.to_string(),
        path: spec.get("trustedRoot").and_then(|v| v.as_str()).map(|p| base.join(p)),
        needs: TrustNeeds::default(),
    }];
    let named = spec
        .get("trustedRoots")
        .and_then(|r| r.as_mapping())
        .into_iter()
        .flatten();
    for (name, path) in named {
        if let (Some(name), Some(path)) = (name.as_str(), path.as_str()) {
            if name != DEFAULT_ROOT {
                roots.push(RawRoot {
                    name: name.to_string(),
                    path: Some(base.join(path)),
                    needs: TrustNeeds::default(),
                });
            }
        }
    }
    // Each authority as (the root it uses, keyless, tlog).
    let authorities: Vec<(&str, bool, Tlog)> = spec
        .get("rules")
        .and_then(|r| r.as_sequence())
        .into_iter()
        .flatten()
        .filter_map(|rule| rule.get("authorities").and_then(|a| a.as_sequence()))
        .flatten()
        .map(|authority| {
            let keyless = authority.get("keyless");
            // Read and defaulted as the policy reads it; a value it refuses is reported there
            // and asks for nothing here.
            let tlog = authority.get("tlog").cloned().unwrap_or_default();
            let tlog = match serde_yaml_ng::from_value::<Option<Tlog>>(tlog) {
                Ok(Some(tlog)) => tlog,
                Ok(None) => Tlog::default_for(keyless.is_some()),
                Err(_) => Tlog::Optional,
            };
            let named = keyless.and_then(|k| k.get("trustedRoot")).and_then(|n| n.as_str());
            (named.unwrap_or(DEFAULT_ROOT), keyless.is_some(), tlog)
        })
        .collect();
    for root in &mut roots {
        let users = authorities.iter().filter(|(name, ..)| *name == root.name);
        root.needs = TrustNeeds::of(users.map(|&(_, keyless, tlog)| (keyless, tlog)));
    }
    Some(roots)
}

/// Reads a trusted root the policy could not load for us, bounded as the policy bounds it.
fn read_trusted_root(path: &Path) -> Result<TrustedRoot, String> {
    let meta = fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_TRUSTED_ROOT_BYTES {
        return Err(format!("larger than {MAX_TRUSTED_ROOT_BYTES} bytes"));
    }
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    TrustedRoot::from_json(&text).map_err(|e| format!("not a trusted root: {e}"))
}
