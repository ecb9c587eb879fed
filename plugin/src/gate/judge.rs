//! Which rule decides a pull, and whether the image satisfies it: shared by `serve` and
//! `pullgate verify`.

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use crate::{
    admission::{Admission, Waiver},
    audit::{self, Record},
    cache::{Cache, Lookup},
    denial::{Cause, Denial},
    metrics::Metrics,
    policy::{Mode, Policy, Rule, SignatureRepository, Verdict},
    prefetch::{Prefetch, Prefetcher},
    reference::{Digest, Reference},
    registry::{cosign, referrers, Credentials, DockerConfig, Registries, RegistryError, Session},
    verify::{self, notation::Descriptor, AttestationOutcome, TrustMaterial, Verified},
};

/// Decides pulls: which rule applies, and whether the image satisfies it.
#[derive(Clone)]
pub struct Judge {
    registries: Registries,
    verify_timeout: Duration,
    /// Successes remembered, and verifications in flight shared, per image and rule under one
    /// policy generation.
    cache: Arc<Cache<VerificationKey, Verified, Refusal>>,
    metrics: Arc<Metrics>,
    /// Credentials for registries kubelet sent none for (`dockerConfig`); replaced whole on
    /// reload.
    docker_config: Arc<RwLock<Arc<DockerConfig>>>,
    /// Fetches a pull's content into containerd while it is verified (`serve` only).
    prefetcher: Option<Prefetcher>,
}

/// What a verification's outcome depends on. A reload changes the generation, so no
/// remembered allow outlives its policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct VerificationKey {
    /// In canonical form: every spelling of the repository shares one verification.
    repository: String,
    digest: Digest,
    /// The policy's and trust material's hash.
    generation: String,
    rule: String,
    /// Where signatures and attestations were looked up (canonical `host/path`): the image's own
    /// repository, or the rule's `signatureRepository`. What is found depends on it.
    signatures_in: String,
}

/// How long a verified image is remembered at most, and how many are.
const CACHE_TTL: Duration = Duration::from_secs(300);
const CACHE_CAPACITY: usize = 4096;

/// What the policy said about one image, and why.
pub struct Judgement {
    /// The normalized reference as asked for.
    pub image: String,
    /// The digest that was judged, once the registry named one.
    pub digest: Option<Digest>,
    pub rule: Option<String>,
    pub mode: Mode,
    pub verdict: Result<Admission, Denial>,
    /// The rule's attestations as checked, passed or not.
    pub attestations: Vec<AttestationOutcome>,
    /// On a denial, each signature found that did not count, and why.
    pub rejected: Vec<String>,
    /// How the verification was answered; `None` when the decision needed none.
    pub cache: Option<Lookup>,
    /// The rule's `signatureRepository`, where signatures were looked up instead of beside the
    /// image.
    pub signatures_in: Option<String>,
    /// The image's content on its way into containerd while it was verified, if it was.
    pub prefetch: Option<Prefetch>,
}

// === impl Judge ===

