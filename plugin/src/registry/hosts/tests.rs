use std::{collections::HashMap, fs, path::Path, sync::Arc};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::{
    config::{Config, RegistryConfig},
    reference::{Digest, Reference},
    registry::{routes::Routes, Credentials, Registries, RegistryError},
};

fn parse(text: &str) -> Result<Vec<Host>, HostsError> {
    let dir = Path::new("/etc/containerd/certs.d/registry.example.com");
    parse_hosts_toml(dir, &dir.join("hosts.toml"), text)
}

fn url(host: &Host) -> String {
    host.url.as_ref().map_or_else(|| "itself".into(), HostUrl::root)
}

/// A registry host directory with one `hosts.toml` per `(directory, text)`.
fn hosts_dir(files: &[(&str, &str)]) -> (tempfile::TempDir, HostsDir) {
    let root = tempfile::tempdir().unwrap();
    for (name, text) in files {
        fs::create_dir_all(root.path().join(name)).unwrap();
        fs::write(root.path().join(name).join("hosts.toml"), text).unwrap();
    }
    let loaded = HostsDir::load(root.path()).unwrap();
    (root, loaded)
}

#[test]
fn hosts_are_tried_in_file_order_then_the_server() {
    let hosts = parse(
        r#"
server = "https://registry.example.com"

[host."https://zz-mirror.example.com"]
  capabilities = ["pull", "resolve"]

[host."http://10.0.0.5:5000"]
  capabilities = ["pull"]

[host."aa-mirror.example.com"]
"#,
    )
    .unwrap();
    let order: Vec<String> = hosts.iter().map(url).collect();
    assert_eq!(
        order,
        [
            "https://zz-mirror.example.com/v2",
            "http://10.0.0.5:5000/v2",
            // A host without a scheme is HTTPS, as containerd reads it.
            "https://aa-mirror.example.com/v2",
            "https://registry.example.com/v2",
        ]
    );
    assert_eq!(hosts[0].capabilities, Capabilities::PULL | Capabilities::RESOLVE);
    assert_eq!(hosts[1].capabilities, Capabilities::PULL);
    assert!(!hosts[1].capabilities.has(Capabilities::RESOLVE));
    // No `capabilities`: every one, the server's too.
    assert_eq!(hosts[2].capabilities, Capabilities::ALL);
    assert_eq!(hosts[3].capabilities, Capabilities::ALL);
    assert_eq!(hosts[1].url.as_ref().unwrap().scheme, Scheme::Http);
    assert_eq!(
        describe(&hosts[..2]),
        "https://zz-mirror.example.com/v2 [pull, resolve], http://10.0.0.5:5000/v2 [pull]"
    );
}

#[test]
fn without_server_the_registry_itself_is_last() {
    let hosts = parse("[host.\"http://127.0.0.1:5001\"]\n  capabilities = [\"pull\", \"resolve\"]\n").unwrap();
    assert_eq!(hosts.len(), 2);
    assert_eq!(url(&hosts[1]), "itself");
    assert_eq!(hosts[1].capabilities, Capabilities::ALL);
    // An empty server is the registry itself too.
    let hosts = parse("server = \"\"\n").unwrap();
    assert_eq!(hosts.iter().map(url).collect::<Vec<_>>(), ["itself"]);
}

#[test]
fn api_root_is_v2_unless_the_path_says_or_override_path() {
    let hosts = parse(
        r#"
[host."https://harbor.example.com/proxy/v2"]
[host."https://harbor.example.com/proxy/"]
[host."https://zot.example.com/custom/root"]
  override_path = true
[host."https://plain.example.com:443"]
"#,
    )
    .unwrap();
    let roots: Vec<String> = hosts.iter().map(url).collect();
    assert_eq!(
        roots[..4],
        [
            "https://harbor.example.com/proxy/v2",
            "https://harbor.example.com/proxy/v2",
            "https://zot.example.com/custom/root",
            "https://plain.example.com/v2",
        ]
    );
}

