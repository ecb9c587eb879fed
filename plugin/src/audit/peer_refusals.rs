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

/// Peers with a window of their own open at once. Refusals from further peers share one
/// window and one record a second, so memory and records stay bounded even for a user with a
/// range of uids of its own.
pub const MAX_PEERS: usize = 1024;

/// Who a refused connection came from: its uid, or `None` when its credentials could not be
/// read.
pub type Peer = Option<u32>;

/// Whose refusals a window counts: one peer's, or, past [`MAX_PEERS`], every other peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refused {
    Peer(Peer),
    Others,
}

/// The open windows: the refusals counted since each one's last record.
#[derive(Default)]
pub struct PeerRefusals {
    windows: Mutex<HashMap<Refused, u64>>,
}

/// What to do about one refused connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// No window was open: record this refusal now (`count` 1), and close the window
    /// [`WINDOW`] later with [`PeerRefusals::close`].
    Opened(Refused),
    /// Counted into an open window; the record that closes it carries it.
    Carried,
}

// === impl PeerRefusals ===

impl PeerRefusals {
    /// Counts one refused connection from `peer`.
    pub fn refuse(&self, peer: Peer) -> Counted {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let own = Refused::Peer(peer);
        let others_open = windows.contains_key(&Refused::Others);
        let who = if windows.contains_key(&own) || windows.len() - usize::from(others_open) < MAX_PEERS {
            own
        } else {
            Refused::Others
        };
        match windows.get_mut(&who) {
            Some(carried) => {
                *carried += 1;
                Counted::Carried
            }
            None => {
                windows.insert(who, 0);
                Counted::Opened(who)
            }
        }
    }

    /// Ends `who`'s window: the refusals it carried, to be recorded now. When there were any,
    /// a new window opens in its place (close it [`WINDOW`] later), so records stay a window
    /// apart; when there were none, the window is forgotten and 0 returned.
    pub fn close(&self, who: Refused) -> u64 {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        match windows.get_mut(&who) {
            Some(carried) if *carried > 0 => std::mem::take(carried),
            Some(_) => {
                windows.remove(&who);
                0
            }
            None => 0,
        }
    }

    /// Ends every window (on shutdown): the refusals still carried, to be recorded.
    pub fn drain(&self) -> Vec<(Refused, u64)> {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let mut carried: Vec<(Refused, u64)> = windows.drain().filter(|(_, n)| *n > 0).collect();
        carried.sort_unstable();
        carried
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn peer(uid: u32) -> Refused {
        Refused::Peer(Some(uid))
    }

    #[test]
    fn one_record_opens_a_window_and_the_close_carries_the_rest() {
        let refusals = PeerRefusals::default();
        assert_eq!(refusals.refuse(Some(1000)), Counted::Opened(peer(1000)));
        for _ in 0..49 {
            assert_eq!(refusals.refuse(Some(1000)), Counted::Carried);
        }
        // Another peer has a window of its own.
        assert_eq!(refusals.refuse(Some(1001)), Counted::Opened(peer(1001)));
        assert_eq!(refusals.refuse(None), Counted::Opened(Refused::Peer(None)));

        assert_eq!(refusals.close(peer(1000)), 49);
        // The window that carried refusals is followed by another: a refusal now waits.
        assert_eq!(refusals.refuse(Some(1000)), Counted::Carried);
        assert_eq!(refusals.close(peer(1000)), 1);
        // A quiet window ends the peer's state.
        assert_eq!(refusals.close(peer(1000)), 0);
        assert_eq!(refusals.close(peer(1000)), 0);
        assert_eq!(refusals.refuse(Some(1000)), Counted::Opened(peer(1000)));
    }

    /// Review finding: peers past the bound were recorded one connection at a time, so a user
    /// with a range of uids of its own could still fill the audit disk.
    #[test]
    fn peers_beyond_the_bound_share_one_window() {
        let refusals = PeerRefusals::default();
        for uid in 0..MAX_PEERS as u32 {
            assert_eq!(refusals.refuse(Some(uid)), Counted::Opened(peer(uid)));
        }
        assert_eq!(refusals.refuse(Some(u32::MAX)), Counted::Opened(Refused::Others));
        for uid in 0..10_000 {
            assert_eq!(refusals.refuse(Some(100_000 + uid)), Counted::Carried);
        }
        assert_eq!(refusals.windows.lock().unwrap().len(), MAX_PEERS + 1);
        // A peer already counted keeps its window.
        assert_eq!(refusals.refuse(Some(7)), Counted::Carried);
        assert_eq!(refusals.close(Refused::Others), 10_000);
        // A freed place goes to the next new peer.
        assert_eq!(refusals.close(peer(8)), 0);
        assert_eq!(refusals.refuse(Some(u32::MAX)), Counted::Opened(peer(u32::MAX)));
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
        assert_eq!(refusals.drain(), vec![(Refused::Peer(None), 1), (peer(5), 2)]);
        assert_eq!(refusals.refuse(Some(5)), Counted::Opened(peer(5)));
    }
}
