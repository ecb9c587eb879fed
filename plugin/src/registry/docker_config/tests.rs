use std::path::Path;

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};

use super::*;
use crate::registry::Origin;

const FILE: &str = "/etc/pullgate/config.json";

fn parse(json: &str) -> DockerConfig {
    DockerConfig::parse(json.as_bytes(), Path::new(FILE)).unwrap()
}

/// The key whose credentials `host`/`path` gets, or `None` when it gets none.
fn key_for(config: &DockerConfig, host: &str, path: &str) -> Option<String> {
    match config.credentials_for(host, path).origin() {
        Origin::DockerConfig { key, .. } => Some(key.clone()),
        Origin::NotInDockerConfig(_) => None,
        Origin::Kubelet => panic!("a Docker config never gives kubelet's credentials"),
    }
}

fn user(config: &DockerConfig, host: &str, path: &str) -> Option<String> {
    config.credentials_for(host, path).username().map(str::to_string)
}

#[test]
fn every_way_docker_and_kubelet_write_a_key_is_read() {
    let config = parse(&format!(
        r#"{{"auths": {{
            "https://index.docker.io/v1/": {{"auth": "{hub}"}},
            "127.0.0.1:5000": {{"username": "alice", "password": "pw"}},
            "ghcr.io": {{"identitytoken": "refresh"}},
            "https://registry.example.com/v2/": {{"username": "carol", "password": "pw"}},
            "http://plain.example.com:8080": {{"username": "dave", "password": "pw"}}
        }}, "credsStore": "desktop", "credHelpers": {{"gcr.io": "gcloud"}}}}"#,
        hub = BASE64.encode("bob:hubpw")
    ));
    assert_eq!(user(&config, "docker.io", "library/nginx").as_deref(), Some("bob"));
    assert_eq!(user(&config, "127.0.0.1:5000", "sigs/app").as_deref(), Some("alice"));
    assert_eq!(key_for(&config, "ghcr.io", "org/app").as_deref(), Some("ghcr.io"));
    assert_eq!(
        user(&config, "registry.example.com", "team/app").as_deref(),
        Some("carol")
    );
    assert_eq!(user(&config, "plain.example.com:8080", "x").as_deref(), Some("dave"));
    // Another port is another registry, and credential helpers are not run.
    assert_eq!(key_for(&config, "127.0.0.1:5001", "sigs/app"), None);
    assert_eq!(key_for(&config, "plain.example.com", "x"), None);
    assert_eq!(key_for(&config, "gcr.io", "p/app"), None);
}

#[test]
fn spellings_of_one_registry_meet() {
    let config = parse(
        r#"{"auths": {"https://GHCR.io:443": {"username": "carol", "password": "pw"},
        "registry-1.docker.io": {"username": "hub", "password": "pw"}}}"#,
    );
    assert_eq!(user(&config, "ghcr.io", "org/app").as_deref(), Some("carol"));
    assert_eq!(user(&config, "docker.io", "library/nginx").as_deref(), Some("hub"));
}

#[test]
fn the_most_specific_path_prefix_wins_and_prefixes_end_at_a_slash() {
    let config = parse(
        r#"{"auths": {
            "registry.example.com": {"username": "host", "password": "pw"},
            "registry.example.com/team": {"username": "team", "password": "pw"},
            "registry.example.com/team/sigs": {"username": "sigs", "password": "pw"},
            "*.example.com/team/sigs/app": {"username": "glob", "password": "pw"}
        }}"#,
    );
    let at = |path| user(&config, "registry.example.com", path);
    assert_eq!(at("other/app").as_deref(), Some("host"));
    assert_eq!(at("team/app").as_deref(), Some("team"));
    assert_eq!(at("team/sigs/other").as_deref(), Some("sigs"));
    // A longer path under a glob host is more specific than a shorter one under an exact host.
    assert_eq!(at("team/sigs/app").as_deref(), Some("glob"));
    assert_eq!(at("team/sigs/app/deeper").as_deref(), Some("glob"));
    // `team` covers `team/...`, not `teammate/...` (kubelet compares characters here).
    assert_eq!(at("teammate/app").as_deref(), Some("host"));
    assert_eq!(at("team").as_deref(), Some("team"));
}

