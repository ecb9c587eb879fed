//! pullgate: a CRI ImageService proxy that verifies cosign / Sigstore signatures on the node
//! before kubelet's pulls reach containerd.
//!
//! A pull's life reads top to bottom in [`gate`]; each step is a call into the module that
//! owns it.

pub mod audit;
pub mod config;
pub mod containerd;
pub mod cri;
pub mod denial;
pub mod gate;
pub mod node;
pub mod policy;
pub mod reference;
pub mod registry;
pub mod serve;
pub mod verify;
