//! systemd's readiness protocol (`Type=notify`): one datagram per state change to the socket
//! named by `NOTIFY_SOCKET`. Without that variable (not started by systemd) nothing is sent.

use sd_notify::NotifyState;

/// Tells systemd the service is ready: policy and trust loaded, containerd answering.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd the service is reloading its configuration; [`ready`] ends the reload.
pub fn reloading() {
    send(&[NotifyState::Reloading]);
}

/// Tells systemd the service is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Updates the one-line status `systemctl status` shows.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        tracing::warn!(%error, ?socket, "could not notify systemd");
    }
}
