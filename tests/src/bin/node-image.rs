//! Builds pullgate's container image as an OCI image layout, without a container engine:
//!
//! ```sh
//! cargo build --release -p pullgate
//! cargo run -p pullgate-tests --bin node-image -- target/release/pullgate dist/pullgate-image
//! ```
//!
//! The layout can be copied to a registry with any OCI tool (`skopeo copy oci:dist/pullgate-image:<tag> docker://…`,
//! `crane push`, `oras cp --from-oci-layout`) and signed with cosign; the DaemonSet in
//! `installer/kubernetes/` runs it.

use std::{path::PathBuf, process::ExitCode};

use pullgate_tests::node_image::NodeImage;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (binary, out, tag) = match args.as_slice() {
        [binary, out] => (binary, out, env!("CARGO_PKG_VERSION").to_string()),
        [binary, out, tag] => (binary, out, tag.clone()),
        _ => {
            eprintln!(
                "usage: node-image PULLGATE_BINARY OUT_DIR [TAG]\n\n\
                 Writes an OCI image layout of pullgate's container image to OUT_DIR (which must\n\
                 be empty or absent): the binary at /usr/local/bin/pullgate and the repository's\n\
                 installer/ and systemd/ under /opt/pullgate/.\n\
                 TAG names the image in index.json (default: the crate version)."
            );
            return ExitCode::from(2);
        }
    };
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let image = match NodeImage::build(binary.as_ref(), &repo) {
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
