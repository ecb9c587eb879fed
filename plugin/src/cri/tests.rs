use super::image_service;

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