#[test]
fn an_exact_host_wins_over_a_glob_with_the_same_path() {
    let config = parse(
        r#"{"auths": {
            "*.example.com": {"username": "glob", "password": "pw"},
            "a.example.com": {"username": "exact", "password": "pw"}
        }}"#,
    );
    assert_eq!(user(&config, "a.example.com", "x").as_deref(), Some("exact"));
    assert_eq!(user(&config, "b.example.com", "x").as_deref(), Some("glob"));
}

#[test]
fn globs_stay_within_one_label_as_kubelets_do() {
    let config = parse(
        r#"{"auths": {
            "*.azurecr.io": {"username": "acr", "password": "pw"},
            "k8s.*.io": {"username": "mid", "password": "pw"},
            "app?.example.[a-c]om": {"username": "chars", "password": "pw"},
            "*.registry.test:5000": {"username": "port", "password": "pw"}
        }}"#,
    );
    assert_eq!(user(&config, "team.azurecr.io", "x").as_deref(), Some("acr"));
    // `*` takes one label: not zero, not two.
    assert_eq!(key_for(&config, "azurecr.io", "x"), None);
    assert_eq!(key_for(&config, "a.b.azurecr.io", "x"), None);
    assert_eq!(user(&config, "k8s.gcr.io", "x").as_deref(), Some("mid"));
    assert_eq!(user(&config, "app1.example.bom", "x").as_deref(), Some("chars"));
    assert_eq!(key_for(&config, "app12.example.com", "x"), None);
    assert_eq!(key_for(&config, "app1.example.dom", "x"), None);
    assert_eq!(user(&config, "a.registry.test:5000", "x").as_deref(), Some("port"));
    assert_eq!(key_for(&config, "a.registry.test", "x"), None);
    // Case does not matter in hosts.
    let upper = parse(r#"{"auths": {"*.AzureCR.io": {"username": "acr", "password": "pw"}}}"#);
    assert_eq!(user(&upper, "team.azurecr.io", "x").as_deref(), Some("acr"));
}

