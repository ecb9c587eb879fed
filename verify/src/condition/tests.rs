//! Conditions compiled and evaluated over the SPEC's predicates, and the bounds on both.

use std::time::Instant;

use serde_json::{json, Value as Json};

use super::{compile::depth, evaluate_within, *};

fn compile(text: &str) -> Condition {
    Condition::compile(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn refused(text: &str) -> String {
    match Condition::compile(text) {
        Ok(_) => panic!("{text:?} should be refused"),
        Err(e) => e,
    }
}

fn check(text: &str, statement: &Json) -> Result<(), ConditionFailure> {
    evaluate(&[compile(text)], statement)
}

fn error_of(text: &str, statement: &Json) -> String {
    match check(text, statement) {
        Err(ConditionFailure::Error { condition, error }) => {
            assert_eq!(condition, text);
            error
        }
        other => panic!("{text:?} should fail with an error, got {other:?}"),
    }
}

fn statement(predicate_type: &str, predicate: Json) -> Json {
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{
            "name": "registry.example.com/team/app",
            "digest": {"sha256": "ab".repeat(32)},
        }],
        "predicateType": predicate_type,
        "predicate": predicate,
    })
}

fn cyclonedx(components: Json) -> Json {
    statement(
        "https://cyclonedx.org/bom",
        json!({
            "bomFormat": "CycloneDX",
            "specVersion": "1.5",
            "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
            "version": 1,
            "metadata": {
                "timestamp": "2025-03-01T10:00:00Z",
                "tools": {"components": [{"type": "application", "name": "syft", "version": "1.20.0"}]},
                "component": {"type": "container", "name": "registry.example.com/team/app"},
            },
            "components": components,
        }),
    )
}

fn sbom() -> Json {
    cyclonedx(json!([
        {
            "type": "library",
            "name": "openssl",
            "version": "3.0.15-1~deb12u1",
            "purl": "pkg:deb/debian/openssl@3.0.15-1~deb12u1?arch=amd64",
            "licenses": [{"license": {"id": "Apache-2.0"}}],
        },
        {
            "type": "library",
            "name": "zlib1g",
            "version": "1:1.2.13.dfsg-1",
            "purl": "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64",
            "licenses": [{"license": {"name": "Zlib"}}],
        },
    ]))
}

fn provenance(repository: &str) -> Json {
    statement(
        "https://slsa.dev/provenance/v1",
        json!({
            "buildDefinition": {
                "buildType": "https://actions.github.io/buildtypes/workflow/v1",
                "externalParameters": {
                    "workflow": {
                        "ref": "refs/tags/v1.4.2",
                        "repository": repository,
                        "path": ".github/workflows/release.yml",
                    },
                },
                "internalParameters": {
                    "github": {"event_name": "push", "repository_id": "706123456", "repository_owner_id": "1234567"},
                },
                "resolvedDependencies": [{
                    "uri": format!("git+{repository}@refs/tags/v1.4.2"),
                    "digest": {"gitCommit": "9f2c1e0b7d4a5c3e8f6a1b2d3c4e5f60718293a4"},
                }],
            },
            "runDetails": {
                "builder": {"id": "https://github.com/actions/runner/github-hosted"},
                "metadata": {"invocationId": format!("{repository}/actions/runs/1234/attempts/1")},
            },
        }),
    )
}

/// A cosign vulnerability attestation (`cosign attest --type vuln`) wrapping a Trivy report.
fn vuln(severities: &[&str]) -> Json {
    let vulnerabilities: Vec<Json> = severities
        .iter()
        .enumerate()
        .map(|(i, severity)| {
            json!({
                "VulnerabilityID": format!("CVE-2024-{:04}", 1000 + i),
                "PkgName": "openssl",
                "InstalledVersion": "3.0.11-1~deb12u2",
                "Severity": severity,
            })
        })
        .collect();
    statement(
        "https://cosign.sigstore.dev/attestation/vuln/v1",
        json!({
            "invocation": {"parameters": null, "uri": "", "event_id": "", "builder.id": ""},
            "scanner": {
                "uri": "pkg:github/aquasecurity/trivy@v0.58.1",
                "version": "0.58.1",
                "db": {"uri": "", "version": ""},
                "result": {
                    "SchemaVersion": 2,
                    "ArtifactName": "registry.example.com/team/app:v1",
                    "ArtifactType": "container_image",
                    "Results": [
                        {"Target": "app (debian 12.8)", "Class": "os-pkgs", "Type": "debian", "Vulnerabilities": vulnerabilities},
                        {"Target": "app/go.mod", "Class": "lang-pkgs", "Type": "gomod"},
                    ],
                },
            },
            "metadata": {"scanStartedOn": "2025-03-01T10:00:00Z", "scanFinishedOn": "2025-03-01T10:00:09Z"},
        }),
    )
}

