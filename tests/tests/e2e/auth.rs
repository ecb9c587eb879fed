//! Pulls from a registry with distribution's token authentication, end to end: the real registry
//! (`auth: token`), its token server (the rig's one test double), the real containerd and the
//! real pullgate, with the credentials kubelet puts in `PullImageRequest.auth`.

use pullgate_proto::cri::{AuthConfig, PullImageRequest};
use pullgate_tests::{
    cri,
    distribution::{self, RegistryError},
    image::push_image,
    pullgate,
    token_server::TokenRequest,
    Pullgate, TestEnv, TokenServer,
};
use tonic::Code;

const USER: &str = "alice";
const PASS: &str = "s3cret";
const UNAVAILABLE_PREFIX: &str = "RegistryUnavailable: ";

/// A token-auth env with `signed/app:v1` pushed and signed by the env's key, and a pullgate
/// that requires that key for it. Returns the image's digest too.
async fn signed_env() -> (TestEnv, Pullgate, String) {
    let env = TestEnv::start_with_token_auth(USER, PASS).await;
    let digest = env.push_signed_image("signed/app", "v1", "behind a token").await;
    let pg = env
        .start_pullgate(&env.key_policy(&[&format!("{}/signed/*", env.host())]))
        .await;
    (env, pg, digest)
}

fn token_server(env: &TestEnv) -> &TokenServer {
    env.token_server().expect("a token-auth env has a token server")
}

/// The token requests pullgate (not containerd, not the rig) made, by their User-Agent.
fn pullgate_token_requests(env: &TestEnv) -> Vec<TokenRequest> {
    token_server(env)
        .requests()
        .into_iter()
        .filter(|r| r.user_agent.starts_with("pullgate/"))
        .collect()
}

/// A pull request for `image` carrying `auth` as kubelet would send it.
fn pull_request_with(image: &str, auth: AuthConfig) -> PullImageRequest {
    PullImageRequest {
        auth: Some(auth),
        ..cri::pull_request(image, None, Some("default"))
    }
}

