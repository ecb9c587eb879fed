//! Verifications remembered and shared.
//!
//! A rollout sends the same image to pullgate from many pods at once, and kubelet pulls the same
//! tags again and again. Two things keep that cheap without weakening a decision:
//!
//! - **Single flight**: concurrent requests for one key wait for one verification and share its
//!   outcome, allow or deny.
//! - **A bounded memory of successes**: a complete success is kept until it expires (a TTL,
//!   shortened by the caller, e.g. to when an attestation would pass its `maxAge`). Failures are
//!   never kept: the next request verifies again.
//!
//! The key names everything the outcome depends on (the image digest, the policy and trust
//! generation, the rule), so a reload changes every key and no stale allow survives it.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

use tokio::sync::watch;

/// How a lookup was answered, as the audit record's `cache` field says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Verified now, by this request.
    Miss,
    /// A remembered success.
    Hit,
    /// Waited for a verification another request was running.
    Shared,
}

impl Lookup {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Miss => "miss",
            Self::Hit => "hit",
            Self::Shared => "shared",
        }
    }
}

/// Successes of type `V` remembered by key `K`, and verifications in flight, whose outcomes
/// (`V` or a failure `E`) are shared with everyone who asked meanwhile.
pub struct Cache<K, V, E> {
    remembered: Mutex<HashMap<K, (V, Instant)>>,
    in_flight: Mutex<HashMap<K, Outcome<V, E>>>,
    ttl: Duration,
    capacity: usize,
}

impl<K, V, E> Cache<K, V, E>
where
    K: Clone + Eq + Hash,
    V: Clone,
    E: Clone,
{
    /// A cache keeping at most `capacity` successes, each at most `ttl`.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            remembered: Mutex::default(),
            in_flight: Mutex::default(),
            ttl,
            capacity,
        }
    }

    /// The outcome for `key`: remembered, shared with a verification in flight, or from running
    /// `verify` now. A success is remembered until `now + ttl`, or `until(&success)` when that is
    /// sooner.
    pub async fn get_or_verify<Fut>(
        &self,
        key: K,
        verify: impl FnOnce() -> Fut,
        until: impl Fn(&V) -> Option<Instant>,
    ) -> (Result<V, E>, Lookup)
    where
        Fut: std::future::Future<Output = Result<V, E>>,
    {
        let mut verify = Some(verify);
        loop {
            if let Some(value) = self.remembered(&key) {
                return (Ok(value), Lookup::Hit);
            }
            // Follow a verification in flight, or lead one; the lock is not held across an await.
            let role = {
                let mut in_flight = lock(&self.in_flight);
                match in_flight.get(&key) {
                    Some(receiver) => Role::Follow(receiver.clone()),
                    None => {
                        let (sender, receiver) = watch::channel(None);
                        in_flight.insert(key.clone(), receiver);
                        Role::Lead(sender)
                    }
                }
            };
            match role {
                Role::Lead(sender) => {
                    // `verify` is taken once: only a follower goes round the loop again, and it
                    // leads at most once.
                    let Some(verify) = verify.take() else {
                        unreachable!("a request leads at most once");
                    };
                    let _leading = Leading { cache: self, key: &key };
                    let outcome = verify().await;
                    if let Ok(value) = &outcome {
                        self.remember(key.clone(), value.clone(), &until);
                    }
                    let _ = sender.send(Some(outcome.clone()));
                    return (outcome, Lookup::Miss);
                }
                Role::Follow(mut receiver) => match receiver.wait_for(Option::is_some).await {
                    Ok(outcome) => {
                        if let Some(outcome) = outcome.clone() {
                            return (outcome, Lookup::Shared);
                        }
                    }
                    // The leader was cancelled (its caller went away) before it finished: try
                    // again, perhaps leading this time.
                    Err(_) => continue,
                },
            }
        }
    }

    /// How many successes are remembered (expired ones included until they are swept).
    pub fn len(&self) -> usize {
        lock(&self.remembered).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remembered(&self, key: &K) -> Option<V> {
        let mut remembered = lock(&self.remembered);
        match remembered.get(key) {
            Some((value, expires)) if Instant::now() < *expires => Some(value.clone()),
            Some(_) => {
                remembered.remove(key);
                None
            }
            None => None,
        }
    }

    fn remember(&self, key: K, value: V, until: &impl Fn(&V) -> Option<Instant>) {
        let now = Instant::now();
        let expires = match until(&value) {
            Some(limit) => limit.min(now + self.ttl),
            None => now + self.ttl,
        };
        if expires <= now || self.capacity == 0 {
            return;
        }
        let mut remembered = lock(&self.remembered);
        if remembered.len() >= self.capacity {
            remembered.retain(|_, (_, at)| *at > now);
        }
        if remembered.len() >= self.capacity {
            // Still full of live entries: the one that expires first goes.
            if let Some(first) = remembered.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone()) {
                remembered.remove(&first);
            }
        }
        remembered.insert(key, (value, expires));
    }
}

/// Where a verification in flight publishes its outcome: `None` until it finishes.
type Outcome<V, E> = watch::Receiver<Option<Result<V, E>>>;

enum Role<V, E> {
    Lead(watch::Sender<Option<Result<V, E>>>),
    Follow(Outcome<V, E>),
}

/// Removes the leader's in-flight entry when it finishes or is cancelled, so followers never
/// wait on a verification nobody runs.
struct Leading<'c, K: Eq + Hash, V, E> {
    cache: &'c Cache<K, V, E>,
    key: &'c K,
}

impl<K: Eq + Hash, V, E> Drop for Leading<'_, K, V, E> {
    fn drop(&mut self) {
        lock(&self.cache.in_flight).remove(self.key);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
