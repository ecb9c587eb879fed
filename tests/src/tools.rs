//! The clients users run, as the tests run them: crictl (built from cri-tools with `go
//! install`) and gRPC C-core (grpcio from PyPI). `scripts/setup.sh` puts both in
//! `$PULLGATE_TEST_TOOLS` (default `/var/cache/pullgate-tests`), built once and kept between runs.

use std::{
    path::{Path, PathBuf},
    process::Command,
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
