//! What kubelet sees besides pulls: byte-faithful forwarding, ImageStatus gating, and the audit
//! log and policy commands of the real binary.

use prost::Message;
use pullgate_proto::cri::{ImageFilter, ImageSpec, ListImagesRequest, ListImagesResponse};
use pullgate_tests::{
    cri::{self, method},
    policy::{policy, rule},
    tools, Pullgate, TestEnv,
};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_images_is_byte_equal_through_pullgate_and_direct() {
    let env = TestEnv::start().await;
    let host = env.host();
    // One image: containerd lists several in map order, which differs from call to call.
    env.push_signed_image("signed/a", "v1", "a").await;
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{host}/signed/*")]))
        .await;
    pg.client()
        .pull_image(cri::pull_request(&env.image_ref("signed/a", "v1"), None, None))
        .await
        .unwrap();

    // An unfiltered list, a filtered one, and one carrying a field no CRI version defines
    // (field 99): pullgate must forward all of them untouched and return containerd's bytes.
    let filtered = ListImagesRequest {
        filter: Some(ImageFilter {
            image: Some(ImageSpec {
                image: env.image_ref("signed/a", "v1"),
                ..Default::default()
            }),
        }),
    };
    let mut unknown_field = ListImagesRequest::default().encode_to_vec();
    unknown_field.extend_from_slice(&[0x9a, 0x06, 0x03, b'x', b'y', b'z']); // field 99, length-delimited "xyz"
    for request in [
        ListImagesRequest::default().encode_to_vec(),
        filtered.encode_to_vec(),
        unknown_field,
    ] {
        let direct = cri::raw_unary(env.containerd.socket(), method::LIST_IMAGES, request.clone())
            .await
            .unwrap();
        let proxied = cri::raw_unary(pg.socket(), method::LIST_IMAGES, request).await.unwrap();
        assert_eq!(proxied, direct);
        assert!(!ListImagesResponse::decode(&direct[..]).unwrap().images.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_and_streams_get_containerds_own_answer() {
    let env = TestEnv::start().await;
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/signed/*", env.host())]))
        .await;
    for path in [
        method::STREAM_IMAGES,
        "/runtime.v1.ImageService/NotYetInvented",
        "/runtime.v1alpha2.ImageService/NotYetInvented",
    ] {
        let direct = cri::raw_unary(env.containerd.socket(), path, Vec::new()).await;
        let proxied = cri::raw_unary(pg.socket(), path, Vec::new()).await;
        match (direct, proxied) {
            (Ok(d), Ok(p)) => assert_eq!(p, d, "{path}"),
            (Err(d), Err(p)) => {
                assert_eq!(p.code(), d.code(), "{path}");
                assert_eq!(p.message(), d.message(), "{path}");
            }
            (d, p) => panic!("{path}: direct {d:?} but through pullgate {p:?}"),
        }
    }
    // ImageFsInfo, which kubelet calls at startup, answers the same too.
    let direct = cri::raw_unary(env.containerd.socket(), method::IMAGE_FS_INFO, Vec::new())
        .await
        .unwrap();
    let proxied = cri::raw_unary(pg.socket(), method::IMAGE_FS_INFO, Vec::new())
        .await
        .unwrap();
    // Timestamps differ between the two calls; the filesystems named must not.
    let names = |b: &[u8]| {
        pullgate_proto::cri::ImageFsInfoResponse::decode(b)
            .unwrap()
            .image_filesystems
            .into_iter()
            .map(|f| f.fs_id.map(|i| i.mountpoint))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&proxied), names(&direct));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_status_hides_an_image_that_bypassed_pullgate() {
    let env = TestEnv::start().await;
    let host = env.host();
    env.push_signed_image("signed/app", "v1", "bypass").await;
    let image = env.image_ref("signed/app", "v1");
    // Pulled straight into containerd, as a node bootstrap script or `ctr` might.
    env.containerd
        .client()
        .pull_image(cri::pull_request(&image, None, None))
        .await
        .unwrap();
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{host}/signed/*")]))
        .await;

    let direct = env
        .containerd
        .client()
        .image_status(cri::image_status_request(&image))
        .await
        .unwrap()
        .into_inner();
    let id = direct.image.expect("containerd has the image").id;
    let raw = cri::raw_unary(
        pg.socket(),
        method::IMAGE_STATUS,
        cri::image_status_request(&image).encode_to_vec(),
    )
    .await
    .unwrap();
    assert!(
        raw.is_empty(),
        "not present must be a response without the image field, got {raw:?}"
    );
    // Asking by image id is hidden too.
    let by_id = pg
        .client()
        .image_status(cri::image_status_request(&id))
        .await
        .unwrap()
        .into_inner();
    assert!(by_id.image.is_none());
    let record = pg.audit_records().pop().unwrap();
    assert_eq!(record["event"], "status-hidden");
    assert_eq!(record["decision"], "deny");

    // Once pulled through pullgate (and so verified), it is shown, by tag and by id.
    pg.client()
        .pull_image(cri::pull_request(&image, None, None))
        .await
        .unwrap();
    let shown = pg
        .client()
        .image_status(cri::image_status_request(&image))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.image.map(|i| i.id), Some(id.clone()));
    let shown = pg
        .client()
        .image_status(cri::image_status_request(&id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.image.map(|i| i.id), Some(id));

    // An image containerd does not have is answered as containerd answers.
    let missing = pg
        .client()
        .image_status(cri::image_status_request(&format!("{host}/signed/none:v1")))
        .await
        .unwrap();
    assert!(missing.into_inner().image.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_is_forgotten_when_the_policy_changes() {
    let env = TestEnv::start().await;
    let host = env.host();
    env.push_signed_image("signed/app", "v1", "generation").await;
    let image = env.image_ref("signed/app", "v1");
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{host}/signed/*")]))
        .await;
    pg.client()
        .pull_image(cri::pull_request(&image, None, None))
        .await
        .unwrap();
    assert!(pg
        .client()
        .image_status(cri::image_status_request(&image))
        .await
        .unwrap()
        .into_inner()
        .image
        .is_some());

    // A new policy (another key) is a new generation: the old verification no longer counts.
    let other = pullgate_tests::Signer::generate();
    pg.write_policy(&pullgate_tests::policy::key_policy(
        "other",
        &other.public_key_pem(),
        &[&format!("{host}/signed/*")],
    ));
    pg.reload();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = pg
            .client()
            .image_status(cri::image_status_request(&image))
            .await
            .unwrap()
            .into_inner();
        if status.image.is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status still shown after the reload:\n{}",
            pg.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_chain_verifies_and_one_flipped_byte_breaks_it() {
    let env = TestEnv::start().await;
    let host = env.host();
    env.push_signed_image("signed/app", "v1", "audited").await;
    env.push_image("signed/bad", "v1", "audited too").await;
    let mut pg = env
        .start_pullgate(&env.key_policy(&[&format!("{host}/signed/*")]))
        .await;
    pg.client()
        .pull_image(cri::pull_request(&env.image_ref("signed/app", "v1"), None, None))
        .await
        .unwrap();
    let denied = pg
        .client()
        .pull_image(cri::pull_request(&env.image_ref("signed/bad", "v1"), None, None))
        .await;
    assert_eq!(denied.unwrap_err().code(), Code::Unknown);
    pg.client()
        .pull_image(cri::pull_request(&env.image_ref("signed/app", "v1"), None, None))
        .await
        .unwrap();
    assert_eq!(
        pg.stop().and_then(|s| s.code()),
        Some(0),
        "SIGTERM exits 0:\n{}",
        pg.log()
    );

    let audit = pg.audit_path();
    let records = pg.audit_records();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["prev"], format!("sha256:{}", "0".repeat(64)));
    let verify = |path: &std::path::Path| {
        Pullgate::command()
            .args(["audit", "verify"])
            .arg(path)
            .output()
            .unwrap()
    };
    let ok = verify(&audit);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stdout));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("intact, 3 records"));

    let mut bytes = std::fs::read(&audit).unwrap();
    // Inside the first record's image name: the line still parses, its hash changes.
    let at = bytes.windows(9).position(|w| w == br#""image":""#).unwrap() + 12;
    bytes[at] ^= 0x01;
    let tampered = env.dir().join("tampered.jsonl");
    std::fs::write(&tampered, bytes).unwrap();
    let broken = verify(&tampered);
    let out = String::from_utf8_lossy(&broken.stdout);
    assert_eq!(broken.status.code(), Some(1), "{out}");
    assert!(
        out.contains(":2: chain broken"),
        "the second line names the first one's hash: {out}"
    );
}

/// Rotation as logrotate does it: move the file, send SIGHUP. The moved file holds every record
/// written before the signal, the new one continues the chain, and `audit verify` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_audit_log_is_continued_after_sighup() {
    let env = TestEnv::start().await;
    env.push_signed_image("signed/app", "v1", "rotated").await;
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/signed/*", env.host())]))
        .await;
    let image = env.image_ref("signed/app", "v1");
    pg.pull(&image, None).await.unwrap();
    let audit = pg.audit_path();
    let rotated = audit.with_extension("jsonl.1");
    std::fs::rename(&audit, &rotated).unwrap();
    // Between the move and the signal, records go on into the moved file.
    pg.pull(&image, None).await.unwrap();
    pg.reload();
    pg.wait_for_log("a new file continues the chain").await;
    pg.pull(&image, None).await.unwrap();

    let verify = |path: &std::path::Path| {
        let out = Pullgate::command()
            .args(["audit", "verify"])
            .arg(path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(verify(&rotated).contains("intact, 2 records (seq 1..=2)"));
    let continued = verify(&audit);
    assert!(continued.contains("intact, 1 records (seq 3..=3)"), "{continued}");
    assert!(
        continued.contains("continues a chain from an earlier (rotated) file"),
        "{continued}"
    );
    let last_old = std::fs::read_to_string(&rotated)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    assert_eq!(
        pg.audit_records()[0]["prev"],
        pullgate::audit::line_hash(last_old.as_bytes())
    );
}

#[test]
fn policy_check_reports_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    let key = pullgate_tests::Signer::generate().public_key_pem();
    std::fs::write(
        &good,
        pullgate_tests::policy::key_policy("k", &key, &["ghcr.io/org/**"]),
    )
    .unwrap();
    let out = Pullgate::command()
        .args(["policy", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let bad = dir.path().join("bad.yaml");
    let text =
        pullgate_tests::policy::key_policy("k", &key, &["ghcr.io/org/**"]).replace("      images:", "      imagez:");
    std::fs::write(&bad, &text).unwrap();
    let out = Pullgate::command()
        .args(["policy", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = text.lines().position(|l| l.contains("imagez")).unwrap() + 1;
    assert!(err.contains(&format!("bad.yaml:{line}:")), "{err}");
    assert!(err.contains("imagez"), "{err}");
}

#[test]
fn serve_refuses_a_config_with_an_unknown_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "policy: p.yaml\nverifyTimeoutt: 3s\n").unwrap();
    let out = Pullgate::command()
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("verifyTimeoutt"), "{err}");
}

/// Review finding: an image admitted under one rule, or pulled where a rule only warns, must
/// not be shown to a namespace whose rule it does not satisfy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_status_shows_only_what_every_possible_rule_accepts() {
    let env = TestEnv::start().await;
    let host = env.host();
    let pattern = format!("{host}/apps/**");
    let team_b = pullgate_tests::Signer::generate();
    env.push_signed_image("apps/tool", "v1", "two teams").await;
    let image = env.image_ref("apps/tool", "v1");
    let rules = [
        rule(
            "dev",
            &[&pattern],
            "mode: warn\nnamespaces: [\"*\"]\nexcludeNamespaces: [prod]",
            Some(("b-key", &team_b.public_key_pem())),
        ),
        rule(
            "prod",
            &[&pattern],
            "",
            Some(("team-key", &env.signer.public_key_pem())),
        ),
    ];
    let pg = env.start_pullgate(&policy("enforce", "deny", &rules)).await;
    // Pulled by a dev pod: the warn rule decides, so nothing was verified for "prod".
    pg.client()
        .pull_image(cri::pull_request(&image, None, Some("dev")))
        .await
        .unwrap();
    let status = pg
        .client()
        .image_status(cri::image_status_request(&image))
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.image.is_none(),
        "a prod pod must not find an image only the warn rule let in"
    );
    assert_eq!(pg.audit_records().pop().unwrap()["rule"], "prod");
    // Pulled by a prod pod: verified under "prod", so every possible decision is satisfied.
    pg.client()
        .pull_image(cri::pull_request(&image, None, Some("prod")))
        .await
        .unwrap();
    let status = pg
        .client()
        .image_status(cri::image_status_request(&image))
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_some());

    // Verified under one rule does not count for another rule with another key.
    let other = [
        rule(
            "team-a",
            &[&pattern],
            "namespaces: [team-a]",
            Some(("a-key", &env.signer.public_key_pem())),
        ),
        rule("team-b", &[&pattern], "", Some(("b-key", &team_b.public_key_pem()))),
    ];
    let pg = env.start_pullgate(&policy("enforce", "deny", &other)).await;
    pg.client()
        .pull_image(cri::pull_request(&image, None, Some("team-a")))
        .await
        .unwrap();
    let status = pg
        .client()
        .image_status(cri::image_status_request(&image))
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.image.is_none(),
        "verified for team-a's key is not verified for team-b's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_match_allow_images_are_shown() {
    let env = TestEnv::start().await;
    env.push_image("anything/app", "v1", "no match").await;
    let image = env.image_ref("anything/app", "v1");
    env.containerd
        .client()
        .pull_image(cri::pull_request(&image, None, None))
        .await
        .unwrap();
    let rules = [rule(
        "signed",
        &[&format!("{}/signed/**", env.host())],
        "action: deny",
        None,
    )];
    let pg = env.start_pullgate(&policy("enforce", "allow", &rules)).await;
    let status = pg
        .client()
        .image_status(cri::image_status_request(&image))
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_some());
    assert!(pg.audit_records().is_empty(), "nothing hidden, nothing recorded");
}

/// Review finding: containerd pulls the digest of `repo:tag@digest`, so the tag must not let a
/// tag-scoped allow rule vouch for an arbitrary digest, nor be moved to that digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_and_digest_reference_is_judged_by_its_digest() {
    let env = TestEnv::start().await;
    let host = env.host();
    let unsigned = env.push_image("apps/tool", "evil", "any digest").await;
    let rules = [rule(
        "pinned-tag",
        &[&format!("{host}/apps/tool:v1")],
        "action: allow",
        None,
    )];
    let pg = env.start_pullgate(&policy("enforce", "deny", &rules)).await;
    let image = format!("{host}/apps/tool:v1@{unsigned}");
    let status = pg
        .client()
        .pull_image(cri::pull_request(&image, None, None))
        .await
        .unwrap_err();
    assert!(
        status.message().starts_with("SignatureValidationFailed: "),
        "{}",
        status.message()
    );
    assert!(status.message().contains("no rule matches"), "{}", status.message());
    let direct = env
        .containerd
        .client()
        .image_status(cri::image_status_request(&unsigned))
        .await
        .unwrap();
    assert!(direct.into_inner().image.is_none());
}

/// Review finding: containerd 1.6 also serves runtime.v1alpha2; its PullImage must be gated too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1alpha2_pull_goes_through_the_gate() {
    let env = TestEnv::start().await;
    env.push_image("signed/app", "v1", "old api").await;
    let image = env.image_ref("signed/app", "v1");
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/signed/*", env.host())]))
        .await;
    let request = cri::pull_request(&image, None, None).encode_to_vec();
    let status = cri::raw_unary(pg.socket(), "/runtime.v1alpha2.ImageService/PullImage", request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unknown);
    assert!(
        status.message().starts_with("SignatureValidationFailed: "),
        "{}",
        status.message()
    );
    let direct = env
        .containerd
        .client()
        .image_status(cri::image_status_request(&image))
        .await
        .unwrap();
    assert!(direct.into_inner().image.is_none());
}

/// Review finding: the socket forwarded every service to containerd, so `ctr --address
/// pullgate.sock images pull` (containerd's own API) imported a denied image with no audit
/// record, and RuntimeService calls went by the gate. Only the CRI ImageService is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_image_service_is_served() {
    let env = TestEnv::start().await;
    env.push_image("signed/app", "v1", "ctr bypass").await;
    let image = env.image_ref("signed/app", "v1");
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/signed/*", env.host())]))
        .await;

    let ctr = std::process::Command::new("ctr")
        .arg("--address")
        .arg(pg.socket())
        .args(["--namespace", "k8s.io", "images", "pull", "--plain-http", &image])
        .output()
        .expect("ctr runs");
    let stderr = String::from_utf8_lossy(&ctr.stderr);
    assert!(!ctr.status.success(), "ctr pulled through pullgate's socket: {stderr}");
    assert!(stderr.contains("unknown service"), "{stderr}");
    let direct = env
        .containerd
        .client()
        .image_status(cri::image_status_request(&image))
        .await
        .unwrap();
    assert!(
        direct.into_inner().image.is_none(),
        "the denied image reached containerd"
    );
    assert!(pg.audit_records().is_empty(), "no decision was asked for");

    for path in [
        "/runtime.v1.RuntimeService/Version",
        "/runtime.v1alpha2.RuntimeService/Version",
        "/containerd.services.images.v1.Images/List",
        "/grpc.health.v1.Health/Check",
        "/runtime.v1.ImageService",
    ] {
        let status = cri::raw_unary(pg.socket(), path, Vec::new()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {status:?}");
    }
}

/// Review finding: containerd answers an `ImageStatus` name that is no full reference as an id
/// prefix (`sha256:<12 hex>` or `<12 hex>`); pullgate judged the string as
/// `docker.io/library/sha256:…`, so with a permissive `noMatch` any image in containerd was shown
/// to kubelet. The image containerd found is judged, by every name it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_status_by_short_id_judges_the_image_found() {
    let env = TestEnv::start().await;
    let host = env.host();
    env.push_image("apps/unsigned", "v1", "short id bypass").await;
    env.push_signed_image("apps/signed", "v1", "short id verified").await;
    let unsigned = env.image_ref("apps/unsigned", "v1");
    let signed = env.image_ref("apps/signed", "v1");
    // Pulled straight into containerd, as a node bootstrap script or `ctr` might.
    env.containerd
        .client()
        .pull_image(cri::pull_request(&unsigned, None, None))
        .await
        .unwrap();
    let rules = [rule(
        "apps",
        &[&format!("{host}/apps/**")],
        "",
        Some(("release-key", &env.signer.public_key_pem())),
    )];
    let pg = env.start_pullgate(&policy("enforce", "allow", &rules)).await;
    pg.client()
        .pull_image(cri::pull_request(&signed, None, None))
        .await
        .unwrap();

    let id_of = |image: String| {
        let env = &env;
        async move {
            let status = env
                .containerd
                .client()
                .image_status(cri::image_status_request(&image))
                .await;
            status.unwrap().into_inner().image.expect("containerd has the image").id
        }
    };
    let spellings = |id: &str| {
        let hex = id.trim_start_matches("sha256:").to_string();
        vec![
            format!("sha256:{}", &hex[..12]),
            hex[..12].to_string(),
            id.to_string(),
            hex,
        ]
    };
    const V1ALPHA2_STATUS: &str = "/runtime.v1alpha2.ImageService/ImageStatus";
    let unsigned_id = id_of(unsigned.clone()).await;
    // containerd 2.x no longer serves runtime.v1alpha2: there the old API shows nothing through
    // pullgate, which answers as containerd itself does.
    let old_api = cri::raw_unary(
        env.containerd.socket(),
        V1ALPHA2_STATUS,
        cri::image_status_request(&unsigned_id).encode_to_vec(),
    )
    .await;
    let status_paths: &[&str] = match old_api {
        Ok(_) => &[method::IMAGE_STATUS, V1ALPHA2_STATUS],
        Err(direct) => {
            assert_eq!(direct.code(), Code::Unimplemented, "{direct:?}");
            assert!(
                pullgate_tests::containerd::binary().major >= 2,
                "containerd 1.x serves v1alpha2"
            );
            for id in [&unsigned_id, &id_of(signed.clone()).await] {
                let proxied = cri::raw_unary(
                    pg.socket(),
                    V1ALPHA2_STATUS,
                    cri::image_status_request(id).encode_to_vec(),
                )
                .await
                .expect_err("nothing is shown on an API containerd does not serve");
                assert_eq!(proxied.code(), Code::Unimplemented, "{proxied:?}");
                assert_eq!(proxied.message(), direct.message());
            }
            &[method::IMAGE_STATUS]
        }
    };
    for asked in spellings(&unsigned_id) {
        // containerd itself finds the image by each of these.
        let direct = cri::raw_unary(
            env.containerd.socket(),
            method::IMAGE_STATUS,
            cri::image_status_request(&asked).encode_to_vec(),
        )
        .await
        .unwrap();
        assert!(!direct.is_empty(), "containerd finds {asked}");
        for &path in status_paths {
            let proxied = cri::raw_unary(pg.socket(), path, cri::image_status_request(&asked).encode_to_vec())
                .await
                .unwrap();
            assert!(proxied.is_empty(), "{path} {asked}: an unverified image was shown");
        }
    }
    let record = pg.audit_records().pop().unwrap();
    assert_eq!(record["event"], "status-hidden");
    assert_eq!(record["image"], unsigned.as_str());
    assert_eq!(record["rule"], "apps");

    // The verified image is shown by each of them.
    let signed_id = id_of(signed).await;
    for asked in spellings(&signed_id) {
        for &path in status_paths {
            let proxied = cri::raw_unary(pg.socket(), path, cri::image_status_request(&asked).encode_to_vec())
                .await
                .unwrap();
            let shown = pullgate_proto::cri::ImageStatusResponse::decode(&proxied[..]).unwrap();
            assert_eq!(shown.image.map(|i| i.id), Some(signed_id.clone()), "{path} {asked}");
        }
    }
}

/// Review finding: gRPC C-core (grpcio, grpc C++/Ruby/PHP) sends the percent-encoded socket path
/// as `:authority` on a unix socket; h2 reset those streams with PROTOCOL_ERROR where containerd
/// answers. The real grpcio client pulls, is denied and asks status through pullgate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_core_clients_are_served() {
    let env = TestEnv::start().await;
    let host = env.host();
    env.push_signed_image("signed/app", "v1", "c-core").await;
    env.push_image("signed/unsigned", "v1", "c-core unsigned").await;
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{host}/signed/*")]))
        .await;
    let (socket, containerd) = (pg.socket(), env.containerd.socket());
    let call = move |path: &'static str, request: Vec<u8>| {
        let socket = socket.clone();
        tokio::task::spawn_blocking(move || tools::grpcio_unary(&socket, path, &request))
    };

    let fs = call(method::IMAGE_FS_INFO, Vec::new()).await.unwrap();
    assert!(fs.is_ok(), "ImageFsInfo through pullgate: {fs:?}");
    let direct = tokio::task::spawn_blocking(move || tools::grpcio_unary(&containerd, method::IMAGE_FS_INFO, &[]));
    assert!(direct.await.unwrap().is_ok(), "containerd serves the same client");

    let signed = env.image_ref("signed/app", "v1");
    let reply = call(
        method::PULL_IMAGE,
        cri::pull_request(&signed, None, None).encode_to_vec(),
    )
    .await
    .unwrap()
    .expect("the signed image is pulled");
    let image_ref = pullgate_proto::cri::PullImageResponse::decode(&reply[..])
        .unwrap()
        .image_ref;
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    let status = call(method::IMAGE_STATUS, cri::image_status_request(&signed).encode_to_vec())
        .await
        .unwrap()
        .unwrap();
    let shown = pullgate_proto::cri::ImageStatusResponse::decode(&status[..]).unwrap();
    assert_eq!(shown.image.map(|i| i.id), Some(image_ref));

    let unsigned = env.image_ref("signed/unsigned", "v1");
    let (code, details) = call(
        method::PULL_IMAGE,
        cri::pull_request(&unsigned, None, None).encode_to_vec(),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(code, "UNKNOWN");
    assert!(details.starts_with("SignatureValidationFailed: "), "{details}");
    let records = pg.audit_records();
    assert_eq!(records.len(), 2, "{records:?}");
}