#[test]
fn capabilities_are_checked_and_empty_means_all() {
    let hosts = parse("[host.\"https://m\"]\n  capabilities = [\"PULL\", \"Resolve\", \"referrers\"]\n").unwrap();
    assert_eq!(
        hosts[0].capabilities,
        Capabilities::PULL | Capabilities::RESOLVE | Capabilities::REFERRERS
    );
    let hosts = parse("[host.\"https://m\"]\n  capabilities = []\n").unwrap();
    assert_eq!(
        hosts[0].capabilities,
        Capabilities::ALL,
        "containerd reads [] as every capability"
    );

    let err =
        parse("server = \"https://r\"\n\n[host.\"https://m\"]\n  capabilities = [\"pull\", \"mirror\"]\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "/etc/containerd/certs.d/registry.example.com/hosts.toml:4: unknown capability \"mirror\" (pull, resolve, push, referrers)"
    );
    let err = parse("capabilities = \"pull\"\n").unwrap_err();
    assert!(
        err.to_string()
            .ends_with(":1: `capabilities` must be a list of strings"),
        "{err}"
    );
}

#[test]
fn ca_client_and_skip_verify_in_every_form() {
    let hosts = parse(
        r#"
ca = "/etc/certs/registry.pem"
skip_verify = false

[host."https://one"]
  ca = ["one-ca.pem", "/abs/two.pem"]
  client = "client.pem"
  skip_verify = true

[host."https://two"]
  client = ["a.pem", "/b.pem"]

[host."https://three"]
  client = [["c.cert", "c.key"], ["d.pem", ""]]
"#,
    )
    .unwrap();
    let dir = Path::new("/etc/containerd/certs.d/registry.example.com");
    assert_eq!(hosts[0].tls.ca, [dir.join("one-ca.pem"), "/abs/two.pem".into()]);
    assert_eq!(hosts[0].tls.client, [(dir.join("client.pem"), None)]);
    assert_eq!(hosts[0].tls.skip_verify, Some(true));
    assert_eq!(
        hosts[1].tls.client,
        [(dir.join("a.pem"), None), ("/b.pem".into(), None)]
    );
    assert_eq!(
        hosts[2].tls.client,
        [(dir.join("c.cert"), Some(dir.join("c.key"))), (dir.join("d.pem"), None)]
    );
    // The top-level settings are the server's.
    assert_eq!(hosts[3].tls.ca, [Path::new("/etc/certs/registry.pem")]);
    assert_eq!(hosts[3].tls.skip_verify, Some(false));

    let err = parse("[host.\"https://m\"]\n  skip_verify = \"yes\"\n").unwrap_err();
    assert!(
        err.to_string().ends_with(":2: `skip_verify` must be true or false"),
        "{err}"
    );
    let err = parse("[host.\"https://m\"]\n  client = [[\"only-one\"]]\n").unwrap_err();
    assert!(err.to_string().contains(":2: `client` must be"), "{err}");
}

#[test]
fn headers_are_read_and_checked() {
    let hosts =
        parse("[host.\"https://m\"]\n  [host.\"https://m\".header]\n    x-one = \"1\"\n    x-two = [\"a\", \"b\"]\n")
            .unwrap();
    assert_eq!(hosts.len(), 2, "a header subtable is no host of its own");
    assert_eq!(
        hosts[0].header,
        [
            ("x-one".into(), "1".into()),
            ("x-two".into(), "a".into()),
            ("x-two".into(), "b".into())
        ]
    );
    let err = parse("[header]\n  \"bad header\" = \"x\"\n").unwrap_err();
    assert!(err.to_string().contains("not a valid header name"), "{err}");
}

#[test]
fn parse_errors_name_the_file_and_line() {
    let err = parse("server = \"https://r\"\n\n[host.\"https://m\"\n  capabilities = [\"pull\"]\n").unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.starts_with("/etc/containerd/certs.d/registry.example.com/hosts.toml:3: "),
        "{shown}"
    );
    assert!(!shown.contains('\n'), "one line: {shown}");
    let err = parse("server = 5\n").unwrap_err();
    assert!(err.to_string().ends_with(":1: `server` must be a string"), "{err}");
    let err = parse("[host.\"httpx://m\"]\n").unwrap_err();
    assert!(err.to_string().contains(":1: \"httpx://m\": scheme \"httpx\""), "{err}");
}

