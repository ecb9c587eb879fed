//! Image names in every spelling, end to end (SPEC §4): the registry host is compared in one
//! canonical form, so a rule written in one spelling meets every spelling that reaches the same
//! repository; and what pullgate judges for a name is the image containerd itself resolves it
//! to, or the name is refused by both.
//!
//! The rig's registry speaks plain HTTP on `127.0.0.1:PORT`. A containerd of these tests' own
//! is given every spelling used here as a plain-HTTP mirror of itself, as DNS and TLS make them
//! one server on a real node; pullgate is given the canonical spellings as `insecure`.

use std::path::Path;

use pullgate_tests::{
    cri,
    policy::{policy, rule},
    pullgate::config_yaml,
    Containerd, Pullgate, TestEnv, TEST_AUTHORITY,
};
use serde_json::Value;

const DENIED_PREFIX: &str = "SignatureValidationFailed: ";

/// The registry's port.
fn port(env: &TestEnv) -> String {
    env.host().rsplit_once(':').expect("host:port").1.to_owned()
}

/// A containerd pulling from the env's registry under each of `spellings` of its host.
async fn containerd_for(env: &TestEnv, spellings: &[String]) -> Containerd {
    Containerd::start_in(&env.dir().join("containerd-spellings"), spellings).await
}

/// A pullgate in front of `containerd`, reaching `insecure` hosts over plain HTTP.
async fn pullgate_before(env: &TestEnv, containerd: &Containerd, insecure: &[String], policy_yaml: &str) -> Pullgate {
    let dir = env.dir().join("pullgate-spellings");
    std::fs::create_dir_all(&dir).unwrap();
    let config = config_yaml(
        &dir.join("pullgate.sock"),
        &containerd.socket(),
        &dir.join("policy.yaml"),
        &dir.join("audit.jsonl"),
        insecure,
        "10s",
    );
    Pullgate::start(&dir, &config, policy_yaml).await
}

/// A rule written in one spelling of a host stops an unsigned image pulled under another, even
/// with `noMatch: allow` behind it. Before hosts were compared canonically the upper-case
/// spelling missed the rule and `noMatch: allow` let it through.
#[tokio::test]
async fn a_rule_in_one_host_spelling_meets_every_spelling() {
    let env = TestEnv::start().await;
    let port = port(&env);
    env.push_image("names/unsigned", "v1", "no signature at all").await;
    let spellings = [env.host(), format!("localhost:{port}"), format!("LOCALHOST:{port}")];
    let containerd = containerd_for(&env, &spellings).await;
    let key = env.signer.public_key_pem();
    let canonical_rule = rule(
        "names",
        &[&format!("localhost:{port}/names/**")],
        "",
        Some((TEST_AUTHORITY, &key)),
    );
    let policy_yaml = policy("enforce", "allow", &[canonical_rule]);
    let pullgate = pullgate_before(&env, &containerd, &spellings[..2], &policy_yaml).await;

    let image = format!("LOCALHOST:{port}/names/unsigned:v1");
    let denied = pullgate
        .pull(&image, Some("default"))
        .await
        .expect_err("an unsigned image under the rule's host, spelled in capitals, is denied");
    assert!(
        denied.message().starts_with(DENIED_PREFIX) && denied.message().contains("rule \"names\""),
        "{}",
        denied.message()
    );
    let record = pullgate.last_record();
    assert_eq!(record["decision"], "deny", "{record}");
    assert_eq!(record["rule"], "names", "{record}");
    assert_eq!(
        record["image"],
        format!("localhost:{port}/names/unsigned:v1"),
        "{record}"
    );
    let status = cri::cri_client(containerd.socket())
        .image_status(cri::image_status_request(&image))
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_none(), "containerd never pulled it");
}

/// What containerd resolved a name to.
#[derive(Debug)]
enum InContainerd {
    /// The image's manifest digest.
    Image(String),
    Refused,
}

/// What pullgate judged a name to be.
#[derive(Debug)]
enum Judged {
    /// The repository and digest it verified.
    Image {
        repository: String,
        digest: String,
    },
    /// The repository it asked the registry about, which cannot be reached from here (Docker Hub).
    Unreachable {
        repository: String,
    },
    Refused,
}

/// What a name must be on both sides.
#[derive(Debug)]
enum Expect {
    /// This repository's image with this digest, to both.
    Same(String, String),
    /// A Docker Hub image: containerd pulls this digest from the registry standing in for Docker
    /// Hub, and pullgate asks Docker Hub for this repository.
    Hub(String, String),
    /// Refused by both.
    Refused,
    /// containerd resolves this digest, of a repository pullgate could name no other way than
    /// as another image; so pullgate refuses the name.
    RefusedByPullgate(String),
}

