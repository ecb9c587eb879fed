use std::{
    fs,
    os::unix::{fs::PermissionsExt, net::UnixListener},
    path::Path,
};

use sigstore_trust_root::TrustedRoot;

use super::{
    audit::audit_log,
    containerd::upstream,
    kubelet::{endpoint_path, image_service_flag, wiring_on_disk as kubelet_wiring},
    policy::{raw_trust_needs, trust_expiry, trust_material},
    socket::{listen_directory, listen_socket},
    *,
};
use crate::verify::TrustNeeds;

fn config_in(dir: &Path) -> Config {
    let mut config = Config::with_policy(dir.join("policy.yaml"));
    config.listen = dir.join("pullgate.sock");
    config.upstream = dir.join("containerd.sock");
    config.audit.path = dir.join("audit").join("audit.jsonl");
    config
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn at(time: &str) -> Timestamp {
    time.parse().unwrap()
}

fn public_good_root() -> TrustedRoot {
    TrustedRoot::from_json(sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT).unwrap()
}

const KEYLESS: TrustNeeds = TrustNeeds {
    ca: true,
    ctlog: true,
    tlog: true,
    tsa: false,
};

#[test]
fn checks_print_as_one_line_each() {
    assert_eq!(Check::ok("fine").to_string(), "ok   fine");
    assert_eq!(Check::warn("soon", "renew").to_string(), "warn soon — fix: renew");
    assert_eq!(
        Check::fail("broken\nreally", "mend it").to_string(),
        "FAIL broken; really — fix: mend it"
    );
}

#[test]
fn exit_code_is_1_only_for_a_failure_and_2_for_an_unreadable_config() {
    let report = |checks, config_unreadable| Report {
        checks,
        config_unreadable,
    };
    assert_eq!(
        report(vec![Check::ok("a"), Check::warn("b", "c")], false).exit_code(),
        0
    );
    assert_eq!(
        report(vec![Check::ok("a"), Check::fail("b", "c")], false).exit_code(),
        1
    );
    assert_eq!(report(vec![Check::fail("b", "c")], true).exit_code(), 2);
}

#[test]
fn the_image_service_flag_is_found_however_a_unit_writes_it() {
    let unit = "[Service]\n\
                # --image-service-endpoint=unix:///commented/out.sock\n\
                Environment=\"KUBELET_EXTRA_ARGS=--v=2 --image-service-endpoint=unix:///run/pullgate/pullgate.sock\"\n";
    assert_eq!(
        image_service_flag(unit).as_deref(),
        Some("unix:///run/pullgate/pullgate.sock")
    );
    let spaced = "ExecStart=/usr/bin/kubelet --image-service-endpoint unix:///a.sock --v=2\n";
    assert_eq!(image_service_flag(spaced).as_deref(), Some("unix:///a.sock"));
    let last_wins = "ExecStart=kubelet --image-service-endpoint=/a.sock --image-service-endpoint='/b.sock'\n";
    assert_eq!(image_service_flag(last_wins).as_deref(), Some("/b.sock"));
    assert_eq!(
        image_service_flag("ExecStart=kubelet --image-service-endpoints=x\n"),
        None
    );
    assert_eq!(image_service_flag("; --image-service-endpoint=/x.sock\n"), None);
}

#[test]
fn endpoints_compare_as_socket_paths() {
    assert_eq!(
        endpoint_path("unix:///run/pullgate//./pullgate.sock"),
        Some(PathBuf::from("/run/pullgate/pullgate.sock"))
    );
    assert_eq!(endpoint_path("/run/p.sock"), Some(PathBuf::from("/run/p.sock")));
    assert_eq!(endpoint_path("tcp://127.0.0.1:1"), None);
    assert_eq!(endpoint_path("npipe:////./pipe/x"), None);
}

#[test]
fn kubelet_wiring_accepts_pullgate_and_names_a_bypass() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let kubelet = dir.path().join("kubelet.yaml");
    let dropins = dir.path().join("kubelet.service.d");

    let none = kubelet_wiring(&config, &kubelet, &dropins);
    assert_eq!(none.level, Level::Fail, "{none}");
    let line = format!("imageServiceEndpoint: unix://{}", config.listen.display());
    assert!(none.fix.as_deref().unwrap().contains(&line), "{none}");

    fs::write(
        &kubelet,
        format!(
            "kind: KubeletConfiguration\nimageServiceEndpoint: unix://{}\n",
            config.listen.display()
        ),
    )
    .unwrap();
    let wired = kubelet_wiring(&config, &kubelet, &dropins);
    assert_eq!(wired.level, Level::Ok, "{wired}");

    fs::write(
        &kubelet,
        format!("imageServiceEndpoint: unix://{}\n", config.upstream.display()),
    )
    .unwrap();
    let bypass = kubelet_wiring(&config, &kubelet, &dropins);
    assert_eq!(bypass.level, Level::Fail, "{bypass}");
    assert!(bypass.message.contains("bypass"), "{bypass}");
    assert!(bypass.fix.as_deref().unwrap().contains(&line), "{bypass}");

    // A flag in a drop-in wins over the file, as in kubelet.
    fs::create_dir(&dropins).unwrap();
    fs::write(
        dropins.join("20-pullgate.conf"),
        format!(
            "[Service]\nEnvironment=\"KUBELET_EXTRA_ARGS=--image-service-endpoint=unix://{}\"\n",
            config.listen.display()
        ),
    )
    .unwrap();
    fs::write(
        dropins.join("10-other.txt"),
        "--image-service-endpoint=/elsewhere.sock\n",
    )
    .unwrap();
    let flag = kubelet_wiring(&config, &kubelet, &dropins);
    assert_eq!(flag.level, Level::Ok, "{flag}");
    assert!(flag.message.contains("20-pullgate.conf"), "{flag}");

    fs::write(
        dropins.join("30-later.conf"),
        "ExecStart=kubelet --image-service-endpoint=unix:///x.sock\n",
    )
    .unwrap();
    let elsewhere = kubelet_wiring(&config, &kubelet, &dropins);
    assert_eq!(elsewhere.level, Level::Fail, "{elsewhere}");
    assert!(elsewhere.message.contains("30-later.conf"), "{elsewhere}");
    assert!(elsewhere.message.contains("not pullgate's"), "{elsewhere}");
}

