use http::{Method, Request, StatusCode};

use super::{
    endpoint::{answer, Readiness},
    text::{float, Exposition, Kind},
    *,
};
use crate::audit::{Decision, Event};

/// The sample lines of `name` (with labels), without the `# HELP`/`# TYPE` lines.
fn samples<'t>(text: &'t str, name: &str) -> Vec<&'t str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .collect()
}

fn record(decision: Decision, rule: Option<&str>, mode: &str) -> Record {
    Record {
        event: Event::Pull,
        image: "127.0.0.1:5000/app:v1".into(),
        digest: None,
        namespace: String::new(),
        pod: String::new(),
        rule: rule.map(str::to_string),
        mode: mode.into(),
        decision,
        reason: String::new(),
        signatures: Vec::new(),
        attestations: Vec::new(),
        rejected: Vec::new(),
        duration_ms: 0.0,
        cache: "none",
        outcome: None,
        error: None,
        count: None,
    }
}

#[test]
fn help_and_label_values_are_escaped() {
    let mut out = Exposition::default();
    out.family("m_total", Kind::Counter, "a \\ backslash,\na newline and \"quotes\"");
    out.count("m_total", &[("rule", "a\"b\\c\nd"), ("mode", "")], 3);
    assert_eq!(
        out.finish(),
        "# HELP m_total a \\\\ backslash,\\na newline and \"quotes\"\n\
         # TYPE m_total counter\n\
         m_total{rule=\"a\\\"b\\\\c\\nd\",mode=\"\"} 3\n"
    );
}

#[test]
fn floats_are_spelled_as_prometheus_reads_them() {
    assert_eq!(float(f64::INFINITY), "+Inf");
    assert_eq!(float(f64::NEG_INFINITY), "-Inf");
    assert_eq!(float(f64::NAN), "NaN");
    assert_eq!(float(0.0025), "0.0025");
    assert_eq!(float(10.0), "10");
    assert_eq!(float(1_700_000_000.0), "1700000000");
}

#[test]
fn histogram_buckets_are_cumulative_with_sum_and_count() {
    let metrics = Metrics::new();
    for ms in [0.5, 1.0, 3.0, 3.0, 700.0, 60_000.0] {
        metrics.verification(Duration::from_secs_f64(ms / 1000.0));
    }
    let text = metrics.render();
    let name = "pullgate_verification_duration_seconds";
    assert!(text.contains(&format!("# TYPE {name} histogram\n")), "{text}");
    let buckets = samples(&text, &format!("{name}_bucket"));
    let expected = [
        ("0.001", 2),
        ("0.0025", 2),
        ("0.005", 4),
        ("0.01", 4),
        ("0.025", 4),
        ("0.05", 4),
        ("0.1", 4),
        ("0.25", 4),
        ("0.5", 4),
        ("1", 5),
        ("2.5", 5),
        ("5", 5),
        ("10", 5),
        ("+Inf", 6),
    ];
    let wanted: Vec<String> = expected
        .iter()
        .map(|(le, n)| format!("{name}_bucket{{le=\"{le}\"}} {n}"))
        .collect();
    assert_eq!(buckets, wanted);
    assert_eq!(samples(&text, &format!("{name}_count")), [format!("{name}_count 6")]);
    let sum: f64 = samples(&text, &format!("{name}_sum"))[0]
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((sum - 60.7075).abs() < 1e-9, "{sum}");
}

#[test]
fn an_empty_histogram_has_every_bucket_at_zero() {
    let text = Metrics::new().render();
    let name = "pullgate_verification_duration_seconds";
    let buckets = samples(&text, &format!("{name}_bucket"));
    assert_eq!(buckets.len(), VERIFICATION_BUCKETS.len() + 1);
    assert!(buckets.iter().all(|b| b.ends_with(" 0")), "{buckets:?}");
    assert_eq!(samples(&text, &format!("{name}_sum")), [format!("{name}_sum 0")]);
    assert_eq!(samples(&text, &format!("{name}_count")), [format!("{name}_count 0")]);
}

