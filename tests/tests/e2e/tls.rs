//! Registries that serve TLS, end to end: the real registry with a certificate from a test CA
//! (`TestEnv::start_with_tls`), a real containerd that trusts that CA, and the real pullgate,
//! which speaks TLS to every host not marked `insecure` and trusts a host's `caFile`.

use std::error::Error as _;

use pullgate_tests::{cri, pullgate::RegistryEntry, tls::TestCa, Containerd, TestEnv};
use tonic::Code;

const UNAVAILABLE_PREFIX: &str = "RegistryUnavailable: ";

/// An env with `signed/app:v1` pushed and signed by the env's key, its image reference, its
/// digest, and the policy that requires that key for it.
async fn signed_env(env: TestEnv) -> (TestEnv, String, String, String) {
    let digest = env.push_signed_image("signed/app", "v1", "served over TLS").await;
    let image = env.image_ref("signed/app", "v1");
    let policy = env.key_policy(&[&format!("{}/signed/*", env.host())]);
    (env, image, digest, policy)
}

/// The registry's access-log lines (combined log format, User-Agent last) of the requests it
/// served to a client whose User-Agent starts with `agent`. A TLS registry logs only requests
/// that arrived over TLS; a TLS handshake that fails, or plain HTTP sent to its TLS port, never
/// reaches it.
fn served_to(env: &TestEnv, agent: &str) -> Vec<String> {
    env.registry
        .log()
        .lines()
        .filter(|line| line.contains("] \"") && line.rsplit_once(" \"").is_some_and(|(_, ua)| ua.starts_with(agent)))
        .map(str::to_owned)
        .collect()
}

/// `error: cause: cause…`, as reqwest's Display alone hides the causes.
fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// The rig itself, without pullgate: the registry serves TLS only, with a certificate that only
/// its own CA vouches for; the rig pushes over https trusting that CA, and containerd pulls over
/// TLS because of its `ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_registry_serves_only_https_and_containerd_pulls_trusting_its_ca() {
    let env = TestEnv::start_with_tls().await;
    let host = env.host();
    assert_eq!(env.registry.url(), format!("https://{host}"));
    let ca_file = env.registry.ca_file().expect("a TLS registry has a CA file").to_owned();
    assert!(std::fs::read_to_string(&ca_file)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    let digest = env.push_image("plain/app", "v1", "over https").await;

    // Plain HTTP to its port gets Go's answer for HTTP on a TLS listener.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let plain = client.get(format!("http://{host}/v2/")).send().await.unwrap();
    assert_eq!(plain.status(), 400);
    assert_eq!(
        plain.text().await.unwrap(),
        "Client sent an HTTP request to an HTTPS server.\n"
    );
    // TLS without its CA fails to verify the certificate.
    let untrusted = client
        .get(format!("https://{host}/v2/"))
        .send()
        .await
        .expect_err("the test CA is trusted by no one else");
    assert!(chain(&untrusted).contains("certificate"), "{}", chain(&untrusted));

    // containerd pulls it directly, over TLS: the registry served containerd's requests.
    let image = env.image_ref("plain/app", "v1");
    let pulled = env
        .containerd
        .client()
        .pull_image(cri::pull_request(&image, None, None))
        .await
        .expect("containerd pulls over TLS with the registry's CA")
        .into_inner();
    assert_eq!(
        env.containerd.image_id(&image).await.as_deref(),
        Some(pulled.image_ref.as_str())
    );
    let served = served_to(&env, "containerd/");
    assert!(
        served
            .iter()
            .any(|l| l.contains(&format!("\"GET /v2/plain/app/manifests/{digest} HTTP/1.1\" 200 "))),
        "{served:#?}"
    );

    // A containerd that trusts another CA refuses the registry's certificate.
    let other_ca = TestCa::generate().write_to(&env.dir().join("other-ca"));
    let elsewhere = Containerd::start_in_with_tls(
        &env.dir().join("containerd-other-ca"),
        &[],
        &[(host.clone(), other_ca.ca)],
    )
    .await;
    let refused = elsewhere
        .client()
        .pull_image(cri::pull_request(&image, None, None))
        .await
        .expect_err("containerd must not trust the registry without its CA");
    assert!(
        refused
            .message()
            .contains("x509: certificate signed by unknown authority"),
        "{refused:?}"
    );
    assert_eq!(elsewhere.image_id(&image).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_image_on_a_tls_registry_with_its_ca_file_is_allowed() {
    let (env, image, digest, policy) = signed_env(TestEnv::start_with_tls().await).await;
    let pg = env.start_pullgate(&policy).await;
    // The env's configuration names the registry with its CA, and not as insecure.
    let config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(pg.config_path()).unwrap()).unwrap();
    let entry = &config["registries"][0];
    assert_eq!(entry["host"].as_str(), Some(env.host().as_str()));
    assert_eq!(
        entry["caFile"].as_str().map(std::path::Path::new),
        env.registry.ca_file()
    );
    assert!(entry.get("insecure").is_none(), "{config:?}");

    let image_ref = pg
        .pull(&image, None)
        .await
        .expect("signed image on a TLS registry allowed");

    // The image is really in containerd, which reports it directly on its own socket.
    assert_eq!(
        env.containerd.image_id(&image).await.as_deref(),
        Some(image_ref.as_str())
    );
    let record = pg.last_record();
    assert_eq!(record["decision"], "allow", "{record}");
    assert_eq!(record["digest"], digest);
    assert_eq!(record["rule"], "signed");
    // Both pullgate and containerd were served by the registry, which speaks only TLS. pullgate
    // resolves the tag by HEAD, as containerd does.
    let by_pullgate = served_to(&env, "pullgate/");
    assert!(
        by_pullgate
            .iter()
            .any(|l| l.contains("\"HEAD /v2/signed/app/manifests/v1 HTTP/1.1\" 200 ")),
        "{by_pullgate:#?}"
    );
    // containerd resolves the verified digest itself (a HEAD); the content may be in its store
    // already, fetched by pullgate's prefetch while the image was verified.
    assert!(
        served_to(&env, "containerd/").iter().any(|l| {
            ["GET", "HEAD"]
                .iter()
                .any(|m| l.contains(&format!("\"{m} /v2/signed/app/manifests/{digest} HTTP/1.1\" 200 ")))
        }),
        "{}",
        env.registry.log()
    );
}

/// Without the registry's CA (the host is not listed at all), pullgate's TLS handshake fails on
/// the certificate, and kubelet is told the registry is unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_registry_without_its_ca_file_is_registry_unavailable() {
    let (env, image, _, policy) = signed_env(TestEnv::start_with_tls().await).await;
    let pg = env.start_pullgate_with(&policy, &[]).await;

    let status = pg
        .pull(&image, None)
        .await
        .expect_err("an untrusted certificate must deny");

    assert_eq!(status.code(), Code::Unknown);
    let message = status.message();
    let url = format!("https://{}/v2/signed/app/manifests/v1", env.host());
    assert!(
        message.starts_with(&format!("{UNAVAILABLE_PREFIX}{image}: rule \"signed\": {url}: ")),
        "{message}"
    );
    assert!(message.contains("certificate"), "{message}");
    assert_eq!(env.containerd.image_id(&image).await, None, "nothing is pulled");
    let record = pg.last_record();
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["reason"], message);
    assert!(record["digest"].is_null(), "{record}");
    assert_eq!(served_to(&env, "pullgate/"), Vec::<String>::new());
}