/// containerd orders hosts by their `[host."…"]` headers only: one written inline or with
/// dotted keys is never tried by containerd, so pullgate does not ask it either.
#[test]
fn hosts_without_a_table_header_are_not_tried() {
    let hosts = parse("host.\"https://dotted\".capabilities = [\"pull\"]\n").unwrap();
    assert_eq!(hosts.iter().map(url).collect::<Vec<_>>(), ["itself"]);
}

#[test]
fn files_and_host_lists_are_bounded() {
    let many: String = (0..=MAX_HOSTS).map(|i| format!("[host.\"https://m{i}\"]\n")).collect();
    assert!(parse(&many).unwrap_err().to_string().contains("more than 16 hosts"));

    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("big")).unwrap();
    let big = format!("# {}\n", "x".repeat(MAX_HOSTS_FILE_BYTES as usize));
    fs::write(root.path().join("big/hosts.toml"), big).unwrap();
    let err = HostsDir::load(root.path()).unwrap_err().to_string();
    assert!(err.contains("big/hosts.toml") && err.contains("larger than"), "{err}");
}

#[test]
fn a_registry_finds_its_directory_as_containerd_does() {
    let (_root, dir) = hosts_dir(&[
        ("registry.invalid_5000_", "server = \"https://underscored\"\n"),
        ("registry.invalid:5000", "server = \"https://coloned\"\n"),
        ("other.invalid:5000", "server = \"https://other\"\n"),
        ("_default", "server = \"https://default\"\n"),
    ]);
    let first = |registry: &str| {
        let (name, namespace) = dir.lookup(registry).unwrap();
        (name.to_string(), url(&namespace.hosts[0]))
    };
    assert_eq!(
        first("registry.invalid:5000"),
        ("registry.invalid_5000_".into(), "https://underscored/v2".into())
    );
    assert_eq!(
        first("other.invalid:5000"),
        ("other.invalid:5000".into(), "https://other/v2".into())
    );
    // Another port is another registry; with no directory of its own it gets `_default`.
    assert_eq!(
        first("registry.invalid:5001"),
        ("_default".into(), "https://default/v2".into())
    );
    assert_eq!(first("ghcr.io"), ("_default".into(), "https://default/v2".into()));

    let (_root, no_default) = hosts_dir(&[("ghcr.io", "")]);
    assert!(no_default.lookup("docker.io").is_none());
    // An empty hosts.toml (or none) is the registry itself, with Docker's certificate files.
    let (_, namespace) = no_default.lookup("ghcr.io").unwrap();
    assert!(matches!(namespace.source, Source::CertFiles(_)));
    assert_eq!(namespace.hosts.iter().map(url).collect::<Vec<_>>(), ["itself"]);
}

#[test]
fn docker_certificate_files_are_read_without_hosts_toml() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("registry.example.com");
    fs::create_dir(&dir).unwrap();
    for name in ["ca.crt", "client.cert", "client.key", "alone.cert", "notes.txt"] {
        fs::write(dir.join(name), "x").unwrap();
    }
    let loaded = HostsDir::load(root.path()).unwrap();
    let (_, namespace) = loaded.lookup("registry.example.com").unwrap();
    let tls = &namespace.hosts[0].tls;
    assert_eq!(tls.ca, [dir.join("ca.crt")]);
    assert_eq!(
        tls.client,
        [
            (dir.join("alone.cert"), None),
            (dir.join("client.cert"), Some(dir.join("client.key")))
        ]
    );
}

#[test]
fn a_missing_directory_configures_nothing() {
    let root = tempfile::tempdir().unwrap();
    let missing = HostsDir::load(&root.path().join("certs.d")).unwrap();
    assert!(!missing.exists());
    assert!(missing.lookup("registry.example.com").is_none());
    assert!(HostsDir::disabled().root().is_none());
}

