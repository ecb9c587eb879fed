//! The decision for one request, top to bottom: policy → resolve → verify → audit → pull.

use std::{
    collections::{BTreeSet, HashMap},
    path::Path,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use bytes::Bytes;
use prost::Message;
use pullgate_proto::cri::{ImageSpec, ImageStatusRequest, ImageStatusResponse, PullImageRequest, PullImageResponse};
use tonic::Status;

use crate::{
    audit::{self, AuditError, AuditLog, Counted, Event, Outcome, PeerRefusals, Record, Refused},
    cache::{Cache, Lookup},
    containerd::Containerd,
    cri::{UnaryCall, UnaryReply, Upstream},
    denial::{Denial, DenialKind},
    metrics::Metrics,
    policy::{predicate, Action, Decision, Mode, Policy, Rule},
    reference::{Digest, Reference},
    registry::{cosign, referrers, Credentials, Registries, RegistryError, Session},
    verify::{self, AttestationOutcome, AttestationResult, Evidence, TrustMaterial, Verified},
};

/// How long tagging a pulled image, and the CRI plugin seeing the tag, may take.
const TAG_TIMEOUT: Duration = Duration::from_secs(5);

/// What a record's line adds to the record itself (seq, time, prev, an outcome and its error),
/// with room to spare: how much a pull's record is sure to need.
const RECORD_ENVELOPE_BYTES: usize = 1024;

/// More admitted images than this and the set starts over (they are verified again on demand).
const MAX_ADMITTED: usize = 100_000;

/// Decides pulls: which rule applies, and whether the image satisfies it.
#[derive(Clone)]
pub struct Judge {
    registries: Registries,
    verify_timeout: Duration,
    /// Successes remembered, and verifications in flight shared, per image and rule under one
    /// policy generation.
    cache: Arc<Cache<VerificationKey, Verified, Refusal>>,
    metrics: Arc<Metrics>,
}

/// What a verification's outcome depends on: (repository, digest, policy and trust generation,
/// rule). A reload changes the generation, so no remembered allow outlives its policy.
type VerificationKey = (String, String, String, String);

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
}

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

/// The running proxy's state: the policy in force, the judge, and the ways out.
pub struct Gate {
    policy: RwLock<Arc<Policy>>,
    judge: Judge,
    audit: AuditLog,
    upstream: Upstream,
    containerd: Containerd,
    admitted: Admitted,
    /// Refused connections gathered into at most one record per peer per second.
    peer_refusals: PeerRefusals,
    metrics: Arc<Metrics>,
}

/// Images pulled through the verified path, by (repository, image id): the policy generation
/// and the rules they were verified under, so `ImageStatus` can tell them from images that
/// reached containerd some other way, or were verified for another rule.
#[derive(Default)]
struct Admitted(Mutex<HashMap<ImageKey, Verifications>>);

/// (repository, image id).
type ImageKey = (String, String);