impl Judge {
    /// A judge counting its cache lookups and verifications in `metrics`.
    pub fn new(registries: Registries, verify_timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            registries,
            verify_timeout,
            cache: Arc::new(Cache::new(CACHE_TTL, CACHE_CAPACITY)),
            metrics,
            docker_config: Arc::default(),
            prefetcher: None,
        }
    }

    /// This judge, fetching each verified pull's content into containerd while it verifies it.
    pub fn with_prefetcher(mut self, prefetcher: Prefetcher) -> Self {
        self.prefetcher = Some(prefetcher);
        self
    }

    /// Puts `config` in force for registries kubelet sends no credentials for.
    pub fn set_docker_config(&self, config: DockerConfig) {
        *self.docker_config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    /// The credentials for the repository signatures are looked up in: kubelet's when it is on
    /// the image's registry and kubelet sent some (they were sent for that registry), else the
    /// Docker config's, as SPEC §3 has it for a registry the pull carried no credentials for.
    /// Never kubelet's for another registry.
    fn signature_credentials(
        &self,
        image: &Reference,
        repository: &SignatureRepository,
        kubelet: &Credentials,
    ) -> Credentials {
        if repository.host() == image.host() && !kubelet.is_anonymous() {
            return kubelet.clone();
        }
        let config = self.docker_config.read().unwrap_or_else(|p| p.into_inner()).clone();
        Credentials::from_docker_config(&config, repository.host(), repository.path())
    }

    /// Decides `image` for a pod in `namespace`, fetching what it must with `credentials`.
    pub async fn judge(&self, policy: &Policy, image: &str, namespace: &str, credentials: Credentials) -> Judgement {
        let reference = match Reference::parse(image) {
            Ok(r) => r,
            Err(e) => {
                let refusal = Refusal::new(None, Cause::NotAReference(e));
                // Not a reference: shown escaped, so a newline in a pod's image cannot forge
                // a line of pullgate's log.
                let shown = image.escape_debug().to_string();
                return Judgement::new(shown, None, None, policy.mode(), Err(refusal), None);
            }
        };
        let decision = policy.decide(&reference, namespace);
        let mut cache = None;
        let mut prefetch = None;
        let waive = |reason: &str| Ok(Admission::Waived(Waiver::new(reason.to_string())));
        let verdict = match decision.verdict {
            Verdict::Allow(Some(_)) => waive("the rule allows it without verification"),
            Verdict::Allow(None) => waive("no rule matches and noMatch is allow"),
            Verdict::Deny(Some(_)) => Err(Refusal::new(None, Cause::RuleDenies)),
            Verdict::Deny(None) => Err(Refusal::new(None, Cause::NoRule(policy.no_match()))),
            Verdict::Verify(rule) => {
                let verifying = self.verify(&reference, rule, policy, credentials);
                match tokio::time::timeout(self.verify_timeout, verifying).await {
                    Ok((outcome, lookup, prefetched)) => {
                        cache = Some(lookup);
                        prefetch = prefetched;
                        outcome.map(Admission::Verified)
                    }
                    Err(_elapsed) => Err(Refusal::new(None, Cause::Timeout(self.verify_timeout))),
                }
            }
        };
        let signatures_in = decision
            .rule()
            .and_then(Rule::signature_repository)
            .map(ToString::to_string);
        let rule = decision.rule().map(|r| r.name().to_string());
        let mut judgement = Judgement::new(
            reference.to_string(),
            Some(&reference),
            rule,
            decision.mode,
            verdict,
            signatures_in,
        );
        judgement.cache = cache;
        judgement.prefetch = prefetch;
        judgement
    }

    /// Resolves the digest, then checks the image's signatures and attestations against the
    /// rule, or takes the outcome from the cache: a remembered success, or a verification of
    /// the same image already in flight. A verification run here starts the prefetch of the
    /// image's content, returned to go on, or be dropped, with the verdict.
    async fn verify(
        &self,
        reference: &Reference,
        rule: &Rule,
        policy: &Policy,
        credentials: Credentials,
    ) -> (Result<Verified, Refusal>, Lookup, Option<Prefetch>) {
        // The tag is resolved in the image's own repository with kubelet's credentials; what is
        // verified, and pulled, is that digest wherever its signatures live.
        let signature_session = rule.signature_repository().map(|repository| {
            let credentials = self.signature_credentials(reference, repository, &credentials);
            self.registries.session(repository.reference(), credentials)
        });
        let prefetch_credentials = self.prefetcher.as_ref().map(|_| credentials.clone());
        let image_session = self.registries.session(reference, credentials);
        // A pinned digest needs no resolving: that it exists is checked beside the verification,
        // not before it (a missing image must be told apart from an unsigned one). A Notation
        // signature is matched against the manifest's descriptor (media type and size too), so
        // for a rule that would accept one the descriptor is resolved first, as for a tag.
        let (digest, image) = match reference.digest() {
            Some(pinned) if !wants_notation(rule) => (pinned.clone(), None),
            _ => match image_session.resolve_descriptor(reference).await {
                Ok(image) => (image.digest.clone(), Some(image)),
                Err(e) => return (Err(Refusal::from_registry(None, e)), Lookup::Miss, None),
            },
        };
        let signatures_in = rule
            .signature_repository()
            .map_or_else(|| reference.repository(), ToString::to_string);
        let key = VerificationKey {
            repository: reference.repository(),
            digest: digest.clone(),
            generation: policy.hash().to_string(),
            rule: rule.name().to_string(),
            signatures_in,
        };
        let session = signature_session.as_ref().unwrap_or(&image_session);
        // Only a verification that runs to its end is timed: one cut off by verifyTimeout is
        // dropped here, and neither it nor its lookup is counted.
        let mut prefetch = None;
        let check = || async {
            // Only the request that verifies fetches: a remembered or shared verdict has nothing
            // to hide a download behind, and the verifying pull's prefetch serves them all.
            if let (Some(prefetcher), Some(credentials)) = (&self.prefetcher, prefetch_credentials) {
                prefetch = prefetcher.start(reference, credentials, &digest);
            }
            let started = Instant::now();
            let outcome = self
                .check(reference, session, &digest, image.as_ref(), rule, policy.trust())
                .await;
            self.metrics.verification(started.elapsed());
            outcome
        };
        let verification = self
            .cache
            .get_or_verify(key, check, |verified| remember_until(verified, rule));
        let (outcome, lookup) = match image {
            Some(_) => verification.await,
            None => match beside_existence(&image_session, reference, verification).await {
                Ok(done) => done,
                Err(missing) => return (Err(Refusal::from_registry(None, missing)), Lookup::Miss, None),
            },
        };
        // A shared or remembered verdict: this pull waits for the download the verifying pull
        // started, rather than racing it into containerd.
        if let (None, Some(prefetcher)) = (&prefetch, &self.prefetcher) {
            prefetch = prefetcher.follow(&digest);
        }
        self.metrics.cache_lookup(lookup);
        // Shared or remembered outcomes may come from a pull of another tag of the repository;
        // one for anything else (the cache's key rules it out) refuses rather than vouches.
        let outcome = outcome.and_then(|verified| {
            let digest = verified.digest().clone();
            verified.for_reference(reference).ok_or_else(|| {
                let why = format!("a verification of another image was offered for {reference}");
                Refusal::from_registry(Some(&digest), RegistryError::Invalid(why))
            })
        });
        (outcome, lookup, prefetch)
    }

    /// Fetches the signatures and attestations of `digest` and checks them against the rule.
    /// `image` is its manifest's descriptor, where resolved (a rule that accepts Notation
    /// signatures always has it).
    async fn check(
        &self,
        reference: &Reference,
        session: &Session<'_>,
        digest: &Digest,
        image: Option<&Descriptor>,
        rule: &Rule,
        trust: Option<&TrustMaterial>,
    ) -> Result<Verified, Refusal> {
        let from_registry = |e: RegistryError| Refusal::from_registry(Some(digest), e);
        // Legacy .sig and .att tags and v3 bundle referrers are looked up at the same time.
        // Any lookup failing as a whole (the registry went away) fails the verification: a
        // signature that could not be fetched might be the one that counts. A rule that
        // requires no signature is not shown any: only its attestations can prove the image.
        // cosign signatures are looked for when a Sigstore authority could accept one, Notation
        // signatures when a Notation authority could.
        let signed = rule.requires_signature() && rule.authorities().iter().any(|a| a.kind.is_sigstore());
        let notation = wants_notation(rule);
        let mut wanted = Vec::new();
        if signed {
            wanted.push(verify::COSIGN_SIGN_PREDICATE);
        }
        wanted.extend(rule.attestations().iter().map(|a| a.predicate_type.as_str()));
        let attestations = async {
            match rule.attestations() {
                [] => Ok(Vec::new()),
                _ => cosign::legacy_attestations(session, digest, &wanted).await,
            }
        };
        let signatures = async {
            match signed {
                true => cosign::legacy_signatures(session, digest).await,
                false => Ok(Vec::new()),
            }
        };
        let (layers, referrers, attestations) = tokio::join!(
            signatures,
            referrers::signatures(session, digest, &wanted, notation),
            attestations,
        );
        let attached = verify::Attached {
            layers: layers.map_err(from_registry)?,
            referrers: referrers.map_err(from_registry)?,
            attestations: attestations.map_err(from_registry)?,
            image: image.cloned(),
        };
        // Checking signatures, certificates and conditions is CPU work: it runs where it cannot
        // hold up the workers that serve other calls.
        off_the_workers(|| judge_attached(reference, digest, &attached, rule, trust))
            .map_err(|refusal| refusal.answered_by(session.mirrors_answered()))
    }
}