fn config(hosts_root: Option<&Path>) -> Config {
    let mut config = Config::with_policy("unused".into());
    config.registry_hosts = hosts_root.map(Path::to_owned);
    config
}

/// Hosts `hosts.toml` names are told which registry is meant (`?ns=`); the registry itself is
/// not, and is reached as `registries` says.
#[test]
fn routes_carry_ns_to_mirrors_and_registries_settings_to_the_registry() {
    let (root, hosts) = hosts_dir(&[
        (
            "registry.invalid:5000",
            "[host.\"http://127.0.0.1:5001\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        ),
        (
            "docker.io",
            "server = \"https://registry-1.docker.io\"\n[host.\"https://hub-mirror\"]\n",
        ),
    ]);
    let mut config = config(Some(root.path()));
    config.registries.push(RegistryConfig {
        host: "registry.invalid:5000".into(),
        insecure: true,
        ca_file: None,
    });
    // hosts.toml says https for the hub mirror: an `insecure` entry for it changes nothing.
    config.registries.push(RegistryConfig {
        host: "hub-mirror".into(),
        insecure: true,
        ca_file: None,
    });
    let routes = Routes::new(&config, hosts).unwrap();
    let shown = |registry: &str| -> Vec<(String, Option<String>)> {
        routes
            .for_registry(registry)
            .into_iter()
            .map(|r| (r.root, r.ns))
            .collect()
    };
    assert_eq!(
        shown("registry.invalid:5000"),
        [
            ("http://127.0.0.1:5001/v2".into(), Some("registry.invalid:5000".into())),
            // The `registries` entry makes the registry itself plain HTTP.
            ("http://registry.invalid:5000/v2".into(), None),
        ]
    );
    assert_eq!(
        shown("docker.io"),
        [
            ("https://hub-mirror/v2".into(), Some("docker.io".into())),
            ("https://registry-1.docker.io/v2".into(), None),
        ]
    );
    // No directory and no `_default`: the registry alone.
    assert_eq!(shown("ghcr.io"), [("https://ghcr.io/v2".into(), None)]);
    assert!(routes.allows_plain_http("127.0.0.1:5001"));
    assert!(!routes.allows_plain_http("registry-1.docker.io"));
}

#[test]
fn unreadable_certificate_files_fail_the_load_naming_file_and_host() {
    let (root, hosts) = hosts_dir(&[(
        "registry.example.com",
        "[host.\"https://mirror.example.com\"]\n  ca = \"missing-ca.pem\"\n",
    )]);
    let err = Routes::new(&config(Some(root.path())), hosts)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("registry.example.com/hosts.toml: host https://mirror.example.com/v2: ")
            && err.contains("missing-ca.pem"),
        "{err}"
    );
    fs::write(root.path().join("registry.example.com/missing-ca.pem"), "not PEM").unwrap();
    let hosts = HostsDir::load(root.path()).unwrap();
    let err = Routes::new(&config(Some(root.path())), hosts)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no PEM certificate"), "{err}");

    // skip_verify alone builds a client.
    let (root, hosts) = hosts_dir(&[("registry.example.com", "[host.\"https://m\"]\n  skip_verify = true\n")]);
    assert!(Routes::new(&config(Some(root.path())), hosts).is_ok());
}

/// A registry on loopback that answers `routes` (path → body) with 200 and everything else with
/// 404, recording each request line's target (path and query), and with `+ name: value` after
/// it each `x-…` header the request carried.
async fn serve(routes: HashMap<String, Vec<u8>>) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let routes = routes.clone();
            let recorder = recorder.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let target = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let extra: String = request
                    .lines()
                    .filter(|l| l.to_ascii_lowercase().starts_with("x-"))
                    .map(|l| format!(" + {}", l.to_ascii_lowercase()))
                    .collect();
                recorder.lock().unwrap().push(format!("{target}{extra}"));
                let path = target.split('?').next().unwrap_or("/");
                // A route naming its query (`?ns=…`) answers only that query.
                let (status, body) = match routes.get(&target).or_else(|| routes.get(path)) {
                    Some(body) => ("200 OK", body.clone()),
                    None => ("404 Not Found", Vec::new()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
            });
        }
    });
    (host, asked)
}

