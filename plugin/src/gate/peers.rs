//! Connections from peers not in `socket.allowedUids`, recorded at most once a second each.

use super::Gate;
use crate::audit::{self, Counted, Record, Refused};

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
        let record = Record::peer_refused(who, count);
        // Refusing needs no record; a failure is logged (with the count) and counted.
        let _ = self.write_record(record).await;
    }
}