/// The rules an image was verified under, in one policy generation.
#[derive(Default)]
struct Verifications {
    generation: String,
    rules: BTreeSet<String>,
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
        }
    }

    /// Decides `image` for a pod in `namespace`, fetching what it must with `credentials`.
    pub async fn judge(&self, policy: &Policy, image: &str, namespace: &str, credentials: Credentials) -> Judgement {
        let reference = match Reference::parse(image) {
            Ok(r) => r,
            Err(e) => {
                let refusal = Refusal::policy(None, format!("not an image reference: {e}"));
                // Not a reference: shown escaped, so a newline in a pod's image cannot forge
                // a line of pullgate's log.
                let shown = image.escape_debug().to_string();
                return Judgement::new(shown, None, None, policy.mode(), Err(refusal));
            }
        };
        let decision = policy.decide(&reference, namespace);
        let mut cache = None;
        let waive = |reason: &str| {
            Ok(Admission::Waived(Waiver {
                reason: reason.to_string(),
            }))
        };
        let verdict = match (decision.action, decision.rule) {
            (Action::Allow, Some(_)) => waive("the rule allows it without verification"),
            (Action::Allow, None) => waive("no rule matches and noMatch is allow"),
            (Action::Deny, Some(_)) => Err(Refusal::policy(None, "the rule denies it".into())),
            (Action::Deny, None) => Err(Refusal::policy(
                None,
                format!("no rule matches: noMatch is {}", policy.no_match()),
            )),
            (Action::Verify, None) => Err(Refusal::policy(
                None,
                "no rule matches and none to verify against".into(),
            )),
            (Action::Verify, Some(rule)) => {
                let verifying = self.verify(&reference, rule, policy, credentials);
                match tokio::time::timeout(self.verify_timeout, verifying).await {
                    Ok((outcome, lookup)) => {
                        cache = Some(lookup);
                        outcome.map(Admission::Verified)
                    }
                    Err(_elapsed) => {
                        let limit = humantime::format_duration(self.verify_timeout);
                        let reason = format!("verification did not finish within verifyTimeout ({limit})");
                        Err(Refusal {
                            digest: None,
                            kind: DenialKind::RegistryUnavailable,
                            reason,
                            attestations: Vec::new(),
                            rejected: Vec::new(),
                        })
                    }
                }
            }
        };
        let rule = decision.rule.map(|r| r.name().to_string());
        let mut judgement = Judgement::new(reference.to_string(), Some(&reference), rule, decision.mode, verdict);
        judgement.cache = cache;
        judgement
    }

    /// Resolves the digest, then checks the image's signatures and attestations against the
    /// rule, or takes the outcome from the cache: a remembered success, or a verification of
    /// the same image already in flight.
    async fn verify(
        &self,
        reference: &Reference,
        rule: &Rule,
        policy: &Policy,
        credentials: Credentials,
    ) -> (Result<Verified, Refusal>, Lookup) {
        let session = self.registries.session(reference, credentials);
        let digest = match session.resolve(reference).await {
            Ok(digest) => digest,
            Err(e) => return (Err(Refusal::from_registry(None, e)), Lookup::Miss),
        };
        let key = (
            reference.repository(),
            digest.to_string(),
            policy.hash().to_string(),
            rule.name().to_string(),
        );
        // Only a verification that runs to its end is timed: one cut off by verifyTimeout is
        // dropped here, and neither it nor its lookup is counted.
        let check = || async {
            let started = Instant::now();
            let outcome = self.check(reference, &session, &digest, rule, policy.trust()).await;
            self.metrics.verification(started.elapsed());
            outcome
        };
        let (outcome, lookup) = self
            .cache
            .get_or_verify(key, check, |verified| remember_until(verified, rule))
            .await;
        self.metrics.cache_lookup(lookup);
        // Shared or remembered outcomes may come from a pull of another tag of the repository.
        (outcome.map(|v| v.for_reference(reference)), lookup)
    }

    /// Fetches the signatures and attestations of `digest` and checks them against the rule.
    async fn check(
        &self,
        reference: &Reference,
        session: &Session<'_>,
        digest: &Digest,
        rule: &Rule,
        trust: Option<&TrustMaterial>,
    ) -> Result<Verified, Refusal> {
        let from_registry = |e: RegistryError| Refusal::from_registry(Some(digest), e);
        // Legacy .sig and .att tags and v3 bundle referrers are looked up at the same time.
        // Any lookup failing as a whole (the registry went away) fails the verification: a
        // signature that could not be fetched might be the one that counts.
        let mut wanted = vec![verify::COSIGN_SIGN_PREDICATE];
        wanted.extend(rule.attestations().iter().map(|a| a.predicate_type.as_str()));
        let attestations = async {
            match rule.attestations() {
                [] => Ok(Vec::new()),
                _ => cosign::legacy_attestations(session, digest, &wanted).await,
            }
        };
        let (layers, referrers, attestations) = tokio::join!(
            cosign::legacy_signatures(session, digest),
            referrers::sigstore_bundles(session, digest, &wanted),
            attestations,
        );
        let attached = verify::Attached {
            layers: layers.map_err(from_registry)?,
            referrers: referrers.map_err(from_registry)?,
            attestations: attestations.map_err(from_registry)?,
        };
        // Checking signatures, certificates and conditions is CPU work: it runs where it cannot
        // hold up the workers that serve other calls.
        off_the_workers(|| judge_attached(reference, digest, &attached, rule, trust))
    }
}

