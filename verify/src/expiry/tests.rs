use super::*;

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
fn the_expiry_timestamp_is_the_first_needed_kind_to_run_out() {
    let root = public_good_root();
    let seconds = |time: &str| at(time).as_second() as f64;
    let now = at("2026-06-01T00:00:00Z");
    // The Fulcio CA's certificates end 2031-10-05; the current log keys have no end.
    let ca_end = expiry_timestamp(&root, KEYLESS, now);
    assert!(
        (seconds("2031-10-05T00:00:00Z")..seconds("2031-10-06T00:00:00Z")).contains(&ca_end),
        "{ca_end}"
    );
    assert_eq!(expiry_timestamp(&root, TrustNeeds::default(), now), f64::INFINITY);
    let logs_only = TrustNeeds {
        tlog: true,
        ..TrustNeeds::default()
    };
    assert_eq!(expiry_timestamp(&root, logs_only, now), f64::INFINITY);
    // Past the CA's end, the gauge says when it ended.
    assert_eq!(expiry_timestamp(&root, KEYLESS, at("2031-10-06T00:00:00Z")), ca_end);

    let mut json: serde_json::Value =
        serde_json::from_str(sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT).unwrap();
    for log in json["tlogs"].as_array_mut().unwrap() {
        log["publicKey"]["validFor"]["end"] = "2027-01-01T00:00:00Z".into();
    }
    json["timestampAuthorities"] = serde_json::json!([]);
    let root = TrustedRoot::from_json(&json.to_string()).unwrap();
    assert_eq!(expiry_timestamp(&root, KEYLESS, now), seconds("2027-01-01T00:00:00Z"));
    // A needed kind the root does not list at all has never been valid.
    let needs_tsa = TrustNeeds { tsa: true, ..KEYLESS };
    assert_eq!(expiry_timestamp(&root, needs_tsa, now), 0.0);
}

#[test]
fn a_root_without_ct_logs_does_not_expire_for_want_of_one() {
    // SPEC §4: a root that lists no CT log asks for no SCT (GitHub's Fulcio instance).
    let mut json: serde_json::Value =
        serde_json::from_str(sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT).unwrap();
    json["ctlogs"] = serde_json::json!([]);
    let root = TrustedRoot::from_json(&json.to_string()).unwrap();
    assert_ne!(expiry_timestamp(&root, KEYLESS, at("2026-06-01T00:00:00Z")), 0.0);
}

#[test]
fn standing_names_the_last_window_to_go() {
    let window = |start: &str, end: Option<&str>| Window {
        start: Some(at(start)),
        end: end.map(at),
    };
    let windows = [
        window("2020-01-01T00:00:00Z", Some("2024-01-01T00:00:00Z")),
        window("2023-01-01T00:00:00Z", Some("2028-01-01T00:00:00Z")),
    ];
    assert_eq!(
        standing(&windows, at("2023-06-01T00:00:00Z")),
        Standing::Valid {
            count: 2,
            until: Some(at("2028-01-01T00:00:00Z"))
        }
    );
    assert_eq!(
        standing(&windows, at("2030-01-01T00:00:00Z")),
        Standing::NoneValid {
            ended: Some(at("2028-01-01T00:00:00Z"))
        }
    );
    assert_eq!(
        standing(&windows, at("2019-01-01T00:00:00Z")),
        Standing::NoneValid { ended: None }
    );
    let open = [window("2020-01-01T00:00:00Z", None), windows[0]];
    assert_eq!(
        standing(&open, at("2021-01-01T00:00:00Z")),
        Standing::Valid { count: 2, until: None }
    );
}

#[test]
fn needs_follow_the_authorities() {
    assert_eq!(TrustNeeds::of([(false, Tlog::Optional)]), TrustNeeds::default());
    assert_eq!(TrustNeeds::of([(true, Tlog::Required)]), KEYLESS);
    assert_eq!(
        TrustNeeds::of([(true, Tlog::Ignore)]),
        TrustNeeds {
            tlog: false,
            tsa: true,
            ..KEYLESS
        }
    );
}
