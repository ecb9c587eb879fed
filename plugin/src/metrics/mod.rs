//! Metrics (SPEC §7): what pullgate decided, how long verifications took, how the cache, the
//! registries, containerd and policy reloads fared — counted where each happens and served as
//! Prometheus text by [`endpoint`], with `/healthz` and `/readyz`.
//!
//! Every label takes values from a small fixed set or from the policy (rule names), so a
//! registry or a caller cannot grow the number of series.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use crate::{audit::Record, cache::Lookup};

pub mod endpoint;
mod text;

#[cfg(test)]
mod tests;

pub use text::CONTENT_TYPE;

use text::{Exposition, Kind};

/// Upper bounds of the verification histogram's buckets, in seconds: 1 ms to 10 s (beyond is
/// `+Inf`; `verifyTimeout` is at most 5 minutes).
const VERIFICATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The counters, histogram and gauge of one pullgate process.
pub struct Metrics {
    decisions: Family<3>,
    verifications: Histogram,
    cache_lookups: Family<1>,
    registry_requests: Family<1>,
    upstream_requests: Family<2>,
    policy_reloads: Family<1>,
    audit_write_failures: Family<0>,
    /// One per trusted root of the policy in force, by name; empty while it has none.
    trust_expiry: Mutex<Vec<(String, f64)>>,
}

/// How one HTTP request to a registry, or to its token realm, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryOutcome {
    /// A 2xx answer.
    Ok,
    /// The registry does not have what was asked for: 404, or a status the caller treats the
    /// same way (400 or 405 from a registry without the referrers API).
    NotFound,
    /// 401 or 403: an authentication challenge, answered or not, or refused credentials.
    Unauthorized,
    /// Any other HTTP status.
    Error,
    /// No HTTP answer: the connection, TLS or the timeout failed.
    Unavailable,
}

/// Counters of one metric family, by label values.
struct Family<const N: usize> {
    labels: [&'static str; N],
    counts: Mutex<BTreeMap<[String; N], u64>>,
}

/// Observations counted into buckets by upper bound, with their sum.
struct Histogram {
    bounds: &'static [f64],
    state: Mutex<HistogramState>,
}

#[derive(Default)]
struct HistogramState {
    /// Per bucket, not cumulative; the last is `+Inf`.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

// === impl Metrics ===

impl Metrics {
    pub fn new() -> Self {
        let seeded = |label, values: &[&str]| {
            let family = Family::new([label]);
            for value in values {
                family.add([value], 0);
            }
            family
        };
        Self {
            decisions: Family::new(["decision", "rule", "mode"]),
            verifications: Histogram::new(&VERIFICATION_BUCKETS),
            cache_lookups: seeded("result", &["miss", "shared", "hit"]),
            registry_requests: seeded("outcome", &RegistryOutcome::ALL.map(RegistryOutcome::as_str)),
            upstream_requests: Family::new(["method", "code"]),
            policy_reloads: seeded("result", &["success", "failure"]),
            audit_write_failures: {
                let family = Family::new([]);
                family.add([], 0);
                family
            },
            trust_expiry: Mutex::new(Vec::new()),
        }
    }

    /// A pull's decision, as its audit record states it.
    pub fn decision(&self, record: &Record) {
        let rule = record.rule.as_deref().unwrap_or_default();
        self.decisions.add([record.decision.as_str(), rule, &record.mode], 1);
    }

    /// A verification this process ran to its end (a cache miss), and how long it took.
    pub fn verification(&self, took: Duration) {
        self.verifications.observe(took.as_secs_f64());
    }

    /// How the verification cache answered.
    pub fn cache_lookup(&self, lookup: Lookup) {
        self.cache_lookups.add([lookup.as_str()], 1);
    }

    pub fn registry_request(&self, outcome: RegistryOutcome) {
        self.registry_requests.add([outcome.as_str()], 1);
    }

    /// A CRI call answered on the listen socket: its method's label and the gRPC code name
    /// the caller got.
    pub fn upstream_request(&self, method: &str, code: &str) {
        self.upstream_requests.add([method, code], 1);
    }

    /// A SIGHUP reload: the new policy and trust material put in force, or refused.
    pub fn policy_reload(&self, succeeded: bool) {
        self.policy_reloads
            .add([if succeeded { "success" } else { "failure" }], 1);
    }

    /// An audit record that could not be written (SPEC §6): an enforced pull it was for was
    /// refused, any other decision took effect without its record.
    pub fn audit_write_failure(&self) {
        self.audit_write_failures.add([], 1);
    }