/// Whether `rule` could accept a Notation signature (then the image's descriptor is needed).
fn wants_notation(rule: &Rule) -> bool {
    rule.requires_signature() && rule.authorities().iter().any(|a| !a.kind.is_sigstore())
}

/// Runs `verification` of a digest-pinned `reference` while the registry is asked whether the
/// image exists; a missing image is the answer, whatever the verification found. A verification
/// remembered from an earlier pull of the digest does not wait for the answer: that pull found
/// the image, and a pinned pull of one deleted since fails at containerd all the same.
async fn beside_existence<T>(
    session: &Session<'_>,
    reference: &Reference,
    verification: impl std::future::Future<Output = (T, Lookup)>,
) -> Result<(T, Lookup), RegistryError> {
    let exists = session.resolve(reference);
    let (mut exists, mut verification) = (std::pin::pin!(exists), std::pin::pin!(verification));
    tokio::select! {
        done = &mut verification => match done.1 {
            Lookup::Hit => Ok(done),
            Lookup::Miss | Lookup::Shared => exists.await.map(|_| done),
        },
        answered = &mut exists => match answered {
            Ok(_) => Ok(verification.await),
            Err(missing) => Err(missing),
        },
    }
}

/// The verdict on what was found attached to `digest`: its signatures, then the rule's
/// attestations; or, for a rule that requires no signature, its attestations alone. No I/O.
pub(super) fn judge_attached(
    reference: &Reference,
    digest: &Digest,
    attached: &verify::Attached,
    rule: &Rule,
    trust: Option<&TrustMaterial>,
) -> Result<Verified, Refusal> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if !rule.requires_signature() {
        let (required, authorities) = (rule.attestations(), rule.authorities());
        return verify::verify_attestations(reference, digest, attached, required, authorities, trust, now)
            .map_err(|unattested| Refusal::new(Some(digest.clone()), Cause::Unattested(unattested)));
    }
    let verified = verify::verify_image(reference, digest, attached, rule.authorities(), trust)
        .map_err(|unverified| Refusal::new(Some(digest.clone()), Cause::Unverified(unverified, None)))?;
    if rule.attestations().is_empty() {
        return Ok(verified);
    }
    verified
        .require_attestations(attached, rule.attestations(), rule.authorities(), trust, now)
        .map_err(|outcomes| Refusal::new(Some(digest.clone()), Cause::Attestations(outcomes)))
}

