//! Checks a parsed policy document and compiles it into a [`Policy`]: globs compiled, keys read
//! and parsed, defaults filled in. Every error found is collected, each with the line of the
//! field it is about.

mod notation;
mod roots;

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use sha2::{Digest as _, Sha256};

use self::roots::RootSlot;

use crate::file::read_bounded;

use super::{
    key::{self, PublicKey, MAX_KEY_FILE_BYTES},
    lines::LineIndex,
    schema::{AttestationDoc, AuthorityDoc, Document, KeyDoc, KeylessDoc, RuleDoc},
    yaml, Action, Attestation, Authority, AuthorityKind, Condition, FulcioClaim, IdentityMatch, ImageGlob, Keyless,
    NamespaceGlob, Policy, PolicyError, PolicyErrors, PolicyRoot, Rule, SignatureRepository, Tlog, API_VERSION,
    DEFAULT_ROOT, KIND, MAX_AGE_NEEDS_KEYLESS, MAX_CONDITIONS,
};

/// Bounds on what one policy may hold, so that a runaway file is refused whole.
const MAX_RULES: usize = 1000;
const MAX_AUTHORITIES: usize = 100;
const MAX_ATTESTATIONS: usize = 100;
const MAX_LIST: usize = 1000;
const MAX_NAME_LEN: usize = 253;

/// Parses and validates `text`, read from `file`.
pub(super) fn compile(text: &str, file: &Path) -> Result<Policy, PolicyErrors> {
    if let Some(line) = yaml::too_deep(text) {
        return Err(PolicyErrors::one(PolicyError {
            file: file.to_owned(),
            line: Some(line),
            field: String::new(),
            message: format!(
                "flow collections ([ ] and {{ }}) nested deeper than {} levels",
                yaml::MAX_FLOW_DEPTH
            ),
        }));
    }
    let doc: Document =
        serde_yaml_ng::from_str(text).map_err(|e| PolicyErrors::one(PolicyError::from_yaml(file, &e)))?;
    let lines = LineIndex::build(text);
    let mut validator = Validator {
        file,
        base: file.parent().unwrap_or(Path::new("")),
        lines: &lines,
        errors: Vec::new(),
        hash: Sha256::new(),
        roots: Vec::new(),
    };
    validator.hash_part(text.as_bytes());
    let policy = validator.policy(doc);
    match PolicyErrors::new(validator.errors) {
        Some(errors) => Err(errors),
        None => Ok(policy),
    }
}

/// Walks a document, building what is valid and recording what is not.
struct Validator<'a> {
    file: &'a Path,
    /// Relative key paths and `trustedRoot` are relative to the policy file's directory.
    base: &'a Path,
    lines: &'a LineIndex,
    errors: Vec<PolicyError>,
    /// Over the policy text and every key file and trusted root read, in document order.
    hash: Sha256,
    /// `spec.trustedRoot` (as [`DEFAULT_ROOT`]) and `spec.trustedRoots`, by name, read before
    /// the rules so keyless authorities can be given theirs.
    roots: Vec<RootSlot>,
}

/// Names already used in one scope, with the field that first used each.
type Seen = HashMap<String, String>;

// === impl Validator ===

