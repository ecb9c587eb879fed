//! pullgate as a process on the node: least privilege after binding, peer credentials, systemd
//! socket activation (with `systemd-socket-activate`, and across a restart on an inherited
//! socket) and readiness notification. Real containerd behind it throughout.

use std::{
    os::{
        fd::{AsRawFd, RawFd},
        unix::{net::UnixDatagram, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use pullgate_tests::{
    containerd::{socket_path, Containerd},
    cri,
    process::Daemon,
    pullgate::config_yaml,
    Pullgate, TestEnv,
};

use pullgate_tests::policy::OPEN_POLICY;

/// The `Name:\tvalue` lines of `/proc/<task>/status` (`<pid>` or `<pid>/task/<tid>`).
fn proc_status(task: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{task}/status"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Writes config and policy for a pullgate in `dir` listening on `dir/pullgate.sock` in front
/// of `upstream`; `allowed_uids` replaces the rig's default (this process's uid).
fn write_config(dir: &Path, upstream: &Path, allowed_uids: Option<&str>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut config = config_yaml(
        &dir.join("pullgate.sock"),
        upstream,
        &dir.join("policy.yaml"),
        &dir.join("audit.jsonl"),
        &[],
        "10s",
    );
    if let Some(uids) = allowed_uids {
        let start = config.find("allowedUids: [").unwrap();
        let end = start + config[start..].find(']').unwrap() + 1;
        config.replace_range(start..end, &format!("allowedUids: [{uids}]"));
    }
    std::fs::write(dir.join("policy.yaml"), OPEN_POLICY).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

/// `pullgate serve --config config` with the listening socket `listener` as descriptor 3 and
/// `LISTEN_FDS=1`, `LISTEN_PID` its own pid: what systemd does for a socket unit.
fn serve_on_inherited(config: &Path, listener: RawFd, log: &Path) -> Daemon {
    serve_on_passed(config, &[listener], log)
}

/// `pullgate serve --config config` passed `fds` as descriptors 3, 4, … the way systemd passes
/// a socket unit's sockets: `LISTEN_FDS` their count, `LISTEN_PID` pullgate's pid.
fn serve_on_passed(config: &Path, fds: &[RawFd], log: &Path) -> Daemon {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS={} exec \"$0\" serve --config \"$1\"",
            fds.len()
        ))
        .arg(Pullgate::binary())
        .arg(config);
    // A fixed array: nothing may allocate between fork and exec.
    let mut passed: [RawFd; 4] = [-1; 4];
    assert!(fds.len() <= passed.len(), "at most {} descriptors", passed.len());
    passed[..fds.len()].copy_from_slice(fds);
    let count = fds.len();
    // SAFETY: fcntl and dup2 are async-signal-safe and only touch descriptors.
    unsafe {
        command.pre_exec(move || {
            // Out of the way first (closed on exec), so that placing one cannot overwrite
            // another, and each placed copy is inherited even where a descriptor already is 3.
            let mut moved = passed;
            for fd in &mut moved[..count] {
                *fd = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100);
                if *fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in moved[..count].iter().enumerate() {
                if libc::dup2(*fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Daemon::spawn("pullgate", command, log).unwrap()
}

/// Capabilities and no_new_privs belong to each thread: every thread of pullgate, the
/// runtime's workers and blocking threads included, must have dropped them (a review found the
/// workers, started before the drop, kept every capability).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_are_dropped_and_no_new_privs_set_after_binding() {
    let env = TestEnv::start().await;
    let pg = env.start_pullgate(OPEN_POLICY).await;
    // Work that starts blocking threads (audit appends) first.
    let image = env.push_image("app", "v1", "threads").await;
    pg.pull(&format!("{}/app@{image}", env.host()), None).await.unwrap();
    let pid = pg.pid().unwrap();
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| t.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(tasks.len() > 2, "the runtime's threads: {tasks:?}");
    for task in tasks {
        let status = proc_status(&format!("{pid}/task/{task}"));
        let field = |name: &str| {
            status
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{name} in /proc/{pid}/task/{task}/status"))
        };
        // The tests run as root, so pullgate started with every capability.
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(field(set), "0000000000000000", "{set} of thread {task}");
        }
        assert_eq!(field("NoNewPrivs"), "1", "thread {task}");
        assert_eq!(field("Umask"), "0027");
    }
    // Without capabilities it still does its work: containerd answers through it.
    cri::image_fs_info(pg.socket()).await.unwrap();
}

/// pullgate serving only uid 4242 (the tests run as root, so every call of theirs is
/// refused), in front of a containerd of its own, with its socket up.
async fn serving_only_uid_4242() -> (Containerd, tempfile::TempDir, Daemon) {
    let containerd = Containerd::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &containerd.socket(), Some("4242"));
    let mut command = Pullgate::command();
    command.arg("serve").arg("--config").arg(&config);
    let mut daemon = Daemon::spawn("pullgate", command, &dir.path().join("pullgate.log")).unwrap();
    let socket = dir.path().join("pullgate.sock");
    daemon
        .wait_ready("its socket exists", Duration::from_secs(10), async || socket.exists())
        .await
        .unwrap();
    (containerd, dir, daemon)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outside_allowed_uids_is_refused_and_audited() {
    let (_containerd, dir, mut daemon) = serving_only_uid_4242().await;
    let socket = dir.path().join("pullgate.sock");
    let status = cri::image_fs_info(&socket).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        format!("uid {} is not in pullgate's socket.allowedUids", unsafe {
            libc::getuid()
        })
    );

    let audit = dir.path().join("audit.jsonl");
    daemon
        .wait_ready("the refusal is audited", Duration::from_secs(10), async || {
            std::fs::read_to_string(&audit).is_ok_and(|t| t.contains("peer-refused"))
        })
        .await
        .unwrap();
    let text = std::fs::read_to_string(&audit).unwrap();
    let record: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(record["event"], "peer-refused");
    assert_eq!(record["decision"], "deny");
    assert_eq!(
        record["reason"],
        format!("uid {} is not in socket.allowedUids", unsafe { libc::getuid() })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_the_socket_systemd_socket_activate_passes() {
    let Some(activate) = pullgate_tests::process::required_tool("systemd-socket-activate") else {
        return;
    };
    let containerd = Containerd::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &containerd.socket(), None);
    let activated = dir.path().join("activated.sock");
    let mut command = Command::new(activate);
    command
        .arg("-l")
        .arg(&activated)
        .arg(Pullgate::binary())
        .arg("serve")
        .arg("--config")
        .arg(&config);
    let mut daemon = Daemon::spawn("systemd-socket-activate", command, &dir.path().join("pullgate.log")).unwrap();
    daemon
        .wait_ready("the activation socket exists", Duration::from_secs(10), async || {
            activated.exists()
        })
        .await
        .unwrap();
    // The first connection starts pullgate, which answers on the socket it was given.
    let answer = tokio::time::timeout(Duration::from_secs(10), cri::image_fs_info(&activated)).await;
    answer
        .expect("an answer within 10 s")
        .unwrap_or_else(|s| panic!("{s:?}\n{}", daemon.log()));
    assert!(
        daemon.log().contains("using the socket systemd passed"),
        "{}",
        daemon.log()
    );
    assert!(
        !dir.path().join("pullgate.sock").exists(),
        "the configured listen path is not bound when a socket is passed"
    );
}

/// A passed descriptor pullgate cannot serve on stops it, saying why, before it binds anything.
#[test]
fn a_passed_descriptor_that_is_not_one_listening_unix_stream_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &dir.path().join("containerd.sock"), None);
    let file = std::fs::File::create(dir.path().join("not-a-socket")).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let datagram = UnixDatagram::bind(dir.path().join("datagram.sock")).unwrap();
    let (connected, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let listening = std::os::unix::net::UnixListener::bind(dir.path().join("listening.sock")).unwrap();
    let cases: [(&str, Vec<RawFd>, &str); 5] = [
        ("file", vec![file.as_raw_fd()], "is not a socket"),
        ("tcp", vec![tcp.as_raw_fd()], "is not a unix socket"),
        ("datagram", vec![datagram.as_raw_fd()], "is not a stream socket"),
        ("connected", vec![connected.as_raw_fd()], "is not listening"),
        (
            "two",
            vec![listening.as_raw_fd(), listening.as_raw_fd()],
            "systemd passed 2 sockets",
        ),
    ];
    for (name, fds, why) in cases {
        let mut daemon = serve_on_passed(&config, &fds, &dir.path().join(format!("{name}.log")));
        let status = daemon.wait_exit(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| !s.success()),
            "{name}: {status:?}\n{}",
            daemon.log()
        );
        let log = daemon.log();
        assert!(log.contains("socket activation") && log.contains(why), "{name}: {log}");
        assert!(
            !dir.path().join("pullgate.sock").exists(),
            "{name}: bound the listen path"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_an_inherited_socket_fails_no_call() {
    let containerd = Containerd::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &containerd.socket(), None);
    // The socket unit's part: a listening socket that outlives every pullgate.
    let socket = dir.path().join("unit.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let log = dir.path().join("pullgate.log");
    let mut first = serve_on_inherited(&config, listener.as_raw_fd(), &log);

    // A stream of calls, each on a new connection as a restarted kubelet client would make.
    let stop = Arc::new(AtomicBool::new(false));
    let succeeded = Arc::new(AtomicUsize::new(0));
    let caller = {
        let (stop, succeeded, socket) = (stop.clone(), succeeded.clone(), socket.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match tokio::time::timeout(Duration::from_secs(15), cri::image_fs_info(&socket)).await {
                    Ok(Ok(_)) => {
                        succeeded.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Err(status)) => failures.push(format!("{status:?}")),
                    Err(_) => failures.push("no answer within 15 s".to_string()),
                }
            }
            failures
        })
    };
    let wait_for = async |count: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while succeeded.load(Ordering::SeqCst) < count {
            assert!(std::time::Instant::now() < deadline, "calls stopped succeeding");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    wait_for(20).await;
    let before = succeeded.load(Ordering::SeqCst);
    first.signal(libc::SIGTERM).unwrap();
    let exit = first
        .wait_exit(Duration::from_secs(20))
        .expect("pullgate exits after SIGTERM");
    assert!(exit.success(), "clean drain: {exit}");
    // While nothing serves, calls wait in the socket's backlog.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut second = serve_on_inherited(&config, listener.as_raw_fd(), &log);
    wait_for(before + 20).await;
    stop.store(true, Ordering::SeqCst);
    let failures = caller.await.unwrap();
    assert!(failures.is_empty(), "{failures:?}\n{}", second.log());
    assert!(socket.exists(), "pullgate leaves the unit's socket in place");
    second.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_systemd_it_is_ready_only_once_containerd_answers() {
    let dir = tempfile::tempdir().unwrap();
    let containerd_dir = dir.path().join("containerd");
    std::fs::create_dir_all(&containerd_dir).unwrap();
    let config = write_config(&dir.path().join("pullgate"), &socket_path(&containerd_dir), None);
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    let mut command = Pullgate::command();
    command
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path);
    let mut daemon = Daemon::spawn("pullgate", command, &dir.path().join("pullgate.log")).unwrap();
    let notify = Arc::new(notify);
    let receive = |notify: Arc<UnixDatagram>| {
        tokio::task::spawn_blocking(move || {
            let mut buf = [0u8; 512];
            notify
                .recv(&mut buf)
                .ok()
                .map(|n| String::from_utf8_lossy(&buf[..n]).to_string())
        })
    };
    // containerd is not running: pullgate serves, but is not ready.
    let mut messages = Vec::new();
    while let Some(message) = receive(notify.clone()).await.unwrap() {
        assert!(
            !message.contains("READY=1"),
            "ready before containerd answered: {message}"
        );
        messages.push(message);
    }
    assert!(daemon.exited().is_none(), "{}", daemon.log());
    assert!(
        messages.iter().any(|m| m.contains("STATUS=waiting for containerd")),
        "{messages:?}"
    );

    let _containerd = Containerd::start_in(&containerd_dir, &[]).await;
    notify.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ready = loop {
        let message = receive(notify.clone())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no READY=1 within 10 s of containerd starting\n{}", daemon.log()));
        if message.contains("READY=1") {
            break message;
        }
    };
    assert!(ready.contains("STATUS=serving"), "{ready}");

    daemon.signal(libc::SIGTERM).unwrap();
    let stopping = loop {
        let message = receive(notify.clone())
            .await
            .unwrap()
            .expect("STOPPING=1 after SIGTERM");
        if message.contains("STOPPING=1") {
            break message;
        }
    };
    assert!(stopping.starts_with("STOPPING=1"));
}

/// SPEC §6: a flood of refused connections is at most one `peer-refused` record per uid per
/// second, whose `count`s add up to every connection refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_recorded_once_a_second_with_their_count() {
    let (_containerd, dir, mut daemon) = serving_only_uid_4242().await;
    let socket = dir.path().join("pullgate.sock");

    let started = std::time::Instant::now();
    for _ in 0..50 {
        drop(std::os::unix::net::UnixStream::connect(&socket).unwrap());
    }
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());

    let audit = dir.path().join("audit.jsonl");
    let records = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    // A record without a count (as before SPEC §6 said otherwise) stands for one connection.
    let counted =
        |records: &[serde_json::Value]| -> u64 { records.iter().map(|r| r["count"].as_u64().unwrap_or(1)).sum() };
    daemon
        .wait_ready("50 refusals are counted", Duration::from_secs(10), async || {
            counted(&records()) == 50
        })
        .await
        .unwrap();
    // The window after the last record carried nothing, so nothing more comes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let records = records();
    assert!((1..=2).contains(&records.len()), "{records:#?}");
    assert_eq!(counted(&records), 50, "{records:#?}");
    let uid = unsafe { libc::getuid() };
    for record in &records {
        assert_eq!(record["event"], "peer-refused");
        assert_eq!(record["reason"], format!("uid {uid} is not in socket.allowedUids"));
        assert!(record["count"].is_u64(), "{record}");
    }
    let warned = daemon
        .log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("refused connections"))
        .count();
    assert_eq!(warned, records.len(), "{}", daemon.log());
}
