//! The demo: a real registry and a real containerd on loopback, a signed and an unsigned image,
//! both pulled through pullgate the way kubelet pulls them; the allow, the deny, and the audit
//! log. Run with `scripts/demo.sh`.

use pullgate_tests::{cri, node_image::NodeImage, Pullgate, TestEnv};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    step("Starting a registry (docker-registry) and containerd, each in its own temp dir");
    let env = TestEnv::start().await;
    let host = env.host();
    println!("  registry   http://{host}");
    println!("  containerd {}", env.containerd.socket().display());

    step("Pushing two tiny images; signing one with a cosign key (the test signer)");
    let signed_digest = env.push_signed_image("demo/signed", "v1", "I am signed").await;
    let unsigned_digest = env.push_image("demo/unsigned", "v1", "I am not").await;
    let signed = env.image_ref("demo/signed", "v1");
    let unsigned = env.image_ref("demo/unsigned", "v1");
    println!(
        "  {signed}    {signed_digest}  + {host}/demo/signed:{}",
        pullgate_tests::cosign::signature_tag(&signed_digest)
    );
    println!("  {unsigned}  {unsigned_digest}  (no signature)");

    step("Starting pullgate in front of containerd with this policy");
    let policy = env.key_policy(&[&format!("{host}/demo/**")]);
    let pg = env.start_pullgate(&policy).await;
    for line in policy.lines() {
        println!("  | {line}");
    }
    println!("  socket: {}", pg.socket().display());

    step(&format!(
        "kubelet pulls the signed image (PullImage through pullgate, pod default/{})",
        cri::TEST_POD
    ));
    match pg
        .client()
        .pull_image(cri::pull_request(&signed, None, Some("default")))
        .await
    {
        Ok(r) => println!("  ALLOWED  image_ref {}", r.into_inner().image_ref),
        Err(s) => println!("  unexpected: {:?} {}", s.code(), s.message()),
    }
    let status = pg.client().image_status(cri::image_status_request(&signed)).await;
    if let Ok(Some(image)) = status.map(|s| s.into_inner().image) {
        println!("  ImageStatus {signed}: {:?}", image.repo_digests);
    }

    step("kubelet pulls the unsigned image");
    match pg
        .client()
        .pull_image(cri::pull_request(&unsigned, None, Some("default")))
        .await
    {
        Ok(r) => println!("  unexpected: allowed {}", r.into_inner().image_ref),
        Err(s) => {
            println!("  DENIED   gRPC {:?}", s.code());
            println!("  message  {}", s.message());
            println!("  (kubelet shows the pod as SignatureValidationFailed with this message)");
        }
    }
    let direct = env
        .containerd
        .client()
        .image_status(cri::image_status_request(&unsigned))
        .await;
    let present = direct.map(|s| s.into_inner().image.is_some()).unwrap_or(false);
    println!("  containerd has the unsigned image: {present}");

    step("pullgate's own image (the DaemonSet route), built here as OCI, signed, pulled through pullgate");
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    match NodeImage::build(&Pullgate::binary(), &repo) {
        Ok(image) => {
            let digest = match image.push(&host, "demo/pullgate", "dev", None).await {
                Ok(digest) => digest,
                Err(e) => return println!("  could not push: {e}"),
            };
            if let Err(e) = env.signer.sign_image(&host, "demo/pullgate", &digest, None).await {
                return println!("  could not sign: {e}");
            }
            let own = env.image_ref("demo/pullgate", "dev");
            println!("  {own}  {digest}  ({} byte layer, signed)", image.layer.len());
            match pg
                .client()
                .pull_image(cri::pull_request(&own, None, Some("pullgate-system")))
                .await
            {
                Ok(r) => println!("  ALLOWED  image_ref {}", r.into_inner().image_ref),
                Err(s) => println!("  unexpected: {:?} {}", s.code(), s.message()),
            }
        }
        Err(e) => println!("  could not build the image: {e}"),
    }

    step(&format!("The audit log ({})", pg.audit_path().display()));
    print!("{}", std::fs::read_to_string(pg.audit_path()).unwrap_or_default());

    step("pullgate audit verify");
    let out = Pullgate::command()
        .args(["audit", "verify"])
        .arg(pg.audit_path())
        .output();
    match out {
        Ok(out) => print!("  {}", String::from_utf8_lossy(&out.stdout)),
        Err(e) => println!("  could not run pullgate: {e}"),
    }
    println!("\nDone; everything above ran in a temp dir that is now removed.");
}

fn step(title: &str) {
    println!("\n== {title}");
}