/// Asks containerd itself, through the CRI (no pullgate), which image `name` is.
async fn containerd_resolves(containerd: &Containerd, name: &str) -> (InContainerd, String) {
    let mut client = cri::cri_client(containerd.socket());
    let image_ref = match client.pull_image(cri::pull_request(name, None, None)).await {
        Ok(reply) => reply.into_inner().image_ref,
        Err(status) => return (InContainerd::Refused, status.message().to_owned()),
    };
    let image = client
        .image_status(cri::image_status_request(&image_ref))
        .await
        .expect("status of an image containerd just pulled")
        .into_inner()
        .image
        .expect("present");
    let digests: Vec<&str> = image
        .repo_digests
        .iter()
        .filter_map(|d| d.split_once('@').map(|(_, digest)| digest))
        .collect();
    assert!(
        !digests.is_empty() && digests.iter().all(|d| *d == digests[0]),
        "{name}: one manifest under every name: {:?}",
        image.repo_digests
    );
    let shown = format!("{:?} {:?}", image.repo_tags, image.repo_digests);
    (InContainerd::Image(digests[0].to_owned()), shown)
}

/// The repository of a normalized reference (`host/path`, without its tag or digest).
fn repository_of(image: &str) -> String {
    let name = image.split('@').next().unwrap_or_default();
    let last_slash = name.rfind('/').unwrap_or(0);
    match name[last_slash..].find(':') {
        Some(colon) => name[..last_slash + colon].to_owned(),
        None => name.to_owned(),
    }
}

/// Asks `pullgate verify` which repository and digest it judged for each of `names`.
fn pullgate_judges(config: &Path, names: &[String]) -> Vec<(Judged, Value)> {
    let out = Pullgate::command()
        .args(["verify", "--output", "json", "--config"])
        .arg(config)
        .args(names)
        .output()
        .unwrap();
    let records: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(records.len(), names.len(), "{}", String::from_utf8_lossy(&out.stderr));
    records
        .into_iter()
        .map(|record| {
            let image = record["image"].as_str().unwrap_or_default();
            let reason = record["reason"].as_str().unwrap_or_default();
            let judged = match (record["decision"].as_str(), record["digest"].as_str()) {
                (Some("allow"), Some(digest)) => Judged::Image {
                    repository: repository_of(image),
                    digest: digest.to_owned(),
                },
                _ if reason.starts_with("RegistryUnavailable: ") => Judged::Unreachable {
                    repository: repository_of(image),
                },
                _ => Judged::Refused,
            };
            (judged, record)
        })
        .collect()
}

