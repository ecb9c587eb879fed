//! The rig itself against the real parts, without pullgate: images pushed to the real registry
//! pull through containerd's CRI, htpasswd is enforced, signatures verify, raw calls are exact.

use base64::Engine as _;
use prost::Message as _;
use pullgate_proto::cri::{ListImagesRequest, ListImagesResponse};
use pullgate_tests::{
    cosign::{self, SIGNATURE_ANNOTATION, SIMPLE_SIGNING},
    cri::{self, image_status_request, method, pull_request, raw_unary},
    distribution::{self, media_type},
    image::{push_image, FILE_NAME},
    Signer, TestEnv,
};
use sigstore_crypto::VerificationKey;
use sigstore_types::{DerPublicKey, SignatureBytes};

#[tokio::test]
async fn pushed_image_pulls_through_containerd_cri() {
    let env = TestEnv::start().await;
    let digest = env.push_image("rig/hello", "v1", "hello from the rig\n").await;
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    let tagged = env.image_ref("rig/hello", "v1");

    let mut containerd = env.containerd.client();
    let pulled = containerd
        .pull_image(pull_request(&tagged, None, Some("default")))
        .await
        .expect("pull")
        .into_inner();
    assert!(
        pulled.image_ref.starts_with("sha256:"),
        "image_ref {:?}",
        pulled.image_ref
    );

    let status = containerd
        .image_status(image_status_request(&tagged))
        .await
        .expect("status")
        .into_inner();
    let image = status.image.expect("containerd knows the pulled tag");
    assert_eq!(image.id, pulled.image_ref);
    assert!(image.repo_tags.contains(&tagged), "repo_tags {:?}", image.repo_tags);
    assert_eq!(image.repo_digests, vec![env.image_ref("rig/hello", &digest)]);

    // The layer is a tar containerd could unpack: the file is in a native snapshot.
    let snapshots = env
        .containerd
        .dir()
        .join("root/io.containerd.snapshotter.v1.native/snapshots");
    let unpacked: Vec<String> = std::fs::read_dir(&snapshots)
        .expect("native snapshots")
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join(FILE_NAME)).ok())
        .collect();
    assert_eq!(unpacked, vec!["hello from the rig\n".to_owned()]);

    // The same containerd, restarted on its root, still has the image.
    let mut env = env;
    env.containerd.restart().await;
    let status = env
        .containerd
        .client()
        .image_status(image_status_request(&tagged))
        .await
        .expect("status");
    assert_eq!(
        status.into_inner().image.expect("kept across restart").id,
        pulled.image_ref
    );
}

#[tokio::test]
async fn htpasswd_registry_wants_credentials_for_push_and_pull() {
    let env = TestEnv::start_with_auth("alice", "s3cret").await;
    let host = env.host();

    let refused = push_image(&host, "private/app", "v1", "no credentials", None)
        .await
        .expect_err("push without auth");
    assert!(refused.is_unauthorized(), "{refused}");
    let wrong = push_image(&host, "private/app", "v1", "wrong", Some(("alice", "nope")))
        .await
        .expect_err("bad password");
    assert!(wrong.is_unauthorized(), "{wrong}");
    let digest = push_image(&host, "private/app", "v1", "with credentials", env.auth())
        .await
        .expect("push with auth");

    let image = env.image_ref("private/app", "v1");
    let mut containerd = env.containerd.client();
    let denied = containerd
        .pull_image(pull_request(&image, None, None))
        .await
        .expect_err("pull without auth");
    // containerd 1.6 quotes the registry's 401; 2.x says it had no credentials to answer it with.
    let unauthorized = if pullgate_tests::containerd::binary().major >= 2 {
        "authorization failed: no basic auth credentials"
    } else {
        "401 Unauthorized"
    };
    assert!(denied.message().contains(unauthorized), "{denied:?}");

    let pulled = containerd
        .pull_image(pull_request(&image, env.auth(), None))
        .await
        .expect("pull with auth");
    let status = containerd
        .image_status(image_status_request(&pulled.into_inner().image_ref))
        .await
        .expect("status");
    assert_eq!(
        status.into_inner().image.expect("present").repo_digests,
        vec![env.image_ref("private/app", &digest)]
    );

    // A stopped registry does not answer; restarted, it serves the same storage and users.
    let mut env = env;
    env.registry.stop();
    let down = distribution::resolve(&host, "private/app", "v1", env.auth())
        .await
        .expect_err("registry is down");
    assert!(matches!(down, distribution::RegistryError::Transport { .. }), "{down}");
    env.registry.restart().await;
    let resolved = distribution::resolve(&host, "private/app", "v1", env.auth())
        .await
        .expect("registry is back");
    assert_eq!(resolved, digest);
    let anonymous = distribution::resolve(&host, "private/app", "v1", None).await;
    assert!(anonymous.expect_err("still wants credentials").is_unauthorized());
}

