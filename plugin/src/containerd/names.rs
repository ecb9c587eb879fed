//! What containerd's image names point at, remembered while containerd's image events say
//! nothing changed: `ImageStatus` then asks containerd nothing for a name it asked before.
//!
//! The cache is only as true as the event stream, so it holds four rules:
//! - it is used only while the subscription is live (the stream delivered a marker pullgate
//!   published after the stream had started, see `events.rs`), and emptied whenever it is not;
//! - it is used only while the stream keeps up: one of the markers pullgate publishes every
//!   250 ms, published at most [`MAX_LAG`] ago, has come back. A stream held up (a stalled
//!   connection, a busy containerd) delays events without losing them, so the cache is then
//!   left unused, not emptied, and every name is asked;
//! - any create, update or delete event for a name drops that name;
//! - a lookup fills an entry only if no event at all arrived between the lookup's start and
//!   its insert (one generation counter for every event: stricter than per name, and bounded).
//!
//! Why that is enough: containerd publishes an image event for every create, update and delete
//! of a name, after the change is committed (1.6: its images service; 2.x: the image store
//! itself, so transfer-service pulls too). A change committed after a lookup read the name is
//! therefore delivered on a live subscription after that read, and either keeps the answer out
//! or drops it.
//!
//! The window left open: a name moved whose event has not reached pullgate yet when the CRI's
//! answer is judged. containerd's own CRI plugin learns of changes made through the image API
//! from the same events, so the CRI answer being judged is about as old. More to the point,
//! `ImageStatus` is a snapshot: kubelet creates the container by name some time after the
//! answer, and a name moved in between was never caught, with or without this cache. The
//! event's delivery (a unix-socket hop, usually well under a millisecond) adds to that window
//! a fraction of what the window already is, and only for an actor who can write containerd's
//! image store — who could as well move the name just after any lookup. While the cache is
//! used, an event is heard at most [`MAX_LAG`] after containerd broadcast it: a marker is
//! delivered after every event broadcast before it. (Between containerd's commit and its
//! broadcast lies a moment that containerd's CRI plugin, fed by the same broadcast, shares.)
//! The event stream has a connection to containerd of its own: forwarded replies a caller
//! leaves unread cannot hold it up.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// At most this many names are remembered; a full cache starts over (a node holds a few
/// hundred images, each with a name or two).
const MAX_NAMES: usize = 4096;

/// How far behind containerd the events may be while the cache is used: a marker pullgate
/// published at most this long ago must have come back. A stream held up (a stalled
/// connection, a busy containerd) makes the cache unused, not stale.
pub const MAX_LAG: Duration = Duration::from_secs(1);

/// Names and the manifest digest each pointed at, valid while containerd's image events are
/// followed.
#[derive(Default)]
pub struct NameCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Whether the event subscription is live; entries are kept and trusted only then.
    live: bool,
    /// Moves with every event and every change of `live`.
    generation: u64,
    /// Until when the events are known to be recent enough ([`MAX_LAG`] after the latest
    /// marker heard was published).
    fresh_until: Option<Instant>,
    targets: HashMap<String, String>,
}

/// The moment a lookup started, for [`NameCache::insert`]; none while the cache is not live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(u64);

// === impl NameCache ===

impl NameCache {
    /// The digest `name` pointed at, if remembered and the cache is live.
    pub fn get(&self, name: &str) -> Option<String> {
        let state = self.lock();
        if !state.usable() {
            return None;
        }
        state.targets.get(name).cloned()
    }

    /// Taken before a lookup whose answers may fill the cache.
    pub fn ticket(&self) -> Option<Ticket> {
        let state = self.lock();
        state.usable().then_some(Ticket(state.generation))
    }

    /// Remembers that `name` points at `digest`, as a lookup started at `ticket` found; ignored
    /// when anything was heard or lost since, or the events are not recent.
    pub fn insert(&self, ticket: Ticket, name: &str, digest: &str) {
        let mut state = self.lock();
        if !state.usable() || state.generation != ticket.0 {
            return;
        }
        if state.targets.len() >= MAX_NAMES && !state.targets.contains_key(name) {
            state.targets.clear();
        }
        state.targets.insert(name.to_string(), digest.to_string());
    }

    /// An image event for `name` (created, updated or deleted), or pullgate's own change of it.
    pub fn changed(&self, name: &str) {
        let mut state = self.lock();
        state.generation += 1;
        state.targets.remove(name);
    }

    /// Something changed that cannot be pinned to a name (an event pullgate could not read).
    pub fn changed_all(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.targets.clear();
    }

    /// The subscription became live (`true`) or was lost (`false`); either way nothing
    /// remembered before is kept.
    pub fn set_live(&self, live: bool) {
        let mut state = self.lock();
        state.live = live;
        state.generation += 1;
        state.fresh_until = None;
        state.targets.clear();
    }