/// A TLS registry marked `insecure`: pullgate speaks plain HTTP to a TLS port, which answers 400,
/// and the pull is denied as the registry being unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_registry_marked_insecure_is_registry_unavailable() {
    let (env, image, _, policy) = signed_env(TestEnv::start_with_tls().await).await;
    let pg = env
        .start_pullgate_with(&policy, &[RegistryEntry::insecure(&env.host())])
        .await;

    let status = pg
        .pull(&image, None)
        .await
        .expect_err("plain HTTP to a TLS port must deny");

    assert_eq!(status.code(), Code::Unknown);
    assert_eq!(
        status.message(),
        format!(
            "{UNAVAILABLE_PREFIX}{image}: rule \"signed\": http://{host}/v2/signed/app/manifests/v1: HTTP 400 Bad Request",
            host = env.host()
        )
    );
    assert_eq!(env.containerd.image_id(&image).await, None, "nothing is pulled");
    let record = pg.last_record();
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["reason"], status.message());
    assert_eq!(served_to(&env, "pullgate/"), Vec::<String>::new());
}

/// A plain-HTTP registry whose host is not marked insecure: pullgate insists on TLS, fails the
/// handshake against a plain-HTTP port and never falls back to plain HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_registry_not_marked_insecure_is_not_downgraded() {
    let (env, image, _, policy) = signed_env(TestEnv::start().await).await;
    assert!(env.registry.url().starts_with("http://"));
    let pg = env.start_pullgate_with(&policy, &[]).await;

    let status = pg
        .pull(&image, None)
        .await
        .expect_err("TLS to a plain-HTTP port must deny");

    assert_eq!(status.code(), Code::Unknown);
    let message = status.message();
    let url = format!("https://{}/v2/signed/app/manifests/v1", env.host());
    assert!(
        message.starts_with(&format!("{UNAVAILABLE_PREFIX}{image}: rule \"signed\": {url}: ")),
        "{message}"
    );
    assert_eq!(env.containerd.image_id(&image).await, None, "nothing is pulled");
    let record = pg.last_record();
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["reason"], message);
    // No request of pullgate's reached the registry: it did not retry over plain HTTP.
    assert_eq!(served_to(&env, "pullgate/"), Vec::<String>::new());
}