const NO_CRITICAL: &str = r#"predicate.scanner.result.Results.all(r, !has(r.Vulnerabilities) || r.Vulnerabilities.all(v, v.Severity != "CRITICAL"))"#;
const SPEC_SBOM: &str = "size(predicate.components) > 0";
const SPEC_PROVENANCE: &str =
    r#"predicate.buildDefinition.externalParameters.workflow.repository == "https://github.com/org/repo""#;

#[test]
fn conditions_are_send_and_sync() {
    fn shareable<T: Send + Sync + Clone + fmt::Debug + Eq>() {}
    shareable::<Condition>();
}

#[test]
fn valid_conditions_compile() {
    for text in [
        SPEC_SBOM,
        SPEC_PROVENANCE,
        NO_CRITICAL,
        "statement.predicateType == 'https://cyclonedx.org/bom'",
        "predicate.components.all(c, has(c.licenses) && c.licenses.exists(l, has(l.license.id)))",
        "predicate.components.map(c, c.name).exists_one(n, n == 'openssl')",
        "size(predicate.components.filter(c, c.type == 'library')) >= 1",
        "predicate.buildDefinition.externalParameters.workflow.ref.matches('^refs/tags/v[0-9]+\\\\.')",
        "matches(predicate.runDetails.builder.id, '^https://github\\\\.com/')",
        "statement.subject.exists(s, s.name.startsWith('registry.example.com/'))",
        "type(predicate.version) == int",
        "optional.of(1).hasValue()",
        "statement.subject.all(predicate, predicate.name != '')",
        "true",
        "predicate.version == 1 ||\n  predicate.version == 2",
    ] {
        let condition = compile(text);
        assert_eq!(condition.text(), text);
        assert_eq!(condition, condition.clone());
    }
}

#[test]
fn syntax_errors_name_the_position() {
    let error = refused("size(predicate.components > 0");
    assert_eq!(error, "does not parse: column 30: Syntax error: missing ')' at '<EOF>'");
    let error = refused("predicate.version == 1 &&\n  predicate.x ==");
    assert!(error.starts_with("does not parse: line 2, column "), "{error}");
    assert_eq!(refused("   "), "must not be empty");
    assert!(refused("predicate.a.all(x)").contains("all"));
}

#[test]
fn undeclared_names_are_refused_when_compiled() {
    assert_eq!(
        refused("predicat.components.size() > 0"),
        "unknown variable \"predicat\"; conditions see only predicate and statement"
    );
    assert_eq!(refused("image == 'x'"), refused("image == 'x'"));
    assert!(refused("image == 'x'").contains("\"image\""));
    // A comprehension's variable is bound only inside it.
    let error = refused("predicate.components.all(c, true) && c.name == ''");
    assert!(error.contains("unknown variable \"c\""), "{error}");
    assert_eq!(refused("sise(predicate.components) > 0"), "unknown function \"sise\"");
    assert_eq!(
        refused("predicate.name.lowerAscii() == 'x'"),
        "unknown function \"lowerAscii\""
    );
}

#[test]
fn matches_needs_a_valid_literal_pattern() {
    assert_eq!(
        refused("predicate.a.matches(predicate.b)"),
        "the pattern of matches() must be a string literal"
    );
    let error = refused("predicate.a.matches('(unclosed')");
    assert!(
        error.starts_with("matches(\"(unclosed\"): not a valid regular expression"),
        "{error}"
    );
    assert!(refused("predicate.a.matches('a', 'b')").contains("takes a string and a pattern"));
    // Too big to compile within the regex size limit (a Unicode class: `\w` is ASCII now).
    assert!(refused(r"predicate.a.matches('\\pL{1000}')").contains("not a valid regular expression"));
}

#[test]
fn expressions_that_are_never_bool_are_refused() {
    assert_eq!(
        refused("size(predicate.components)"),
        "evaluates to a number, never to a bool"
    );
    assert_eq!(
        refused("1 + 2"),
        "evaluates to a sum, difference, product or quotient, never to a bool"
    );
    assert_eq!(refused("'yes'"), "evaluates to a string, never to a bool");
    assert_eq!(refused("[true]"), "evaluates to a list, never to a bool");
}