/// Backtracking only to the last `*` keeps a hostile glob cheap.
#[test]
fn a_glob_full_of_stars_is_matched_quickly() {
    let glob = format!("{}b", "*a".repeat(60));
    let text = "a".repeat(200);
    let started = std::time::Instant::now();
    assert!(!glob_match(glob.as_bytes(), text.as_bytes()));
    assert!(glob_match(b"*a*", text.as_bytes()));
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn no_key_means_anonymous_saying_where_it_looked() {
    let config = parse(r#"{"auths": {}}"#);
    let none = config.credentials_for("ghcr.io", "org/app");
    assert!(none.username().is_none());
    assert_eq!(none.origin(), &Origin::NotInDockerConfig(Some(FILE.into())));
    assert!(none.origin().refusal().contains(FILE), "{}", none.origin().refusal());
    let empty = DockerConfig::empty().credentials_for("ghcr.io", "org/app");
    assert_eq!(empty.origin(), &Origin::NotInDockerConfig(None));
    // A config without `auths` at all holds nothing, as kubelet reads it.
    assert!(parse(r#"{"credsStore": "desktop"}"#).is_empty());
}

#[test]
fn bad_configs_are_refused_naming_file_and_line() {
    let refuse = |json: &str| {
        DockerConfig::parse(json.as_bytes(), Path::new(FILE))
            .unwrap_err()
            .to_string()
    };
    let e = refuse("{\n  \"auths\": {\n    \"a.io\": {\"auth\": 7}\n  }\n}");
    assert!(e.starts_with(&format!("{FILE}:3: not a Docker config.json: ")), "{e}");
    let e = refuse("[1, 2]");
    assert!(e.starts_with(&format!("{FILE}:1: not a Docker config.json")), "{e}");
    let e = refuse("{\"auths\": {\n\"ghcr.io\": {\"auth\": \"not base64!\"}}}");
    assert_eq!(
        e,
        format!("{FILE}:2: auths key \"ghcr.io\": `auth` is not base64 of user:password")
    );
    let no_colon = BASE64.encode("justauser");
    let e = refuse(&format!("{{\"auths\": {{\"ghcr.io\": {{\"auth\": \"{no_colon}\"}}}}}}"));
    assert!(e.contains("not base64 of user:password"), "{e}");
    for key in ["", "https://", "bad host!/x", "a..b", "host:port"] {
        let json = format!("{{\"auths\": {{{}: {{}}}}}}", serde_json::to_string(key).unwrap());
        let e = refuse(&json);
        assert!(e.contains("not a registry host[:port][/path]"), "{key:?}: {e}");
    }
}

#[test]
fn load_bounds_the_file_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let missing = DockerConfig::load(&path).unwrap_err();
    assert!(matches!(missing, DockerConfigError::Read { .. }), "{missing}");
    assert!(
        missing.to_string().starts_with(&path.display().to_string()),
        "{missing}"
    );
    std::fs::write(&path, " ".repeat(MAX_DOCKER_CONFIG_BYTES as usize + 1)).unwrap();
    let large = DockerConfig::load(&path).unwrap_err().to_string();
    assert!(
        large.ends_with(&format!("larger than {MAX_DOCKER_CONFIG_BYTES} bytes")),
        "{large}"
    );
    std::fs::write(
        &path,
        r#"{"auths": {"a.io": {"username": "u", "password": "secret-pw"}}}"#,
    )
    .unwrap();
    let config = DockerConfig::load(&path).unwrap();
    assert_eq!(config.len(), 1);
    // Debug shows the keys, never a secret.
    let shown = format!("{config:?} {:?}", config.credentials_for("a.io", "x"));
    assert!(shown.contains("a.io") && !shown.contains("secret-pw"), "{shown}");
}

#[test]
fn the_default_file_may_be_missing_a_configured_one_may_not() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("config.json");
    let none = DockerConfig::read(&DockerConfigFile::Default(missing.clone())).unwrap();
    assert!(none.is_empty());
    assert!(DockerConfig::read(&DockerConfigFile::Path(missing.clone())).is_err());
    assert!(DockerConfig::read(&DockerConfigFile::Disabled).unwrap().is_empty());
    // A default file that is there but broken is an error, not silently nothing.
    std::fs::write(&missing, "{").unwrap();
    assert!(DockerConfig::read(&DockerConfigFile::Default(missing)).is_err());
}

/// `/v1/` and `/v2/` name the registry itself only as the whole path (kubelet drops them as a
/// suffix): a key `host/v2/team` is the repositories under `v2/team`, not those under `team`.
#[test]
fn a_v2_path_segment_is_part_of_a_longer_path() {
    let config = parse(
        r#"{"auths": {"registry.example.com/v2/team": {"username": "erin", "password": "pw"},
                      "registry.example.com/v1": {"username": "frank", "password": "pw"}}}"#,
    );
    // `team/app` falls to the registry-wide key, not erin's.
    assert_eq!(
        user(&config, "registry.example.com", "team/app").as_deref(),
        Some("frank")
    );
    assert_eq!(
        user(&config, "registry.example.com", "v2/team/app").as_deref(),
        Some("erin")
    );
    let only = parse(r#"{"auths": {"registry.example.com/v2/team": {"username": "erin", "password": "pw"}}}"#);
    assert_eq!(user(&only, "registry.example.com", "team/app"), None);
}
