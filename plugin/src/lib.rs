//! pullgate: a CRI ImageService proxy that verifies cosign / Sigstore signatures on the node
//! before kubelet's pulls reach containerd.
//!
//! A pull's life reads top to bottom in [`gate`]; each step is a call into the module that
//! owns it.
//!
//! No unsafe code: OS calls go through `nix`, `caps` and `sd-notify`. The one reviewed
//! exception adopts the listening socket systemd passes (`node/activation.rs`).
#![deny(unsafe_code)]

pub mod admission;
pub mod audit;
pub mod cache;
pub mod config;
pub mod containerd;
pub mod cri;
pub mod denial;
pub mod doctor;
pub mod file;
#[doc(hidden)]
pub mod fuzz;
pub mod gate;
pub mod metrics;
pub mod node;
pub mod policy;
pub mod prefetch;
pub mod registry;
pub mod serve;
pub mod state;

/// Verification lives in its own crate, free of I/O and async; these keep the paths the rest of
/// pullgate (and its users) name.
pub use pullgate_verify::{self as verify, reference};

/// The version `pullgate --version` prints: the release, then the git revision it was built
/// from ("unknown" when built outside a git checkout).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("PULLGATE_GIT_REVISION"), ")");

/// An error and all its causes on one line, `outer: cause: root cause`: transport errors hide
/// the reason (refused, TLS, timeout) in their sources, and operators need it in the message.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
