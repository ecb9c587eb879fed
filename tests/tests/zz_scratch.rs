use pullgate_tests::{
    artifact::{Config, TinyArtifact},
    cri, TestEnv,
};

#[tokio::test]
async fn scratch() {
    let env = TestEnv::start().await;
    for config in [Config::Empty, Config::Custom] {
        let a = TinyArtifact::build(config, "vol");
        let digest = a.push(&env.host(), "vol/a", "v1", None).await.unwrap();
        let image = env.image_ref("vol/a", "v1");
        let r = env
            .containerd
            .client()
            .pull_image(cri::pull_request(&image, None, None))
            .await;
        println!("{config:?} {digest} config {} -> {r:?}", a.config_digest());
        let s = env
            .containerd
            .client()
            .image_status(cri::image_status_request(&image))
            .await;
        println!("status {s:?}");
    }
    println!(
        "{}",
        env.containerd
            .log()
            .lines()
            .filter(|l| !l.contains("loading plugin"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    panic!();
}