/// Registries for `registry.invalid:5000` through the mirror `mirror` (with `capabilities`),
/// then the registry itself, which cannot be reached (a closed loopback port stands in for a
/// name that does not resolve, without waiting on DNS).
fn through_mirror(mirror: &str, capabilities: &str) -> (tempfile::TempDir, Registries) {
    let (root, _) = hosts_dir(&[(
        "registry.invalid:5000",
        &format!(
            "server = \"http://127.0.0.1:1\"\n\n[host.\"http://{mirror}\"]\n  capabilities = {capabilities}\n  \
             [host.\"http://{mirror}\".header]\n    x-mirror-tenant = \"node-7\"\n"
        ),
    )]);
    let registries = Registries::new(&config(Some(root.path())), Default::default()).unwrap();
    (root, registries)
}

#[tokio::test]
async fn a_mirror_resolves_with_ns_and_its_not_there_is_the_answer_when_the_upstream_is_unreachable() {
    let image = br#"{"schemaVersion":2,"layers":[]}"#.to_vec();
    let digest = Digest::of(&image);
    let routes = HashMap::from([("/v2/app/manifests/v1".to_string(), image.clone())]);
    let (mirror, asked) = serve(routes).await;
    let (_root, registries) = through_mirror(&mirror, "[\"pull\", \"resolve\"]");
    let reference = Reference::parse("registry.invalid:5000/app:v1").unwrap();
    let session = registries.session(&reference, Credentials::anonymous());

    assert_eq!(session.resolve(&reference).await.unwrap(), digest);
    assert_eq!(
        asked.lock().unwrap()[0],
        "/v2/app/manifests/v1?ns=registry.invalid%3A5000 + x-mirror-tenant: node-7",
        "the ns parameter and the host's header"
    );

    // The mirror has no signature tag; the upstream cannot be asked: no signature, not
    // "unavailable", and the denial can name the mirror.
    let sig = crate::registry::cosign::signature_tag(&digest);
    assert!(session.manifest(&sig).await.unwrap().is_none());
    assert_eq!(session.mirrors_answered().as_deref(), Some(mirror.as_str()));
    let referrers = crate::registry::referrers::sigstore_bundles(&session, &digest, &[])
        .await
        .unwrap();
    assert!(referrers.bundles.is_empty());
}

