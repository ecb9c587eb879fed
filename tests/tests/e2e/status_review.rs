//! Attacks on the remembered names behind `ImageStatus` (names.rs, events.rs) and on the unary
//! calls on pullgate's own HTTP/2 connection (upstream.rs), from their review, on the rig's default containerd
//! (Debian's 1.6, where `ctr images tag --force` is a delete and a create): `status_names.rs`
//! runs only on 2.x.
//!
//! Two manifests with one config (a twin differs only by an annotation) share one image id, so
//! only what a name points at tells them apart.

use std::time::{Duration, Instant};

use pullgate_tests::{cri, image::TinyImage, Pullgate, TestEnv};

const FOLLOWING: &str = "following containerd's image events";

/// `image` with the same config and layer under another manifest.
fn twin_of(image: &TinyImage) -> TinyImage {
    let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest).expect("a manifest");
    manifest["annotations"] = serde_json::json!({ "dev.pullgate.test.twin": "unsigned" });
    TinyImage {
        manifest: serde_json::to_vec(&manifest).expect("serialize"),
        ..image.clone()
    }
}

async fn status(pg: &Pullgate, image: &str) -> Result<bool, tonic::Status> {
    Ok(pg
        .client()
        .image_status(cri::image_status_request(image))
        .await?
        .into_inner()
        .image
        .is_some())
}

async fn shown(pg: &Pullgate, image: &str) -> bool {
    status(pg, image)
        .await
        .unwrap_or_else(|s| panic!("ImageStatus {image}: {}", s.message()))
}

