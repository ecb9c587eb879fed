use std::collections::HashMap;

use bytes::Bytes;
use prost::Message;
use pullgate_proto::cri::{AuthConfig, ImageSpec, PodSandboxConfig, PodSandboxMetadata, PullImageRequest};

use super::{image_service, upstream::with_image};

#[test]
fn only_plain_image_service_methods_are_forwarded() {
    for path in [
        "/runtime.v1.ImageService/ListImages",
        "/runtime.v1alpha2.ImageService/RemoveImage",
        "/runtime.v1.ImageService/NotYetInvented",
    ] {
        assert!(image_service(path), "{path}");
    }
    for path in [
        "/runtime.v1.RuntimeService/Version",
        "/containerd.services.images.v1.Images/List",
        "/runtime.v1.ImageService/",
        "/runtime.v1.ImageService/PullImage/x",
        "//runtime.v1.ImageService/ListImages",
        "/runtime.v1.ImageService/Pull%49mage",
        "/Runtime.v1.ImageService/ListImages",
        "runtime.v1.ImageService/ListImages",
    ] {
        assert!(!image_service(path), "{path}");
    }
}

#[test]
fn pinning_replaces_only_the_image_string() {
    let original = PullImageRequest {
        image: Some(ImageSpec {
            image: "127.0.0.1:5000/app:v1".into(),
            annotations: HashMap::from([("k".to_string(), "v".to_string())]),
            user_specified_image: "app:v1".into(),
            runtime_handler: "runc".into(),
            image_ref: String::new(),
        }),
        auth: Some(AuthConfig {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        }),
        sandbox_config: Some(PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web-0".into(),
                namespace: "prod".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let mut bytes = original.encode_to_vec();
    // A field from a CRI version newer than pullgate's: field 77, varint 1.
    bytes.extend_from_slice(&[0xe8, 0x04, 0x01]);
    let bytes = Bytes::from(bytes);
    let pinned_ref = format!("127.0.0.1:5000/app@sha256:{}", "a".repeat(64));

    let pinned = with_image(&bytes, pinned_ref.clone());
    assert!(
        pinned.starts_with(&bytes),
        "every byte kubelet sent is kept, unknown fields included"
    );
    let decoded = PullImageRequest::decode(pinned).unwrap();
    let mut expected = original;
    expected.image.as_mut().unwrap().image = pinned_ref;
    assert_eq!(decoded, expected);
}