#[test]
fn decisions_are_counted_by_decision_rule_and_mode() {
    let metrics = Metrics::new();
    metrics.decision(&record(Decision::Allow, Some("apps"), "enforce"));
    metrics.decision(&record(Decision::Allow, Some("apps"), "enforce"));
    metrics.decision(&record(Decision::Deny, None, "enforce"));
    metrics.decision(&record(Decision::AuditDeny, Some("apps"), "audit"));
    let text = metrics.render();
    assert_eq!(
        samples(&text, "pullgate_decisions_total"),
        [
            "pullgate_decisions_total{decision=\"allow\",rule=\"apps\",mode=\"enforce\"} 2",
            "pullgate_decisions_total{decision=\"audit-deny\",rule=\"apps\",mode=\"audit\"} 1",
            "pullgate_decisions_total{decision=\"deny\",rule=\"\",mode=\"enforce\"} 1",
        ]
    );
}

#[test]
fn fixed_label_sets_start_at_zero() {
    let metrics = Metrics::new();
    metrics.cache_lookup(Lookup::Hit);
    metrics.registry_request(RegistryOutcome::Unauthorized);
    metrics.policy_reload(false);
    let text = metrics.render();
    assert_eq!(
        samples(&text, "pullgate_cache_lookups_total"),
        [
            "pullgate_cache_lookups_total{result=\"hit\"} 1",
            "pullgate_cache_lookups_total{result=\"miss\"} 0",
            "pullgate_cache_lookups_total{result=\"shared\"} 0",
        ]
    );
    assert_eq!(
        samples(&text, "pullgate_registry_requests_total"),
        [
            "pullgate_registry_requests_total{outcome=\"error\"} 0",
            "pullgate_registry_requests_total{outcome=\"not_found\"} 0",
            "pullgate_registry_requests_total{outcome=\"ok\"} 0",
            "pullgate_registry_requests_total{outcome=\"unauthorized\"} 1",
            "pullgate_registry_requests_total{outcome=\"unavailable\"} 0",
        ]
    );
    assert_eq!(
        samples(&text, "pullgate_policy_reloads_total"),
        [
            "pullgate_policy_reloads_total{result=\"failure\"} 1",
            "pullgate_policy_reloads_total{result=\"success\"} 0",
        ]
    );
    assert!(samples(&text, "pullgate_upstream_requests_total").is_empty());
}

#[test]
fn upstream_requests_are_counted_by_method_and_code() {
    let metrics = Metrics::new();
    metrics.upstream_request("PullImage", "OK");
    metrics.upstream_request("PullImage", "Unknown");
    metrics.upstream_request("PullImage", "OK");
    let text = metrics.render();
    assert_eq!(
        samples(&text, "pullgate_upstream_requests_total"),
        [
            "pullgate_upstream_requests_total{method=\"PullImage\",code=\"OK\"} 2",
            "pullgate_upstream_requests_total{method=\"PullImage\",code=\"Unknown\"} 1",
        ]
    );
}

#[test]
fn trust_expiry_has_one_series_per_root_and_none_without_a_trusted_root() {
    let metrics = Metrics::new();
    let name = "pullgate_trust_material_expiry_timestamp_seconds";
    let text = metrics.render();
    assert!(text.contains(&format!("# TYPE {name} gauge\n")), "{text}");
    assert!(samples(&text, name).is_empty(), "{text}");
    metrics.trust_expiry(vec![("default".into(), 1_900_000_000.0)]);
    assert_eq!(
        samples(&metrics.render(), name),
        [format!("{name}{{root=\"default\"}} 1900000000")]
    );
    metrics.trust_expiry(vec![
        ("default".into(), f64::INFINITY),
        ("github".into(), 1_800_000_000.0),
    ]);
    assert_eq!(
        samples(&metrics.render(), name),
        [
            format!("{name}{{root=\"default\"}} +Inf"),
            format!("{name}{{root=\"github\"}} 1800000000"),
        ]
    );
    // A root the reloaded policy no longer names loses its series.
    metrics.trust_expiry(vec![("github".into(), 1_800_000_000.0)]);
    assert_eq!(samples(&metrics.render(), name).len(), 1);
    metrics.trust_expiry(Vec::new());
    assert!(samples(&metrics.render(), name).is_empty());
}