#[tokio::test]
async fn a_host_without_resolve_serves_digests_but_never_tags() {
    let image = br#"{"schemaVersion":2,"layers":[]}"#.to_vec();
    let digest = Digest::of(&image);
    let routes = HashMap::from([
        ("/v2/app/manifests/v1".to_string(), image.clone()),
        (format!("/v2/app/manifests/{digest}"), image.clone()),
    ]);
    let (mirror, asked) = serve(routes).await;
    let (_root, registries) = through_mirror(&mirror, "[\"pull\"]");
    let reference = Reference::parse("registry.invalid:5000/app:v1").unwrap();
    let session = registries.session(&reference, Credentials::anonymous());

    // The tag goes to the upstream alone, which cannot be reached.
    let err = session.resolve(&reference).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unavailable(_)), "{err}");
    assert!(asked.lock().unwrap().is_empty(), "{:?}", asked.lock().unwrap());
    // By digest the mirror may serve it.
    let pinned = Reference::parse(&format!("registry.invalid:5000/app@{digest}")).unwrap();
    assert_eq!(session.resolve(&pinned).await.unwrap(), digest);
    assert_eq!(asked.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_unreachable_first_host_passes_to_the_next() {
    let image = br#"{"schemaVersion":2,"layers":[]}"#.to_vec();
    let routes = HashMap::from([("/v2/app/manifests/v1".to_string(), image.clone())]);
    let (upstream, asked) = serve(routes).await;
    let (root, _) = hosts_dir(&[(
        &upstream,
        &format!("server = \"http://{upstream}\"\n\n[host.\"http://127.0.0.1:1\"]\n"),
    )]);
    let registries = Registries::new(&config(Some(root.path())), Default::default()).unwrap();
    let reference = Reference::parse(&format!("{upstream}/app:v1")).unwrap();
    let session = registries.session(&reference, Credentials::anonymous());
    assert_eq!(session.resolve(&reference).await.unwrap(), Digest::of(&image));
    // The server is the registry itself: no `ns`, and no mirror to name.
    assert_eq!(asked.lock().unwrap()[0], "/v2/app/manifests/v1");
    assert_eq!(session.mirrors_answered(), None);

    // Nobody answering at all is unavailable, naming every host tried.
    let (root, _) = hosts_dir(&[(
        "registry.invalid:5000",
        "server = \"http://127.0.0.1:1\"\n[host.\"http://127.0.0.1:2\"]\n",
    )]);
    let registries = Registries::new(&config(Some(root.path())), Default::default()).unwrap();
    let reference = Reference::parse("registry.invalid:5000/app:v1").unwrap();
    let session = registries.session(&reference, Credentials::anonymous());
    let err = session.manifest("sha256-00.sig").await.unwrap_err().to_string();
    assert!(err.contains("127.0.0.1:2") && err.contains("127.0.0.1:1"), "{err}");
}

/// SIGHUP reads the directory again; a `hosts.toml` that does not parse is refused with its
/// file and line, and the hosts in use stay.
#[test]
fn a_reload_that_does_not_parse_keeps_the_hosts_in_use() {
    let (root, _) = hosts_dir(&[("registry.invalid:5000", "[host.\"http://127.0.0.1:5001\"]\n")]);
    let registries = Registries::new(&config(Some(root.path())), Default::default()).unwrap();
    let before = registries.hosts();
    assert!(!registries.reload_hosts().unwrap(), "nothing changed");

    let file = root.path().join("registry.invalid:5000/hosts.toml");
    fs::write(&file, "[host.\"http://127.0.0.1:5002\"]\n  capabilities = [\"pull\",\n").unwrap();
    let err = registries.reload_hosts().unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:", file.display())), "{err}");
    assert_eq!(registries.hosts(), before);

    fs::write(&file, "[host.\"http://127.0.0.1:5002\"]\n").unwrap();
    assert!(registries.reload_hosts().unwrap());
    let (_, namespace) = registries
        .hosts()
        .lookup("registry.invalid:5000")
        .map(|(n, ns)| (n.to_string(), ns.clone()))
        .unwrap();
    assert_eq!(url(&namespace.hosts[0]), "http://127.0.0.1:5002/v2");
}

/// Two registries pulled through one mirror (`_default`) may have repositories of the same
/// name with different content: a tag resolved for one is not the other's, though the mirror,
/// the path and the credentials are the same (only `?ns=` tells them apart).
#[tokio::test]
async fn a_tag_resolved_through_a_shared_mirror_is_remembered_per_registry() {
    let first = br#"{"schemaVersion":2,"layers":[],"annotations":{"r":"a"}}"#.to_vec();
    let second = br#"{"schemaVersion":2,"layers":[],"annotations":{"r":"b"}}"#.to_vec();
    let routes = HashMap::from([
        ("/v2/team/app/manifests/v1?ns=a.example.com".to_string(), first.clone()),
        ("/v2/team/app/manifests/v1?ns=b.example.com".to_string(), second.clone()),
    ]);
    let (mirror, asked) = serve(routes).await;
    let (root, _) = hosts_dir(&[("_default", &format!("server = \"http://{mirror}\"\n"))]);
    let mut config = config(Some(root.path()));
    config.resolve_ttl = std::time::Duration::from_secs(60);
    let registries = Registries::new(&config, Default::default()).unwrap();
    let resolve = |image: &str| {
        let reference = Reference::parse(image).unwrap();
        let registries = registries.clone();
        async move {
            let session = registries.session(&reference, Credentials::anonymous());
            session.resolve(&reference).await.unwrap()
        }
    };
    assert_eq!(resolve("a.example.com/team/app:v1").await, Digest::of(&first));
    assert_eq!(resolve("b.example.com/team/app:v1").await, Digest::of(&second));
    // Each a HEAD, then a GET: this mirror names no digest in its answers.
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 4, "{asked:?}");
}

