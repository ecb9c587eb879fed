//! The decision for one request, top to bottom: policy → resolve → verify → audit → pull.
//!
//! `judge.rs` decides (shared with `pullgate verify`); this file runs a `PullImage` from that
//! decision to containerd's answer and its record; `pull.rs` pulls exactly what was judged, or
//! finds it already in containerd; `status.rs` answers `ImageStatus` with what was verified,
//! which `admitted.rs` keeps (in memory and in `stateDir`); `peers.rs` records refused
//! connections.

use std::{
    future::Future,
    path::Path,
    sync::{Arc, RwLock},
    time::Instant,
};

use prost::Message;
use pullgate_proto::cri::PullImageRequest;
use tonic::Status;

use crate::{
    admission::{Admission, Waiver},
    audit::{AuditError, AuditLog, Outcome, PeerRefusals, Record},
    config::DockerConfigFile,
    containerd::Containerd,
    cri::{ImageGate, UnaryCall, UnaryReply, Upstream},
    metrics::Metrics,
    policy::{Mode, Policy, PolicyErrors},
    registry::{Credentials, DockerConfig, DockerConfigError},
    state::StateDir,
};

mod admitted;
mod judge;
mod peers;
mod pull;
mod status;
#[cfg(test)]
mod tests;

use admitted::Admitted;
pub use judge::{Judge, Judgement};

/// What a record's line adds to the record itself (seq, time, prev, an outcome and its error),
/// with room to spare: how much a pull's record is sure to need.
const RECORD_ENVELOPE_BYTES: usize = 1024;

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
    /// reported in `metrics`. With `state`, images verified under this very policy before a
    /// restart are read back from it, and those verified from now on are kept there.
    pub fn new(
        policy: Policy,
        judge: Judge,
        audit: AuditLog,
        upstream: Upstream,
        containerd: Containerd,
        metrics: Arc<Metrics>,
        state: Option<StateDir>,
    ) -> Self {
        metrics.trust_expiry(policy.trust_expiry_timestamps(jiff::Timestamp::now()));
        let admitted = Admitted::new(policy.hash(), state);
        Self {
            policy: RwLock::new(Arc::new(policy)),
            judge,
            audit,
            upstream,
            containerd,
            admitted,
            peer_refusals: PeerRefusals::default(),
            metrics,
        }
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Writes the verifications the state file does not hold yet (at shutdown).
    pub fn flush_admitted(&self) {
        self.admitted.flush();
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
    pub fn reload_policy(&self, path: &Path) -> Result<(), PolicyErrors> {
        let policy = match Policy::load(path) {
            Ok(policy) => policy,
            Err(errors) => {
                self.metrics.policy_reload(false);
                return Err(errors);
            }
        };
        let expiry = policy.trust_expiry_timestamps(jiff::Timestamp::now());
        // Verifications under the old policy or trust material are forgotten with it.
        self.admitted.set_generation(policy.hash());
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
        self.metrics.trust_expiry(expiry);
        self.metrics.policy_reload(true);
        Ok(())
    }

    /// Reads the Docker config `file` names and puts it in force for registries kubelet sends
    /// no credentials for; on error the current one stays.
    pub fn reload_docker_config(&self, file: &DockerConfigFile) -> Result<(), DockerConfigError> {
        let config = DockerConfig::read(file)?;
        self.judge.set_docker_config(config);
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
        let mut judgement = self
            .judge
            .judge(&policy, image, namespace, Credentials::from_cri(request.auth.as_ref()))
            .await;
        // The content fetched while the image was verified: kept for the pull below, or
        // dropped, which stops the download and lets containerd collect it.
        let mut prefetch = judgement.prefetch.take();
        let mut record = judgement.record(namespace, pod, started);
        self.metrics.decision(&record);
        let enforced = judgement.mode == Mode::Enforce;
        let admission = match judgement.verdict {
            Ok(admission) => admission,
            Err(denial) if enforced => {
                drop(prefetch.take());
                record.outcome = Some(Outcome::Denied);
                tracing::info!(image = %record.image, namespace, pod, rule = ?record.rule, decision = ?record.decision, reason = %record.reason, "pull denied");
                self.record_pull(record, enforced, &judgement.image).await?;
                return Err(denial.status());
            }
            Err(denial) => Admission::Waived(Waiver::new(format!("mode {}: {denial}", judgement.mode))),
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
        // A verification holds only until its signatures lapse or an attestation it needed
        // turns older than `maxAge`.
        let until = match &admission {
            Admission::Verified(verified) => policy
                .rules()
                .iter()
                .find(|r| Some(r.name()) == judgement.rule.as_deref())
                .and_then(|rule| judge::stale_at(verified, rule)),
            Admission::Waived(_) => None,
        };
        let unwritten = Unwritten {
            record: Some(record),
            gate: self,
        };
        let rule = judgement.rule.as_deref().unwrap_or_default();
        let present = match &admission {
            Admission::Verified(verified) => {
                self.already_pulled(&call, &request, verified, policy.hash(), rule)
                    .await
            }
            Admission::Waived(_) => None,
        };
        let pulled = match present {
            Some((reply, admitted)) => Ok((reply, Some(admitted))),
            None => {
                if let Some(prefetch) = &mut prefetch {
                    prefetch.finished().await;
                }
                self.pull(&call, admission).await
            }
        };
        // Once containerd's image record holds the content, the lease can go without a
        // collection; a failed pull's content is collected.
        match (prefetch, pulled.is_ok()) {
            (Some(prefetch), true) => prefetch.release(),
            (failed, _) => drop(failed),
        }
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
        if let Some((image, digest)) = admitted {
            self.admitted.insert(image, digest, policy.hash(), rule, until);
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
}

// === impl ImageGate for Gate ===

impl ImageGate for Gate {
    fn pull_image(&self, call: UnaryCall) -> impl Future<Output = Result<UnaryReply, Status>> + Send {
        Gate::pull_image(self, call)
    }

    fn image_status(&self, call: UnaryCall) -> impl Future<Output = Result<UnaryReply, Status>> + Send {
        Gate::image_status(self, call)
    }

    fn refuse_peer(&self, uid: Option<u32>) -> impl Future<Output = ()> + Send {
        Gate::refuse_peer(self, uid)
    }

    fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}
