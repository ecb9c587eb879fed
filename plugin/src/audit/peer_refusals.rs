//! At most one `peer-refused` record per peer per second (SPEC §6): one synced record per
//! connection would let a local user fill the audit disk, after which enforced pulls fail
//! closed. No refusal is hidden: each is carried in a record's `count`.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

/// How long the refusals of one peer are gathered into one record.
pub const WINDOW: Duration = Duration::from_secs(1);

/// Peers with a window open at once. Beyond, a refusal is recorded on its own: memory stays
/// bounded and nothing is dropped (so many uids at once takes root to make).
const MAX_PEERS: usize = 1024;

/// Who a refused connection came from: its uid, or `None` when its credentials could not be
/// read.
pub type Peer = Option<u32>;

/// The open windows: per peer, the refusals counted since its last record.
#[derive(Default)]
pub struct PeerRefusals {
    windows: Mutex<HashMap<Peer, u64>>,
}

/// What to do about one refused connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// The peer had no window open: record this refusal now (`count` 1), and close the window
    /// [`WINDOW`] later with [`PeerRefusals::close`].
    Opened,
    /// Counted into the peer's open window; the record that closes it carries it.
    Carried,
    /// Too many peers have windows open: record this refusal now, on its own.
    Alone,
}

// === impl PeerRefusals ===

impl PeerRefusals {
    /// Counts one refused connection from `peer`.
    pub fn refuse(&self, peer: Peer) -> Counted {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(carried) = windows.get_mut(&peer) {
            *carried += 1;
            return Counted::Carried;
        }
        if windows.len() >= MAX_PEERS {
            return Counted::Alone;
        }
        windows.insert(peer, 0);
        Counted::Opened
    }

    /// Ends `peer`'s window: the refusals it carried, to be recorded now. When there were any,
    /// a new window opens in its place (close it [`WINDOW`] later), so records stay a window
    /// apart; when there were none, the peer is forgotten and 0 returned.
    pub fn close(&self, peer: Peer) -> u64 {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        match windows.get_mut(&peer) {
            Some(carried) if *carried > 0 => std::mem::take(carried),
            Some(_) => {
                windows.remove(&peer);
                0
            }
            None => 0,
        }
    }

    /// Ends every window (on shutdown): the refusals still carried, per peer, to be recorded.
    pub fn drain(&self) -> Vec<(Peer, u64)> {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let mut carried: Vec<(Peer, u64)> = windows.drain().filter(|(_, n)| *n > 0).collect();
        carried.sort_unstable();
        carried
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_record_opens_a_window_and_the_close_carries_the_rest() {
        let refusals = PeerRefusals::default();
        assert_eq!(refusals.refuse(Some(1000)), Counted::Opened);
        for _ in 0..49 {
            assert_eq!(refusals.refuse(Some(1000)), Counted::Carried);
        }
        // Another peer has a window of its own.
        assert_eq!(refusals.refuse(Some(1001)), Counted::Opened);
        assert_eq!(refusals.refuse(None), Counted::Opened);

        assert_eq!(refusals.close(Some(1000)), 49);
        // The window that carried refusals is followed by another: a refusal now waits.
        assert_eq!(refusals.refuse(Some(1000)), Counted::Carried);
        assert_eq!(refusals.close(Some(1000)), 1);
        // A quiet window ends the peer's state.
        assert_eq!(refusals.close(Some(1000)), 0);
        assert_eq!(refusals.close(Some(1000)), 0);
        assert_eq!(refusals.refuse(Some(1000)), Counted::Opened);
    }

    #[test]
    fn peers_beyond_the_bound_are_recorded_one_by_one() {
        let refusals = PeerRefusals::default();
        for uid in 0..MAX_PEERS as u32 {
            assert_eq!(refusals.refuse(Some(uid)), Counted::Opened);
        }
        assert_eq!(refusals.refuse(Some(u32::MAX)), Counted::Alone);
        assert_eq!(refusals.refuse(Some(u32::MAX)), Counted::Alone);
        assert_eq!(refusals.windows.lock().unwrap().len(), MAX_PEERS);
        // A peer already counted keeps its window.
        assert_eq!(refusals.refuse(Some(7)), Counted::Carried);
        assert_eq!(refusals.close(Some(8)), 0);
        assert_eq!(refusals.refuse(Some(u32::MAX)), Counted::Opened);
    }

    #[test]
    fn drain_hands_over_what_is_carried() {
        let refusals = PeerRefusals::default();
        refusals.refuse(Some(5));
        refusals.refuse(Some(5));
        refusals.refuse(Some(5));
        refusals.refuse(Some(6));
        refusals.refuse(None);
        refusals.refuse(None);
        assert_eq!(refusals.drain(), vec![(None, 1), (Some(5), 2)]);
        assert_eq!(refusals.refuse(Some(5)), Counted::Opened);
    }
}