/// The verdict on what was found attached to `digest`: its signatures, then the rule's
/// attestations. No I/O.
fn judge_attached(
    reference: &Reference,
    digest: &Digest,
    attached: &verify::Attached,
    rule: &Rule,
    trust: Option<&TrustMaterial>,
) -> Result<Verified, Refusal> {
    let verified =
        verify::verify_image(reference, digest, attached, rule.authorities(), trust).map_err(|unverified| Refusal {
            rejected: unverified.rejections.iter().map(ToString::to_string).collect(),
            ..Refusal::policy(Some(digest.clone()), unverified.to_string())
        })?;
    if rule.attestations().is_empty() {
        return Ok(verified);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    verified
        .require_attestations(attached, rule.attestations(), rule.authorities(), trust, now)
        .map_err(|outcomes| {
            let failed: Vec<String> = outcomes
                .iter()
                .filter(|o| o.result != AttestationResult::Pass)
                .map(|o| {
                    format!(
                        "attestation {:?} ({}): {}",
                        o.name,
                        predicate::describe(&o.predicate_type),
                        o.reason.as_deref().unwrap_or("failed")
                    )
                })
                .collect();
            Refusal {
                attestations: outcomes,
                ..Refusal::policy(Some(digest.clone()), failed.join("; "))
            }
        })
}

/// Runs CPU-bound `work` on this thread after telling a multi-thread runtime to move its other
/// tasks elsewhere; inline on a current-thread runtime, which cannot.
fn off_the_workers<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// How long a verified image may be remembered: until its youngest required attestation would
/// pass its `maxAge` (the cache's own TTL bounds it further).
fn remember_until(verified: &Verified, rule: &Rule) -> Option<Instant> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    rule.attestations()
        .iter()
        .filter_map(|required| {
            let max_age = required.max_age?;
            let outcome = verified.attestations().iter().find(|o| o.name == required.name)?;
            let signed_at = outcome.signature.as_ref()?.signed_at?;
            let stale_at = signed_at.saturating_add(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX));
            let left = u64::try_from(stale_at.saturating_sub(now)).unwrap_or(0);
            Some(Instant::now() + Duration::from_secs(left))
        })
        .min()
}

/// Why the judge refused, before it is rendered into a [`Denial`] with the image and rule.
#[derive(Clone)]
pub struct Refusal {
    digest: Option<Digest>,
    kind: DenialKind,
    reason: String,
    /// The rule's attestations, as far as they were checked.
    attestations: Vec<AttestationOutcome>,
    /// Each signature found that did not count, and why.
    rejected: Vec<String>,
}

impl Refusal {
    /// A registry failure: unreachable is `RegistryUnavailable`, bad content a policy denial.
    fn from_registry(digest: Option<&Digest>, e: RegistryError) -> Self {
        let kind = match e {
            RegistryError::Unavailable(_) => DenialKind::RegistryUnavailable,
            RegistryError::Invalid(_) | RegistryError::NotFound(_) => DenialKind::Policy,
        };
        Self {
            digest: digest.cloned(),
            kind,
            reason: e.to_string(),
            attestations: Vec::new(),
            rejected: Vec::new(),
        }
    }

    fn policy(digest: Option<Digest>, reason: String) -> Self {
        Self {
            digest,
            kind: DenialKind::Policy,
            reason,
            attestations: Vec::new(),
            rejected: Vec::new(),
        }
    }
}

// === impl Judgement ===