/// Runs CPU-bound `work` on this thread after telling a multi-thread runtime to move its other
/// tasks elsewhere; inline on a current-thread runtime, which cannot.
fn off_the_workers<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// How long a verified image may be remembered: until it goes stale (see [`stale_at`]; the
/// cache's own TTL bounds it further).
fn remember_until(verified: &Verified, rule: &Rule) -> Option<Instant> {
    let stale_at = stale_at(verified, rule)?;
    let left = u64::try_from(stale_at.saturating_sub(super::admitted::unix_now())).unwrap_or(0);
    Some(Instant::now() + Duration::from_secs(left))
}

/// The unix second from which `verified` no longer meets `rule`: when its signatures lapse (a
/// Notation signature's expiry or its chain's end, see [`Verified::valid_until`]), or when its
/// youngest required attestation turns older than its `maxAge`. `None`: it meets the rule for
/// good.
pub(super) fn stale_at(verified: &Verified, rule: &Rule) -> Option<i64> {
    let attestations_stale = rule
        .attestations()
        .iter()
        .filter_map(|required| {
            let max_age = required.max_age?;
            let outcome = verified.attestations().iter().find(|o| o.name == required.name)?;
            // As maxAge measures it: from when the signing certificate became valid.
            let signed_at = outcome.signature.as_ref()?.certified_from?;
            Some(signed_at.saturating_add(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)))
        })
        .min();
    [verified.valid_until(), attestations_stale].into_iter().flatten().min()
}