fn ctr_images(env: &TestEnv, args: &[&str]) {
    let output = std::process::Command::new("ctr")
        .arg("--address")
        .arg(env.containerd.socket())
        .args(["--namespace", "k8s.io", "images"])
        .args(args)
        .output()
        .expect("ctr runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// A signed `review/status:verified` pulled through `pg` and shown (twice: the second from
/// what the first remembered), and its unsigned twin `review/other:twin` pulled straight into
/// containerd. Returns (verified name, twin name, verified digest, twin digest).
async fn verified_and_twin(env: &TestEnv, pg: &Pullgate) -> (String, String, String, String) {
    let repo = "review/status";
    let image = TinyImage::build("verified");
    let digest = image
        .push(&env.host(), repo, "verified", env.auth())
        .await
        .expect("push");
    env.signer
        .sign_image(&env.host(), repo, &digest, env.auth())
        .await
        .expect("sign");
    // In another repository: a twin in the same one keeps the verified name hidden, by design.
    let twin_digest = twin_of(&image)
        .push(&env.host(), "review/other", "twin", env.auth())
        .await
        .expect("push the twin");
    let (verified, around) = (env.image_ref(repo, "verified"), env.image_ref("review/other", "twin"));
    env.containerd
        .client()
        .pull_image(cri::pull_request(&around, None, None))
        .await
        .expect("containerd pulls the twin");
    pg.pull(&verified, None)
        .await
        .unwrap_or_else(|s| panic!("{}\n{}", s.message(), pg.log()));
    pg.wait_for_log(FOLLOWING).await;
    assert!(shown(pg, &verified).await, "the verified image is shown");
    assert!(shown(pg, &verified).await, "the verified image is shown again");
    (verified, around, digest, twin_digest)
}

async fn start(env: &TestEnv) -> Pullgate {
    env.start_pullgate(&env.key_policy(&[&format!("{}/review/**", env.host())]))
        .await
}

/// On containerd 1.6 a forced tag is a delete and a create: both events reach pullgate and the
/// next `ImageStatus` hides the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_default_containerd_a_remembered_tag_moved_by_ctr_is_hidden() {
    let env = TestEnv::start().await;
    let pg = start(&env).await;
    let (verified, around, _, _) = verified_and_twin(&env, &pg).await;
    ctr_images(&env, &["tag", "--force", &around, &verified]);
    assert!(
        !shown(&pg, &verified).await,
        "a name moved to an unverified twin was shown\n{}",
        pg.log()
    );
}

/// The tag moved to the twin and back again and again, each `ImageStatus` sent as soon as
/// `ctr` returns: never shown while it names the twin, and shown (from the cache, filled by
/// the previous answer) while it names the verified manifest — once containerd's CRI plugin has
/// the move too: containerd 2.x's learns it from the events, a moment after `ctr` returns,
/// and hiding meanwhile is the safe answer (seen once in 25 rounds under CI load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_moved_back_and_forth_is_never_shown_while_it_names_the_twin() {
    let env = TestEnv::start().await;
    let pg = start(&env).await;
    let (verified, around, digest, _) = verified_and_twin(&env, &pg).await;
    let pinned = env.image_ref("review/status", &digest);
    let mut wrong = Vec::new();
    for round in 0..25 {
        ctr_images(&env, &["tag", "--force", &around, &verified]);
        if shown(&pg, &verified).await {
            wrong.push(format!("round {round}: shown while naming the twin"));
        }
        ctr_images(&env, &["tag", "--force", &pinned, &verified]);
        let settled = Instant::now() + Duration::from_secs(5);
        while !shown(&pg, &verified).await {
            if Instant::now() > settled {
                wrong.push(format!("round {round}: hidden while naming the verified manifest"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Once more: from what the answer above remembered.
        if !shown(&pg, &verified).await {
            wrong.push(format!(
                "round {round}: hidden again while naming the verified manifest"
            ));
        }
    }
    assert_eq!(wrong, Vec::<String>::new(), "\n{}", pg.log());
}

/// pullgate is paused before it can notice containerd going away; containerd restarts, the tag
/// moves, and pullgate resumes with a request already waiting: it must not answer from what it
/// remembered of the containerd before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_pullgate_slept_through_does_not_show_a_moved_tag() {
    let mut env = TestEnv::start().await;
    let pg = start(&env).await;
    let (verified, around, _, _) = verified_and_twin(&env, &pg).await;
    let pid = pg.pid().expect("pullgate runs") as libc::pid_t;
    // SAFETY: signals to the child process this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    env.containerd.restart().await;
    ctr_images(&env, &["tag", "--force", &around, &verified]);
    // The request is in pullgate's socket before it runs again.
    let asked = {
        let client = pg.client();
        let verified = verified.clone();
        tokio::spawn(async move {
            let mut client = client;
            client
                .image_status(cri::image_status_request(&verified))
                .await
                .map(|r| r.into_inner().image.is_some())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let first = asked.await.expect("the task");
    let mut failures = Vec::new();
    match &first {
        Ok(true) => failures.push("shown at the first ImageStatus after the restart".to_string()),
        Ok(false) => {}
        Err(status) => eprintln!("first ImageStatus after the restart failed: {status:?}"),
    }
    for _ in 0..5 {
        match status(&pg, &verified).await {
            Ok(true) => failures.push("shown after the restart".to_string()),
            Ok(false) => {}
            Err(status) => failures.push(format!("failed after the restart: {}", status.message())),
        }
    }
    assert_eq!(failures, Vec::<String>::new(), "first: {first:?}\n{}", pg.log());
}

/// containerd paused (accepting connections, answering nothing): calls with a deadline fail by
/// it, and once containerd runs again pullgate answers at once (its connection not wedged, no
/// reconnect left waiting behind a call that never ends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_containerd_does_not_wedge_the_unary_connection() {
    let env = TestEnv::start().await;
    let pg = start(&env).await;
    let (verified, _, _, _) = verified_and_twin(&env, &pg).await;
    let pid = env.containerd.pid().expect("containerd runs") as libc::pid_t;
    // SAFETY: signals to the child process this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let mut stuck = Vec::new();
    for _ in 0..20 {
        let mut client = pg.client();
        let verified = verified.clone();
        stuck.push(tokio::spawn(async move {
            let mut request = tonic::Request::new(cri::image_status_request(&verified));
            request.set_timeout(Duration::from_millis(500));
            client.image_status(request).await.map(|_| ())
        }));
    }
    for call in stuck {
        let answer = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the client's deadline ends the call")
            .expect("the task");
        assert!(answer.is_err(), "answered while containerd was paused");
    }
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(5), status(&pg, &verified)).await;
    assert!(
        matches!(answer, Ok(Ok(true))),
        "after containerd runs again: {answer:?} in {:?}\n{}",
        started.elapsed(),
        pg.log()
    );
}

/// containerd 1.6's own CRI pull (not through pullgate) moves the remembered tag to the
/// unsigned twin: its images service publishes the change, and the next `ImageStatus` hides it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_default_containerd_a_tag_moved_by_a_direct_pull_is_hidden() {
    let env = TestEnv::start().await;
    let pg = start(&env).await;
    let (verified, _, _, twin_digest) = verified_and_twin(&env, &pg).await;
    // The registry's tag now names the twin; containerd's CRI pulls it straight.
    let twin_manifest = std::process::Command::new("ctr")
        .arg("--address")
        .arg(env.containerd.socket())
        .args(["--namespace", "k8s.io", "content", "get", &twin_digest])
        .output()
        .expect("ctr runs")
        .stdout;
    pullgate_tests::distribution::put_manifest(
        &env.host(),
        "review/status",
        "verified",
        &twin_manifest,
        pullgate_tests::distribution::media_type::OCI_MANIFEST,
        env.auth(),
    )
    .await
    .expect("the twin under the verified tag");
    env.containerd
        .client()
        .pull_image(cri::pull_request(&verified, None, None))
        .await
        .expect("containerd pulls the twin by the tag");
    // Without the twin's digest name only the moved tag tells the manifests apart.
    ctr_images(&env, &["rm", &env.image_ref("review/status", &twin_digest)]);
    assert!(
        !shown(&pg, &verified).await,
        "a tag a direct pull moved to the unsigned twin was shown\n{}",
        pg.log()
    );
}

/// One raw unary `ImageStatus` over a fresh HTTP/2 connection to `socket`, with `extra`
/// headers: (status, content-type, body bytes, trailers as `name=value` lines).
async fn raw_status(
    socket: &std::path::Path,
    image: &str,
    extra: &[(&str, &str)],
) -> (u16, String, Vec<u8>, Vec<String>) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use prost::Message;
    let stream = tokio::net::UnixStream::connect(socket).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let message = cri::image_status_request(image).encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let mut call = http::Request::post("http://localhost/runtime.v1.ImageService/ImageStatus")
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in extra {
        call = call.header(*name, *value);
    }
    let reply = sender
        .send_request(call.body(Full::new(bytes::Bytes::from(framed))).expect("a request"))
        .await
        .expect("a reply");
    let status = reply.status().as_u16();
    let content_type = reply
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    // A trailers-only reply carries its status in the headers.
    let in_headers: Vec<String> = ["grpc-status", "grpc-message"]
        .iter()
        .filter_map(|name| {
            reply
                .headers()
                .get(*name)
                .map(|v| format!("{name}={}", v.to_str().unwrap_or_default()))
        })
        .collect();
    let collected = reply.into_body().collect().await.expect("the body");
    let mut trailers: Vec<String> = collected
        .trailers()
        .map(|t| {
            t.iter()
                .map(|(k, v)| format!("{k}={}", v.to_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    trailers.extend(in_headers);
    trailers.sort();
    (status, content_type, collected.to_bytes().to_vec(), trailers)
}

/// A shown image's reply is containerd's, byte for byte (frame and trailers), even when the
/// caller says it accepts gzip; a hidden one is an empty message with grpc-status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_are_framed_as_containerd_frames_them() {
    let env = TestEnv::start().await;
    let pg = start(&env).await;
    let (verified, around, _, _) = verified_and_twin(&env, &pg).await;
    for extra in [&[][..], &[("grpc-accept-encoding", "gzip,identity")][..]] {
        let direct = raw_status(&env.containerd.socket(), &verified, extra).await;
        let through = raw_status(&pg.socket(), &verified, extra).await;
        assert_eq!(through, direct, "headers {extra:?}");
        assert!(direct.2.len() > 5 && direct.2[0] == 0, "{direct:?}");
    }
    // A compressed request is refused by both (containerd has no gzip decompressor either).
    let gzip = raw_status(&pg.socket(), &verified, &[("grpc-encoding", "gzip")]).await;
    assert!(gzip.3.contains(&"grpc-status=12".to_string()), "{gzip:?}");
    let hidden = raw_status(&pg.socket(), &around, &[]).await;
    assert_eq!(
        hidden,
        (
            200,
            "application/grpc".to_string(),
            vec![0, 0, 0, 0, 0],
            vec!["grpc-message=".to_string(), "grpc-status=0".to_string()]
        ),
        "the unsigned twin's reply"
    );
}

/// A caller that stops reading a few large forwarded `ListImages` replies leaves their bytes
/// unread in pullgate, holding the forwarding connection's receive window shut. containerd's
/// image events once came on that connection too: an event sent meanwhile waited, and the name
/// it would drop stayed remembered, so a moved tag was shown (this test failed). The events now
/// have a connection of their own, and the names are used only while a recent marker came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_forwarded_replies_do_not_hold_back_the_events() {
    moved_tag_behind_forwarded_replies(true).await;
}

/// The control: the same names and the same move, each forwarded reply read in full: the move's
/// event arrives and the tag is hidden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_replies_read_in_full_hold_back_nothing() {
    moved_tag_behind_forwarded_replies(false).await;
}

async fn moved_tag_behind_forwarded_replies(hold: bool) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use prost::Message;
    let env = TestEnv::start().await;
    let pg = start(&env).await;
    let (verified, around, _, _) = verified_and_twin(&env, &pg).await;

    // Another image with thousands of long names: `ListImages` answers with megabytes.
    let bloat = TinyImage::build("bloat");
    bloat
        .push(&env.host(), "review/bloat", "v1", env.auth())
        .await
        .expect("push");
    let bloat_ref = env.image_ref("review/bloat", "v1");
    env.containerd
        .client()
        .pull_image(cri::pull_request(&bloat_ref, None, None))
        .await
        .expect("containerd pulls");
    let channel = ::pullgate::cri::Upstream::connect_lazy(&env.containerd.socket()).own_channel();
    let images = ::pullgate::containerd::Containerd::new(channel, "k8s.io").expect("namespace");
    let started = Instant::now();
    let pad = "p".repeat(200);
    let tag = "t".repeat(127);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..3000 {
        let (images, bloat_ref) = (images.clone(), bloat_ref.clone());
        let name = format!("{}/{pad}/{i}:{tag}", env.host());
        tasks.spawn(async move { images.tag(&bloat_ref, &name).await });
        while tasks.len() >= 32 {
            tasks
                .join_next()
                .await
                .expect("a task")
                .expect("joined")
                .expect("tagged");
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("joined").expect("tagged");
    }
    let list = pullgate_proto::cri::ListImagesRequest::default().encode_to_vec();
    // Until containerd's CRI plugin has learned the names (it lags on its events).
    let mut size = 0;
    while size < 500_000 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "ListImages only {size} bytes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        size = env
            .containerd
            .client()
            .list_images(pullgate_proto::cri::ListImagesRequest::default())
            .await
            .expect("ListImages")
            .into_inner()
            .encoded_len();
    }
    eprintln!("{size} bytes of ListImages after {:?}", started.elapsed());

    // A caller with small windows asks for it a few times and reads nothing.
    let stream = tokio::net::UnixStream::connect(pg.socket()).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(list.len() as u32).to_be_bytes());
    framed.extend_from_slice(&list);
    let mut unread = Vec::new();
    // Enough replies that their unread bytes exceed the connection's 5 MiB window.
    for _ in 0..(6 * 1024 * 1024 / size + 2) {
        let call = http::Request::post("http://localhost/runtime.v1.ImageService/ListImages")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(bytes::Bytes::from(framed.clone())))
            .expect("a request");
        let reply = sender.send_request(call).await.expect("a reply's head");
        if hold {
            unread.push(reply);
        } else {
            reply.into_body().collect().await.expect("the reply");
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;

    ctr_images(&env, &["tag", "--force", &around, &verified]);
    // Far longer than an event takes on a connection that is not held back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stale = shown(&pg, &verified).await;
    drop(unread);
    assert!(
        !stale,
        "a tag moved to the unsigned twin was shown while forwarded replies went unread"
    );
}

/// A tag and repository with every character a reference allows besides letters and digits
/// (`_`, `.`, `-`, `__`, capitals in the tag): the List filter quoting finds the name, and the
/// verified image is shown (from a lookup, then from what it remembered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_every_allowed_character_are_found_by_the_list_filter() {
    let env = TestEnv::start().await;
    let pg = start(&env).await;
    let repo = "review/odd__name.with-dots_and-dashes";
    let tag = "Odd_Tag.v-1.__X";
    let image = TinyImage::build("odd");
    let digest = image.push(&env.host(), repo, tag, env.auth()).await.expect("push");
    env.signer
        .sign_image(&env.host(), repo, &digest, env.auth())
        .await
        .expect("sign");
    let name = env.image_ref(repo, tag);
    pg.pull(&name, None)
        .await
        .unwrap_or_else(|s| panic!("{}\n{}", s.message(), pg.log()));
    pg.wait_for_log(FOLLOWING).await;
    assert!(shown(&pg, &name).await, "shown after a lookup\n{}", pg.log());
    assert!(shown(&pg, &name).await, "shown from what was remembered");
    assert!(
        shown(&pg, &env.image_ref(repo, &digest)).await,
        "shown by its digest name"
    );
}

/// containerd restarted again and again under `ImageStatus` calls: pullgate subscribes again
/// each time, answers after each, and holds no more file descriptors after ten restarts than
/// after the first (no connection or subscription left behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_leave_no_connections_behind() {
    let mut env = TestEnv::start().await;
    let pg = start(&env).await;
    let (verified, _, _, _) = verified_and_twin(&env, &pg).await;
    let pid = pg.pid().expect("pullgate runs");
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let mut counts = Vec::new();
    for round in 1..=10 {
        env.containerd.restart().await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while pg.log().matches(FOLLOWING).count() < round + 1 {
            assert!(Instant::now() < deadline, "not subscribed again after restart {round}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut answered = false;
        for _ in 0..20 {
            match status(&pg, &verified).await {
                Ok(true) => {
                    answered = true;
                    break;
                }
                other => eprintln!("restart {round}: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(answered, "not shown after restart {round}\n{}", pg.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
        counts.push(fds());
    }
    assert!(
        counts[9] <= counts[0] + 2,
        "file descriptors after each restart: {counts:?}"
    );
}

/// containerd paused for longer than a marker may take: pullgate gives the subscription up
/// (its markers unanswered) rather than wait on it for ever, and once containerd runs again it
/// subscribes anew and uses what it remembers again. Before, a publish waited without end, so
/// a containerd wedged with the connection open left the names unused until pullgate restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_stops_answering_is_made_again() {
    let env = TestEnv::start().await;
    let pg = start(&env).await;
    pg.wait_for_log(FOLLOWING).await;
    let pid = env.containerd.pid().expect("containerd runs") as libc::pid_t;
    // SAFETY: signals to the child process this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    pg.wait_for_log("containerd's image events lost").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while pg.log().matches(FOLLOWING).count() < 2 {
        assert!(Instant::now() < deadline, "not followed again:\n{}", pg.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