impl Judgement {
    /// Renders a refusal into the one [`Denial`] kubelet, the audit log and the log line see.
    /// The denial names `repo@digest` once a digest was judged, as SPEC §5 shows.
    fn new(
        image: String,
        reference: Option<&Reference>,
        rule: Option<String>,
        mode: Mode,
        verdict: Result<Admission, Refusal>,
    ) -> Self {
        let (digest, attestations, rejected) = match &verdict {
            Ok(Admission::Verified(v)) => (Some(v.digest().clone()), v.attestations().to_vec(), Vec::new()),
            Ok(Admission::Waived(_)) => (None, Vec::new(), Vec::new()),
            Err(refusal) => (
                refusal.digest.clone(),
                refusal.attestations.clone(),
                refusal.rejected.clone(),
            ),
        };
        let named = match (reference, &digest) {
            (Some(r), Some(d)) => r.pinned(d),
            _ => image.clone(),
        };
        let verdict = verdict.map_err(|refusal| Denial {
            image: named,
            rule: rule.clone(),
            kind: refusal.kind,
            reason: refusal.reason,
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
        }
    }

    /// The audit record of this judgement.
    pub fn record(&self, event: Event, namespace: &str, pod: &str, started: Instant) -> Record {
        let (decision, reason, signatures): (audit::Decision, String, Vec<Evidence>) = match &self.verdict {
            Ok(Admission::Verified(v)) => {
                let names: Vec<&str> = v.evidence().iter().map(|e| e.authority.as_str()).collect();
                (
                    audit::Decision::Allow,
                    format!("verified by authority {:?}", names.join(", ")),
                    v.evidence().to_vec(),
                )
            }
            Ok(Admission::Waived(w)) => (audit::Decision::Allow, w.reason.clone(), Vec::new()),
            Err(denial) => {
                let decision = match self.mode {
                    Mode::Enforce => audit::Decision::Deny,
                    Mode::Warn => audit::Decision::Warn,
                    Mode::Audit => audit::Decision::AuditDeny,
                };
                (decision, denial.to_string(), Vec::new())
            }
        };
        Record {
            event,
            image: self.image.clone(),
            digest: self.digest.as_ref().map(|d| d.to_string()),
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            rule: self.rule.clone(),
            mode: self.mode.to_string(),
            decision,
            reason,
            signatures,
            attestations: self.attestations.clone(),
            rejected: self.rejected.clone(),
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            cache: self.cache.map_or("none", Lookup::as_str),
            outcome: None,
            error: None,
            count: None,
        }
    }
}

/// A pull's record while containerd pulls. Should the call be dropped before the record is
/// written (the caller went away), it is written then, as failed: one record per decision.
struct Unwritten<'g> {
    record: Option<Record>,
    gate: &'g Gate,
}

impl Unwritten<'_> {
    fn take(mut self) -> Record {
        self.record.take().expect("taken once")
    }
}

impl Drop for Unwritten<'_> {
    fn drop(&mut self) {
        let Some(mut record) = self.record.take() else { return };
        record.outcome = Some(Outcome::Failed);
        record.error = Some("the caller went away before containerd's pull returned".into());
        tracing::warn!(image = %record.image, "pull abandoned by the caller");
        // Drop cannot wait: one synced append on this thread, as rare as callers that leave.
        if let Err(error) = self.gate.audit.append(&record) {
            self.gate.metrics.audit_write_failure();
            tracing::error!(%error, "audit record not written");
        }
    }
}

// === impl Gate ===

