//! An air-gapped node: containerd reaches `registry.invalid:5000`, a name that never resolves,
//! only through a mirror on loopback named in its `config_path` (`certs.d/<host>/hosts.toml`),
//! and pullgate, given the same directory as `registryHosts`, asks the same mirror for the
//! image's digest, signatures and referrers (SPEC §3). The policy names the upstream registry.

use std::{fs, path::Path};

use pullgate_tests::{policy, pullgate, Containerd, Pullgate, TestEnv, TEST_AUTHORITY};
use tonic::Code;

/// The registry every image is named after; `.invalid` never resolves (RFC 6761).
const UPSTREAM: &str = "registry.invalid:5000";

/// containerd's `hosts.toml` for [`UPSTREAM`]: the mirror first (trusted to resolve tags), then
/// the upstream itself.
fn hosts_toml(mirror: &str) -> String {
    format!(
        "server = \"https://{UPSTREAM}\"\n\n\
         [host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    )
}

fn write_hosts(certs: &Path, text: &str) {
    let dir = certs.join(UPSTREAM);
    fs::create_dir_all(&dir).expect("create the hosts directory");
    fs::write(dir.join("hosts.toml"), text).expect("write hosts.toml");
}

/// A containerd configured through `config_path` only, and a pullgate in front of it with the
/// same directory as `registryHosts` and no `registries` entry at all: the mirror is plain HTTP
/// because hosts.toml says `http://`.
async fn start(env: &TestEnv, policy_yaml: &str) -> (Containerd, Pullgate) {
    let certs = env.dir().join("certs.d");
    write_hosts(&certs, &hosts_toml(&env.host()));
    let containerd = Containerd::start_with_config_path(&env.dir().join("containerd-mirrored"), &certs).await;
    let dir = env.dir().join("pullgate-mirrored");
    let q = |p: &Path| serde_json::to_string(&p.display().to_string()).expect("encode a path");
    let config = format!(
        "{}registryHosts: {}\n",
        pullgate::config_yaml_with_registries(
            &dir.join("pullgate.sock"),
            &containerd.socket(),
            &dir.join("policy.yaml"),
            &dir.join("audit.jsonl"),
            &[],
            "20s",
        ),
        q(&certs)
    );
    let pg = Pullgate::start(&dir, &config, policy_yaml).await;
    (containerd, pg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_reached_only_through_its_mirror_is_verified_there_and_pulled_there() {
    let env = TestEnv::start().await;
    let signed = env
        .push_signed_image("signed/app", "v1", "signed through the mirror")
        .await;
    env.push_image("unsigned/app", "v1", "never signed").await;
    let policy_yaml = policy::key_policy(
        TEST_AUTHORITY,
        &env.signer.public_key_pem(),
        &[&format!("{UPSTREAM}/**")],
    );
    let (containerd, pg) = start(&env, &policy_yaml).await;

    // Signed: admitted by the rule naming the upstream, and containerd pulls it through the
    // mirror by the verified digest.
    let image = format!("{UPSTREAM}/signed/app:v1");
    let image_ref = pg
        .pull(&image, Some("default"))
        .await
        .unwrap_or_else(|e| panic!("signed image through the mirror: {e:?}\n{}", pg.log()));
    assert_eq!(containerd.image_id(&image).await.as_deref(), Some(image_ref.as_str()));
    let record = pg.last_record();
    assert_eq!(record["image"], image, "the audit names the image as asked");
    assert_eq!(record["digest"], signed);
    assert_eq!(record["rule"], "signed");
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["outcome"], "pulled");

    // Unsigned: the mirror answers that there is no signature, the upstream cannot be reached:
    // a policy denial naming the mirror, not RegistryUnavailable.
    let unsigned = format!("{UPSTREAM}/unsigned/app:v1");
    let denied = pg
        .pull(&unsigned, Some("default"))
        .await
        .expect_err("unsigned image denied");
    assert_eq!(denied.code(), Code::Unknown);
    let message = denied.message();
    assert!(message.starts_with("SignatureValidationFailed: "), "{message}");
    assert!(message.contains("rule \"signed\""), "{message}");
    assert!(message.contains("no signature from authority"), "{message}");
    assert!(
        message.contains(&format!("registry hosts that answered: {}", env.host())),
        "{message}"
    );
    assert!(containerd.image_id(&unsigned).await.is_none());
    let record = pg.last_record();
    assert_eq!(record["image"], unsigned);
    assert_eq!(record["decision"], "deny");

    // An image the mirror does not have at all is no image: not found, not unavailable.
    let missing = pg
        .pull(&format!("{UPSTREAM}/signed/app:missing"), Some("default"))
        .await
        .expect_err("a tag nobody has");
    assert!(
        missing.message().starts_with("SignatureValidationFailed: "),
        "{}",
        missing.message()
    );
    assert!(missing.message().contains("not found"), "{}", missing.message());
}

/// SIGHUP with a `hosts.toml` that does not parse: refused with its file and line, and pulls
/// keep going through the hosts last read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_toml_that_does_not_parse_on_sighup_keeps_the_last_good_hosts() {
    let env = TestEnv::start().await;
    let policy_yaml = policy::key_policy(
        TEST_AUTHORITY,
        &env.signer.public_key_pem(),
        &[&format!("{UPSTREAM}/**")],
    );
    let (containerd, pg) = start(&env, &policy_yaml).await;

    let certs = env.dir().join("certs.d");
    write_hosts(
        &certs,
        "server = \"https://registry.invalid:5000\"\n[host.\"http://127.0.0.1:1\"\n",
    );
    pg.reload();
    pg.wait_for_log("registryHosts reload refused").await;
    let file = certs.join(UPSTREAM).join("hosts.toml");
    assert!(pg.log().contains(&format!("{}:2: ", file.display())), "{}", pg.log());

    // Pushed after the refused reload: only the mirror read before it can serve it to pullgate.
    // containerd reads the broken file too and falls back to the unreachable upstream (as
    // containerd does with a hosts.toml it cannot parse), so only pullgate's answer is checked.
    let digest = env.push_signed_image("signed/later", "v1", "after the reload").await;
    let denied = pg
        .pull(&format!("{UPSTREAM}/signed/later:v1"), Some("default"))
        .await
        .expect_err("containerd cannot pull it with the broken file");
    let record = pg.last_record();
    assert_eq!(
        record["decision"], "allow",
        "pullgate verified through the last good hosts: {denied:?}"
    );
    assert_eq!(record["digest"], digest);
    drop(containerd);

    // `doctor` names the file and line too.
    let output = Pullgate::command()
        .arg("doctor")
        .arg("--config")
        .arg(env.dir().join("pullgate-mirrored/config.yaml"))
        .output()
        .expect("run pullgate doctor");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("FAIL registry host configuration cannot be used: ")
            && stdout.contains(&format!("{}:2: ", file.display())),
        "{stdout}"
    );

    // Mended: doctor lists the hosts in order with their capabilities.
    write_hosts(&certs, &hosts_toml(&env.host()));
    let output = Pullgate::command()
        .arg("doctor")
        .arg("--config")
        .arg(env.dir().join("pullgate-mirrored/config.yaml"))
        .output()
        .expect("run pullgate doctor");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let expected = format!(
        "ok   registry hosts for {UPSTREAM} ({}): http://{}/v2 [pull, resolve], https://{UPSTREAM}/v2 [pull, resolve, push, referrers]",
        file.display(),
        env.host()
    );
    assert!(stdout.contains(&expected), "{stdout}");
}