/// The audit reason of an admission: whose signature verified it, or, without one, which
/// attestations proved it and whose signatures they carry.
fn verified_reason(verified: &Verified) -> String {
    if !verified.evidence().is_empty() {
        let names: Vec<&str> = verified.evidence().iter().map(|e| e.authority.as_str()).collect();
        return format!("verified by authority {:?}", names.join(", "));
    }
    let attestations: Vec<&str> = verified.attestations().iter().map(|o| o.name.as_str()).collect();
    let mut authorities: Vec<&str> = Vec::new();
    for signature in verified.attestations().iter().filter_map(|o| o.signature.as_ref()) {
        if !authorities.contains(&signature.authority.as_str()) {
            authorities.push(&signature.authority);
        }
    }
    format!(
        "no signature required; proven by attestation {:?} signed by authority {:?}",
        attestations.join(", "),
        authorities.join(", ")
    )
}

/// Why the judge refused, before it is rendered into a [`Denial`] with the image and rule.
#[derive(Clone)]
pub struct Refusal {
    digest: Option<Digest>,
    cause: Cause,
}

impl Refusal {
    pub(super) fn new(digest: Option<Digest>, cause: Cause) -> Self {
        Self { digest, cause }
    }

    /// A registry failure: unreachable is `RegistryUnavailable`, bad content a policy denial.
    fn from_registry(digest: Option<&Digest>, e: RegistryError) -> Self {
        Self::new(digest.cloned(), Cause::Registry(e))
    }

    /// A refusal for want of a signature names the hosts that answered, when a mirror did: the
    /// operator then knows which copy of the repository lacked it.
    fn answered_by(self, hosts: Option<String>) -> Self {
        match self.cause {
            Cause::Unverified(unverified, None) => Self::new(self.digest, Cause::Unverified(unverified, hosts)),
            cause => Self::new(self.digest, cause),
        }
    }

    /// The rule's attestations as far as they were checked.
    fn attestations(&self) -> Vec<AttestationOutcome> {
        match &self.cause {
            Cause::Attestations(outcomes) | Cause::Unattested(verify::Unattested { outcomes }) => outcomes.clone(),
            _ => Vec::new(),
        }
    }

    /// Each signature found that did not count, and why.
    fn rejected(&self) -> Vec<String> {
        match &self.cause {
            Cause::Unverified(unverified, _) => unverified.rejections.iter().map(ToString::to_string).collect(),
            _ => Vec::new(),
        }
    }
}

// === impl Judgement ===

impl Judgement {
    /// Renders a refusal into the one [`Denial`] kubelet, the audit log and the log line see.
    /// The denial names `repo@digest` once a digest was judged, as SPEC §5 shows.
    pub(super) fn new(
        image: String,
        reference: Option<&Reference>,
        rule: Option<String>,
        mode: Mode,
        verdict: Result<Admission, Refusal>,
        signatures_in: Option<String>,
    ) -> Self {
        let (digest, attestations, rejected) = match &verdict {
            Ok(Admission::Verified(v)) => (Some(v.digest().clone()), v.attestations().to_vec(), Vec::new()),
            Ok(Admission::Waived(_)) => (None, Vec::new(), Vec::new()),
            Err(refusal) => (refusal.digest.clone(), refusal.attestations(), refusal.rejected()),
        };
        let verdict = verdict.map_err(|refusal| Denial {
            image: Denial::image_name(reference, digest.as_ref(), &image),
            rule: rule.clone(),
            cause: refusal.cause,
            signatures_in: signatures_in.clone(),
        });
        Self {
            image,
            digest,
            rule,
            mode,
            verdict,
            attestations,
            rejected,
            cache: None,
            signatures_in,
            prefetch: None,
        }
    }

