//! The end-to-end suites, one module each, linked into one test binary: every suite links the
//! whole rig, so one binary is one link instead of two dozen. Each suite starts its own registry,
//! containerd and pullgate on free loopback ports and temp dirs, so they share nothing in this
//! process but the harness's threads. Run one suite by its path: `cargo test -p pullgate-tests
//! --test e2e proxy::`.
//!
//! A new suite goes here: add `tests/tests/e2e/<suite>.rs` and a `mod <suite>;` line below
//! (a file left in `tests/tests/` becomes a binary of its own). Only a suite that changes the
//! test process itself (environment, rlimits, signal handlers, cwd, its descriptor table) or must
//! run alone gets its own binary next to this one, as `faults` and `soak` do.

mod aks;
mod attestations;
mod audit_rotation;
mod auth;
mod binary;
mod cache;
mod cli;
mod docs;
mod doctor;
mod examples;
mod github_attestations;
mod hostile;
mod image_volumes;
mod import;
mod installer;
mod keyless;
mod legacy_attestations;
mod log_entries_and_timestamps;
mod metrics;
mod mirrors;
mod names;
mod node;
mod node_image;
mod notation;
mod prefetch;
mod prefetch_review;
mod proxy;
mod pull;
mod quirky_registries;
mod rekor_v2;
mod restarts;
mod rig;
mod round_trips;
mod signature_repository;
mod signing_tools;
mod sigstore_rig;
mod status_names;
mod status_review;
mod systemd_units;
mod tls;
mod trusted_roots;
mod vectors_registry;
mod warm_pulls;