/// The rig itself, without pullgate: the registry wants tokens, the rig's pushes trade the
/// credentials for one, and containerd does the token flow with kubelet-style credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_registry_takes_pushes_and_containerd_pulls_with_credentials() {
    let env = TestEnv::start_with_token_auth(USER, PASS).await;
    let host = env.host();

    let anonymous = push_image(&host, "private/app", "v1", "anonymous", None)
        .await
        .expect_err("push without credentials");
    assert!(anonymous.is_unauthorized(), "{anonymous}");
    let wrong = push_image(&host, "private/app", "v1", "wrong", Some((USER, "nope")))
        .await
        .expect_err("push with a wrong password");
    // The token server refuses the password: a 401 from the realm, not from the registry.
    assert!(wrong.is_unauthorized(), "{wrong}");
    assert!(
        matches!(&wrong, RegistryError::Status { url, .. } if url.starts_with(&token_server(&env).realm())),
        "{wrong}"
    );
    let digest = push_image(&host, "private/app", "v1", "with credentials", env.auth())
        .await
        .expect("push with credentials");
    assert_eq!(
        distribution::resolve(&host, "private/app", "v1", env.auth())
            .await
            .unwrap(),
        digest
    );
    // An anonymous token grants nothing, so the registry still says 401.
    let read = distribution::resolve(&host, "private/app", "v1", None).await;
    assert!(read.expect_err("anonymous read").is_unauthorized());

    let image = env.image_ref("private/app", "v1");
    let mut containerd = env.containerd.client();
    let denied = containerd
        .pull_image(cri::pull_request(&image, None, None))
        .await
        .expect_err("containerd pull without credentials");
    // Anonymously, containerd gets the empty token, which the registry finds short of `pull`.
    assert!(denied.message().contains("insufficient_scope"), "{denied:?}");
    let pulled = containerd
        .pull_image(cri::pull_request(&image, env.auth(), None))
        .await
        .expect("containerd pull with credentials")
        .into_inner();
    assert_eq!(
        env.containerd.image_id(&image).await.as_deref(),
        Some(pulled.image_ref.as_str())
    );
    // containerd got its token from the token server with the user's credentials.
    let granted_to_containerd = token_server(&env)
        .requests()
        .into_iter()
        .any(|r| r.user_agent.starts_with("containerd/") && r.user.as_deref() == Some(USER) && r.status == 200);
    assert!(granted_to_containerd, "{:#?}", token_server(&env).requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_image_on_a_token_registry_is_allowed_with_kubelet_credentials() {
    let (env, pg, digest) = signed_env().await;
    let image = env.image_ref("signed/app", "v1");

    let request = cri::pull_request(&image, Some((USER, PASS)), Some("default"));
    let image_ref = pg
        .client()
        .pull_image(request)
        .await
        .expect("allowed with kubelet's credentials")
        .into_inner()
        .image_ref;

    assert_eq!(
        env.containerd.image_id(&image).await.as_deref(),
        Some(image_ref.as_str())
    );
    let record = pg.last_record();
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["digest"], digest);
    // pullgate asked the realm for a pull token with the user's credentials, and got one.
    let asked = pullgate_token_requests(&env);
    assert!(!asked.is_empty(), "{:#?}", token_server(&env).requests());
    for request in &asked {
        assert_eq!(request.method, "GET");
        assert_eq!(request.user.as_deref(), Some(USER));
        assert_eq!(request.scopes, ["repository:signed/app:pull"]);
        assert_eq!(request.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_registry_without_credentials_is_registry_unavailable() {
    let (env, pg, digest) = signed_env().await;
    let image = env.image_ref("signed/app", "v1");

    let status = pg
        .client()
        .pull_image(cri::pull_request(&image, None, Some("default")))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::Unknown);
    let message = status.message();
    assert!(message.starts_with(UNAVAILABLE_PREFIX), "{message}");
    // The anonymous token grants nothing, so the registry refuses the retried request.
    assert_eq!(
        message,
        format!(
            "{UNAVAILABLE_PREFIX}{image}: rule \"signed\": {registry}/v2/signed/app/manifests/v1: HTTP 401 Unauthorized: \
             the registry refused the credentials kubelet sent (or the lack of them)",
            registry = env.registry.url()
        )
    );
    assert_eq!(
        env.containerd.image_id(&image).await,
        None,
        "a denied image is not pulled"
    );
    let record = pg.last_record();
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["reason"], message);
    assert!(record["digest"].is_null(), "nothing was resolved, not even {digest}");
    // pullgate did ask, anonymously, and got the empty token.
    let asked = pullgate_token_requests(&env);
    assert_eq!(asked.len(), 1, "{asked:#?}");
    assert_eq!(asked[0].user, None);
    assert_eq!(asked[0].status, 200);
}

/// A token is fetched once per repository and credentials, then reused by later pulls (within
/// its lifetime), and never lent to a pull with other credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_tokens_are_reused_across_pulls_with_the_same_credentials() {
    let (env, pg, _) = signed_env().await;
    env.push_signed_image("signed/app", "v2", "a second tag").await;
    env.push_signed_image("signed/other", "v1", "another repository").await;
    let pull = |image: String, password: &'static str| {
        let mut client = pg.client();
        async move {
            client
                .pull_image(cri::pull_request(&image, Some((USER, password)), Some("default")))
                .await
        }
    };

    // Three pulls of the repository (a repeat and another tag): one token request.
    for tag in ["v1", "v1", "v2"] {
        pull(env.image_ref("signed/app", tag), PASS)
            .await
            .unwrap_or_else(|e| panic!("{tag}: {e:?}"));
    }
    let asked = pullgate_token_requests(&env);
    assert_eq!(asked.len(), 1, "{asked:#?}");
    assert_eq!(asked[0].scopes, ["repository:signed/app:pull"]);

    // A wrong password is not let in on the token the right one earned.
    let refused = pull(env.image_ref("signed/app", "v2"), "wrong")
        .await
        .expect_err("a wrong password must not reuse the token");
    assert!(refused.message().starts_with(UNAVAILABLE_PREFIX), "{refused:?}");

    // Another repository needs a token of its own scope.
    pull(env.image_ref("signed/other", "v1"), PASS)
        .await
        .expect("another repository with the right password");
    let scopes: Vec<_> = pullgate_token_requests(&env)
        .into_iter()
        .map(|r| (r.scopes.join(" "), r.status))
        .collect();
    assert_eq!(
        scopes,
        [
            ("repository:signed/app:pull".to_string(), 200),
            ("repository:signed/app:pull".to_string(), 401),
            ("repository:signed/other:pull".to_string(), 200),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_registry_with_a_wrong_password_is_registry_unavailable() {
    let (env, pg, _) = signed_env().await;
    let image = env.image_ref("signed/app", "v1");

    let request = cri::pull_request(&image, Some((USER, "wrong")), Some("default"));
    let status = pg.client().pull_image(request).await.unwrap_err();

    assert_eq!(status.code(), Code::Unknown);
    let message = status.message();
    assert!(message.starts_with(UNAVAILABLE_PREFIX), "{message}");
    assert_eq!(
        message,
        format!(
            "{UNAVAILABLE_PREFIX}{image}: rule \"signed\": {realm}: token request refused: HTTP 401 Unauthorized",
            realm = token_server(&env).realm()
        )
    );
    assert_eq!(
        env.containerd.image_id(&image).await,
        None,
        "a denied image is not pulled"
    );
    assert_eq!(pg.last_record()["decision"], "deny");
    let asked = pullgate_token_requests(&env);
    assert_eq!(asked.len(), 1, "{asked:#?}");
    assert_eq!(asked[0].user.as_deref(), Some(USER));
    assert_eq!(asked[0].status, 401);
}

/// kubelet's `AuthConfig.registry_token` is a bearer token pullgate must use as it is.
///
/// containerd 1.6 ignores `registry_token` (its CRI `ParseAuth` leaves it as a TODO) and pulls
/// anonymously, which this registry refuses. So the pull as a whole fails after pullgate let it
/// through: what is asserted is pullgate's verification (its audit record says `allow` with the
/// image's digest), that it never went to the token server, and that the failure is
/// containerd's, not a pullgate denial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_token_is_used_as_the_bearer_token() {
    let (env, pg, digest) = signed_env().await;
    let image = env.image_ref("signed/app", "v1");

    // A token for another repository does not open this one: the token really is what pullgate
    // presents.
    let elsewhere = token_server(&env).mint(USER, "other/app", &["pull"]);
    let request = pull_request_with(
        &image,
        AuthConfig {
            registry_token: elsewhere,
            ..Default::default()
        },
    );
    let status = pg.client().pull_image(request).await.unwrap_err();
    assert!(status.message().starts_with(UNAVAILABLE_PREFIX), "{}", status.message());
    assert!(
        status.message().contains("HTTP 401 Unauthorized: the registry refused"),
        "{}",
        status.message()
    );
    assert_eq!(pg.last_record()["decision"], "deny");

    let token = token_server(&env).mint(USER, "signed/app", &["pull"]);
    let request = pull_request_with(
        &image,
        AuthConfig {
            registry_token: token,
            ..Default::default()
        },
    );
    let outcome = pg.client().pull_image(request).await;

    let record = pg.last_record();
    assert_eq!(record["decision"], "allow", "{record}");
    assert_eq!(record["digest"], digest);
    assert_eq!(record["signatures"][0]["authority"], pullgate_tests::TEST_AUTHORITY);
    assert!(
        pullgate_token_requests(&env).is_empty(),
        "pullgate must not fetch a token when kubelet sent one: {:#?}",
        token_server(&env).requests()
    );
    // containerd's own pull, anonymous for lack of registry_token support, gets the empty token
    // and is refused by the registry.
    let status = outcome.expect_err("containerd 1.6 cannot pull with a bare registry_token");
    let message = status.message();
    assert!(!message.starts_with(UNAVAILABLE_PREFIX), "{message}");
    assert!(!message.starts_with("SignatureValidationFailed: "), "{message}");
    assert!(message.starts_with("failed to pull and unpack image"), "{message}");
    assert!(message.contains("insufficient_scope"), "{message}");
    let containerd_asked_anonymously = token_server(&env)
        .requests()
        .iter()
        .any(|r| r.user_agent.starts_with("containerd/") && r.user.is_none());
    assert!(containerd_asked_anonymously, "{:#?}", token_server(&env).requests());
    assert_eq!(env.containerd.image_id(&image).await, None);
}

/// pullgate sends kubelet's credentials to a plain-HTTP realm only on a host its configuration
/// marks insecure; here only the registry is, so the token server is never asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_realm_on_a_host_not_marked_insecure_is_refused() {
    let env = TestEnv::start_with_token_auth(USER, PASS).await;
    env.push_signed_image("signed/app", "v1", "realm not trusted").await;
    let dir = env.dir().join("pg-strict");
    let config = pullgate::config_yaml(
        &dir.join("pullgate.sock"),
        &env.containerd.socket(),
        &dir.join("policy.yaml"),
        &dir.join("audit.jsonl"),
        &[env.host()],
        "10s",
    );
    let pg = Pullgate::start(&dir, &config, &env.key_policy(&[&format!("{}/signed/*", env.host())])).await;
    let image = env.image_ref("signed/app", "v1");

    let request = cri::pull_request(&image, Some((USER, PASS)), Some("default"));
    let status = pg.client().pull_image(request).await.unwrap_err();

    assert_eq!(
        status.message(),
        format!(
            "{UNAVAILABLE_PREFIX}{image}: rule \"signed\": {registry}: unauthorized: token realm is not HTTPS and its \
             host is not marked insecure",
            registry = env.registry.url()
        )
    );
    assert!(
        pullgate_token_requests(&env).is_empty(),
        "{:#?}",
        token_server(&env).requests()
    );
    assert_eq!(env.containerd.image_id(&image).await, None);
}

