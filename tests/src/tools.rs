//! The clients users run, as the tests run them: crictl (built from cri-tools with `go
//! install`), gRPC C-core (grpcio from PyPI), and the tools images are signed with: cosign v2,
//! cosign v3, oras and notation (built through the Go module proxy). `scripts/setup.sh` puts them in `$PULLGATE_TEST_TOOLS`
//! (default `/var/cache/pullgate-tests`), built once and kept between runs.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// Where setup.sh keeps the client tools.
pub fn dir() -> PathBuf {
    std::env::var_os("PULLGATE_TEST_TOOLS").map_or_else(|| PathBuf::from("/var/cache/pullgate-tests"), PathBuf::from)
}

/// crictl as a node runs it: images through `image_endpoint`, the runtime at
/// `runtime_endpoint`. Panics naming the fix when setup.sh did not build it.
pub fn crictl(image_endpoint: &Path, runtime_endpoint: &Path) -> Command {
    let binary = dir().join("bin/crictl");
    assert!(binary.exists(), "{} is missing: run scripts/setup.sh", binary.display());
    let mut command = Command::new(binary);
    command
        .arg("--image-endpoint")
        .arg(format!("unix://{}", image_endpoint.display()))
        .arg("--runtime-endpoint")
        .arg(format!("unix://{}", runtime_endpoint.display()))
        .args(["--timeout", "60s"]);
    command
}

/// What a gRPC C-core call came back with: the reply message, or the status code's name and
/// details.
pub type CoreReply = Result<Vec<u8>, (String, String)>;

/// One unary call by gRPC C-core (grpcio) over `socket`, with `request` as encoded bytes.
pub fn grpcio_unary(socket: &Path, method_path: &str, request: &[u8]) -> CoreReply {
    let python = dir().join("python");
    assert!(
        python.join("grpc").exists(),
        "{} has no grpcio: run scripts/setup.sh",
        python.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/grpcio_unary.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(socket)
        .arg(method_path)
        .arg(hex::encode(request))
        .env("PYTHONPATH", python)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if output.status.success() {
        return Ok(hex::decode(&stdout).expect("the client prints hex"));
    }
    match stdout.strip_prefix("ERROR ").and_then(|rest| rest.split_once(' ')) {
        Some((code, details)) => Err((code.to_string(), details.to_string())),
        None => panic!(
            "grpcio client failed: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// The password `cosign generate-key-pair` encrypts the tests' keys with (`COSIGN_PASSWORD`).
pub const COSIGN_PASSWORD: &str = "pullgate-test";

/// A signing tool of setup.sh's, run as a user would on a machine of its own: `home` is its
/// `$HOME` and docker config (no credentials, no cached Sigstore trust), nothing it reads comes
/// from the test process's environment beyond `PATH`.
pub fn signing_tool(name: &str, home: &Path) -> Command {
    let binary = dir().join("bin").join(name);
    assert!(
        binary.exists(),
        "{} is missing: run scripts/setup.sh --clients",
        binary.display()
    );
    std::fs::create_dir_all(home.join(".docker")).expect("create the tool's home");
    let mut command = Command::new(binary);
    command
        .current_dir(home)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("DOCKER_CONFIG", home.join(".docker"))
        .env("TUF_ROOT", home.join(".sigstore"))
        .env("COSIGN_PASSWORD", COSIGN_PASSWORD)
        .env("COSIGN_YES", "true");
    command
}

/// cosign v2 (`github.com/sigstore/cosign/v2`).
pub fn cosign2(home: &Path) -> Command {
    signing_tool("cosign2", home)
}

/// cosign v3 (`github.com/sigstore/cosign/v3`).
pub fn cosign3(home: &Path) -> Command {
    signing_tool("cosign3", home)
}

/// oras (`oras.land/oras`), talking plain HTTP to the loopback registry.
pub fn oras(home: &Path) -> Command {
    signing_tool("oras", home)
}

/// notation (`github.com/notaryproject/notation`), keeping its keys, certificates and trust
/// policy under `home/.config/notation`.
pub fn notation(home: &Path) -> Command {
    let mut command = signing_tool("notation", home);
    command.env("XDG_CONFIG_HOME", home.join(".config"));
    command
}

/// Runs `command` to completion; its stdout, or a panic with both streams when it failed.
pub fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    match checked(command, &output) {
        Ok(stdout) => stdout,
        Err(message) => panic!("{message}"),
    }
}

fn checked(command: &Command, output: &Output) -> Result<String, String> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(format!(
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// A cosign key pair made by `cosign generate-key-pair` in `dir` (encrypted with
/// [`COSIGN_PASSWORD`]): the private key's path and the public key's PEM.
pub fn cosign_key_pair(cosign: fn(&Path) -> Command, dir: &Path) -> (PathBuf, String) {
    std::fs::create_dir_all(dir).expect("create the key dir");
    run(cosign(dir).arg("generate-key-pair"));
    let public = std::fs::read_to_string(dir.join("cosign.pub")).expect("cosign wrote cosign.pub");
    (dir.join("cosign.key"), public)
}