#[test]
fn deep_conditions_are_refused() {
    let nested = format!("{}true{}", "(".repeat(40), ")".repeat(40));
    assert_eq!(refused(&nested), "does not parse: nested more than 32 levels deep");
    let chain = format!("{}predicate.x == 1", "predicate.x + ".repeat(40));
    assert_eq!(
        refused(&chain),
        "nested more than 32 levels deep (an operator or a call is a level)"
    );
    // The longest chain that fits compiles on its own thread, whatever the caller's stack.
    let chain = format!("{}1 == 1", "1 + ".repeat(MAX_CONDITION_CHARS / 4 - 2));
    let refusal = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || Condition::compile(&chain).err())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(
        refusal.as_deref(),
        Some("nested more than 32 levels deep (an operator or a call is a level)")
    );
}

#[test]
fn the_deepest_conditions_evaluate_on_a_small_stack() {
    let conditions = [
        format!("{}predicate.x == 1", "predicate.x + ".repeat(MAX_DEPTH - 3)),
        format!("{}true{}", "predicate.l.all(x, ".repeat(9), ")".repeat(9)),
        format!("{}true{}", "!(".repeat(MAX_DEPTH - 1), ")".repeat(MAX_DEPTH - 1)),
        format!("{}true{}", "[".repeat(MAX_DEPTH - 3), "]".repeat(MAX_DEPTH - 3)) + ".size() == 1",
        "predicate == statement.predicate && has(predicate.d)".to_string(),
    ];
    let mut deep = json!(1);
    for _ in 0..MAX_STATEMENT_DEPTH - 3 {
        deep = json!({ "d": deep });
    }
    let statement = json!({"predicate": {"x": 1, "l": [1, 2], "d": deep}});
    for text in conditions {
        let condition = compile(&text);
        assert!(depth(&condition.program.expr) <= MAX_DEPTH, "{text}");
        let statement = statement.clone();
        // Tokio's blocking threads have 2 MiB stacks.
        let outcome = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || evaluate(&[condition], &statement))
            .unwrap()
            .join()
            .unwrap();
        assert!(
            !matches!(outcome, Err(ConditionFailure::TooLarge { .. })),
            "{text}: {outcome:?}"
        );
    }
}

#[test]
fn long_conditions_are_refused() {
    let text = format!("predicate.x == '{}'", "a".repeat(MAX_CONDITION_CHARS));
    assert_eq!(
        refused(&text),
        format!("{} characters long; at most 4096 are allowed", text.chars().count())
    );
    let text = format!("predicate.x == '{}'", "é".repeat(MAX_CONDITION_CHARS - 20));
    compile(&text);
}

#[test]
fn cyclonedx_components() {
    assert_eq!(check(SPEC_SBOM, &sbom()), Ok(()));
    assert_eq!(
        check(SPEC_SBOM, &cyclonedx(json!([]))),
        Err(ConditionFailure::False {
            condition: SPEC_SBOM.to_string()
        })
    );
    let licensed = "predicate.components.all(c, has(c.licenses) && c.licenses.exists(l, has(l.license.id) || has(l.license.name)))";
    assert_eq!(check(licensed, &sbom()), Ok(()));
    let spdx_only = "predicate.components.all(c, c.licenses.exists(l, has(l.license.id)))";
    assert!(matches!(check(spdx_only, &sbom()), Err(ConditionFailure::False { .. })));
    assert_eq!(
        check(
            "predicate.components.exists(c, c.name == 'openssl' && c.version.startsWith('3.0.15'))",
            &sbom()
        ),
        Ok(())
    );
    assert_eq!(
        check("predicate.version == 1 && predicate.specVersion == '1.5'", &sbom()),
        Ok(())
    );
}

#[test]
fn slsa_provenance_workflow() {
    assert_eq!(
        check(SPEC_PROVENANCE, &provenance("https://github.com/org/repo")),
        Ok(())
    );
    let failure = check(SPEC_PROVENANCE, &provenance("https://github.com/evil/fork")).unwrap_err();
    assert_eq!(
        failure.to_string(),
        r#"condition "predicate.buildDefinition.externalParameters.workflow.repository == \"https://github.com/org/repo\"" is false"#
    );
    let tagged =
        r"predicate.buildDefinition.externalParameters.workflow.ref.matches('^refs/tags/v[0-9]+\\.[0-9]+\\.[0-9]+$')";
    assert_eq!(check(tagged, &provenance("https://github.com/org/repo")), Ok(()));
    let hosted = "matches(predicate.runDetails.builder.id, '^https://github\\\\.com/actions/runner/')";
    assert_eq!(check(hosted, &provenance("https://github.com/org/repo")), Ok(()));
    let error = error_of(
        "predicate.buildDefinition.matches('x')",
        &provenance("https://github.com/org/repo"),
    );
    assert!(error.contains("matches"), "{error}");
}