#[tokio::test]
async fn listen_socket_must_answer_with_the_configured_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());

    let missing = listen_socket(&config).await;
    assert_eq!(missing.level, Level::Fail, "{missing}");
    assert!(missing.fix.as_deref().unwrap().contains("pullgate.socket"), "{missing}");

    let listener = UnixListener::bind(&config.listen).unwrap();
    chmod(&config.listen, 0o660);
    let healthy = listen_socket(&config).await;
    assert_eq!(healthy.level, Level::Ok, "{healthy}");

    chmod(&config.listen, 0o666);
    let open = listen_socket(&config).await;
    assert_eq!(open.level, Level::Fail, "{open}");
    assert!(open.message.contains("mode 0666"), "{open}");
    assert!(open.message.contains("other users"), "{open}");

    config.socket.mode = 0o666;
    let configured_open = listen_socket(&config).await;
    assert_eq!(configured_open.level, Level::Warn, "{configured_open}");

    drop(listener);
    let stale = listen_socket(&config).await;
    assert_eq!(stale.level, Level::Fail, "{stale}");
    assert!(stale.message.contains("not running"), "{stale}");
}

#[test]
fn a_world_writable_socket_directory_fails() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("pullgate.sock");
    chmod(dir.path(), 0o755);
    assert_eq!(listen_directory(&socket).level, Level::Ok);
    chmod(dir.path(), 0o1777);
    let open = listen_directory(&socket);
    assert_eq!(open.level, Level::Fail, "{open}");
    assert!(open.message.contains("every user"), "{open}");
}

#[tokio::test]
async fn a_missing_upstream_socket_fails() {
    let dir = tempfile::tempdir().unwrap();
    let check = upstream(&dir.path().join("containerd.sock")).await;
    assert_eq!(check.level, Level::Fail, "{check}");
    assert!(check.fix.as_deref().unwrap().contains("start containerd"), "{check}");
}

#[test]
fn the_audit_log_must_be_writable_and_not_world_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit").join("audit.jsonl");
    let not_yet = audit_log(&path);
    assert_eq!(not_yet.level, Level::Ok, "{not_yet}");
    assert!(not_yet.message.contains("does not exist yet"), "{not_yet}");

    fs::create_dir(path.parent().unwrap()).unwrap();
    fs::write(&path, "").unwrap();
    chmod(&path, 0o640);
    assert_eq!(audit_log(&path).level, Level::Ok);

    chmod(&path, 0o644);
    let readable = audit_log(&path);
    assert_eq!(readable.level, Level::Fail, "{readable}");
    assert!(readable.fix.as_deref().unwrap().contains("chmod o-r"), "{readable}");
}