    /// The audit record of this judgement, as a `PullImage` decision.
    pub fn record(&self, namespace: &str, pod: &str, started: Instant) -> Record {
        let (decision, reason, signatures): (audit::Decision, String, Vec<audit::Signature>) = match &self.verdict {
            Ok(Admission::Verified(v)) => {
                let mut reason = verified_reason(v);
                if let Some(repository) = &self.signatures_in {
                    reason.push_str(&format!(" (signatures in {repository})"));
                }
                (
                    audit::Decision::Allow,
                    reason,
                    v.evidence().iter().map(audit::Signature::from).collect(),
                )
            }
            Ok(Admission::Waived(w)) => (audit::Decision::Allow, w.reason().to_string(), Vec::new()),
            Err(denial) => {
                let decision = match self.mode {
                    Mode::Enforce => audit::Decision::Deny,
                    Mode::Warn => audit::Decision::Warn,
                    Mode::Audit => audit::Decision::AuditDeny,
                };
                (decision, denial.to_string(), Vec::new())
            }
        };
        let judged = audit::Judged {
            image: self.image.clone(),
            digest: self.digest.as_ref().map(|d| d.to_string()),
            rule: self.rule.clone(),
            mode: self.mode.to_string(),
            decision,
            reason,
            signatures,
            attestations: self.attestations.iter().map(audit::Attested::from).collect(),
            rejected: self.rejected.clone(),
            cache: self.cache.map_or("none", Lookup::as_str),
        };
        Record::pull(judged, namespace, pod, started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{config::Config, registry::Origin};

    fn judge(docker_config: &str) -> Judge {
        let metrics = Arc::new(Metrics::new());
        let config = Config::with_policy("policy.yaml".into());
        let judge = Judge::new(
            Registries::new(&config, metrics.clone()).unwrap(),
            Duration::from_secs(1),
            metrics,
        );
        judge.set_docker_config(DockerConfig::parse(docker_config.as_bytes(), Path::new("/d/config.json")).unwrap());
        judge
    }

    fn credentials_for(judge: &Judge, image: &str, repository: &str, kubelet: &Credentials) -> Credentials {
        let image = Reference::parse(image).unwrap();
        let repository = SignatureRepository::parse(repository).unwrap();
        judge.signature_credentials(&image, &repository, kubelet)
    }

    #[test]
    fn kubelets_credentials_go_only_to_the_images_registry() {
        let judge = judge(
            r#"{"auths": {"sigs.example.com": {"username": "bob", "password": "pw"},
                          "registry.example.com": {"username": "carol", "password": "pw"}}}"#,
        );
        let kubelet = Credentials::basic("alice", "pw");
        let anonymous = Credentials::anonymous();
        let image = "registry.example.com/team/app:v1";

        // The image's registry: kubelet's, whatever dockerConfig says.
        let same = credentials_for(&judge, image, "Registry.example.com:443/team/sigs", &kubelet);
        assert_eq!((same.username(), same.origin()), (Some("alice"), &Origin::Kubelet));
        // The image's registry, but kubelet sent nothing: dockerConfig's for that registry.
        let same = credentials_for(&judge, image, "registry.example.com/team/sigs", &anonymous);
        assert_eq!(same.username(), Some("carol"));
        // Another registry: dockerConfig's, or none; never kubelet's.
        let other = credentials_for(&judge, image, "sigs.example.com/team/sigs", &kubelet);
        assert_eq!(other.username(), Some("bob"));
        let unknown = credentials_for(&judge, image, "elsewhere.example.com/sigs", &kubelet);
        assert_eq!(unknown.username(), None);
        assert_eq!(
            unknown.origin(),
            &Origin::NotInDockerConfig(Some("/d/config.json".into()))
        );
    }
}