/// A self-signed CA certificate in PEM, made by openssl.
fn make_ca(dir: &Path, name: &str) -> std::path::PathBuf {
    let cert = dir.join(name);
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-subj", "/CN=pullgate test CA", "-days", "1", "-keyout"])
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    cert
}

/// SIGHUP is how a rotated `ca` or `client` file under the host directory is taken up (as
/// containerd reads them on every pull): they are read again even when no `hosts.toml` changed,
/// and one that no longer loads is a refused reload, not silently the old certificate.
#[test]
fn a_reload_reads_certificate_files_again_though_hosts_toml_is_unchanged() {
    let (root, _) = hosts_dir(&[(
        "registry.example.com",
        "[host.\"https://mirror.example.com\"]\n  ca = \"ca.pem\"\n",
    )]);
    let dir = root.path().join("registry.example.com");
    make_ca(&dir, "ca.pem");
    let registries = Registries::new(&config(Some(root.path())), Default::default()).unwrap();

    fs::write(dir.join("ca.pem"), "not PEM").unwrap();
    let err = registries
        .reload_hosts()
        .expect_err("a CA file that no longer loads")
        .to_string();
    assert!(err.contains("ca.pem") && err.contains("no PEM certificate"), "{err}");

    make_ca(&dir, "ca.pem");
    registries.reload_hosts().unwrap();
}

/// A registry on loopback that wants HTTP basic credentials: 401 without an `Authorization`
/// header, 200 with `body` with one; records each `Authorization` header it was sent.
async fn serve_basic(body: Vec<u8>) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (body, recorder) = (body.clone(), recorder.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let authorization = request.lines().find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("authorization: ")
                        .map(str::to_string)
                });
                let head = match &authorization {
                    Some(value) => {
                        recorder.lock().unwrap().push(value.clone());
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                    }
                    None => "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                };
                let _ = stream.write_all(head.as_bytes()).await;
                if authorization.is_some() {
                    let _ = stream.write_all(&body).await;
                }
            });
        }
    });
    (host, sent)
}

/// kubelet's `AuthConfig.server_address` names the one host its credentials are for: as
/// containerd's CRI does, they are not sent to any other host, a mirror included.
#[tokio::test]
async fn credentials_naming_their_server_go_to_no_other_host() {
    let image = br#"{"schemaVersion":2,"layers":[]}"#.to_vec();
    let (mirror, sent) = serve_basic(image.clone()).await;
    let (_root, registries) = through_mirror(&mirror, "[\"pull\", \"resolve\"]");
    let reference = Reference::parse("registry.invalid:5000/app:v1").unwrap();
    let kubelet = |server_address: &str| {
        Credentials::from_cri(Some(&pullgate_proto::cri::AuthConfig {
            username: "alice".into(),
            password: "s3cret".into(),
            server_address: server_address.into(),
            ..Default::default()
        }))
    };

    let session = registries.session(&reference, kubelet("https://registry.invalid:5000"));
    let withheld = session.resolve(&reference).await;
    assert!(withheld.is_err(), "{withheld:?} {:?}", sent.lock().unwrap());
    assert!(sent.lock().unwrap().is_empty(), "{:?}", sent.lock().unwrap());

    // Credentials naming the mirror, or no host at all, are sent to it.
    for server_address in [format!("https://{mirror}"), String::new()] {
        let session = registries.session(&reference, kubelet(&server_address));
        assert_eq!(session.resolve(&reference).await.unwrap(), Digest::of(&image));
    }
    // Each resolution a HEAD, then a GET: this host names no digest in its answers.
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 4, "{sent:?}");
}
