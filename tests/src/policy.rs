//! SPEC §4 policy documents for tests, written as YAML text the way an operator would.

/// A policy that lets every image through (`noMatch: allow`, no rules): for tests of the
/// process around the gate, not of its decisions.
pub const OPEN_POLICY: &str = "apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: open
spec:
  noMatch: allow
  rules: []
";

/// A policy in enforce mode that denies unmatched images, with one rule `signed` that requires
/// a signature by the key `public_key_pem` (named `authority`) for `images` (globs such as
/// `127.0.0.1:PORT/signed/**`).
pub fn key_policy(authority: &str, public_key_pem: &str, images: &[&str]) -> String {
    // JSON strings are YAML flow scalars: globs with `*` need no further quoting care.
    let q = |s: &str| serde_json::to_string(s).expect("encode a string");
    let images: Vec<String> = images.iter().map(|i| q(i)).collect();
    let pem = key_block(public_key_pem);
    format!(
        "apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: test
spec:
  mode: enforce
  noMatch: deny
  rules:
    - name: signed
      images: [{images}]
      authorities:
        - name: {authority}
          key:
            publicKey: |
{pem}",
        images = images.join(", "),
        authority = q(authority),
    )
}

/// A PEM key as the block scalar under `key.publicKey: |` in a rule's authority (each line
/// indented 14 spaces, newline-terminated).
pub fn key_block(public_key_pem: &str) -> String {
    public_key_pem.lines().map(|l| format!("              {l}\n")).collect()
}

/// A policy with `mode`, `noMatch` and the rules given as YAML list items (already indented
/// by four spaces, starting with `- name:`).
pub fn policy(mode: &str, no_match: &str, rules: &[String]) -> String {
    format!(
        "apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: test
spec:
  mode: {mode}
  noMatch: {no_match}
  rules:
{}",
        rules.concat()
    )
}

/// One rule item for [`policy`]. `extra` holds further rule fields (each line indented by six
/// spaces), such as `action: allow` or `namespaces: [dev]`; `key` adds one key authority.
pub fn rule(name: &str, images: &[&str], extra: &str, key: Option<(&str, &str)>) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("encode a string");
    let images: Vec<String> = images.iter().map(|i| q(i)).collect();
    let mut out = format!("    - name: {name}\n      images: [{}]\n", images.join(", "));
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        out.push_str(&format!("      {}\n", line.trim()));
    }
    if let Some((authority, pem)) = key {
        out.push_str(&format!(
            "      authorities:\n        - name: {authority}\n          key:\n            publicKey: |\n"
        ));
        for l in pem.lines() {
            out.push_str(&format!("              {l}\n"));
        }
    }
    out
}

/// A policy whose one rule `apps`, for `images`, requires a keyless signature by `issuer` with
/// a subject matching `subject_regexp`, checked against `trusted_root`.
pub fn keyless_policy(trusted_root: &std::path::Path, images: &str, issuer: &str, subject_regexp: &str) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("encode a string");
    format!(
        "apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: keyless
spec:
  trustedRoot: {root}
  rules:
    - name: apps
      images: [{images}]
      authorities:
        - name: ci
          keyless:
            issuer: {issuer}
            subjectRegExp: {subject}
",
        root = q(&trusted_root.display().to_string()),
        images = q(images),
        issuer = q(issuer),
        subject = q(subject_regexp),
    )
}

/// A policy whose one rule `apps`, for `images`, requires a keyless signature by `issuer` and
/// `subject` (exact) checked against `trusted_root`, and the `attestations` given as YAML list
/// items (indented by eight spaces, starting with `- name:`).
pub fn keyless_attestation_policy(
    trusted_root: &std::path::Path,
    images: &str,
    issuer: &str,
    subject: &str,
    attestations: &str,
) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("encode a string");
    format!(
        "apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: attested
spec:
  trustedRoot: {root}
  rules:
    - name: apps
      images: [{images}]
      authorities:
        - name: ci
          keyless:
            issuer: {issuer}
            subject: {subject}
      attestations:
{attestations}",
        root = q(&trusted_root.display().to_string()),
        images = q(images),
        issuer = q(issuer),
        subject = q(subject),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_policy_is_the_yaml_it_means() {
        let pem = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n";
        let yaml = key_policy("k", pem, &["127.0.0.1:5000/signed/**", "x/*"]);
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(doc["kind"].as_str(), Some("ImagePolicy"));
        assert_eq!(doc["spec"]["mode"].as_str(), Some("enforce"));
        let rule = &doc["spec"]["rules"][0];
        assert_eq!(rule["images"][0].as_str(), Some("127.0.0.1:5000/signed/**"));
        assert_eq!(rule["images"][1].as_str(), Some("x/*"));
        assert_eq!(rule["authorities"][0]["name"].as_str(), Some("k"));
        assert_eq!(rule["authorities"][0]["key"]["publicKey"].as_str(), Some(pem));
    }
}
