//! pullgate's own container image: built from the binary under test and the repository's
//! installer as an OCI layout, readable by the system's tar, and — pushed to a real registry
//! and signed with the test key — verified and pulled by pullgate itself.

use std::path::PathBuf;

use pullgate_tests::{image::TinyImage, node_image::NodeImage, Pullgate, TestEnv};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_layout_holds_the_binary_and_the_installer() {
    let binary = Pullgate::binary();
    let image = NodeImage::build(&binary, &repo()).unwrap();
    assert_eq!(
        image.digest(),
        NodeImage::build(&binary, &repo()).unwrap().digest(),
        "the build is deterministic"
    );
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    image.write_layout(&layout, "dev").unwrap();

    // Every blob is named by its digest, and the index names the manifest.
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(
            pullgate_tests::distribution::sha256_digest(&bytes),
            format!("sha256:{name}")
        );
    }
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], image.digest());
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "dev"
    );
    assert!(layout.join("oci-layout").is_file());
    assert!(
        image.write_layout(&layout, "dev").is_err(),
        "an existing layout is not overwritten"
    );

    // The system's tar reads the layer: the binary, byte for byte, and an executable installer.
    let tar = dir.path().join("layer.tar");
    std::fs::write(&tar, &image.layer).unwrap();
    let listing = std::process::Command::new("tar")
        .arg("-tvf")
        .arg(&tar)
        .output()
        .unwrap();
    assert!(listing.status.success(), "{}", String::from_utf8_lossy(&listing.stderr));
    let listing = String::from_utf8(listing.stdout).unwrap();
    let size = std::fs::metadata(&binary).unwrap().len();
    assert!(
        listing.lines().any(|l| l.starts_with("-rwxr-xr-x root/root")
            && l.contains(&format!(" {size} "))
            && l.ends_with("usr/local/bin/pullgate")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("opt/pullgate/installer/install.sh")),
        "{listing}"
    );
    let extracted = dir.path().join("root");
    std::fs::create_dir(&extracted).unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&extracted)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read(extracted.join("usr/local/bin/pullgate")).unwrap(),
        std::fs::read(&binary).unwrap()
    );
}

/// A base image as an OCI layout, standing in for `debian:12-slim`: a tiny image with one layer.
fn base_layout(dir: &std::path::Path) -> TinyImage {
    let tiny = TinyImage::build("the base");
    let as_layout = NodeImage {
        base_layers: Vec::new(),
        layer: tiny.layer.clone(),
        config: tiny.config.clone(),
        manifest: tiny.manifest.clone(),
    };
    as_layout.write_layout(dir, "base").unwrap();
    tiny
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pullgate_verifies_and_pulls_its_own_signed_image_built_on_a_base() {
    let env = TestEnv::start().await;
    let host = env.host();
    let base_dir = env.dir().join("base");
    let base = base_layout(&base_dir);
    let image = NodeImage::build(&Pullgate::binary(), &repo())
        .unwrap()
        .on_base(&base_dir)
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&image.config).unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(diff_ids.len(), 2, "the base's layer, then pullgate's");
    assert_eq!(diff_ids[0], pullgate_tests::distribution::sha256_digest(&base.layer));
    assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/pullgate");
    let digest = image.push(&host, "pullgate/pullgate", "dev", None).await.unwrap();
    env.signer
        .sign_image(&host, "pullgate/pullgate", &digest, None)
        .await
        .unwrap();
    // The same image, unsigned, in another repository.
    image.push(&host, "pullgate/unsigned", "dev", None).await.unwrap();

    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{host}/pullgate/**")]))
        .await;
    let image_ref = pg
        .pull(&env.image_ref("pullgate/pullgate", "dev"), None)
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", e.message(), pg.log()));
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    // containerd unpacked both layers: the image is there, by the digest that was verified.
    let status = env
        .containerd
        .client()
        .image_status(pullgate_tests::cri::image_status_request(
            &env.image_ref("pullgate/pullgate", "dev"),
        ))
        .await
        .unwrap()
        .into_inner();
    let repo_digests = status.image.map(|i| i.repo_digests).unwrap_or_default();
    assert!(repo_digests.iter().any(|d| d.ends_with(&digest)), "{repo_digests:?}");
    assert_eq!(pg.last_record()["digest"], digest);
    let denied = pg
        .pull(&env.image_ref("pullgate/unsigned", "dev"), None)
        .await
        .unwrap_err();
    assert!(
        denied.message().starts_with("SignatureValidationFailed: "),
        "{}",
        denied.message()
    );
}