/// `pullgate verify --docker-config` fetches with the credentials a Docker config.json holds for
/// the image's registry, as `serve` does with kubelet's; without them the registry refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_uses_the_credentials_of_a_docker_config() {
    let (env, pg, digest) = signed_env().await;
    let image = env.image_ref("signed/app", "v1");
    let verify = |docker_config: Option<&std::path::Path>| {
        let mut command = Pullgate::command();
        command
            .args(["verify", "--output", "json", "--config"])
            .arg(pg.config_path());
        if let Some(path) = docker_config {
            command.arg("--docker-config").arg(path);
        }
        command.arg(&image).output().unwrap()
    };

    let anonymous = verify(None);
    assert_eq!(anonymous.status.code(), Some(1), "{anonymous:?}");
    let record: serde_json::Value = serde_json::from_slice(&anonymous.stdout).unwrap();
    assert!(
        record["reason"].as_str().unwrap().starts_with(UNAVAILABLE_PREFIX),
        "{record}"
    );

    let config = env.dir().join("docker-config.json");
    let entry = serde_json::json!({ "auths": { env.host(): { "username": USER, "password": PASS } } });
    std::fs::write(&config, entry.to_string()).unwrap();
    let with_credentials = verify(Some(&config));
    assert_eq!(
        with_credentials.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&with_credentials.stdout)
    );
    let record: serde_json::Value = serde_json::from_slice(&with_credentials.stdout).unwrap();
    assert_eq!(
        (&record["decision"], &record["digest"]),
        (&"allow".into(), &digest.clone().into())
    );
    let asked = pullgate_token_requests(&env);
    assert!(
        asked.iter().any(|r| r.user.as_deref() == Some(USER) && r.status == 200),
        "{asked:#?}"
    );

    std::fs::write(&config, "not json").unwrap();
    let broken = verify(Some(&config));
    assert_eq!(broken.status.code(), Some(2), "{broken:?}");
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(
        stderr.contains(&format!(
            "--docker-config {}:1: not a Docker config.json",
            config.display()
        )),
        "{stderr}"
    );
}
