//! Several trusted roots (`spec.trustedRoots`, `keyless.trustedRoot`): each loaded and checked
//! with the policy, every error at its file and line, each keyless authority given its own.

use std::fs;

use sigstore_trust_root::{SIGSTORE_GITHUB_TRUSTED_ROOT, SIGSTORE_PRODUCTION_TRUSTED_ROOT};

use super::{indent, line_of, public_pem, with_rules};
use crate::policy::{AuthorityKind, Policy, PolicyError, DEFAULT_ROOT};

/// A directory holding the public-good root (`public.json`) and GitHub's (`github.json`:
/// Fulcio CAs and TSAs, no Rekor log, no CT log), and the policy's path in it.
struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("public.json"), SIGSTORE_PRODUCTION_TRUSTED_ROOT).unwrap();
        fs::write(dir.path().join("github.json"), SIGSTORE_GITHUB_TRUSTED_ROOT).unwrap();
        Self { dir }
    }

    fn policy_path(&self) -> std::path::PathBuf {
        self.dir.path().join("policy.yaml")
    }

    fn load(&self, text: &str) -> Result<Policy, Vec<PolicyError>> {
        fs::write(self.policy_path(), text).unwrap();
        Policy::load(&self.policy_path()).map_err(|e| e.into_vec())
    }

    fn errors(&self, text: &str) -> Vec<PolicyError> {
        match self.load(text) {
            Ok(_) => panic!("policy should be invalid:\n{text}"),
            Err(errors) => errors,
        }
    }
}

fn only(errors: Vec<PolicyError>) -> PolicyError {
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    errors.into_iter().next().unwrap()
}

const ROOTS: &str = "  trustedRoot: public.json\n  trustedRoots:\n    github: github.json\n";

