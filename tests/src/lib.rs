//! The end-to-end rig of pullgate: real parts as child processes of the test.
//!
//! A test gets a real CNCF distribution registry ([`registry`]), a real containerd with its CRI
//! plugin ([`containerd`]), tiny real OCI images pushed over the distribution API ([`image`],
//! [`distribution`]), cosign signatures made with the project's own key signer ([`signer`],
//! [`cosign`]), policies that name its key ([`policy`]) and the real `pullgate` binary in front
//! of containerd ([`pullgate`]). A registry may demand htpasswd or token authentication; the
//! token server of the latter ([`token_server`]) is the rig's one test double. A registry may also
//! serve TLS with a certificate from a throwaway CA ([`tls`]). Every daemon
//! lives in a temp dir of its own, listens on loopback or a unix socket only, and is stopped
//! when dropped. [`env::TestEnv`] bundles the usual set. Keyless signatures come from a test
//! Sigstore generated per test ([`sigstore`]): a Fulcio-style CA, a CT log, a Rekor log and the
//! `trusted_root.json` naming them. A real Rekor v2 (rekor-tiles, [`rekor_tiles`]), a real TSA
//! ([`timestamp_server`]) and the
//! signing tools users run (cosign v2 and v3, oras: [`tools`]) come from setup.sh's builds.

pub mod artifact;
pub mod containerd;
pub mod cosign;
pub mod cri;
pub mod distribution;
pub mod env;
pub mod image;
pub mod latency_proxy;
pub mod node_image;
pub mod notation;
pub mod policy;
pub mod process;
pub mod pullgate;
pub mod quirky_registry;
pub mod registry;
pub mod rekor_tiles;
pub mod signer;
pub mod sigstore;
pub mod slow_lookups;
pub mod timestamp_server;
pub mod tls;
pub mod token_server;
pub mod tools;

pub use containerd::Containerd;
pub use env::{Proxied, TestEnv, TEST_AUTHORITY};
pub use pullgate::Pullgate;
pub use registry::Registry;
pub use signer::Signer;
pub use token_server::TokenServer;