/// A TLS mirror with a private CA is trusted through the `ca` its `hosts.toml` names, with no
/// `registries` entry; without it the mirror's certificate is refused, and `skip_verify`
/// accepts it. `pullgate verify` reads the same configuration as `serve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_mirror_is_trusted_through_the_ca_its_hosts_toml_names() {
    let env = TestEnv::start_with_tls().await;
    let digest = env.push_signed_image("signed/app", "v1", "signed behind TLS").await;
    let ca = env.registry.ca_file().expect("a TLS registry has a CA").to_owned();
    let dir = env.dir().join("verify");
    fs::create_dir_all(&dir).unwrap();
    let policy_yaml = policy::key_policy(
        TEST_AUTHORITY,
        &env.signer.public_key_pem(),
        &[&format!("{UPSTREAM}/**")],
    );
    fs::write(dir.join("policy.yaml"), policy_yaml).unwrap();
    fs::write(dir.join("config.yaml"), "policy: policy.yaml\nregistryHosts: certs.d\n").unwrap();
    let image = format!("{UPSTREAM}/signed/app:v1");
    let verify = |settings: &str| {
        let hosts = format!(
            "server = \"https://{UPSTREAM}\"\n\n[host.\"https://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n{settings}",
            env.host()
        );
        write_hosts(&dir.join("certs.d"), &hosts);
        let output = Pullgate::command()
            .args(["verify", "--output", "json", "--config"])
            .arg(dir.join("config.yaml"))
            .arg(&image)
            .output()
            .expect("run pullgate verify");
        let record: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
        (output.status.code(), record)
    };

    let (code, record) = verify("");
    assert_eq!(code, Some(1), "{record}");
    let reason = record["reason"].as_str().unwrap();
    assert!(reason.starts_with("RegistryUnavailable: "), "{reason}");
    assert!(
        reason.contains(&env.host()) && reason.contains(UPSTREAM),
        "every host tried: {reason}"
    );

    let ca_line = format!("  ca = {}\n", serde_json::to_string(&ca.display().to_string()).unwrap());
    let (code, record) = verify(&ca_line);
    assert_eq!(code, Some(0), "{record}");
    assert_eq!(
        (&record["decision"], &record["digest"]),
        (&"allow".into(), &digest.clone().into())
    );

    let (code, record) = verify("  skip_verify = true\n");
    assert_eq!(code, Some(0), "{record}");
}