    /// When the trust material of each root of the policy in force stops being valid (unix
    /// seconds, `+Inf` for never), by root name; the series of roots not listed go away.
    pub fn trust_expiry(&self, by_root: Vec<(String, f64)>) {
        *lock(&self.trust_expiry) = by_root;
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Exposition::default();
        self.decisions.render(
            &mut out,
            "pullgate_decisions_total",
            "Pull decisions by decision as the audit record gives it (allow, deny, warn, audit-deny), \
             the rule that decided (\"\" when none matched) and its mode.",
        );
        self.verifications.render(
            &mut out,
            "pullgate_verification_duration_seconds",
            "Time taken by the verifications pullgate ran, i.e. cache misses only: fetching an image's \
             signatures and attestations and checking them. Tag resolution, cache hits, shared \
             verifications and verifications cut off by verifyTimeout are not observed.",
        );
        self.cache_lookups.render(
            &mut out,
            "pullgate_cache_lookups_total",
            "Verification cache lookups by result: miss (verified by this pull), shared (waited for \
             a verification of the same image in flight), hit (a remembered success).",
        );
        self.registry_requests.render(
            &mut out,
            "pullgate_registry_requests_total",
            "HTTP requests to registries and their token realms by outcome: ok (2xx), not_found \
             (404, or a registry without the referrers API), unauthorized (401 or 403, including \
             challenges that were then answered), error (any other HTTP status), unavailable (no \
             HTTP answer: connection, TLS or timeout).",
        );
        self.upstream_requests.render(
            &mut out,
            "pullgate_upstream_requests_total",
            "CRI calls answered on pullgate's socket by method (the ImageService method, or other) \
             and the gRPC status code the caller got (OK; Unknown for a denied pull; Unavailable, \
             ...).",
        );
        self.policy_reloads.render(
            &mut out,
            "pullgate_policy_reloads_total",
            "SIGHUP reloads of the policy and its trust material by result: success, or failure \
             (the new version was refused; the last good one stays in force).",
        );
        self.audit_write_failures.render(
            &mut out,
            "pullgate_audit_write_failures_total",
            "Audit records that could not be written or synced, of any event. An enforced pull \
             whose record failed was refused; a warn or audit pull, an ImageStatus hidden or a \
             refused connection went ahead without its record. /readyz is 503 until a record (or \
             a probe) can be written again.",
        );
        let expiry = "pullgate_trust_material_expiry_timestamp_seconds";
        out.family(
            expiry,
            Kind::Gauge,
            "Unix time at which the trust material of one trusted root (label root: default for \
             spec.trustedRoot, else its name in spec.trustedRoots) stops being valid for the \
             authorities that use it: for each kind they need (Fulcio CA and CT log key for \
             keyless, Rekor key for tlog: required, timestamp authority for keyless with tlog: \
             ignore or on a root without a Rekor log), the latest end among that kind's entries in \
             the root that were valid at the last load or reload (a CA's validFor narrowed by its \
             certificates' validity); the earliest of those ends. +Inf when none of them ends or no \
             authority uses the root; a past time (0 if none ever ended) when a needed kind has no \
             valid entry. No series when the policy has no trusted root.",
        );
        for (root, at) in lock(&self.trust_expiry).iter() {
            out.value(expiry, &[("root", root)], *at);
        }
        out.finish()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

// === impl RegistryOutcome ===

impl RegistryOutcome {
    pub const ALL: [Self; 5] = [
        Self::Ok,
        Self::NotFound,
        Self::Unauthorized,
        Self::Error,
        Self::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NotFound => "not_found",
            Self::Unauthorized => "unauthorized",
            Self::Error => "error",
            Self::Unavailable => "unavailable",
        }
    }
}

// === impl Family ===

impl<const N: usize> Family<N> {
    fn new(labels: [&'static str; N]) -> Self {
        Self {
            labels,
            counts: Mutex::default(),
        }
    }

    fn add(&self, values: [&str; N], n: u64) {
        *lock(&self.counts).entry(values.map(str::to_string)).or_insert(0) += n;
    }

    fn render(&self, out: &mut Exposition, name: &str, help: &str) {
        out.family(name, Kind::Counter, help);
        for (values, count) in lock(&self.counts).iter() {
            let labels: Vec<(&str, &str)> = self
                .labels
                .iter()
                .copied()
                .zip(values.iter().map(String::as_str))
                .collect();
            out.count(name, &labels, *count);
        }
    }
}

// === impl Histogram ===

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            state: Mutex::new(HistogramState {
                buckets: vec![0; bounds.len() + 1],
                ..HistogramState::default()
            }),
        }
    }

    fn observe(&self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        let mut state = lock(&self.state);
        state.buckets[bucket] += 1;
        state.sum += value;
        state.count += 1;
    }

    /// `_bucket` lines, cumulative as the format wants, then `_sum` and `_count`.
    fn render(&self, out: &mut Exposition, name: &str, help: &str) {
        out.family(name, Kind::Histogram, help);
        let state = lock(&self.state);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        let bounds = self.bounds.iter().copied().chain([f64::INFINITY]);
        for (bound, count) in bounds.zip(&state.buckets) {
            cumulative += count;
            out.count(&bucket, &[("le", &text::float(bound))], cumulative);
        }
        out.value(&format!("{name}_sum"), &[], state.sum);
        out.count(&format!("{name}_count"), &[], state.count);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
