//! `ImageStatus`: an image is shown only once it was verified under the policy in force.

use std::time::Instant;

use bytes::Bytes;
use prost::Message;
use pullgate_proto::cri::ImageStatusRequest;
use tonic::Status;

use super::Gate;
use crate::{
    audit::Record,
    cri::{UnaryCall, UnaryReply},
    denial::{Cause, Denial},
    policy::{Decision, Mode, Policy, Verdict},
    reference::Reference,
};

// === impl Gate: ImageStatus ===

impl Gate {
    /// `ImageStatus`: an image that did not come through the verified path under the policy now
    /// in force is answered "not present", so kubelet pulls it — through pullgate — first.
    ///
    /// `ImageStatus` carries no namespace, so the image is shown only when every decision a
    /// pull of it could get, in any namespace, is satisfied: not enforced, `allow`, or verified
    /// under that very rule.
    pub async fn image_status(&self, call: UnaryCall) -> Result<UnaryReply, Status> {
        let started = Instant::now();
        let (reply, found) = self.upstream.image_status(&call).await?;
        let Some(image) = found else { return Ok(reply) };
        let asked = ImageStatusRequest::decode(call.message.clone())
            .map_err(|e| Status::invalid_argument(format!("ImageStatusRequest: {e}")))?
            .image
            .map(|i| i.image)
            .unwrap_or_default();

        let policy = self.policy();
        let names = names_to_judge(&asked, &image);
        // An image with no name a rule could meet is never shown: nothing vouches for it.
        let mut unmet = names
            .iter()
            .find_map(|n| self.unmet_decision(&policy, n, &image, None).map(|d| (n, d)));
        if unmet.is_none() && !names.is_empty() {
            // A name is no proof of what it points at: a tag alone (`ctr images tag`) may name
            // another manifest with this id, and containerd lets even a digest name point at
            // any target. What each name points at is asked of containerd, only for an image
            // about to be shown on a verification; one that cannot be read is not shown.
            if !names.iter().any(|n| verified_under_enforce(&policy, n)) {
                return Ok(reply);
            }
            match self.name_targets(&image).await {
                Ok(targets) => {
                    unmet = names
                        .iter()
                        .find_map(|n| self.unmet_decision(&policy, n, &image, Some(&targets)).map(|d| (n, d)));
                    if unmet.is_none() {
                        return Ok(reply);
                    }
                }
                Err(status) => {
                    tracing::warn!(id = %image.id, error = %status.message(), "could not read the image's names")
                }
            }
        }
        let name = unmet.map(|(n, _)| n).or(names.first());
        let rule = unmet.and_then(|(_, d)| d.rule());
        let digest = image
            .repo_digests
            .iter()
            .filter_map(|d| Reference::parse(d).ok())
            // containerd keeps names as spelled; they meet pullgate's in canonical form.
            .find(|r| name.is_none_or(|n| r.repository() == n.repository()))
            .and_then(|r| r.digest().cloned());
        let image_name = name.map_or_else(|| asked.escape_debug().to_string(), |n| n.to_string());
        let rule = rule.map(|r| r.name().to_string());
        let denial = Denial {
            image: Denial::image_name(name, digest.as_ref(), &image_name),
            rule: rule.clone(),
            cause: Cause::NotAdmitted {
                image_id: image.id.clone(),
            },
            signatures_in: None,
        };
        let digest = digest.map(|d| d.to_string());
        let record = Record::status_hidden(image_name, digest, rule, denial.to_string(), started.elapsed());
        tracing::info!(image = %record.image, id = %image.id, rule = ?record.rule, "image status hidden");
        // Hiding is the safe answer either way; the failure is logged and counted.
        let _ = self.write_record(record).await;
        // "Not present" is a response without the image field: an empty message.
        Ok(reply.with_message(Bytes::new()))
    }

    /// The first decision a pull of `name` could get that `image` does not satisfy. A verified
    /// decision is met when every manifest containerd has for the image's id in `name`'s
    /// repository was verified under that rule: containerd merges manifests with the same
    /// config under one id, and its answer cannot say which of them `name` is. The manifests
    /// are those `targets` (repository, digest) lists, else those its digest names say.
    fn unmet_decision<'p>(
        &self,
        policy: &'p Policy,
        name: &Reference,
        image: &pullgate_proto::cri::Image,
        targets: Option<&[(String, String)]>,
    ) -> Option<Decision<'p>> {
        let repository = name.repository();
        let digests = match targets {
            Some(targets) => targets
                .iter()
                .filter(|(r, _)| *r == repository)
                .map(|(_, d)| d.clone())
                .collect(),
            None => digests_in(image, &repository),
        };
        policy.decisions_in_any_namespace(name).into_iter().find(|decision| {
            let satisfied = decision.mode != Mode::Enforce
                || match decision.verdict {
                    Verdict::Allow(_) => true,
                    Verdict::Verify(rule) => {
                        self.admitted
                            .contains(&repository, &image.id, &digests, policy.hash(), rule.name())
                    }
                    Verdict::Deny(_) => false,
                };
            !satisfied
        })
    }

    /// What each of `image`'s names points at in containerd: (repository, manifest digest)
    /// pairs. A name gone since the CRI answered points at nothing.
    async fn name_targets(&self, image: &pullgate_proto::cri::Image) -> Result<Vec<(String, String)>, Status> {
        let names: Vec<(&str, Reference)> = image
            .repo_tags
            .iter()
            .chain(&image.repo_digests)
            .filter_map(|spelled| Reference::parse(spelled).ok().map(|name| (spelled.as_str(), name)))
            .collect();
        let spelled: Vec<&str> = names.iter().map(|(spelled, _)| *spelled).collect();
        let targets = self.containerd.targets(&spelled).await?;
        Ok(names
            .iter()
            .filter_map(|(spelled, name)| targets.get(*spelled).map(|digest| (name.repository(), digest.clone())))
            .collect())
    }
}

/// Whether a pull of `name` could need a verification: only then does what a name points at
/// matter.
fn verified_under_enforce(policy: &Policy, name: &Reference) -> bool {
    policy
        .decisions_in_any_namespace(name)
        .iter()
        .any(|d| d.mode == Mode::Enforce && matches!(d.verdict, Verdict::Verify(_)))
}

/// The names an `ImageStatus` answer is judged under. containerd answers for an image found by
/// a name, a full id or an id prefix, so the string asked proves nothing about which image that
/// is: it is judged by itself only when it is one of the image's own names; asked any other way
/// (an id, a prefix, another spelling), every name the image has must pass, and a name
/// pullgate cannot read (none to judge) keeps it hidden: that name may be the one asked.
fn names_to_judge(asked: &str, image: &pullgate_proto::cri::Image) -> Vec<Reference> {
    let parsed: Vec<Option<Reference>> = image
        .repo_tags
        .iter()
        .chain(&image.repo_digests)
        .map(|n| Reference::parse(n).ok())
        .collect();
    match Reference::parse(asked) {
        Ok(asked) if parsed.iter().flatten().any(|n| *n == asked) => vec![asked],
        _ => parsed.into_iter().collect::<Option<Vec<_>>>().unwrap_or_default(),
    }
}

/// The manifest digests of `image` containerd lists under `repository` (canonical form).
fn digests_in(image: &pullgate_proto::cri::Image, repository: &str) -> Vec<String> {
    image
        .repo_digests
        .iter()
        .filter_map(|d| Reference::parse(d).ok())
        .filter(|r| r.repository() == repository)
        .filter_map(|r| r.digest().map(ToString::to_string))
        .collect()
}