#[test]
fn the_public_good_root_is_valid_now_and_warns_before_its_ca_expires() {
    let root = public_good_root();
    let path = Path::new("/etc/pullgate/trusted_root.json");
    let now = trust_expiry(path, &root, KEYLESS, at("2026-06-01T00:00:00Z"));
    assert_eq!(now.len(), 4, "{now:?}");
    assert!(now.iter().all(|c| c.level == Level::Ok), "{now:?}");
    // The current Fulcio CA's certificates end 2031-10-05; its validFor has no end.
    let ca = &now[0];
    assert!(
        ca.message.contains("Fulcio CA") && ca.message.contains("2031-10-05"),
        "{ca}"
    );

    let soon = trust_expiry(path, &root, KEYLESS, at("2031-09-20T00:00:00Z"));
    assert_eq!(soon[0].level, Level::Warn, "{soon:?}");
    assert!(soon[0].message.contains("in 15 days"), "{soon:?}");

    let after = trust_expiry(path, &root, KEYLESS, at("2031-10-06T00:00:00Z"));
    assert_eq!(after[0].level, Level::Fail, "{after:?}");
    assert!(after[0].message.contains("no Fulcio CA"), "{after:?}");
    assert!(after[1..].iter().all(|c| c.level == Level::Ok), "{after:?}");

    // Key authorities do not need a CA: an expired one is worth a warning, not a failure.
    let keys_only = trust_expiry(path, &root, TrustNeeds::default(), at("2031-10-06T00:00:00Z"));
    assert_eq!(keys_only[0].level, Level::Warn, "{keys_only:?}");
}

#[test]
fn ended_valid_for_fails_the_kinds_the_policy_needs() {
    let mut json: serde_json::Value =
        serde_json::from_str(sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT).unwrap();
    for log in json["tlogs"].as_array_mut().unwrap() {
        log["publicKey"]["validFor"]["end"] = "2024-01-01T00:00:00Z".into();
    }
    json["timestampAuthorities"] = serde_json::json!([]);
    let root = TrustedRoot::from_json(&json.to_string()).unwrap();
    let path = Path::new("/t/trusted_root.json");
    let needs_tsa = TrustNeeds { tsa: true, ..KEYLESS };
    let checks = trust_expiry(path, &root, needs_tsa, at("2026-06-01T00:00:00Z"));
    let levels: Vec<Level> = checks.iter().map(|c| c.level).collect();
    assert_eq!(levels, [Level::Ok, Level::Fail, Level::Ok, Level::Fail], "{checks:?}");
    assert!(checks[1].message.contains("Rekor log key"), "{checks:?}");
    assert!(checks[1].message.contains("expired 2024-01-01"), "{checks:?}");
    assert!(checks[3].message.contains("names no timestamp authority"), "{checks:?}");
}

#[test]
fn a_root_without_ct_logs_is_not_missing_one() {
    // SPEC §4: a root that lists no CT log asks for no SCT (GitHub's Fulcio instance).
    let mut json: serde_json::Value =
        serde_json::from_str(sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT).unwrap();
    json["ctlogs"] = serde_json::json!([]);
    let root = TrustedRoot::from_json(&json.to_string()).unwrap();
    let now = at("2026-06-01T00:00:00Z");
    let checks = trust_expiry(Path::new("/t/trusted_root.json"), &root, KEYLESS, now);
    assert!(checks.iter().all(|c| c.level != Level::Fail), "{checks:?}");
}

#[test]
fn a_policy_that_does_not_load_still_names_its_trusted_root() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    fs::write(
        &policy,
        "spec:\n  trustedRoot: trust/root.json\n  rules:\n    - name: a\n      bogus: 1\n      authorities:\n        - name: ci\n          keyless: {}\n",
    )
    .unwrap();
    let roots = raw_trust_needs(&policy).unwrap();
    assert_eq!(roots[0].path, Some(dir.path().join("trust/root.json")));
    assert_eq!(roots[0].needs, KEYLESS);

    let checks = trust_material(&policy, None, Timestamp::now());
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(checks[0].level, Level::Fail, "{checks:?}");
    assert!(checks[0].message.contains("trust/root.json"), "{checks:?}");
}