    /// A marker published at `published` came back: every event containerd published before
    /// it has been heard, so the cache may be used until [`MAX_LAG`] after it.
    pub fn heard_marker(&self, published: Instant) {
        let mut state = self.lock();
        let until = published + MAX_LAG;
        state.fresh_until = Some(state.fresh_until.map_or(until, |kept| kept.max(until)));
    }

    pub fn is_live(&self) -> bool {
        self.lock().live
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is consistent after every statement; a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// === impl State ===

impl State {
    /// Live, and the events recent: entries may be read and added.
    fn usable(&self) -> bool {
        self.live && self.fresh_until.is_some_and(|until| Instant::now() < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> NameCache {
        let cache = NameCache::default();
        cache.set_live(true);
        cache.heard_marker(Instant::now());
        cache
    }

    #[test]
    fn the_cache_is_unused_once_no_recent_marker_came_back() {
        let cache = NameCache::default();
        cache.set_live(true);
        // Live, but no marker heard yet: nothing is read or kept.
        assert_eq!(cache.ticket(), None);
        // The latest marker heard was published longer ago than the lag allowed.
        let now = Instant::now();
        let too_old = now
            .checked_sub(MAX_LAG + Duration::from_millis(1))
            .expect("a monotonic clock over a second old");
        cache.heard_marker(too_old);
        assert_eq!(cache.ticket(), None);
        cache.heard_marker(Instant::now());
        let ticket = cache.ticket().expect("recent");
        cache.insert(ticket, "r/a:1", "sha256:a");
        assert_eq!(cache.get("r/a:1").as_deref(), Some("sha256:a"));
        // An older marker heard late does not shorten what a newer one allows.
        cache.heard_marker(too_old);
        assert_eq!(cache.get("r/a:1").as_deref(), Some("sha256:a"));
        // Losing the subscription forgets how recent the events were.
        cache.set_live(false);
        cache.set_live(true);
        assert_eq!(cache.ticket(), None);
    }

    #[test]
    fn a_lookup_fills_the_cache_when_nothing_was_heard_meanwhile() {
        let cache = live();
        let ticket = cache.ticket().expect("live");
        cache.insert(ticket, "r/a:1", "sha256:a");
        assert_eq!(cache.get("r/a:1").as_deref(), Some("sha256:a"));
    }

    #[test]
    fn an_event_during_a_lookup_keeps_its_answer_out() {
        let cache = live();
        let ticket = cache.ticket().expect("live");
        cache.changed("r/a:1");
        cache.insert(ticket, "r/a:1", "sha256:old");
        assert_eq!(cache.get("r/a:1"), None);
        // Any name's event counts: the counter is one for all.
        let ticket = cache.ticket().expect("live");
        cache.changed("r/other:1");
        cache.insert(ticket, "r/a:1", "sha256:old");
        assert_eq!(cache.get("r/a:1"), None);
        // A lookup started after the event fills it.
        let ticket = cache.ticket().expect("live");
        cache.insert(ticket, "r/a:1", "sha256:new");
        assert_eq!(cache.get("r/a:1").as_deref(), Some("sha256:new"));
    }

    #[test]
    fn an_event_drops_the_name() {
        let cache = live();
        let ticket = cache.ticket().expect("live");
        cache.insert(ticket, "r/a:1", "sha256:a");
        cache.insert(ticket, "r/b:1", "sha256:b");
        cache.changed("r/a:1");
        assert_eq!(cache.get("r/a:1"), None);
        assert_eq!(cache.get("r/b:1").as_deref(), Some("sha256:b"));
        cache.changed_all();
        assert_eq!(cache.get("r/b:1"), None);
    }

    #[test]
    fn nothing_is_kept_or_trusted_while_not_live() {
        let cache = NameCache::default();
        assert_eq!(cache.ticket(), None, "not live before the subscription answers");
        let cache = live();
        let ticket = cache.ticket().expect("live");
        cache.insert(ticket, "r/a:1", "sha256:a");
        cache.set_live(false);
        assert_eq!(cache.get("r/a:1"), None);
        assert_eq!(cache.ticket(), None);
        // A lookup started before the loss, finishing after it, is not kept.
        cache.insert(ticket, "r/a:1", "sha256:a");
        // Nor one started before a reconnection, finishing after it.
        cache.set_live(true);
        cache.insert(ticket, "r/a:1", "sha256:a");
        assert_eq!(
            cache.get("r/a:1"),
            None,
            "an entry from before the subscription came back"
        );
    }

    #[test]
    fn a_full_cache_starts_over() {
        let cache = live();
        let ticket = cache.ticket().expect("live");
        for i in 0..MAX_NAMES {
            cache.insert(ticket, &format!("r/a:{i}"), "sha256:a");
        }
        cache.insert(ticket, "r/a:0", "sha256:b");
        assert_eq!(
            cache.get("r/a:1").as_deref(),
            Some("sha256:a"),
            "a known name is replaced in place"
        );
        cache.insert(ticket, "r/new:1", "sha256:n");
        assert_eq!(cache.get("r/a:1"), None);
        assert_eq!(cache.get("r/new:1").as_deref(), Some("sha256:n"));
    }
}