#[test]
fn cosign_vuln_predicate() {
    assert_eq!(check(NO_CRITICAL, &vuln(&["LOW", "HIGH"])), Ok(()));
    assert_eq!(check(NO_CRITICAL, &vuln(&[])), Ok(()));
    assert!(matches!(
        check(NO_CRITICAL, &vuln(&["LOW", "CRITICAL"])),
        Err(ConditionFailure::False { .. })
    ));
    let scanner = "predicate.scanner.uri.startsWith('pkg:github/aquasecurity/trivy@')";
    assert_eq!(check(scanner, &vuln(&[])), Ok(()));
    // Without the has() guard, the result with no vulnerabilities is a missing key.
    let unguarded = "predicate.scanner.result.Results.all(r, r.Vulnerabilities.all(v, v.Severity != 'CRITICAL'))";
    let error = error_of(unguarded, &vuln(&["LOW"]));
    assert_eq!(error, "No such key: Vulnerabilities");
    // A summary of counts, as some scanners write it.
    let summary = statement(
        "https://cosign.sigstore.dev/attestation/vuln/v1",
        json!({"scanner": {"result": {"summary": {"CRITICAL": 0, "HIGH": 3}}}}),
    );
    assert_eq!(
        check("predicate.scanner.result.summary.CRITICAL == 0", &summary),
        Ok(())
    );
    assert_eq!(check("predicate.scanner.result.summary.HIGH < 5u", &summary), Ok(()));
    assert_eq!(check("predicate.scanner.result.summary.HIGH <= 3.0", &summary), Ok(()));
}

#[test]
fn statement_fields() {
    let text = "statement.predicateType == 'https://slsa.dev/provenance/v1'";
    assert_eq!(check(text, &provenance("https://github.com/org/repo")), Ok(()));
    assert!(matches!(check(text, &sbom()), Err(ConditionFailure::False { .. })));
    let subject = "statement.subject.exists(s, s.digest.sha256.size() == 64)";
    assert_eq!(check(subject, &sbom()), Ok(()));
    // Without a predicate, `predicate` is an empty map.
    let bare = json!({"_type": "https://in-toto.io/Statement/v1", "subject": [], "predicateType": "x"});
    assert_eq!(
        check("!has(predicate.components) && size(predicate) == 0", &bare),
        Ok(())
    );
}

#[test]
fn errors_are_failures_not_panics() {
    let sbom = sbom();
    assert_eq!(error_of("predicate.nothing.here == 1", &sbom), "No such key: nothing");
    let error = error_of("predicate.components > 0", &sbom);
    assert!(error.contains("no matching overload"), "{error}");
    let error = error_of("predicate.components[7].name == 'x'", &sbom);
    assert!(error.len() < 400, "{error}");
    let error = error_of("predicate.components.map(c, c.name)", &sbom);
    assert_eq!(error, "evaluated to a list, not a bool");
    let error = error_of("predicate.version / 0 == 1", &sbom);
    assert!(error.contains("zero"), "{error}");
    assert_eq!(
        ConditionFailure::Error {
            condition: "a".into(),
            error: "No such key: a".into()
        }
        .to_string(),
        r#"condition "a" failed: No such key: a"#
    );
}

#[test]
fn matches_reads_perl_classes_as_cel_go_does() {
    // cel-go's RE2: `\d` is [0-9] and `\s` is [\t\n\f\r ], never an Arabic digit or a VT.
    let statement = statement(
        "https://example.com/p",
        json!({"tag": "v\u{0663}", "sep": "\u{0b}", "ok": "v3"}),
    );
    assert!(check(r"predicate.tag.matches('^v\\d$')", &statement).is_err());
    assert_eq!(check(r"predicate.ok.matches('^v\\d$')", &statement), Ok(()));
    assert!(check(r"matches(predicate.sep, '^\\s$')", &statement).is_err());
}

#[test]
fn conditions_are_evaluated_in_order() {
    let conditions = [
        compile(SPEC_SBOM),
        compile("predicate.x == 1"),
        compile("predicate.y == 1"),
    ];
    let failure = evaluate(&conditions, &sbom()).unwrap_err();
    assert_eq!(
        failure,
        ConditionFailure::Error {
            condition: "predicate.x == 1".into(),
            error: "No such key: x".into()
        }
    );
    assert_eq!(evaluate(&[], &json!(null)), Ok(()));
    assert_eq!(evaluate(&conditions[..1], &sbom()), Ok(()));
    assert_eq!(
        failure.to_string(),
        r#"condition "predicate.x == 1" failed: No such key: x"#
    );
}

