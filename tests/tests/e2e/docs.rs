//! The operator documentation in `docs/` is held to the product, so that it cannot drift:
//!
//! - every `yaml` block that is a whole policy (`apiVersion: pullgate.dev/v1alpha1`) loads with
//!   pullgate's own loader, and every one that is a node configuration (a top-level `policy:`)
//!   loads as one; node paths are pointed at test files first;
//! - every `pullgate …` command line in a `sh` block parses: the real binary runs it with
//!   `--help` appended, which clap answers only once the subcommand path and every flag before
//!   it are known (values of `value_enum` flags are checked too). Shell variables are passed on
//!   as literal words, so no line is skipped;
//! - every message template in `troubleshooting.md`'s `text` blocks is made of phrases that the
//!   code or its tests hold (see [`message_phrases_are_the_products`]), and the page names every
//!   denial prefix and every reason a signature is rejected for, read from the code;
//! - `metrics.md` names every metric family and seeded label value `/metrics` serves, and no
//!   `pullgate_…` name in the docs is one it does not serve;
//! - the `jq` lines of `audit-log.md` run against an audit log written by a real pullgate, each
//!   printing something;
//! - the index links every page, and relative links lead to files that exist;
//! - the user's documentation stands alone: no markdown link in README.md, docs/, installer/,
//!   systemd/ or examples/ leaves the repository, and none of it sends the reader to a
//!   specification that is not in it.
//!
//! The policy reference's field table is checked against the schema by a unit test beside it
//! (`plugin/src/policy/schema/reference.rs`), which needs the schema's private types.

use base64::Engine as _;
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use pullgate::{
    config::Config,
    metrics::Metrics,
    policy::{FulcioClaim, Policy},
};
use pullgate_tests::{
    cri,
    sigstore::{TestSigstore, Tsa},
    Pullgate, Signer, TestEnv, TEST_AUTHORITY,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn docs_dir() -> PathBuf {
    repo().join("docs")
}

/// Every page in `docs/`, by file name, with its text.
fn pages() -> Vec<(String, String)> {
    let mut pages: Vec<(String, String)> = std::fs::read_dir(docs_dir())
        .expect("docs/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            (name, text)
        })
        .collect();
    pages.sort();
    assert!(
        pages.len() >= 9,
        "docs/ has its pages: {:?}",
        pages.iter().map(|p| &p.0).collect::<Vec<_>>()
    );
    pages
}