impl Gate {
    /// The gate, with `policy` in force; decisions, reloads and the trust material's expiry are
    /// reported in `metrics`.
    pub fn new(
        policy: Policy,
        judge: Judge,
        audit: AuditLog,
        upstream: Upstream,
        containerd: Containerd,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.trust_expiry(policy.trust_expiry_timestamp(jiff::Timestamp::now()));
        Self {
            policy: RwLock::new(Arc::new(policy)),
            judge,
            audit,
            upstream,
            containerd,
            admitted: Admitted::default(),
            peer_refusals: PeerRefusals::default(),
            metrics,
        }
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Starts a new audit file if the current one was moved away (rotation); see
    /// [`AuditLog::reopen`].
    pub fn reopen_audit(&self) -> Result<bool, AuditError> {
        self.audit.reopen()
    }

    /// Whether an audit record could be written now (a readiness check); see
    /// [`AuditLog::check_writable`].
    pub async fn check_audit(&self) -> Result<(), AuditError> {
        self.audit.check_writable_async().await
    }

    /// Appends `record`. A failure is logged and counted here; what it means for the decision
    /// is the caller's to say.
    async fn write_record(&self, record: Record) -> Result<u64, AuditError> {
        let written = self.audit.append_async(record).await;
        if let Err(error) = &written {
            self.metrics.audit_write_failure();
            tracing::error!(%error, "audit record not written");
        }
        written
    }

    /// Loads the policy at `path` and puts it in force; on error the current one stays.
    pub fn reload_policy(&self, path: &Path) -> Result<(), String> {
        let policy = match Policy::load(path) {
            Ok(policy) => policy,
            Err(errors) => {
                self.metrics.policy_reload(false);
                return Err(errors.to_string());
            }
        };
        let expiry = policy.trust_expiry_timestamp(jiff::Timestamp::now());
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
        self.metrics.trust_expiry(expiry);
        self.metrics.policy_reload(true);
        Ok(())
    }

    /// `PullImage`: judge, pull exactly what was judged, record what became of it, answer.
    pub async fn pull_image(&self, call: UnaryCall) -> Result<UnaryReply, Status> {
        let started = Instant::now();
        let request = PullImageRequest::decode(call.message.clone())
            .map_err(|e| Status::invalid_argument(format!("PullImageRequest: {e}")))?;
        let image = request.image.as_ref().map_or("", |i| i.image.as_str());
        let metadata = request.sandbox_config.as_ref().and_then(|s| s.metadata.as_ref());
        let namespace = metadata.map_or("", |m| m.namespace.as_str());
        let pod = metadata.map_or("", |m| m.name.as_str());

        let policy = self.policy();
        let judgement = self
            .judge
            .judge(&policy, image, namespace, Credentials::from_cri(request.auth.as_ref()))
            .await;
        let mut record = judgement.record(Event::Pull, namespace, pod, started);
        self.metrics.decision(&record);
        let enforced = judgement.mode == Mode::Enforce;
        let admission = match judgement.verdict {
            Ok(admission) => admission,
            Err(denial) if enforced => {
                record.outcome = Some(Outcome::Denied);
                tracing::info!(image = %record.image, namespace, pod, rule = ?record.rule, decision = ?record.decision, reason = %record.reason, "pull denied");
                self.record_pull(record, enforced, &judgement.image).await?;
                return Err(denial.status());
            }
            Err(denial) => Admission::Waived(Waiver {
                reason: format!("mode {}: {denial}", judgement.mode),
            }),
        };

        // An enforced pull goes to containerd only when its record can be written. A verified
        // image is shown only once its record is written (below); one an allow rule lets in
        // would be on the node, and shown, with no record of how it came: room for its record
        // is made sure of first.
        let writable = match &admission {
            Admission::Waived(_) if enforced => {
                let needed = serde_json::to_vec(&record).map_or(0, |line| line.len()) + RECORD_ENVELOPE_BYTES;
                self.audit.reserve_async(needed).await
            }
            _ if enforced && self.audit.failing() => self.audit.check_writable_async().await,
            _ => Ok(()),
        };
        if let Err(error) = writable {
            // The record cannot be written either: counted and logged as one.
            self.metrics.audit_write_failure();
            tracing::error!(%error, image = %record.image, "audit record not written");
            return Err(Status::unavailable(format!(
                "{}: refusing to pull without an audit record: {error}",
                judgement.image
            )));
        }
        // The record is written after containerd's pull returns, so it can say whether the
        // pull went through. Nothing can use the image before its record is on disk: kubelet
        // learns of it from this reply, which waits for the record, or from ImageStatus, which
        // shows a verified image only once it is `admitted` below. An enforced pull whose
        // record fails is answered as failed and never admitted, though containerd has it.
        let unwritten = Unwritten {
            record: Some(record),
            gate: self,
        };
        let pulled = self.pull(&call, admission).await;
        let mut record = unwritten.take();
        match &pulled {
            Ok(_) => record.outcome = Some(Outcome::Pulled),
            Err(status) => {
                tracing::warn!(image = %record.image, namespace, pod, rule = ?record.rule, decision = ?record.decision, code = ?status.code(), error = %status.message(), "allowed pull failed in containerd");
                record.outcome = Some(Outcome::Failed);
                record.error = Some(status.message().to_string());
            }
        }
        tracing::info!(image = %record.image, namespace, pod, rule = ?record.rule, decision = ?record.decision, reason = %record.reason, outcome = ?record.outcome, "pull");
        self.record_pull(record, enforced, &judgement.image).await?;
        let (reply, admitted) = pulled?;
        if let Some((repository, image_id)) = admitted {
            let rule = judgement.rule.as_deref().unwrap_or_default();
            self.admitted.insert(repository, image_id, policy.hash(), rule);
        }
        Ok(reply)
    }

    /// Writes a pull's record. Without it an enforced decision does not take effect; in warn
    /// and audit mode the pull goes ahead, counted, logged and seen by `/readyz`.
    async fn record_pull(&self, record: Record, enforced: bool, image: &str) -> Result<(), Status> {
        match self.write_record(record).await {
            Err(error) if enforced => Err(Status::unavailable(format!(
                "{image}: refusing to pull without an audit record: {error}"
            ))),
            _ => Ok(()),
        }
    }

    /// Pulls the verified digest and names it with kubelet's tag; a waived pull goes as sent.
    /// A verified pull also returns the (repository, image id) to admit once it is recorded.
    async fn pull(&self, call: &UnaryCall, admission: Admission) -> Result<(UnaryReply, Option<ImageKey>), Status> {
        let verified = match admission {
            Admission::Waived(_) => return Ok((self.upstream.unary(call, call.message.clone()).await?, None)),
            Admission::Verified(v) => v,
        };
        let reply = self.upstream.unary(call, pin(&call.message, &verified)).await?;
        let image_id = PullImageResponse::decode(reply.message.clone())
            .map_err(|e| Status::internal(format!("containerd's PullImageResponse: {e}")))?
            .image_ref;
        if let Some(tag) = verified.reference().tagged() {
            let tagging = self.tag(call, &verified, &tag, &image_id);
            match tokio::time::timeout(TAG_TIMEOUT, tagging).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(Status::unavailable(format!(
                        "containerd did not tag {tag} within {TAG_TIMEOUT:?}"
                    )))
                }
            }
        }
        Ok((reply, Some((verified.reference().repository(), image_id))))
    }

    /// Gives the pinned image kubelet's tag, then waits until containerd's CRI plugin, which
    /// learns new names from image events, answers for it, so kubelet's next `ImageStatus` by
    /// tag finds the image.
    async fn tag(&self, call: &UnaryCall, verified: &Verified, tag: &str, image_id: &str) -> Result<(), Status> {
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: tag.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        let mut head = call.head.clone();
        head.uri = http::Uri::from_static("/runtime.v1.ImageService/ImageStatus");
        let status_call = UnaryCall {
            head,
            message: Bytes::from(request.encode_to_vec()),
        };
        let tag_names_image = async || -> Result<bool, Status> {
            let reply = self.upstream.unary(&status_call, status_call.message.clone()).await?;
            let answer = ImageStatusResponse::decode(reply.message).ok().and_then(|r| r.image);
            Ok(answer.is_some_and(|i| i.id == image_id))
        };
        // A repeat pull: the tag already names this image.
        if tag_names_image().await? {
            return Ok(());
        }
        self.containerd.tag(&verified.pinned(), tag).await.map_err(|s| {
            Status::unavailable(format!(
                "pulled {} but could not tag it {tag}: {}",
                verified.pinned(),
                s.message()
            ))
        })?;
        // The CRI plugin usually sees the new name within a millisecond or two.
        let mut delay = Duration::from_millis(1);
        while !tag_names_image().await? {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `ImageStatus`: an image that did not come through the verified path under the policy now
    /// in force is answered "not present", so kubelet pulls it — through pullgate — first.
    ///
    /// `ImageStatus` carries no namespace, so the image is shown only when every decision a
    /// pull of it could get, in any namespace, is satisfied: not enforced, `allow`, or verified
    /// under that very rule.
    pub async fn image_status(&self, call: UnaryCall) -> Result<UnaryReply, Status> {
        let started = Instant::now();
        let reply = self.upstream.unary(&call, call.message.clone()).await?;
        let answer = ImageStatusResponse::decode(reply.message.clone())
            .map_err(|e| Status::internal(format!("containerd's ImageStatusResponse: {e}")))?;
        let Some(image) = answer.image else { return Ok(reply) };
        let asked = ImageStatusRequest::decode(call.message.clone())
            .map_err(|e| Status::invalid_argument(format!("ImageStatusRequest: {e}")))?
            .image
            .map(|i| i.image)
            .unwrap_or_default();

        let policy = self.policy();
        let names = names_to_judge(&asked, &image);
        // An image with no name a rule could meet is never shown: nothing vouches for it.
        let unmet = names
            .iter()
            .find_map(|n| self.unmet_decision(&policy, n, &image.id).map(|d| (n, d)));
        if unmet.is_none() && !names.is_empty() {
            return Ok(reply);
        }
        let name = unmet.map(|(n, _)| n).or(names.first());
        let rule = unmet.and_then(|(_, d)| d.rule);
        let digest = image
            .repo_digests
            .iter()
            .filter_map(|d| Reference::parse(d).ok())
            // containerd keeps names as spelled; they meet pullgate's in canonical form.
            .find(|r| name.is_none_or(|n| r.repository() == n.repository()))
            .and_then(|r| r.digest().cloned());
        let reason = format!(
            "image {} is in containerd but was not verified under the policy in force",
            image.id
        );
        let judgement = Judgement::new(
            name.map_or_else(|| asked.escape_debug().to_string(), |n| n.to_string()),
            name,
            rule.map(|r| r.name().to_string()),
            Mode::Enforce,
            Err(Refusal::policy(digest, reason)),
        );
        let record = judgement.record(Event::StatusHidden, "", "", started);
        tracing::info!(image = %record.image, id = %image.id, rule = ?record.rule, "image status hidden");
        // Hiding is the safe answer either way; the failure is logged and counted.
        let _ = self.write_record(record).await;
        // "Not present" is a response without the image field: an empty message.
        Ok(reply.with_message(Bytes::new()))
    }

    /// Audits a connection refused because its peer is not allowed (no call of it reaches the
    /// gate): at most one record per peer per second, whose `count` says how many connections
    /// it stands for. The call that opens a peer's window records at once and then, a window at
    /// a time, records what each window carried, until one carries nothing.
    pub async fn refuse_peer(&self, uid: Option<u32>) {
        let who = match self.peer_refusals.refuse(uid) {
            Counted::Carried => return,
            Counted::Opened(who) => who,
        };
        self.record_refusals(who, 1).await;
        loop {
            tokio::time::sleep(audit::PEER_REFUSAL_WINDOW).await;
            match self.peer_refusals.close(who) {
                0 => return,
                carried => self.record_refusals(who, carried).await,
            }
        }
    }

    /// Records the refusals still carried, on shutdown: none goes unrecorded.
    pub async fn flush_peer_refusals(&self) {
        for (who, carried) in self.peer_refusals.drain() {
            self.record_refusals(who, carried).await;
        }
    }

    async fn record_refusals(&self, who: Refused, count: u64) {
        tracing::warn!(?who, count, "refused connections from a peer not in socket.allowedUids");
        let reason = match who {
            Refused::Peer(Some(uid)) => format!("uid {uid} is not in socket.allowedUids"),
            Refused::Peer(None) => "the peer's credentials could not be read".to_string(),
            Refused::Others => format!(
                "peers beyond the first {} uids refused at once are not in socket.allowedUids",
                audit::MAX_REFUSED_PEERS
            ),
        };
        let record = Record {
            event: Event::PeerRefused,
            image: String::new(),
            digest: None,
            namespace: String::new(),
            pod: String::new(),
            rule: None,
            mode: Mode::Enforce.as_str().to_string(),
            decision: audit::Decision::Deny,
            reason,
            outcome: None,
            error: None,
            signatures: Vec::new(),
            attestations: Vec::new(),
            rejected: Vec::new(),
            duration_ms: 0.0,
            cache: "none",
            count: Some(count),
        };
        // Refusing needs no record; a failure is logged (with the count) and counted.
        let _ = self.write_record(record).await;
    }

    /// The first decision a pull of `name` could get that image `id` does not satisfy.
    fn unmet_decision<'p>(&self, policy: &'p Policy, name: &Reference, id: &str) -> Option<Decision<'p>> {
        policy.decisions_in_any_namespace(name).into_iter().find(|decision| {
            let satisfied = decision.mode != Mode::Enforce
                || decision.action == Action::Allow
                || decision.rule.is_some_and(|rule| {
                    self.admitted
                        .contains(&name.repository(), id, policy.hash(), rule.name())
                });
            !satisfied
        })
    }
}

