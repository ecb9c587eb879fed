//! Records the git revision pullgate is built from, for `pullgate --version`.
//!
//! `PULLGATE_GIT_REVISION` in the build's environment wins (for builds from a source tarball);
//! otherwise git is asked, and without git the revision is "unknown".

use std::{path::PathBuf, process::Command};

fn main() {
    println!("cargo:rerun-if-env-changed=PULLGATE_GIT_REVISION");
    let revision = std::env::var("PULLGATE_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=PULLGATE_GIT_REVISION={revision}");

    // Build again when HEAD moves: a checkout changes HEAD, a commit changes the branch's ref.
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from) {
        println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
        println!("cargo:rerun-if-changed={}", git_dir.join("packed-refs").display());
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", git_dir.join(branch).display());
        }
    }
}

/// The trimmed output of a successful git command, if any.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}