fn page(name: &str) -> String {
    let path = docs_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fenced code block: its language, the line its fence opens on, and its text.
struct Block {
    lang: String,
    line: usize,
    text: String,
}

/// The fenced code blocks of a page (fences may be indented, as inside list items).
fn blocks(page: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, usize, String, usize)> = None;
    for (n, line) in page.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut open {
            None => {
                if let Some(lang) = trimmed.strip_prefix("```") {
                    let indent = line.len() - trimmed.len();
                    open = Some((lang.trim().to_string(), n + 1, String::new(), indent));
                }
            }
            Some((_, _, text, indent)) => {
                if trimmed.starts_with("```") {
                    let (lang, line, text, _) = open.take().unwrap();
                    blocks.push(Block { lang, line, text });
                } else {
                    let cut = line.len().min(*indent);
                    text.push_str(line.get(cut..).unwrap_or(line.trim_start()));
                    text.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "a code block is never closed");
    blocks
}

// --- YAML examples ------------------------------------------------------------------------------

/// Points every file a policy names (`trustedRoot`, `key.path`) at a test file in `dir`: a test
/// Sigstore trusted root, or a fresh public key. Returns the policy text to load.
fn with_test_files(text: &str, dir: &Path, root: &Path) -> String {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).expect("the example is YAML");
    let mut text = text.to_string();
    if let Some(trusted_root) = doc["spec"]["trustedRoot"].as_str() {
        text = text.replace(trusted_root, &root.display().to_string());
    }
    // Other roots are other instances: a test instance without Rekor, as GitHub's is.
    let named = doc["spec"]["trustedRoots"].as_mapping().cloned().unwrap_or_default();
    for (name, path) in named {
        let (Some(name), Some(path)) = (name.as_str(), path.as_str()) else {
            continue;
        };
        let file = dir.join(format!("root-{name}.json"));
        std::fs::write(&file, TestSigstore::new().rekorless_trusted_root_json(&Tsa::generate())).unwrap();
        text = text.replace(path, &file.display().to_string());
    }
    let rules = doc["spec"]["rules"].as_sequence().cloned().unwrap_or_default();
    let key_paths: BTreeSet<String> = rules
        .iter()
        .flat_map(|rule| rule["authorities"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|authority| authority["key"]["path"].as_str().map(str::to_string))
        .collect();
    // Notation trust stores: a test CA's root, as PEM.
    let stores: BTreeSet<String> = rules
        .iter()
        .flat_map(|rule| rule["authorities"].as_sequence().cloned().unwrap_or_default())
        .flat_map(|authority| {
            let notation = &authority["notation"];
            [notation["certificates"].as_str(), notation["tsaCertificates"].as_str()]
                .into_iter()
                .flatten()
                .filter(|s| !s.contains("-----BEGIN"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    for (i, store) in stores.iter().enumerate() {
        let root = pullgate_tests::notation::NotationCa::generate(pullgate_tests::notation::KeyKind::EcP256);
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::engine::general_purpose::STANDARD.encode(root.root_der())
        );
        let file = dir.join(format!("store-{i}.pem"));
        std::fs::write(&file, pem).unwrap();
        text = text.replace(store.as_str(), &file.display().to_string());
    }
    for (i, key_path) in key_paths.iter().enumerate() {
        let pem = Signer::generate().public_key_pem();
        if Path::new(key_path).is_absolute() {
            let file = dir.join(format!("key-{i}.pub"));
            std::fs::write(&file, pem).unwrap();
            text = text.replace(key_path.as_str(), &file.display().to_string());
        } else {
            let file = dir.join(key_path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, pem).unwrap();
        }
    }
    text
}

#[test]
fn yaml_policies_and_configurations_in_the_docs_load() {
    let dir = tempfile::tempdir().unwrap();
    let root = TestSigstore::new().write_trusted_root(dir.path());
    let mut policies_in_reference = 0;
    for (name, text) in pages() {
        for block in blocks(&text).into_iter().filter(|b| b.lang == "yaml") {
            let at = format!("docs/{name}:{}", block.line);
            let first = block
                .text
                .lines()
                .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .unwrap_or_default();
            if first.starts_with("apiVersion: pullgate.dev/") {
                let file = dir.path().join(format!("{name}-{}.yaml", block.line));
                std::fs::write(&file, with_test_files(&block.text, dir.path(), &root)).unwrap();
                if let Err(errors) = Policy::load(&file) {
                    panic!("{at}: the example policy does not load:\n{errors}");
                }
                if name == "policy-reference.md" {
                    policies_in_reference += 1;
                }
            } else if block.text.lines().any(|l| l.starts_with("policy:")) {
                let file = dir.path().join(format!("{name}-{}-config.yaml", block.line));
                std::fs::write(&file, &block.text).unwrap();
                if let Err(e) = Config::load(&file) {
                    panic!("{at}: the example configuration does not load: {e}");
                }
            }
        }
    }
    assert!(
        policies_in_reference >= 3,
        "policy-reference.md has its example policies"
    );
}

#[test]
fn the_reference_names_every_fulcio_claim() {
    let text = page("policy-reference.md");
    for claim in FulcioClaim::ALL {
        assert!(
            text.contains(&format!("`{claim}`")),
            "policy-reference.md does not name {claim}"
        );
    }
}

// --- Command lines ------------------------------------------------------------------------------

/// Splits one shell line into words: quotes removed, `#` comments dropped; `|`, `||`, `&&` and
/// `;` are words of their own.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            ';' | '|' | '&' if !(c == '&' && word.ends_with('>')) => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
                let mut op = c.to_string();
                if chars.peek() == Some(&c) {
                    op.push(chars.next().unwrap());
                }
                words.push(op);
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The arguments of each `pullgate` command in a `sh` block: the words after `pullgate` (or a
/// path ending in `/pullgate`) where it is the command run, also behind `sudo`, `chroot DIR`
/// and `docker exec NAME`, up to a pipe, separator or redirection.
fn pullgate_commands(block: &str) -> Vec<Vec<String>> {
    let joined = block.replace("\\\n", " ");
    let mut commands = Vec::new();
    for line in joined.lines() {
        let words = shell_words(line);
        for simple in words.split(|w| matches!(w.as_str(), "|" | "||" | "&&" | ";" | "&")) {
            let mut rest = simple;
            loop {
                match rest {
                    [first, tail @ ..] if first == "sudo" || first.contains('=') => rest = tail,
                    [first, _dir, tail @ ..] if first == "chroot" => rest = tail,
                    [docker, exec, tail @ ..] if docker == "docker" && exec == "exec" => {
                        let skip = tail.iter().take_while(|w| w.starts_with('-')).count();
                        rest = tail.get(skip + 1..).unwrap_or_default();
                    }
                    _ => break,
                }
            }
            let Some((command, args)) = rest.split_first() else {
                continue;
            };
            if command != "pullgate" && !command.ends_with("/pullgate") {
                continue;
            }
            let args: Vec<String> = args
                .iter()
                .take_while(|w| !w.starts_with('>') && !w.starts_with('<') && !w.starts_with("2>"))
                .cloned()
                .collect();
            commands.push(args);
        }
    }
    commands
}

#[test]
fn the_command_finder_reads_shell_lines_as_a_shell_would() {
    let block = "pullgate policy check /etc/pullgate/policy.yaml   # errors name file:line\n\
                 sudo pullgate doctor --config \"$CONFIG\" | tee out\n\
                 docker exec -it node /usr/local/bin/pullgate audit verify \\\n  /var/log/a.jsonl 2>&1\n\
                 cargo build -p pullgate && chroot /host pullgate verify --output json 'a b'\n";
    assert_eq!(
        pullgate_commands(block),
        vec![
            vec!["policy", "check", "/etc/pullgate/policy.yaml"],
            vec!["doctor", "--config", "$CONFIG"],
            vec!["audit", "verify", "/var/log/a.jsonl"],
            vec!["verify", "--output", "json", "a b"],
        ]
    );
}

#[test]
fn every_pullgate_command_in_the_docs_parses() {
    let mut checked = 0;
    for (name, text) in pages() {
        for block in blocks(&text).into_iter().filter(|b| b.lang == "sh") {
            for args in pullgate_commands(&block.text) {
                let output = Pullgate::command()
                    .args(&args)
                    .arg("--help")
                    .output()
                    .expect("run pullgate");
                assert!(
                    output.status.success() && String::from_utf8_lossy(&output.stdout).contains("Usage:"),
                    "docs/{name}:{}: `pullgate {}` does not parse:\n{}",
                    block.line,
                    args.join(" "),
                    String::from_utf8_lossy(&output.stderr)
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "only {checked} pullgate command lines found in docs/");
}

// --- Messages -----------------------------------------------------------------------------------

/// The Rust sources of the product and its tests, with `\"` and `\\` unescaped so that phrases
/// read as the messages do.
fn code_corpus() -> String {
    fn walk(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap());
                out.push('\n');
            }
        }
    }
    let mut corpus = String::new();
    for crate_dir in ["plugin/src", "cli/src", "import/src", "verify/src"] {
        walk(&repo().join(crate_dir), &mut corpus);
    }
    walk(&repo().join("tests"), &mut corpus);
    corpus.replace("\\\"", "\"").replace("\\\\", "\\")
}

/// The fixed phrases of one message template: the text between `<placeholders>`, `…` and the
/// `: ` that joins the parts of a message (pullgate builds messages as `context: cause`), with
/// quotes, brackets and punctuation trimmed from their ends; phrases with fewer than four
/// letters or digits say too little to check.
fn phrases(template: &str) -> Vec<String> {
    let placeholder = regex::Regex::new(r"<[^<>]*>|…|: ").unwrap();
    placeholder
        .split(template)
        .map(|p| {
            p.trim_matches(|c: char| c.is_whitespace() || "\"'()[]:;,.".contains(c))
                .to_string()
        })
        .filter(|p| p.chars().filter(char::is_ascii_alphanumeric).count() >= 4)
        .collect()
}

/// Each message template in `troubleshooting.md` (one per line of its `text` blocks) is built
/// from phrases found in the product's code or its tests' assertions on real messages. A
/// reworded message makes the page fail here once the code and its tests say the new words.
#[test]
fn message_phrases_are_the_products() {
    let corpus = code_corpus();
    let text = page("troubleshooting.md");
    let mut templates = 0;
    let mut missing = Vec::new();
    for block in blocks(&text).into_iter().filter(|b| b.lang == "text") {
        for (i, template) in block.text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            templates += 1;
            for phrase in phrases(template) {
                if !corpus.contains(&phrase) {
                    missing.push(format!("troubleshooting.md:{}: {phrase:?}", block.line + 1 + i));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "phrases the code does not hold:\n{}",
        missing.join("\n")
    );
    assert!(
        templates >= 20,
        "only {templates} message templates in troubleshooting.md"
    );
}

#[test]
fn the_phrase_splitter_keeps_only_the_fixed_words() {
    assert_eq!(
        phrases(
            r#"SignatureValidationFailed: <image>: rule "<rule>": no signature from authority "<name>" (no signatures found)"#
        ),
        vec![
            "SignatureValidationFailed",
            "rule",
            "no signature from authority",
            "no signatures found"
        ]
    );
    assert_eq!(
        phrases("RegistryUnavailable: …: HTTP 401 Unauthorized: …"),
        vec!["RegistryUnavailable", "HTTP 401 Unauthorized"]
    );
}

/// The string literals a function returns from its match arms (`X => "literal"`), read from the
/// source: the list grows when the code does.
fn match_arm_strings(file: &str, function: &str) -> Vec<String> {
    let source = std::fs::read_to_string(repo().join(file)).unwrap();
    let start = source
        .find(&format!("fn {function}("))
        .unwrap_or_else(|| panic!("{file} has no fn {function}"));
    let body = &source[start..];
    let end = body.find("\n    }\n").unwrap_or(body.len());
    let arm = regex::Regex::new(r#"=> "([^"]+)""#).unwrap();
    let found: Vec<String> = arm.captures_iter(&body[..end]).map(|c| c[1].to_string()).collect();
    assert!(!found.is_empty(), "{file}: fn {function} has no string arms");
    found
}

#[test]
fn troubleshooting_names_every_denial_prefix_and_rejection_reason() {
    let text = page("troubleshooting.md");
    let mut wanted = match_arm_strings("plugin/src/denial.rs", "prefix");
    wanted.extend(match_arm_strings("verify/src/lib.rs", "category"));
    wanted.extend(match_arm_strings("verify/src/notation/mod.rs", "category"));
    for phrase in wanted {
        assert!(text.contains(&phrase), "troubleshooting.md does not explain {phrase:?}");
    }
}

// --- Metrics ------------------------------------------------------------------------------------

#[test]
fn metrics_page_names_what_the_endpoint_serves_and_nothing_else() {
    let exposition = Metrics::new().render();
    let families: Vec<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(families.len() >= 7, "{exposition}");
    let text = page("metrics.md");
    for family in &families {
        assert!(
            text.contains(&format!("`{family}")),
            "metrics.md does not name {family}"
        );
    }
    // The label values the endpoint serves from the start, e.g. result="failure" (histogram
    // bucket bounds aside).
    let seeded = regex::Regex::new(r#"([a-z_]+)="([^"]+)""#).unwrap();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        for label in seeded.captures_iter(line).filter(|label| &label[1] != "le") {
            let value = &label[2];
            assert!(
                text.contains(&format!("`{value}`")),
                "metrics.md does not name {}={value}",
                &label[1]
            );
        }
    }
    // No page names a metric the endpoint does not serve.
    let named = regex::Regex::new(r"pullgate_[a-z_]+").unwrap();
    for (name, page) in pages() {
        for m in named.find_iter(&page) {
            let metric = m.as_str();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| metric.strip_suffix(suffix))
                .unwrap_or(metric);
            assert!(
                families.iter().any(|f| f == metric || f == base),
                "docs/{name} names {metric}, which /metrics does not serve"
            );
        }
    }
}

// --- The audit log's jq lines -------------------------------------------------------------------

/// The node path the page's `jq` lines read.
const AUDIT_LOG: &str = "/var/log/pullgate/audit.jsonl";

/// An audit log written by a real pullgate: an allowed pull and a repeat of it (cache hit), a
/// key mismatch, an attestation missing, an audit-mode denial, an image no rule matches, and an
/// image hidden from `ImageStatus`.
async fn real_audit_log(env: &TestEnv) -> Pullgate {
    let host = env.host();
    let pem = pullgate_tests::policy::key_block(&env.signer.public_key_pem());
    let authority = format!(
        "      authorities:\n        - name: {TEST_AUTHORITY}\n          key:\n            publicKey: |\n{pem}"
    );
    let policy = format!(
        "apiVersion: pullgate.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: docs
spec:
  noMatch: deny
  rules:
    - name: signed
      images: [\"{host}/signed/**\"]
{authority}    - name: sbom
      images: [\"{host}/sbom/**\"]
{authority}      attestations:
        - name: sbom
          predicateType: cyclonedx
    - name: rollout
      images: [\"{host}/rollout/**\"]
      mode: audit
{authority}"
    );
    env.push_signed_image("signed/app", "v1", "allowed").await;
    let wrong = env.push_image("signed/app", "v2", "signed by another key").await;
    Signer::generate()
        .sign_image(&host, "signed/app", &wrong, None)
        .await
        .unwrap();
    env.push_signed_image("sbom/app", "v1", "no sbom").await;
    env.push_image("rollout/app", "v1", "unsigned, audited").await;
    env.push_image("other/app", "v1", "no rule").await;
    let hidden = env.image_ref("signed/side", "v1");
    env.push_image("signed/side", "v1", "pulled around pullgate").await;
    env.containerd
        .client()
        .pull_image(cri::pull_request(&hidden, None, None))
        .await
        .unwrap();

    let pg = env.start_pullgate(&policy).await;
    pg.pull(&env.image_ref("signed/app", "v1"), Some("default"))
        .await
        .unwrap();
    pg.pull(&env.image_ref("signed/app", "v1"), Some("default"))
        .await
        .unwrap();
    pg.pull(&env.image_ref("signed/app", "v2"), Some("default"))
        .await
        .unwrap_err();
    pg.pull(&env.image_ref("sbom/app", "v1"), Some("default"))
        .await
        .unwrap_err();
    pg.pull(&env.image_ref("rollout/app", "v1"), Some("default"))
        .await
        .unwrap();
    pg.pull(&env.image_ref("other/app", "v1"), Some("default"))
        .await
        .unwrap_err();
    let status = pg
        .client()
        .image_status(cri::image_status_request(&hidden))
        .await
        .unwrap();
    assert!(status.into_inner().image.is_none());
    pg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jq_lines_of_the_audit_page_work_on_a_real_log() {
    let env = TestEnv::start().await;
    let pg = real_audit_log(&env).await;
    let log = pg.audit_path();
    let verify = Pullgate::command()
        .args(["audit", "verify"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");

    let text = page("audit-log.md");
    let mut ran = 0;
    for block in blocks(&text).into_iter().filter(|b| b.lang == "sh") {
        for line in block.text.replace("\\\n", " ").lines() {
            if !line.starts_with("jq ") {
                continue;
            }
            let command = line.replace(AUDIT_LOG, &log.display().to_string());
            let output = Command::new("sh").arg("-c").arg(&command).output().expect("run sh");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success() && !stdout.trim().is_empty(),
                "audit-log.md:{}: `{line}` printed nothing or failed ({:?}):\n{}\nthe log:\n{}",
                block.line,
                output.status,
                String::from_utf8_lossy(&output.stderr),
                std::fs::read_to_string(&log).unwrap()
            );
            ran += 1;
        }
    }
    assert!(ran >= 6, "only {ran} jq lines in audit-log.md");
}

// --- Links --------------------------------------------------------------------------------------

#[test]
fn the_index_links_every_page_and_relative_links_lead_somewhere() {
    let index = page("README.md");
    let link = regex::Regex::new(r"\]\(([^)#\s]+)(#[^)]*)?\)").unwrap();
    for (name, text) in pages() {
        if name != "README.md" {
            assert!(
                index.contains(&format!("]({name})")),
                "docs/README.md does not link {name}"
            );
        }
        for target in link.captures_iter(&text).map(|c| c[1].to_string()) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let path = docs_dir().join(&target);
            assert!(path.exists(), "docs/{name} links {target}, which does not exist");
        }
    }
}

/// The markdown files a user reads: the README, docs/ and the READMEs of installer/, systemd/ and
/// examples/, relative to the repository.
fn user_markdown() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for path in entries.map(|e| e.unwrap().path()) {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![repo().join("README.md")];
    for dir in ["docs", "installer", "systemd", "examples"] {
        walk(&repo().join(dir), &mut files);
    }
    files.sort();
    files
}

#[test]
fn no_link_in_the_users_documentation_leaves_the_repository() {
    let root = repo().canonicalize().unwrap();
    let link = regex::Regex::new(r"\]\(([^)#\s]*)(#[^)]*)?\)").unwrap();
    let files = user_markdown();
    assert!(files.len() >= 12, "found only {files:?}");
    let mut links = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(repo()).unwrap_or(&file).display().to_string();
        for phrase in ["SPEC.md", "SPEC §", "../shared"] {
            assert!(
                !text.contains(phrase),
                "{name} mentions {phrase}, which a user's clone does not have"
            );
        }
        for target in link.captures_iter(&text).map(|c| c[1].to_string()) {
            if target.is_empty() {
                continue; // an anchor on the same page
            }
            assert!(!target.contains(':'), "{name} links {target}, outside the repository");
            let path = file.parent().unwrap().join(&target);
            let resolved = path
                .canonicalize()
                .unwrap_or_else(|e| panic!("{name} links {target}: {e}"));
            assert!(
                resolved.starts_with(&root),
                "{name} links {target}, outside the repository"
            );
            links += 1;
        }
    }
    assert!(links >= 20, "only {links} links checked");
}

// --- Install routes -----------------------------------------------------------------------------

/// install-kubeadm.md's kubelet wiring (the kubelet-config ConfigMap line, the kubeadm patch)
/// names the socket the installed configuration listens on, and the doctor lines it quotes are
/// built from the product's own words.
#[test]
fn the_kubeadm_page_wires_kubelet_to_the_installed_socket_and_quotes_doctor() {
    let installed: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(repo().join("installer/config.yaml")).unwrap()).unwrap();
    let listen = installed["listen"].as_str().unwrap();
    let text = page("install-kubeadm.md");
    let wiring: Vec<Block> = blocks(&text)
        .into_iter()
        .filter(|b| b.lang == "yaml" && b.text.contains("imageServiceEndpoint"))
        .collect();
    assert!(wiring.len() >= 2, "the ConfigMap line and the kubeadm patch");
    for block in &wiring {
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&block.text).unwrap();
        assert_eq!(
            doc["imageServiceEndpoint"].as_str(),
            Some(listen),
            "install-kubeadm.md:{}",
            block.line
        );
    }
    for needle in [
        "kubectl -n kube-system edit configmap kubelet-config",
        "kubeadm upgrade node phase kubelet-config",
        "kubeletconfiguration+merge.yaml",
        "kubeadm upgrade node --patches",
    ] {
        assert!(text.contains(needle), "install-kubeadm.md lacks {needle:?}");
    }

    // Every inline quote in "Check the node" that reads as a message is made of the code's phrases.
    let corpus = code_corpus();
    let check = &text[text.find("## Check the node").unwrap()..text.find("Decide an image by hand").unwrap()];
    let mut quoted = 0;
    for quote in check.split('`').skip(1).step_by(2) {
        // Fenced commands and flags are held to the product by other tests.
        let command = quote.contains('\n') || quote.starts_with("pullgate ") || quote.starts_with('-');
        if command || quote.split_whitespace().count() < 3 {
            continue;
        }
        quoted += 1;
        // The values a node fills in are the installed socket and kubeadm's file.
        let template = quote.replace(listen, "…").replace("/var/lib/kubelet/config.yaml", "…");
        for phrase in phrases(&template) {
            assert!(
                corpus.contains(&phrase),
                "install-kubeadm.md quotes {quote:?}: the code does not say {phrase:?}"
            );
        }
    }
    assert!(quoted >= 5, "only {quoted} quoted doctor messages");
}