/// The names an `ImageStatus` answer is judged under. containerd answers for an image found by
/// a name, a full id or an id prefix, so the string asked proves nothing about which image that
/// is: it is judged by itself only when it is one of the image's own names; asked any other way
/// (an id, a prefix, another spelling), every name the image has must pass.
fn names_to_judge(asked: &str, image: &pullgate_proto::cri::Image) -> Vec<Reference> {
    let names: Vec<Reference> = image
        .repo_tags
        .iter()
        .chain(&image.repo_digests)
        .filter_map(|n| Reference::parse(n).ok())
        .collect();
    match Reference::parse(asked) {
        Ok(asked) if names.contains(&asked) => vec![asked],
        _ => names,
    }
}

/// The `PullImageRequest` kubelet sent, with its image replaced by the verified digest.
///
/// Protobuf merges a repeated embedded message field into the first, and the last `image`
/// string wins, so appending `image { image: "<repo>@<digest>" }` changes that one string
/// and keeps every other byte kubelet sent, including fields pullgate does not know.
fn pin(message: &Bytes, verified: &Verified) -> Bytes {
    with_image(message, verified.pinned())
}

fn with_image(message: &Bytes, image: String) -> Bytes {
    let spec = ImageSpec {
        image,
        ..Default::default()
    };
    let patch = PullImageRequest {
        image: Some(spec),
        auth: None,
        sandbox_config: None,
    }
    .encode_to_vec();
    let mut pinned = Vec::with_capacity(message.len() + patch.len());
    pinned.extend_from_slice(message);
    pinned.extend_from_slice(&patch);
    Bytes::from(pinned)
}