#[test]
fn oversized_statements_are_refused() {
    let big = cyclonedx(json!([{"name": "x".repeat(MAX_STATEMENT_BYTES)}]));
    let failure = check(SPEC_SBOM, &big).unwrap_err();
    assert!(matches!(failure, ConditionFailure::TooLarge { .. }));
    assert_eq!(
        failure.to_string(),
        "conditions not evaluated: the statement is larger than 4194304 bytes serialized"
    );
    let mut deep = json!(1);
    for _ in 0..MAX_STATEMENT_DEPTH {
        deep = json!([deep]);
    }
    assert!(matches!(
        check("true", &statement("x", deep)),
        Err(ConditionFailure::TooLarge { .. })
    ));
}

#[test]
fn work_is_bounded() {
    let list: Vec<u32> = vec![0; 10_000];
    let big = statement("x", json!({ "list": list }));
    let nested = "predicate.list.all(x, predicate.list.all(y, x == y))";
    let started = Instant::now();
    let error = error_of(nested, &big);
    assert_eq!(
        error,
        "evaluation exceeded its budget of 10000000 steps (comprehensions over large or nested lists)"
    );
    // It stops after MAX_STEPS steps (0.3 s in a release build); unbounded, it takes 24 s.
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
    // A single pass over the list is well within the budget.
    assert_eq!(check("predicate.list.all(x, x == 0)", &big), Ok(()));
}

#[test]
fn every_comprehension_is_metered() {
    const STEPS: u64 = 50_000;
    let spent = |text: &str, statement: &Json| match evaluate_within(&[compile(text)], statement, STEPS) {
        Err(ConditionFailure::Error { error, .. }) => assert!(error.contains("budget of 50000 steps"), "{error}"),
        other => panic!("{text:?} should spend the budget, got {other:?}"),
    };
    let list: Vec<u32> = vec![0; 1_000];
    let big = statement("x", json!({ "list": list }));
    spent("predicate.list.all(x, predicate.list.all(y, x == y))", &big);
    // The error is absorbed by `||`, but the spent budget still fails the condition.
    spent(
        "predicate.list.exists(x, predicate.list.exists(y, x != y)) || true",
        &big,
    );
    spent("predicate.list.all(x, predicate.list.map(y, y + x).size() > 0)", &big);
    spent("predicate.list.all(x, !(x + 1 in predicate.list))", &big);
    // A lookup in a map is not a scan.
    let map: serde_json::Map<String, Json> = (1_000..2_000).map(|i| (i.to_string(), json!(i))).collect();
    let keyed = statement("x", json!({ "list": vec![0; 1_000], "map": map }));
    let lookups = compile("predicate.list.all(x, !(string(x + 1) in predicate.map))");
    assert_eq!(evaluate_within(&[lookups], &keyed, STEPS), Ok(()));
    assert_eq!(
        check("0 in predicate.list && 'openssl' in ['zlib', 'openssl']", &big),
        Ok(())
    );
    spent(
        "predicate.list.filter(x, predicate.list.exists_one(y, y == x)).size() > 0",
        &big,
    );
    // The budget is shared by the conditions of one statement.
    let pass = "predicate.list.all(x, x == 0)";
    let conditions = vec![compile(pass); 10];
    assert_eq!(evaluate_within(&conditions[..1], &big, STEPS), Ok(()));
    assert!(evaluate_within(&conditions, &big, STEPS).is_err());
    // matches() is charged by the text it scans.
    let long = statement("x", json!({ "text": "a".repeat(1 << 20), "list": vec![0; 20] }));
    spent("predicate.list.exists(x, predicate.text.matches('b'))", &long);
    assert_eq!(
        evaluate_within(&[compile("predicate.text.matches('^a+$')")], &long, STEPS),
        Ok(())
    );
}

#[test]
fn numbers_keep_their_json_meaning() {
    let s = statement("x", json!({"i": -3, "u": u64::MAX, "f": 1.5, "z": 0}));
    assert_eq!(check("predicate.i == -3 && predicate.i < 0", &s), Ok(()));
    assert_eq!(check("predicate.u == 18446744073709551615u", &s), Ok(()));
    assert_eq!(check("predicate.f > 1 && predicate.f < 2.0", &s), Ok(()));
    assert_eq!(
        check("predicate.z == 0 && predicate.z == 0u && predicate.z == 0.0", &s),
        Ok(())
    );
}