/// One rule with a keyless authority: `keyless_extra` and `authority_extra` are YAML lines
/// (indented for the keyless mapping and the authority) added to it.
fn keyless_rule(keyless_extra: &str, authority_extra: &str) -> String {
    format!(
        "    - name: apps
      images: [\"ghcr.io/org/**\"]
      authorities:
        - name: ci
          keyless:
{keyless_extra}            issuer: https://token.actions.githubusercontent.com
            subjectRegExp: '^https://github\\.com/org/'
{authority_extra}"
    )
}

#[test]
fn a_keyless_authority_is_given_the_root_it_names_and_others_the_default() {
    let dir = Dir::new();
    let rules = format!(
        "{}{}",
        keyless_rule("            trustedRoot: github\n", "          tlog: ignore\n"),
        "    - name: public
      images: [\"docker.io/org/**\"]
      authorities:
        - name: ci
          keyless:
            issuer: https://token.actions.githubusercontent.com
            subject: https://github.com/org/repo/.github/workflows/release.yml@refs/heads/main
"
    );
    let policy = dir.load(&with_rules(ROOTS, &rules)).unwrap();
    let names: Vec<&str> = policy.roots().iter().map(|r| r.name()).collect();
    assert_eq!(names, [DEFAULT_ROOT, "github"]);
    assert_eq!(
        policy.trusted_root(),
        Some(dir.dir.path().join("public.json").as_path())
    );
    let root_of = |rule: usize| {
        let AuthorityKind::Keyless(keyless) = &policy.rules()[rule].authorities()[0].kind else {
            panic!("keyless");
        };
        keyless.trusted_root.clone().unwrap()
    };
    let (github, public) = (&policy.roots()[1], &policy.roots()[0]);
    assert!(std::ptr::eq(root_of(0).as_ref(), github.trust()));
    assert!(std::ptr::eq(root_of(1).as_ref(), public.trust()));
    // Each root is needed by its own authority only: GitHub's for a CA and, having no Rekor
    // log, a TSA; the public-good one for a CA, a CT log and Rekor.
    let github_needs = policy.root_needs(github);
    assert!(github_needs.ca && !github_needs.tlog, "{github_needs:?}");
    let public_needs = policy.root_needs(public);
    assert!(
        public_needs.ca && public_needs.tlog && !public_needs.tsa,
        "{public_needs:?}"
    );
    let series = policy.trust_expiry_timestamps(jiff::Timestamp::now());
    let series: Vec<&str> = series.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(series, [DEFAULT_ROOT, "github"]);
}

#[test]
fn only_named_roots_are_enough_for_keyless_authorities_that_name_them() {
    let dir = Dir::new();
    let text = with_rules(
        "  trustedRoots:\n    github: github.json\n",
        &keyless_rule("            trustedRoot: github\n", "          tlog: ignore\n"),
    );
    let policy = dir.load(&text).unwrap();
    assert_eq!(policy.trust().map(|t| t.version()), None, "no spec.trustedRoot");
    assert_eq!(policy.roots().len(), 1);
}

#[test]
fn an_unknown_root_name_is_an_error_at_its_line_naming_the_known_ones() {
    let dir = Dir::new();
    let text = with_rules(
        ROOTS,
        &keyless_rule("            trustedRoot: gihtub\n", "          tlog: ignore\n"),
    );
    let errors = dir.errors(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let error = &errors[0];
    assert_eq!(error.field, "spec.rules[0].authorities[0].keyless.trustedRoot");
    assert_eq!(error.line, Some(line_of(&text, "gihtub")));
    assert_eq!(error.file, dir.policy_path());
    assert!(error.message.contains("unknown trusted root \"gihtub\""), "{error}");
    assert!(error.message.contains("default, github"), "{error}");
}

#[test]
fn an_unreadable_or_broken_root_is_an_error_at_its_line_and_nothing_loads() {
    let dir = Dir::new();
    fs::write(dir.dir.path().join("broken.json"), "{\"mediaType\": ").unwrap();
    let text = with_rules(
        "  trustedRoot: public.json\n  trustedRoots:\n    broken: broken.json\n    gone: missing.json\n",
        &keyless_rule("            trustedRoot: gone\n", ""),
    );
    let errors = dir.errors(&text);
    assert_eq!(
        errors.len(),
        2,
        "only the roots, not the authority naming one: {errors:#?}"
    );
    let broken = errors.iter().find(|e| e.field == "spec.trustedRoots.broken").unwrap();
    assert_eq!(broken.line, Some(line_of(&text, "broken: broken.json")));
    assert!(broken.message.contains("broken.json"), "{broken}");
    assert!(broken.message.contains("not a trusted root"), "{broken}");
    let gone = errors.iter().find(|e| e.field == "spec.trustedRoots.gone").unwrap();
    assert_eq!(gone.line, Some(line_of(&text, "gone: missing.json")));
    assert!(gone.message.contains("missing.json"), "{gone}");
}

#[test]
fn tlog_required_on_a_root_without_a_rekor_log_is_an_error_at_its_line() {
    let dir = Dir::new();
    // Written out…
    let text = with_rules(
        ROOTS,
        &keyless_rule("            trustedRoot: github\n", "          tlog: required\n"),
    );
    let error = only(dir.errors(&text));
    assert_eq!(error.field, "spec.rules[0].authorities[0].tlog");
    assert_eq!(error.line, Some(line_of(&text, "tlog: required")));
    assert!(error.message.contains("\"github\""), "{error}");
    assert!(error.message.contains("lists no Rekor log"), "{error}");
    assert!(error.message.contains("tlog: ignore"), "{error}");
    // …or keyless's default.
    let text = with_rules(ROOTS, &keyless_rule("            trustedRoot: github\n", ""));
    let error = only(dir.errors(&text));
    assert_eq!(error.field, "spec.rules[0].authorities[0].keyless");
    assert_eq!(error.line, Some(line_of(&text, "keyless:")));
    assert!(error.message.contains("the default for keyless"), "{error}");
    // The same holds of spec.trustedRoot, and of key authorities that check the log there.
    let text = with_rules(
        "  trustedRoot: github.json\n",
        &format!(
            "    - name: keyed
      images: [\"ghcr.io/org/**\"]
      authorities:
        - name: release
          key:
            publicKey: |
{}          tlog: required
",
            indent(&public_pem(), 14)
        ),
    );
    let error = only(dir.errors(&text));
    assert_eq!(error.field, "spec.rules[0].authorities[0].tlog");
    assert!(error.message.contains("spec.trustedRoot"), "{error}");
}

#[test]
fn a_keyless_authority_with_no_source_of_signing_time_is_an_error() {
    let dir = Dir::new();
    let mut root: serde_json::Value = serde_json::from_str(SIGSTORE_GITHUB_TRUSTED_ROOT).unwrap();
    root["timestampAuthorities"] = serde_json::json!([]);
    fs::write(dir.dir.path().join("bare.json"), root.to_string()).unwrap();
    let text = with_rules(
        "  trustedRoots:\n    bare: bare.json\n",
        &keyless_rule("            trustedRoot: bare\n", "          tlog: ignore\n"),
    );
    let error = only(dir.errors(&text));
    assert_eq!(error.field, "spec.rules[0].authorities[0].tlog");
    assert!(error.message.contains("lists no timestamp authority"), "{error}");
}

#[test]
fn root_names_are_checked_and_default_is_reserved() {
    let dir = Dir::new();
    let text = with_rules(
        "  trustedRoot: public.json\n  trustedRoots:\n    default: github.json\n    \"a b\": github.json\n",
        "",
    );
    let errors = dir.errors(&text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    let reserved = errors.iter().find(|e| e.field == "spec.trustedRoots.default").unwrap();
    assert_eq!(reserved.line, Some(line_of(&text, "default: github.json")));
    assert!(reserved.message.contains("stands for spec.trustedRoot"), "{reserved}");
    assert!(errors.iter().any(|e| e.field == "spec.trustedRoots.a b"), "{errors:#?}");
}

#[test]
fn a_root_no_authority_names_loads_and_is_checked() {
    let dir = Dir::new();
    let text = with_rules(ROOTS, &keyless_rule("", ""));
    let policy = dir.load(&text).unwrap();
    let github = &policy.roots()[1];
    assert_eq!(policy.root_needs(github), crate::verify::TrustNeeds::default());
    let series = policy.trust_expiry_timestamps(jiff::Timestamp::now());
    assert_eq!(series[1], ("github".to_string(), f64::INFINITY));
    // Unused, it is still read: a broken one fails the load.
    fs::write(dir.dir.path().join("github.json"), "[]").unwrap();
    let errors = dir.errors(&text);
    assert_eq!(errors[0].field, "spec.trustedRoots.github", "{errors:#?}");
}

#[test]
fn a_changed_named_root_changes_the_generation() {
    let dir = Dir::new();
    let text = with_rules(
        ROOTS,
        &keyless_rule("            trustedRoot: github\n", "          tlog: ignore\n"),
    );
    let before = dir.load(&text).unwrap().hash().to_string();
    assert_eq!(dir.load(&text).unwrap().hash(), before, "same files, same generation");
    let mut root: serde_json::Value = serde_json::from_str(SIGSTORE_GITHUB_TRUSTED_ROOT).unwrap();
    root["timestampAuthorities"].as_array_mut().unwrap().remove(0);
    fs::write(dir.dir.path().join("github.json"), root.to_string()).unwrap();
    assert_ne!(dir.load(&text).unwrap().hash(), before);
}

#[test]
fn duplicate_root_names_are_refused() {
    let dir = Dir::new();
    let text = with_rules(
        "  trustedRoots:\n    github: github.json\n    github: public.json\n",
        "",
    );
    let errors = dir.errors(&text);
    assert!(errors[0].message.contains("duplicate key `github`"), "{errors:#?}");
}