/// A policy that does not load is read with the policy's own tlog values and defaults.
#[test]
fn a_policy_that_does_not_load_is_read_with_the_policys_tlog_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    let needs = |authorities: &str| {
        fs::write(
            &policy,
            format!("spec:\n  bogus: 1\n  rules:\n    - name: a\n      authorities:\n{authorities}"),
        )
        .unwrap();
        raw_trust_needs(&policy).unwrap().remove(0).needs
    };
    // A key's default is optional: no log needed.
    assert_eq!(needs("        - key: {}\n"), TrustNeeds::default());
    assert_eq!(
        needs("        - key: {}\n          tlog: required\n"),
        TrustNeeds {
            tlog: true,
            ..TrustNeeds::default()
        }
    );
    // Keyless defaults to required; `tlog: ignore` needs a timestamp authority instead.
    assert_eq!(needs("        - keyless: {}\n          tlog: null\n"), KEYLESS);
    assert_eq!(
        needs("        - keyless: {}\n          tlog: ignore\n"),
        TrustNeeds {
            tlog: false,
            tsa: true,
            ..KEYLESS
        }
    );
}

/// A policy with the public-good root as spec.trustedRoot and GitHub's (no Rekor) as `github`,
/// a keyless authority on each, and an `internal` root no authority names.
fn two_roots_policy(dir: &Path) -> std::path::PathBuf {
    fs::write(
        dir.join("public.json"),
        sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT,
    )
    .unwrap();
    fs::write(
        dir.join("github.json"),
        sigstore_trust_root::SIGSTORE_GITHUB_TRUSTED_ROOT,
    )
    .unwrap();
    fs::write(
        dir.join("internal.json"),
        sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT,
    )
    .unwrap();
    let policy = dir.join("policy.yaml");
    fs::write(
        &policy,
        "apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: two
spec:
  trustedRoot: public.json
  trustedRoots:
    github: github.json
    internal: internal.json
  rules:
    - name: private
      images: [\"ghcr.io/org/private/**\"]
      authorities:
        - name: ci
          keyless:
            trustedRoot: github
            issuer: https://token.actions.githubusercontent.com
            subjectRegExp: '^https://github\\.com/org/'
          tlog: ignore
    - name: public
      images: [\"ghcr.io/org/**\"]
      authorities:
        - name: ci
          keyless:
            issuer: https://token.actions.githubusercontent.com
            subjectRegExp: '^https://github\\.com/org/'
",
    )
    .unwrap();
    policy
}

#[test]
fn every_root_is_checked_by_name_with_what_its_own_authorities_need() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_roots_policy(dir.path());
    let policy = Policy::load(&path).unwrap();
    // GitHub's root as embedded: a CA and TSA valid from 2026-06-12 with no end.
    let checks = trust_material(&path, Some(&policy), at("2026-08-01T00:00:00Z"));
    let github: Vec<&Check> = checks.iter().filter(|c| c.message.contains("\"github\"")).collect();
    assert!(
        github
            .iter()
            .any(|c| c.level == Level::Ok && c.message.contains("timestamp authority")),
        "GitHub's TSA is needed and checked: {checks:#?}"
    );
    assert!(
        !github.iter().any(|c| c.message.contains("Rekor")),
        "a root without Rekor is not missing one: {checks:#?}"
    );
    let unused = checks.iter().find(|c| c.message.contains("\"internal\"")).unwrap();
    assert_eq!(unused.level, Level::Warn, "{checks:#?}");
    assert!(unused.message.contains("no authority names it"), "{unused}");
    // The default root is checked for what its keyless authority needs: Rekor among them.
    assert!(
        checks
            .iter()
            .any(|c| c.message.contains("public.json") && c.message.contains("Rekor log key")),
        "{checks:#?}"
    );

    // Once GitHub's current CA and TSA end, only its root fails.
    let mut github: serde_json::Value =
        serde_json::from_str(sigstore_trust_root::SIGSTORE_GITHUB_TRUSTED_ROOT).unwrap();
    for kind in ["certificateAuthorities", "timestampAuthorities"] {
        for entry in github[kind].as_array_mut().unwrap() {
            entry["validFor"]["end"] = "2026-07-13T00:00:00Z".into();
        }
    }
    fs::write(dir.path().join("github.json"), github.to_string()).unwrap();
    let policy = Policy::load(&path).unwrap();
    let checks = trust_material(&path, Some(&policy), at("2026-08-01T00:00:00Z"));
    let failed: Vec<&Check> = checks.iter().filter(|c| c.level == Level::Fail).collect();
    assert_eq!(failed.len(), 2, "{checks:#?}");
    assert!(failed.iter().all(|c| c.message.contains("\"github\"")), "{failed:#?}");
    // A policy that does not load is read for the same roots and needs.
    let broken = fs::read_to_string(&path)
        .unwrap()
        .replace("name: two", "name: two\n  bogus: 1");
    fs::write(&path, broken).unwrap();
    let unloaded = trust_material(&path, None, at("2026-08-01T00:00:00Z"));
    let levels = |checks: &[Check]| checks.iter().map(|c| (c.level, c.message.clone())).collect::<Vec<_>>();
    assert_eq!(levels(&unloaded), levels(&checks));
}

mod running_kubelet {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::doctor::{
        kubelet::running_wiring,
        kubelet_proc::{
            config_files, namespace_depth, parse_cmdline, read_kubelet, start_ticks, start_time, uptime_seconds,
            ConfigFile, FileState, KubeletArgs, RunningKubelet,
        },
    };

    fn kubelet(args: KubeletArgs) -> RunningKubelet {
        RunningKubelet {
            pid: 4242,
            args,
            started: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        }
    }

    fn file(path: &str, endpoint: Option<&str>, state: FileState) -> ConfigFile {
        ConfigFile {
            path: PathBuf::from(path),
            endpoint: endpoint.map(str::to_string),
            state,
        }
    }

    fn flag(endpoint: &str) -> KubeletArgs {
        KubeletArgs {
            image_service_endpoint: Some(endpoint.to_string()),
            ..KubeletArgs::default()
        }
    }

    fn with_config(path: &str) -> KubeletArgs {
        KubeletArgs {
            config: Some(path.to_string()),
            ..KubeletArgs::default()
        }
    }

    #[test]
    fn the_command_line_is_read_as_kubelets_flag_parser_reads_it() {
        let cmdline = b"/usr/bin/kubelet\0--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf\0\
--config=/var/lib/kubelet/config.yaml\0--container-runtime-endpoint=unix:///run/containerd/containerd.sock\0\
--image-service-endpoint\0unix:///run/x.sock\0--config-dir\0/etc/kubelet.conf.d\0\
--image-service-endpoint=unix:///run/pullgate/pullgate.sock\0";
        assert_eq!(
            parse_cmdline(cmdline),
            KubeletArgs {
                image_service_endpoint: Some("unix:///run/pullgate/pullgate.sock".into()),
                config: Some("/var/lib/kubelet/config.yaml".into()),
                config_dir: Some("/etc/kubelet.conf.d".into()),
            }
        );
        // argv[0] is not a flag; an empty value is unset; nothing after `--` is a flag.
        assert_eq!(
            parse_cmdline(b"--config=/a\0--image-service-endpoint=/x\0--image-service-endpoint=\0--\0--config=/b\0"),
            KubeletArgs {
                image_service_endpoint: None,
                config: None,
                config_dir: None,
            }
        );
        assert_eq!(
            parse_cmdline(b"kubelet\0--image-service-endpoints=/x\0--configs=/y\0"),
            KubeletArgs::default()
        );
    }

    /// Processes named kubelet beyond what doctor judges (decoys any user can start, with the
    /// lowest pids): doctor fails rather than judge only some of them and pass.
    #[test]
    fn too_many_kubelets_fail_rather_than_judge_only_some() {
        use crate::doctor::{kubelet::kubelet_wiring_in, kubelet_proc::MAX_KUBELETS};

        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let proc = dir.path().join("proc");
        for pid in 1..=MAX_KUBELETS + 1 {
            let process = proc.join(pid.to_string());
            fs::create_dir_all(&process).unwrap();
            fs::write(process.join("comm"), "kubelet\n").unwrap();
            fs::write(process.join("status"), format!("Name:\tkubelet\nNSpid:\t{pid}\n")).unwrap();
        }
        let kubelet = dir.path().join("kubelet.yaml");
        let dropins = dir.path().join("kubelet.service.d");
        let checks = kubelet_wiring_in(&proc, &config, &kubelet, &dropins);
        assert_eq!(checks.len(), 1, "{checks:#?}");
        assert_eq!(checks[0].level, Level::Fail, "{checks:#?}");
        assert!(
            checks[0].message.contains("more than 8 processes are named kubelet"),
            "{checks:#?}"
        );
    }

    #[test]
    fn a_process_below_procs_own_pid_namespace_is_another_nodes() {
        assert_eq!(namespace_depth("Name:\tkubelet\nNSpid:\t812\nNSpgid:\t812\n"), Some(1));
        assert_eq!(namespace_depth("Name:\tkubelet\nNSpid:\t4321\t97\n"), Some(2));
        assert_eq!(namespace_depth("Name:\tkubelet\nPid:\t812\n"), None);
    }

    #[test]
    fn start_time_comes_from_stat_and_uptime() {
        let stat = "77 (kube let) (x) S 1 77 77 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 12 0 50050 1000 9 \n";
        assert_eq!(start_ticks(stat), Some(50050));
        assert_eq!(start_ticks("77 (kubelet) S 1"), None);
        assert_eq!(uptime_seconds("1000.50 3000.00\n"), Some(1000.5));
        assert_eq!(uptime_seconds("-1 0"), None);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        // Started 500.5 s after boot, 1000.5 s after boot now: 500 s ago.
        assert_eq!(
            start_time(now, 1000.5, 50050, 100),
            SystemTime::UNIX_EPOCH + Duration::from_secs(9_500)
        );
    }

    #[test]
    fn a_flag_on_the_running_command_line_decides() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let listen = format!("unix://{}", config.listen.display());
        // The file on disk says otherwise and changed since: the flag still wins.
        let files = [file(
            "/var/lib/kubelet/config.yaml",
            None,
            FileState::ChangedAt(SystemTime::now()),
        )];
        let wired = running_wiring(&config, &kubelet(flag(&listen)), &files);
        assert_eq!(wired.level, Level::Ok, "{wired}");
        assert!(wired.message.contains("pid 4242"), "{wired}");
        assert!(wired.message.contains("on its command line"), "{wired}");

        let upstream = format!("unix://{}", config.upstream.display());
        let bypass = running_wiring(&config, &kubelet(flag(&upstream)), &files);
        assert_eq!(bypass.level, Level::Fail, "{bypass}");
        assert!(bypass.message.contains("bypass signature verification"), "{bypass}");
        assert!(
            bypass
                .fix
                .as_deref()
                .unwrap()
                .contains(&format!("--image-service-endpoint={listen}")),
            "{bypass}"
        );
    }

    #[test]
    fn without_a_flag_the_files_count_only_while_unchanged_since_start() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let listen = format!("unix://{}", config.listen.display());
        let main = "/var/lib/kubelet/config.yaml";
        let args = with_config(main);

        let wired = running_wiring(
            &config,
            &kubelet(args.clone()),
            &[file(main, Some(&listen), FileState::AsStarted)],
        );
        assert_eq!(wired.level, Level::Ok, "{wired}");
        assert!(wired.message.contains("unchanged since it started"), "{wired}");

        // `kubeadm upgrade node` rewrote the file: kubelet still runs wired, its restart won't.
        let rewritten = running_wiring(
            &config,
            &kubelet(args.clone()),
            &[file(
                main,
                None,
                FileState::ChangedAt(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_600)),
            )],
        );
        assert_eq!(rewritten.level, Level::Fail, "{rewritten}");
        assert!(
            rewritten.message.contains("started at 2027-01-15T08:00:00Z"),
            "{rewritten}"
        );
        assert!(
            rewritten.message.contains("changed at 2027-01-15T08:10:00Z"),
            "{rewritten}"
        );
        assert!(
            rewritten
                .message
                .contains("a kubelet restart would take no imageServiceEndpoint"),
            "{rewritten}"
        );
        let fix = rewritten.fix.as_deref().unwrap();
        assert!(fix.contains(&format!("imageServiceEndpoint: {listen}")), "{rewritten}");
        assert!(fix.contains("kubelet-config ConfigMap"), "{rewritten}");

        // Wired on disk after the start: not yet in force.
        let pending = running_wiring(
            &config,
            &kubelet(args.clone()),
            &[file(main, Some(&listen), FileState::ChangedAt(SystemTime::now()))],
        );
        assert_eq!(pending.level, Level::Fail, "{pending}");
        assert!(pending.message.contains("pullgate's socket"), "{pending}");
        assert!(
            pending.fix.as_deref().unwrap().starts_with("restart kubelet"),
            "{pending}"
        );

        let removed = running_wiring(&config, &kubelet(args.clone()), &[file(main, None, FileState::Removed)]);
        assert_eq!(removed.level, Level::Fail, "{removed}");
        assert!(removed.message.contains("was removed since"), "{removed}");

        let unwired = running_wiring(
            &config,
            &kubelet(args.clone()),
            &[file(main, None, FileState::AsStarted)],
        );
        assert_eq!(unwired.level, Level::Fail, "{unwired}");
        assert!(unwired.message.contains("no image service endpoint"), "{unwired}");
        assert!(unwired.fix.as_deref().unwrap().contains(main), "{unwired}");

        let bare = running_wiring(&config, &kubelet(KubeletArgs::default()), &[]);
        assert_eq!(bare.level, Level::Fail, "{bare}");

        // A later drop-in of --config-dir wins over the main file.
        let dropin = running_wiring(
            &config,
            &kubelet(args),
            &[
                file(main, Some(&listen), FileState::AsStarted),
                file(
                    "/etc/kubelet.conf.d/50-x.conf",
                    Some("unix:///x.sock"),
                    FileState::AsStarted,
                ),
            ],
        );
        assert_eq!(dropin.level, Level::Fail, "{dropin}");
        assert!(dropin.message.contains("50-x.conf"), "{dropin}");
        assert!(dropin.message.contains("not pullgate's"), "{dropin}");
    }

    /// The reader against a real process, this test's own: its start is in the past, and a file
    /// is changed relative to it by its times, read through the process's root.
    #[test]
    fn a_real_process_and_its_files_are_read_through_proc() {
        let proc = Path::new("/proc");
        let pid = std::process::id();
        let me = read_kubelet(proc, pid).unwrap();
        let now = SystemTime::now();
        assert!(me.started <= now, "{me:?}");
        assert!(me.started > now - Duration::from_secs(3600), "{me:?}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        fs::write(&path, "imageServiceEndpoint: unix:///run/pullgate/pullgate.sock\n").unwrap();
        let conf_d = dir.path().join("conf.d");
        fs::create_dir(&conf_d).unwrap();
        fs::write(conf_d.join("10-a.conf"), "imageServiceEndpoint: unix:///a.sock\n").unwrap();
        fs::write(conf_d.join("ignored.yaml"), "imageServiceEndpoint: unix:///b.sock\n").unwrap();
        let mut kubelet = RunningKubelet {
            pid,
            args: KubeletArgs {
                image_service_endpoint: None,
                config: Some(path.display().to_string()),
                config_dir: Some(conf_d.display().to_string()),
            },
            started: now + Duration::from_secs(60),
        };
        let files = config_files(proc, &kubelet).unwrap();
        let seen: Vec<(PathBuf, Option<&str>, FileState)> = files
            .iter()
            .map(|f| (f.path.clone(), f.endpoint.as_deref(), f.state))
            .collect();
        assert_eq!(
            seen,
            [
                (
                    path.clone(),
                    Some("unix:///run/pullgate/pullgate.sock"),
                    FileState::AsStarted
                ),
                (conf_d.join("10-a.conf"), Some("unix:///a.sock"), FileState::AsStarted),
            ]
        );

        kubelet.started = now - Duration::from_secs(60);
        let files = config_files(proc, &kubelet).unwrap();
        assert!(
            files.iter().all(|f| matches!(f.state, FileState::ChangedAt(_))),
            "{files:?}"
        );

        fs::remove_file(&path).unwrap();
        let files = config_files(proc, &kubelet).unwrap();
        assert_eq!(files[0].state, FileState::Removed, "{files:?}");

        // A process that exits under doctor (kubelet restarting) is told apart from one it may
        // not read.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        assert!(read_kubelet(proc, gone).unwrap_err().process_gone());

        fs::write(&path, "imageServiceEndpoint: [1]\n").unwrap();
        let error = config_files(proc, &kubelet).unwrap_err().to_string();
        assert!(error.contains("imageServiceEndpoint is not a string"), "{error}");
    }
}