// === impl Admitted ===

impl Admitted {
    fn insert(&self, repository: String, image_id: String, generation: &str, rule: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ADMITTED {
            map.clear();
        }
        let entry = map.entry((repository, image_id)).or_default();
        if entry.generation != generation {
            *entry = Verifications {
                generation: generation.to_string(),
                rules: BTreeSet::new(),
            };
        }
        entry.rules.insert(rule.to_string());
    }

    fn contains(&self, repository: &str, image_id: &str, generation: &str, rule: &str) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(repository.to_string(), image_id.to_string()))
            .is_some_and(|v| v.generation == generation && v.rules.contains(rule))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use pullgate_proto::cri::{AuthConfig, PodSandboxConfig, PodSandboxMetadata};

    use super::*;

    #[test]
    fn pinning_replaces_only_the_image_string() {
        let original = PullImageRequest {
            image: Some(ImageSpec {
                image: "127.0.0.1:5000/app:v1".into(),
                annotations: HashMap::from([("k".to_string(), "v".to_string())]),
                user_specified_image: "app:v1".into(),
                runtime_handler: "runc".into(),
                image_ref: String::new(),
            }),
            auth: Some(AuthConfig {
                username: "u".into(),
                password: "p".into(),
                ..Default::default()
            }),
            sandbox_config: Some(PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "web-0".into(),
                    namespace: "prod".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let mut bytes = original.encode_to_vec();
        // A field from a CRI version newer than pullgate's: field 77, varint 1.
        bytes.extend_from_slice(&[0xe8, 0x04, 0x01]);
        let bytes = Bytes::from(bytes);
        let pinned_ref = format!("127.0.0.1:5000/app@sha256:{}", "a".repeat(64));

        let pinned = with_image(&bytes, pinned_ref.clone());
        assert!(
            pinned.starts_with(&bytes),
            "every byte kubelet sent is kept, unknown fields included"
        );
        let decoded = PullImageRequest::decode(pinned).unwrap();
        let mut expected = original;
        expected.image.as_mut().unwrap().image = pinned_ref;
        assert_eq!(decoded, expected);
    }
}
