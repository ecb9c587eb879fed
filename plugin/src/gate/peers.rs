//! Connections from peers not in `socket.allowedUids`, recorded at most once a second each.

use super::Gate;
use crate::{
    audit::{self, Counted, Event, Record, Refused},
    policy::Mode,
};

// === impl Gate: refused peers ===

impl Gate {
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
}