impl Validator<'_> {
    fn error(&mut self, field: &str, message: impl fmt::Display) {
        self.errors.push(PolicyError {
            file: self.file.to_owned(),
            line: self.lines.line(field),
            field: field.to_string(),
            message: message.to_string(),
        });
    }

    /// Adds one input to the generation hash. Each part is length-prefixed, so moving bytes
    /// from one file to another changes the hash too.
    fn hash_part(&mut self, bytes: &[u8]) {
        self.hash.update((bytes.len() as u64).to_be_bytes());
        self.hash.update(bytes);
    }

    fn policy(&mut self, doc: Document) -> Policy {
        if doc.api_version != API_VERSION {
            let message = format!("must be {API_VERSION}, not {:?}", doc.api_version);
            self.error("apiVersion", message);
        }
        if doc.kind != KIND {
            self.error("kind", format!("must be {KIND}, not {:?}", doc.kind));
        }
        self.name("metadata.name", &doc.metadata.name);
        if let Some(path) = doc.spec.trusted_root {
            self.root("spec.trustedRoot", DEFAULT_ROOT.to_string(), &path);
        }
        self.named_roots(doc.spec.trusted_roots);
        let rules = self.rules(doc.spec.rules);
        // A root that did not load has been reported, and its policy is not returned.
        let roots = std::mem::take(&mut self.roots)
            .into_iter()
            .filter_map(|slot| {
                Some(PolicyRoot {
                    trust: slot.trust?,
                    name: slot.name,
                    path: slot.path,
                })
            })
            .collect();
        Policy {
            file: self.file.to_owned(),
            name: doc.metadata.name,
            mode: doc.spec.mode,
            no_match: doc.spec.no_match,
            roots,
            rules,
            hash: format!("sha256:{}", hex::encode(self.hash.clone().finalize())),
        }
    }

    fn rules(&mut self, docs: Vec<RuleDoc>) -> Vec<Rule> {
        if !self.bounded("spec.rules", "rules", docs.len(), MAX_RULES) {
            return Vec::new();
        }
        let mut seen = Seen::new();
        let mut rules = Vec::with_capacity(docs.len());
        for (i, doc) in docs.into_iter().enumerate() {
            let field = format!("spec.rules[{i}]");
            self.unique_name(&mut seen, "rule", &field, &doc.name);
            rules.push(self.rule(&field, doc));
        }
        rules
    }

    fn rule(&mut self, field: &str, doc: RuleDoc) -> Rule {
        let images = self.globs(&format!("{field}.images"), &doc.images, ImageGlob::parse);
        if doc.images.is_empty() {
            self.error(&format!("{field}.images"), "must list at least one image glob");
        }
        let namespaces = doc.namespaces.map(|patterns| {
            let field = format!("{field}.namespaces");
            if patterns.is_empty() {
                self.error(&field, "matches no namespace; omit it to match every namespace");
            }
            self.globs(&field, &patterns, NamespaceGlob::parse)
        });
        let exclude_field = format!("{field}.excludeNamespaces");
        let exclude_namespaces = self.globs(&exclude_field, &doc.exclude_namespaces, NamespaceGlob::parse);

        match doc.action {
            Action::Verify if doc.authorities.is_empty() => {
                let message = "a rule with action verify needs at least one authority";
                self.error(&format!("{field}.authorities"), message);
            }
            Action::Verify => {}
            Action::Allow | Action::Deny => {
                for (list, empty) in [
                    ("requireSignature", doc.require_signature.is_none()),
                    ("authorities", doc.authorities.is_empty()),
                    ("attestations", doc.attestations.is_empty()),
                    ("signatureRepository", doc.signature_repository.is_none()),
                ] {
                    if !empty {
                        let message = format!(
                            "a rule with action {} verifies nothing, so it takes no {list}; \
                             remove the field or use action verify",
                            doc.action
                        );
                        self.error(&format!("{field}.{list}"), message);
                    }
                }
            }
        }
        // Without a signature of its own, only attestations prove the image: a rule asking for
        // none would admit anything its authorities never touched.
        let require_signature = doc.require_signature.unwrap_or(true);
        if !require_signature && doc.action == Action::Verify && doc.attestations.is_empty() {
            self.error(
                &format!("{field}.requireSignature"),
                "a rule with requireSignature false needs at least one attestation, which then proves the image",
            );
        }
        // Read from what was written, so a broken keyless authority is not reported twice.
        let keyless = doc.authorities.iter().any(|a| a.keyless.is_some());
        let sigstore = doc.authorities.iter().any(|a| a.notation.is_none());
        if !doc.attestations.is_empty() && !doc.authorities.is_empty() && !sigstore {
            self.error(
                &format!("{field}.attestations"),
                "attestations are checked against the rule's key and keyless authorities, and this rule has \
                 only Notation authorities; add a key or keyless authority",
            );
        }
        let signed = !doc.authorities.is_empty();
        let signature_repository = doc.signature_repository.as_deref().and_then(|text| {
            let field = format!("{field}.signatureRepository");
            SignatureRepository::parse(text).map_err(|e| self.error(&field, e)).ok()
        });
        let authorities = self.authorities(&format!("{field}.authorities"), doc.authorities);
        let attestations = self.attestations(&format!("{field}.attestations"), doc.attestations);
        for (i, attestation) in attestations.iter().enumerate() {
            if attestation.max_age.is_some() && signed && !keyless {
                self.error(
                    &format!("{field}.attestations[{i}].maxAge"),
                    format!("{MAX_AGE_NEEDS_KEYLESS}; use a keyless authority, or drop maxAge"),
                );
            }
        }

        Rule {
            name: doc.name,
            images,
            namespaces,
            exclude_namespaces,
            action: doc.action,
            mode: doc.mode,
            require_signature,
            authorities,
            attestations,
            signature_repository,
        }
    }

    /// Compiles every pattern of a glob list, reporting each bad one at its own line.
    fn globs<G, E: fmt::Display>(
        &mut self,
        field: &str,
        patterns: &[String],
        parse: impl Fn(&str) -> Result<G, E>,
    ) -> Vec<G> {
        if !self.bounded(field, "globs", patterns.len(), MAX_LIST) {
            return Vec::new();
        }
        let mut globs = Vec::with_capacity(patterns.len());
        for (i, pattern) in patterns.iter().enumerate() {
            match parse(pattern) {
                Ok(glob) => globs.push(glob),
                Err(e) => self.error(&format!("{field}[{i}]"), format!("{pattern:?}: {e}")),
            }
        }
        globs
    }

    fn authorities(&mut self, field: &str, docs: Vec<AuthorityDoc>) -> Vec<Authority> {
        if !self.bounded(field, "authorities", docs.len(), MAX_AUTHORITIES) {
            return Vec::new();
        }
        let mut seen = Seen::new();
        let mut authorities = Vec::with_capacity(docs.len());
        for (i, doc) in docs.into_iter().enumerate() {
            let field = format!("{field}[{i}]");
            self.unique_name(&mut seen, "authority", &field, &doc.name);
            authorities.extend(self.authority(&field, doc));
        }
        authorities
    }

    fn authority(&mut self, field: &str, doc: AuthorityDoc) -> Option<Authority> {
        let explicit_tlog = doc.tlog.is_some();
        let (kind, default_tlog) = match (doc.key, doc.keyless, doc.notation) {
            (Some(key), None, None) => (
                self.key(&format!("{field}.key"), key).map(AuthorityKind::Key),
                Tlog::default_for(false),
            ),
            (None, Some(keyless), None) => (
                self.keyless(&format!("{field}.keyless"), keyless)
                    .map(AuthorityKind::Keyless),
                Tlog::default_for(true),
            ),
            (None, None, Some(notation)) => {
                if explicit_tlog {
                    let message = "a Notation authority takes no tlog: its signatures are not logged in Rekor";
                    self.error(&format!("{field}.tlog"), message);
                }
                let trust = self.notation(&format!("{field}.notation"), notation);
                (trust.map(|t| AuthorityKind::Notation(Arc::new(t))), Tlog::Ignore)
            }
            (None, None, None) => {
                self.error(field, "set one of `key`, `keyless` or `notation`");
                (None, Tlog::Required)
            }
            _ => {
                self.error(field, "set exactly one of `key`, `keyless` or `notation`");
                (None, Tlog::Required)
            }
        };
        let authority = Authority {
            name: doc.name,
            kind: kind?,
            tlog: doc.tlog.unwrap_or(default_tlog),
        };
        if authority.kind.is_sigstore() {
            self.signing_time_sources(field, &authority, explicit_tlog);
        }
        Some(authority)
    }

    fn key(&mut self, field: &str, doc: KeyDoc) -> Option<Arc<PublicKey>> {
        let parsed = match (doc.public_key, doc.path) {
            (Some(pem), None) => {
                let field = format!("{field}.publicKey");
                key::parse_pem(&pem).map_err(|e| self.error(&field, e)).ok()
            }
            (None, Some(path)) => {
                let field = format!("{field}.path");
                let path = self.path(&field, &path)?;
                self.key_file(&field, &path)
            }
            _ => {
                self.error(field, "set exactly one of `publicKey` or `path`");
                None
            }
        };
        parsed.map(Arc::new)
    }

    fn key_file(&mut self, field: &str, path: &Path) -> Option<PublicKey> {
        let shown = path.display();
        let bytes = match read_bounded(path, MAX_KEY_FILE_BYTES) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.error(field, format!("{shown}: {e}"));
                return None;
            }
        };
        self.hash_part(&bytes);
        let Ok(pem) = std::str::from_utf8(&bytes) else {
            self.error(field, format!("{shown}: not a PEM public key: not UTF-8 text"));
            return None;
        };
        key::parse_pem(pem)
            .map_err(|e| self.error(field, format!("{shown}: {e}")))
            .ok()
    }

    fn keyless(&mut self, field: &str, doc: KeylessDoc) -> Option<Keyless> {
        let trusted_root = self.keyless_root(field, doc.trusted_root.as_deref());
        let issuer = self.identity(field, ("issuer", doc.issuer), ("issuerRegExp", doc.issuer_reg_exp));
        let subject = self.identity(field, ("subject", doc.subject), ("subjectRegExp", doc.subject_reg_exp));
        let mut extensions = BTreeMap::new();
        for (name, value) in doc.extensions {
            let field = format!("{field}.extensions.{name}");
            match FulcioClaim::from_name(&name) {
                Some(_) if value.is_empty() => self.error(&field, "must not be empty"),
                Some(claim) => {
                    extensions.insert(claim, value);
                }
                None => {
                    let hint = match FulcioClaim::from_name_ignoring_case(&name) {
                        Some(claim) => format!("did you mean {claim}?"),
                        None => format!("known claims: {}", FulcioClaim::ALL.map(FulcioClaim::name).join(", ")),
                    };
                    self.error(&field, format!("unknown Fulcio claim {name:?}; {hint}"));
                }
            }
        }
        Some(Keyless {
            issuer: issuer?,
            subject: subject?,
            extensions,
            trusted_root: Some(trusted_root?),
        })
    }

    /// Reads an exact-or-regexp pair such as `issuer`/`issuerRegExp`, of which exactly one must
    /// be set and not empty.
    fn identity(
        &mut self,
        field: &str,
        (exact_name, exact): (&str, Option<String>),
        (regexp_name, regexp): (&str, Option<String>),
    ) -> Option<IdentityMatch> {
        let (name, identity) = match (exact, regexp) {
            (Some(s), None) => (exact_name, IdentityMatch::Exact(s)),
            (None, Some(r)) if r.is_empty() => {
                self.error(&format!("{field}.{regexp_name}"), "must not be empty");
                return None;
            }
            (None, Some(r)) => match super::Re2Regex::new(&r) {
                Ok(compiled) => (regexp_name, IdentityMatch::RegExp(compiled)),
                Err(e) => {
                    self.error(
                        &format!("{field}.{regexp_name}"),
                        format!("not a valid regular expression: {e}"),
                    );
                    return None;
                }
            },
            (Some(_), Some(_)) => {
                let message = format!("set exactly one of `{exact_name}` or `{regexp_name}`, not both");
                self.error(&format!("{field}.{exact_name}"), message);
                return None;
            }
            (None, None) => {
                self.error(field, format!("set one of `{exact_name}` or `{regexp_name}`"));
                return None;
            }
        };
        if identity.as_str().is_empty() {
            self.error(&format!("{field}.{name}"), "must not be empty");
            return None;
        }
        Some(identity)
    }

    fn attestations(&mut self, field: &str, docs: Vec<AttestationDoc>) -> Vec<Attestation> {
        if !self.bounded(field, "attestations", docs.len(), MAX_ATTESTATIONS) {
            return Vec::new();
        }
        let mut seen = Seen::new();
        let mut attestations = Vec::with_capacity(docs.len());
        for (i, doc) in docs.into_iter().enumerate() {
            let field = format!("{field}[{i}]");
            self.unique_name(&mut seen, "attestation", &field, &doc.name);
            attestations.extend(self.attestation(&field, doc));
        }
        attestations
    }

    fn attestation(&mut self, field: &str, doc: AttestationDoc) -> Option<Attestation> {
        let predicate_type = match super::predicate::resolve(&doc.predicate_type) {
            _ if doc.predicate_type.is_empty() => {
                self.error(&format!("{field}.predicateType"), "must not be empty");
                doc.predicate_type
            }
            Ok(uri) => uri,
            Err(why) => {
                self.error(&format!("{field}.predicateType"), &why);
                doc.predicate_type
            }
        };
        let max_age = match &doc.max_age {
            None => None,
            Some(text) => self.duration(&format!("{field}.maxAge"), text),
        };
        let conditions = self.conditions(&format!("{field}.conditions"), &doc.conditions);
        Some(Attestation {
            name: doc.name,
            predicate_type,
            max_age,
            conditions,
        })
    }

    /// Compiles each CEL condition, reporting each bad one at its own line with its text.
    fn conditions(&mut self, field: &str, texts: &[String]) -> Vec<Condition> {
        if !self.bounded(field, "conditions", texts.len(), MAX_CONDITIONS) {
            return Vec::new();
        }
        if texts.is_empty() {
            return Vec::new();
        }
        let mut conditions = Vec::with_capacity(texts.len());
        for (i, (text, compiled)) in texts.iter().zip(Condition::compile_all(texts)).enumerate() {
            match compiled {
                Ok(condition) => conditions.push(condition),
                Err(e) if text.trim().is_empty() => self.error(&format!("{field}[{i}]"), e),
                Err(e) => {
                    // Quote the condition, but not a runaway one in full.
                    let mut shown: String = text.chars().take(200).collect();
                    if shown.len() < text.len() {
                        shown.push('…');
                    }
                    self.error(&format!("{field}[{i}]"), format!("{shown:?}: {e}"));
                }
            }
        }
        conditions
    }

    fn duration(&mut self, field: &str, text: &str) -> Option<Duration> {
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.error(field, "must be longer than zero");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(field, format!("{text:?} is not a duration such as 2160h or 30d: {e}"));
                None
            }
        }
    }

    /// Resolves a path against the policy file's directory.
    fn path(&mut self, field: &str, path: &Path) -> Option<PathBuf> {
        if path.as_os_str().is_empty() {
            self.error(field, "must not be empty");
            return None;
        }
        Some(self.base.join(path))
    }

    /// Checks a name: denial messages, audit records and metric labels carry it.
    fn name(&mut self, field: &str, name: &str) -> bool {
        let valid_chars = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        let message = if name.is_empty() {
            "must not be empty".to_string()
        } else if name.len() > MAX_NAME_LEN {
            format!("longer than {MAX_NAME_LEN} characters")
        } else if !valid_chars {
            format!("{name:?} may hold only letters, digits, '-', '_' and '.'")
        } else {
            return true;
        };
        self.error(field, message);
        false
    }

    /// Checks `{field}.name` and that no earlier sibling has the same name.
    fn unique_name(&mut self, seen: &mut Seen, what: &str, field: &str, name: &str) {
        let name_field = format!("{field}.name");
        if !self.name(&name_field, name) {
            return;
        }
        match seen.get(name) {
            Some(first) => {
                let at = match self.lines.line(first) {
                    Some(line) => format!(" (line {line})"),
                    None => String::new(),
                };
                let message = format!("duplicate {what} name {name:?}; {first}{at} has it too");
                self.error(&name_field, message);
            }
            None => {
                seen.insert(name.to_string(), field.to_string());
            }
        }
    }

    /// Checks that a list is within its bound; returns false, having recorded the error, if not.
    fn bounded(&mut self, field: &str, what: &str, len: usize, max: usize) -> bool {
        if len > max {
            self.error(field, format!("{len} {what}; at most {max} are allowed"));
            return false;
        }
        true
    }
}