#[tokio::test]
async fn signatures_are_cosign_layout_and_verify() {
    let env = TestEnv::start().await;
    let host = env.host();
    let digest = env.push_image("signed/app", "v1", "signed content").await;

    env.signer
        .sign_image(&host, "signed/app", &digest, None)
        .await
        .expect("first signature");
    let tag = cosign::signature_tag(&digest);
    assert_eq!(tag, format!("sha256-{}.sig", &digest["sha256:".len()..]));
    let (manifest, manifest_type) = distribution::get_manifest(&host, "signed/app", &tag, None)
        .await
        .expect(".sig");
    assert_eq!(manifest_type, media_type::OCI_MANIFEST);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["mediaType"], media_type::OCI_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], media_type::OCI_CONFIG);
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    let layer = &manifest["layers"][0];
    assert_eq!(layer["mediaType"], SIMPLE_SIGNING);

    let payload = distribution::get_blob(&host, "signed/app", layer["digest"].as_str().unwrap(), None)
        .await
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&payload).expect("payload is JSON");
    assert_eq!(
        parsed["critical"]["identity"]["docker-reference"],
        format!("{host}/signed/app")
    );
    assert_eq!(parsed["critical"]["image"]["docker-manifest-digest"], digest.as_str());
    assert_eq!(parsed["critical"]["type"], "cosign container image signature");
    assert!(parsed["optional"].is_null());

    let key = VerificationKey::from_spki(&DerPublicKey::from_pem(&env.signer.public_key_pem()).unwrap()).unwrap();
    let verify = |payload: &[u8], signature_b64: &str| {
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature_b64)
            .expect("base64 signature");
        key.verify(payload, &SignatureBytes::new(signature))
    };
    verify(&payload, layer["annotations"][SIGNATURE_ANNOTATION].as_str().unwrap()).expect("signature verifies");
    let mut tampered = payload.clone();
    tampered[0] = b' ';
    verify(&tampered, layer["annotations"][SIGNATURE_ANNOTATION].as_str().unwrap()).expect_err("tampered payload");

    // A second signer appends; the first signature stays, and the config names both layers.
    let other = Signer::generate();
    other
        .sign_image(&host, "signed/app", &digest, None)
        .await
        .expect("second signature");
    let signatures = cosign::read_signatures(&host, "signed/app", &digest, None)
        .await
        .unwrap();
    assert_eq!(signatures.len(), 2);
    assert_eq!(signatures[0].layer_digest, layer["digest"].as_str().unwrap());
    verify(&signatures[0].payload, &signatures[0].signature).expect("first still verifies");
    verify(&signatures[1].payload, &signatures[1].signature).expect_err("second is another key's");
    let other_key = VerificationKey::from_spki(&other.public_key_der()).unwrap();
    let second = base64::engine::general_purpose::STANDARD
        .decode(&signatures[1].signature)
        .unwrap();
    other_key
        .verify(&signatures[1].payload, &SignatureBytes::new(second))
        .expect("second verifies with its key");

    let (manifest, _) = distribution::get_manifest(&host, "signed/app", &tag, None)
        .await
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let config = distribution::get_blob(
        &host,
        "signed/app",
        manifest["config"]["digest"].as_str().unwrap(),
        None,
    );
    let config: serde_json::Value = serde_json::from_slice(&config.await.unwrap()).unwrap();
    let layer_digests: Vec<_> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].clone())
        .collect();
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap(), &layer_digests);
    assert_eq!(config["history"].as_array().unwrap().len(), 2);

    // Unsigned digests have no signatures.
    let unsigned = env.push_image("signed/app", "v2", "unsigned").await;
    assert!(cosign::read_signatures(&host, "signed/app", &unsigned, None)
        .await
        .unwrap()
        .is_empty());

    // Deleting the `.sig` tag's manifest removes every signature of the image.
    distribution::delete_manifest(&host, "signed/app", &tag, None)
        .await
        .expect("delete .sig");
    assert!(cosign::read_signatures(&host, "signed/app", &digest, None)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn raw_list_images_bytes_match_a_prost_round_trip() {
    let env = TestEnv::start().await;
    let image = env.image_ref("rig/list", "v1");
    env.push_image("rig/list", "v1", "listed").await;
    env.containerd
        .client()
        .pull_image(pull_request(&image, None, None))
        .await
        .expect("pull");

    let socket = env.containerd.socket();
    let raw = raw_unary(
        &socket,
        method::LIST_IMAGES,
        ListImagesRequest::default().encode_to_vec(),
    )
    .await
    .unwrap();
    let decoded = ListImagesResponse::decode(raw.as_slice()).expect("a ListImagesResponse");
    assert!(
        decoded.images.iter().any(|i| i.repo_tags.contains(&image)),
        "{decoded:?}"
    );
    assert_eq!(
        decoded.encode_to_vec(),
        raw,
        "containerd's bytes are exactly prost's encoding here"
    );

    // The typed client sees the same list, and errors come back as statuses.
    let typed = env
        .containerd
        .client()
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(typed, decoded);
    let unknown = raw_unary(&socket, "/runtime.v1.ImageService/NoSuchMethod", Vec::new())
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), tonic::Code::Unimplemented);
    let absent = raw_unary(env.dir().join("absent.sock"), method::LIST_IMAGES, Vec::new())
        .await
        .expect_err("no socket");
    assert_eq!(absent.code(), tonic::Code::Unavailable);
    cri::image_fs_info(&socket).await.expect("ImageFsInfo answers");
}