#[test]
fn every_family_has_help_and_type_once() {
    let text = Metrics::new().render();
    for name in [
        "pullgate_decisions_total",
        "pullgate_verification_duration_seconds",
        "pullgate_cache_lookups_total",
        "pullgate_registry_requests_total",
        "pullgate_upstream_requests_total",
        "pullgate_policy_reloads_total",
        "pullgate_audit_write_failures_total",
        "pullgate_trust_material_expiry_timestamp_seconds",
    ] {
        assert_eq!(text.matches(&format!("# HELP {name} ")).count(), 1, "{name}");
        assert_eq!(text.matches(&format!("# TYPE {name} ")).count(), 1, "{name}");
    }
    assert!(text.ends_with('\n'));
}

async fn get(path: &str, method: Method, ready: bool) -> (StatusCode, String) {
    let metrics = Metrics::new();
    let readiness = Readiness::new("not ready: waiting for containerd".into());
    if ready {
        readiness.set(Ok(()));
    }
    let request = Request::builder().method(method).uri(path).body(()).unwrap();
    let response = answer(&request, &metrics, &readiness);
    let status = response.status();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn endpoint_routes() {
    assert_eq!(
        get("/healthz", Method::GET, false).await,
        (StatusCode::OK, "ok\n".into())
    );
    assert_eq!(get("/readyz", Method::GET, true).await, (StatusCode::OK, "ok\n".into()));
    assert_eq!(
        get("/readyz", Method::GET, false).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for containerd\n".into()
        )
    );
    let (status, body) = get("/metrics?x=1", Method::GET, true).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("# TYPE pullgate_decisions_total counter"), "{body}");
    assert_eq!(get("/", Method::GET, true).await.0, StatusCode::NOT_FOUND);
    assert_eq!(get("/metrics/", Method::GET, true).await.0, StatusCode::NOT_FOUND);
    assert_eq!(get("/metrics", Method::POST, true).await.0, StatusCode::NOT_FOUND);
}

/// `/readyz` follows what the checks find, both ways, and answers one line.
#[tokio::test]
async fn readyz_turns_back_when_a_check_fails_and_again_when_it_passes() {
    let metrics = Metrics::new();
    let readiness = Readiness::new("not ready: starting".into());
    let readyz = || async {
        let request = Request::builder().uri("/readyz").body(()).unwrap();
        let response = answer(&request, &metrics, &readiness);
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    };
    assert_eq!(readyz().await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(readiness.set(Ok(())));
    assert!(!readiness.set(Ok(())), "no change");
    assert_eq!(readyz().await, (StatusCode::OK, "ok\n".into()));
    assert!(readiness.set(Err("not ready: audit log /x: File too large\n(os error 27)".into())));
    assert_eq!(
        readyz().await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: audit log /x: File too large (os error 27)\n".into()
        )
    );
    assert!(readiness.set(Ok(())));
    assert_eq!(readyz().await.0, StatusCode::OK);
}

#[test]
fn audit_write_failures_are_counted_from_zero() {
    let metrics = Metrics::new();
    let text = metrics.render();
    assert_eq!(
        samples(&text, "pullgate_audit_write_failures_total"),
        ["pullgate_audit_write_failures_total 0"]
    );
    metrics.audit_write_failure();
    metrics.audit_write_failure();
    let text = metrics.render();
    assert_eq!(
        samples(&text, "pullgate_audit_write_failures_total"),
        ["pullgate_audit_write_failures_total 2"]
    );
}

#[test]
fn decision_labels_are_spelled_as_in_the_audit_record() {
    for decision in [Decision::Allow, Decision::Deny, Decision::Warn, Decision::AuditDeny] {
        assert_eq!(
            serde_json::to_string(&decision).unwrap(),
            format!("\"{}\"", decision.as_str())
        );
    }
}