/// A differential test against containerd: for names in several host spellings, ports,
/// Docker Hub and `library/` paths, tags, digests, `tag@digest` and upper case, the image
/// containerd resolves (asked through the CRI, without pullgate) is the image pullgate judges,
/// under the canonical repository; and a name containerd refuses, or reads as an image no
/// canonical name names, pullgate refuses.
///
/// Docker Hub is the rig's registry, as containerd's mirror for `docker.io` and
/// `registry-1.docker.io`; pullgate cannot reach Docker Hub here, so for those names the
/// repository it asked for is compared with the one whose image containerd pulled.
#[tokio::test]
async fn pullgate_judges_the_image_containerd_resolves() {
    let env = TestEnv::start().await;
    let host = env.host();
    let port = port(&env);
    let v1 = env.push_signed_image("names/app", "v1", "names app v1").await;
    let v2 = env.push_signed_image("names/app", "v2", "names app v2").await;
    let latest = env.push_signed_image("names/app", "latest", "names app latest").await;
    let library = env.push_signed_image("library/tool", "v1", "names library tool").await;
    // A repository `tool` outside `library/`: what containerd asks for under some spellings.
    let outside_library = env
        .push_signed_image("tool", "v1", "names tool, not library/tool")
        .await;
    let spellings = [
        host.clone(),
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
        format!("Localhost:{port}"),
    ];
    let hub_mirrors = [
        ("docker.io".to_owned(), host.clone()),
        ("registry-1.docker.io".to_owned(), host.clone()),
    ];
    let containerd =
        Containerd::start_in_with_mirrors(&env.dir().join("containerd-spellings"), &spellings, &hub_mirrors).await;

    let canonical = format!("{host}/names/app");
    let local = format!("localhost:{port}/names/app");
    let same = |repository: &str, digest: &str| Expect::Same(repository.to_owned(), digest.to_owned());
    let hub = || Expect::Hub("docker.io/library/tool".to_owned(), library.clone());
    let corpus: Vec<(String, Expect)> = vec![
        (format!("{host}/names/app:v1"), same(&canonical, &v1)),
        (format!("{host}/names/app"), same(&canonical, &latest)),
        (format!("{host}/names/app:latest"), same(&canonical, &latest)),
        (format!("{host}/names/app@{v1}"), same(&canonical, &v1)),
        // A digest beside a tag wins, in containerd as in pullgate: v2 names another image.
        (format!("{host}/names/app:v2@{v1}"), same(&canonical, &v1)),
        (format!("{host}/names/app:v2"), same(&canonical, &v2)),
        (
            format!("{host}/library/tool:v1"),
            same(&format!("{host}/library/tool"), &library),
        ),
        // Leading zeros in the port reach the same port, in Go's dialer as in pullgate.
        (format!("127.0.0.1:0{port}/names/app:v1"), same(&canonical, &v1)),
        (format!("127.0.0.1:000{port}/names/app@{v1}"), same(&canonical, &v1)),
        (format!("localhost:{port}/names/app:v1"), same(&local, &v1)),
        (format!("LOCALHOST:{port}/names/app:v1"), same(&local, &v1)),
        (format!("Localhost:{port}/names/app@{v1}"), same(&local, &v1)),
        // Docker Hub: short names, library/, the legacy and API host names.
        ("tool:v1".to_owned(), hub()),
        ("library/tool:v1".to_owned(), hub()),
        ("docker.io/tool:v1".to_owned(), hub()),
        ("docker.io/library/tool:v1".to_owned(), hub()),
        ("index.docker.io/tool:v1".to_owned(), hub()),
        (format!("docker.io/library/tool@{library}"), hub()),
        ("registry-1.docker.io/library/tool:v1".to_owned(), hub()),
        // containerd puts no library/ before a short name under this spelling: it pulls `tool`.
        (
            "registry-1.docker.io/tool:v1".to_owned(),
            Expect::RefusedByPullgate(outside_library.clone()),
        ),
        // Refused by both: upper case in the path, broken tags and digests, no such image.
        (format!("{host}/Names/app:v1"), Expect::Refused),
        (format!("LOCALHOST:{port}/names/App:v1"), Expect::Refused),
        ("Tool:v1".to_owned(), Expect::Refused),
        (format!("{host}/names/app:-v1"), Expect::Refused),
        (format!("{host}/names//app:v1"), Expect::Refused),
        (
            format!("{host}/names/app@sha256:{}", &v1["sha256:".len()..][..12]),
            Expect::Refused,
        ),
        (format!("{host}/names/app:v3"), Expect::Refused),
        (format!("{host}/names/missing:v1"), Expect::Refused),
        (format!("127.0.0.1:{port}0/names/app:v1"), Expect::Refused),
        (format!("localhost.:{port}/names/app:v1"), Expect::Refused),
        ("Localhost/names/app:v1".to_owned(), Expect::Refused),
    ];

    let config = env.dir().join("verify.yaml");
    let policy_path = env.dir().join("names-policy.yaml");
    std::fs::write(
        &policy_path,
        env.key_policy(&[&format!("{host}/**"), &format!("localhost:{port}/**"), "docker.io/**"]),
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "policy: {}\nregistries:\n  - host: \"{host}\"\n    insecure: true\n  - host: \"localhost:{port}\"\n    insecure: true\n",
            policy_path.display()
        ),
    )
    .unwrap();

    let names: Vec<String> = corpus.iter().map(|(name, _)| name.clone()).collect();
    let judged = pullgate_judges(&config, &names);
    let mut failures = Vec::new();
    for ((name, expected), (by_pullgate, record)) in corpus.iter().zip(judged) {
        let (by_containerd, shown) = containerd_resolves(&containerd, name).await;
        let agree = match (expected, &by_containerd, &by_pullgate) {
            (Expect::Refused, InContainerd::Refused, Judged::Refused) => true,
            (Expect::RefusedByPullgate(digest), InContainerd::Image(resolved), Judged::Refused) => resolved == digest,
            (
                Expect::Same(repository, digest),
                InContainerd::Image(resolved),
                Judged::Image {
                    repository: judged,
                    digest: judged_digest,
                },
            ) => resolved == digest && judged_digest == digest && judged == repository,
            (
                Expect::Hub(repository, digest),
                InContainerd::Image(resolved),
                Judged::Unreachable { repository: judged },
            ) => resolved == digest && judged == repository,
            _ => false,
        };
        if !agree {
            failures.push(format!(
                "{name}: expected {expected:?}\n  containerd: {by_containerd:?} ({shown})\n  pullgate: {by_pullgate:?} ({record})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `pullgate policy check` refuses `**` in a pattern's host, naming the file, line and field:
/// `**.corp.example/**` matched `evil.io/x.corp.example/app` before.
#[test]
fn policy_check_refuses_double_star_in_a_host() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    let rules = [rule(
        "corp",
        &["ghcr.io/ok/**", "**.corp.example/**"],
        "      action: allow\n",
        None,
    )];
    std::fs::write(&file, policy("enforce", "allow", &rules)).unwrap();
    let out = Pullgate::command()
        .args(["policy", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .position(|l| l.contains("**.corp.example"))
        .unwrap()
        + 1;
    let expected = format!("{}:{line}: spec.rules[0].images[1]: ", file.display());
    assert!(
        stderr.contains(&expected) && stderr.contains("`**` cannot stand in the registry host"),
        "{stderr}"
    );
}
