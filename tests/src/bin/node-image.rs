//! Builds pullgate's container image as an OCI image layout, without a container engine:
//!
//! ```sh
//! cargo build --release -p pullgate
//! skopeo copy docker://debian:12-slim oci:dist/base       # once, where a network is
//! cargo run -p pullgate-tests --bin node-image -- --base dist/base target/release/pullgate dist/pullgate-image
//! ```
//!
//! The layout can be copied to a registry with any OCI tool (`skopeo copy oci:dist/pullgate-image:<tag> docker://…`,
//! `crane push`, `oras cp --from-oci-layout`) and signed with cosign; the DaemonSet in
//! `installer/kubernetes/` runs it.

use std::{path::PathBuf, process::ExitCode};

use pullgate_tests::node_image::NodeImage;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let base = match args.iter().position(|a| a == "--base") {
        Some(i) if i + 1 < args.len() => {
            let dir = args.remove(i + 1);
            args.remove(i);
            Some(dir)
        }
        _ => None,
    };
    let (binary, out, tag) = match args.as_slice() {
        [binary, out] => (binary, out, env!("CARGO_PKG_VERSION").to_string()),
        [binary, out, tag] => (binary, out, tag.clone()),
        _ => {
            eprintln!(
                "usage: node-image [--base OCI_LAYOUT] PULLGATE_BINARY OUT_DIR [TAG]\n\n\
                 Writes an OCI image layout of pullgate's container image to OUT_DIR (which must\n\
                 be empty or absent): the binary at /usr/local/bin/pullgate and the repository's\n\
                 installer/ and systemd/ under /opt/pullgate/.\n\
                 TAG names the image in index.json (default: the crate version).\n\
                 --base puts the layer on the first image of an OCI layout, such as debian:12-slim\n\
                 copied with `skopeo copy docker://debian:12-slim oci:base`; the DaemonSet needs\n\
                 its shell and coreutils."
            );
            return ExitCode::from(2);
        }
    };
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = NodeImage::build(binary.as_ref(), &repo);
    let built = match &base {
        Some(base) => built.and_then(|image| image.on_base(base.as_ref())),
        None => built,
    };
    let image = match built {
        Ok(image) => image,
        Err(e) => {
            eprintln!("node-image: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = image.write_layout(out.as_ref(), &tag) {
        eprintln!("node-image: {out}: {e}");
        return ExitCode::FAILURE;
    }
    println!("{out}: {} ({tag}), layer {} bytes", image.digest(), image.layer.len());
    ExitCode::SUCCESS
}
