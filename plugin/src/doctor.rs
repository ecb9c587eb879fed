//! `pullgate doctor`: checks the node the way an operator would before trusting pullgate with
//! kubelet's pulls — the sockets and their permissions, containerd behind pullgate, kubelet in
//! front of it, the policy, the trust material's expiry and the audit log.
//!
//! Every check runs even when an earlier one failed, and each says in one line what it found
//! and, when something is wrong, how to fix it. Nothing here changes the node. Every path comes
//! from [`Options`] or the configuration, so the checks run as well against a temp dir.

use std::{
    fmt, fs, io,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Component, Path, PathBuf},
    time::Duration,
};

use jiff::{SignedDuration, Timestamp};
use nix::unistd::AccessFlags;
use sigstore_trust_root::{trusted_root::CertChain, TrustedRoot};
use sigstore_types::TimeRange;
use x509_cert::{der::Decode, Certificate};

use crate::{
    config::Config,
    cri::Upstream,
    policy::{AuthorityKind, Policy, PolicyErrors, Tlog, MAX_TRUSTED_ROOT_BYTES},
};

#[cfg(test)]
mod tests;

/// Where the configuration is when neither `--config` nor `PULLGATE_CONFIG` says (SPEC §3).
pub const DEFAULT_CONFIG: &str = "/etc/pullgate/config.yaml";

/// Where kubeadm writes kubelet's `KubeletConfiguration`.
pub const DEFAULT_KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";

/// Where kubelet's systemd drop-ins, and so its command-line flags, live.
pub const DEFAULT_KUBELET_DROPINS: &str = "/etc/systemd/system/kubelet.service.d";

/// How long containerd has to answer CRI `Version`.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// Trust material that expires sooner than this is worth a warning: time to fetch a new root.
const EXPIRY_WARNING: SignedDuration = SignedDuration::from_hours(30 * 24);

/// The CRI API version pullgate speaks to containerd.
const CRI_API_VERSION: &str = "v1";

/// What to check: pullgate's configuration and where kubelet's wiring is written down.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    /// kubelet's `KubeletConfiguration` YAML, searched for `imageServiceEndpoint`.
    pub kubelet_config: PathBuf,
    /// kubelet's systemd drop-in directory, whose `*.conf` files are searched for
    /// `--image-service-endpoint`.
    pub kubelet_dropins: PathBuf,
}

/// How bad one finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Works today, needs attention soon.
    Warn,
    /// Broken now: pulls fail, or are not verified.
    Fail,
}

/// One finding, printed as one line: `ok   <what>`, `warn <what> — fix: <how>` or
/// `FAIL <what is wrong> — fix: <how>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub level: Level,
    pub message: String,
    pub fix: Option<String>,
}

/// Every finding, in the order the checks ran.
#[derive(Debug, Clone)]
pub struct Report {
    pub checks: Vec<Check>,
    /// The configuration could not be read, so nothing else was checked.
    pub config_unreadable: bool,
}

/// Runs every check and collects what each found.
pub async fn run(options: &Options) -> Report {
    let config = match Config::load(&options.config) {
        Ok(config) => config,
        Err(error) => {
            return Report {
                checks: vec![config_unreadable(&options.config, &error)],
                config_unreadable: true,
            }
        }
    };
    let policy = Policy::load(&config.policy);
    let mut checks = vec![
        Check::ok(format!("config {} parses", options.config.display())),
        listen_socket(&config).await,
        listen_directory(&config.listen),
        upstream(&config.upstream).await,
        kubelet_wiring(&config, &options.kubelet_config, &options.kubelet_dropins),
        policy_loads(&config.policy, &policy),
    ];
    checks.extend(trust_material(&config.policy, policy.as_ref().ok(), Timestamp::now()));
    checks.push(audit_log(&config.audit.path));
    Report {
        checks,
        config_unreadable: false,
    }
}

// === impl Check ===

impl Check {
    pub fn ok(message: impl Into<String>) -> Self {
        Self {
            level: Level::Ok,
            message: one_line(message.into()),
            fix: None,
        }
    }

    pub fn warn(message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            level: Level::Warn,
            message: one_line(message.into()),
            fix: Some(one_line(fix.into())),
        }
    }

    pub fn fail(message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            level: Level::Fail,
            message: one_line(message.into()),
            fix: Some(one_line(fix.into())),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        write!(f, "{label} {}", self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, " — fix: {fix}")?;
        }
        Ok(())
    }
}

// === impl Report ===

impl Report {
    /// 0 when nothing failed, 1 when something did, 2 when the configuration could not be read.
    pub fn exit_code(&self) -> u8 {
        if self.config_unreadable {
            2
        } else if self.checks.iter().any(|c| c.level == Level::Fail) {
            1
        } else {
            0
        }
    }
}

impl fmt::Display for Report {
    /// One line per check.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            writeln!(f, "{check}")?;
        }
        Ok(())
    }
}

/// Why the configuration could not be read, and what to do about it.
fn config_unreadable(path: &Path, error: &crate::config::ConfigError) -> Check {
    let fix = match error {
        crate::config::ConfigError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound => {
            "write the configuration (SPEC §3), or name it with --config PATH or PULLGATE_CONFIG".to_string()
        }
        _ => format!(
            "correct {}: `pullgate serve` refuses it too; nothing else was checked",
            path.display()
        ),
    };
    Check::fail(format!("config cannot be read: {error}"), fix)
}

/// The socket kubelet connects to: there, a socket, something listening, with the configured
/// permission bits and none for other users beyond them.
async fn listen_socket(config: &Config) -> Check {
    let path = &config.listen;
    let start = "start pullgate (systemctl start pullgate.socket, or pullgate serve --config …)";
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Check::fail(
                format!(
                    "listen socket {} does not exist: pullgate is not running",
                    path.display()
                ),
                start,
            )
        }
        Err(e) => return Check::fail(format!("listen socket {}: {e}", path.display()), "run doctor as root"),
    };
    if !meta.file_type().is_socket() {
        return Check::fail(
            format!("listen {} is not a socket", path.display()),
            format!("remove it, or set listen: to another path, then {start}"),
        );
    }
    let mode = meta.permissions().mode() & 0o7777;
    let wanted = config.socket.mode;
    if mode != wanted {
        let others = if mode & !wanted & 0o007 != 0 {
            ": other users get access the configuration does not give them"
        } else {
            ""
        };
        return Check::fail(
            format!(
                "listen socket {} has mode {mode:04o}, socket.mode says {wanted:04o}{others}",
                path.display()
            ),
            format!(
                "chmod {wanted:04o} {} (or restart pullgate, which sets socket.mode when it binds; \
                 with socket activation set SocketMode={wanted:04o} in pullgate.socket)",
                path.display()
            ),
        );
    }
    match tokio::time::timeout(UPSTREAM_TIMEOUT, tokio::net::UnixStream::connect(path)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Check::fail(
                format!("cannot connect to listen socket {}: {e}", path.display()),
                "run doctor as root (kubelet's user)",
            )
        }
        Ok(Err(e)) => {
            return Check::fail(
                format!(
                    "nothing answers on listen socket {} ({e}): pullgate is not running, the socket is stale",
                    path.display()
                ),
                start,
            )
        }
        Err(_) => {
            return Check::fail(
                format!(
                    "listen socket {} did not accept within {UPSTREAM_TIMEOUT:?}",
                    path.display()
                ),
                "check pullgate's log (journalctl -u pullgate)",
            )
        }
    }
    if wanted & 0o007 != 0 {
        return Check::warn(
            format!(
                "listen socket {} is open to every local user (socket.mode {wanted:04o}); only socket.allowedUids are served",
                path.display()
            ),
            "set socket.mode: \"0660\" and restart pullgate",
        );
    }
    Check::ok(format!(
        "listen socket {} answers, mode {mode:04o} as configured",
        path.display()
    ))
}

/// The directory the listen socket is in: whoever may write it may replace the socket.
fn listen_directory(listen: &Path) -> Check {
    let Some(dir) = listen.parent() else {
        return Check::fail(
            format!("listen {} has no directory", listen.display()),
            "set listen: to unix:///run/pullgate/pullgate.sock",
        );
    };
    match fs::metadata(dir) {
        Ok(meta) if meta.permissions().mode() & 0o002 != 0 => Check::fail(
            format!(
                "socket directory {} is writable by every user (mode {:04o}): anyone could replace pullgate's socket",
                dir.display(),
                meta.permissions().mode() & 0o7777
            ),
            format!(
                "chmod o-w {} (or set listen: to a socket in a directory of its own, like /run/pullgate)",
                dir.display()
            ),
        ),
        Ok(meta) => Check::ok(format!(
            "socket directory {} is not writable by other users (mode {:04o})",
            dir.display(),
            meta.permissions().mode() & 0o7777
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Check::ok(format!(
            "socket directory {} does not exist yet; pullgate creates it",
            dir.display()
        )),
        Err(e) => Check::fail(format!("socket directory {}: {e}", dir.display()), "run doctor as root"),
    }
}

/// containerd's CRI socket: there, and answering `Version` in time with CRI API v1.
async fn upstream(path: &Path) -> Check {
    let start_containerd = format!(
        "start containerd (systemctl start containerd), or set upstream: to its CRI socket (now {})",
        path.display()
    );
    match fs::metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {}
        Ok(_) => return Check::fail(format!("upstream {} is not a socket", path.display()), start_containerd),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Check::fail(
                format!("upstream containerd socket {} does not exist", path.display()),
                start_containerd,
            )
        }
        Err(e) => return Check::fail(format!("upstream {}: {e}", path.display()), "run doctor as root"),
    }
    let version = match Upstream::connect_lazy(path).version(UPSTREAM_TIMEOUT).await {
        Ok(version) => version,
        Err(status) => {
            return Check::fail(
                format!(
                    "containerd at {} did not answer CRI Version: {}",
                    path.display(),
                    status.message()
                ),
                "check that containerd runs with its CRI plugin enabled (\"cri\" not in disabled_plugins); journalctl -u containerd",
            )
        }
    };
    let found = format!(
        "{} {} (CRI API {})",
        version.runtime_name, version.runtime_version, version.runtime_api_version
    );
    if version.runtime_api_version != CRI_API_VERSION {
        return Check::fail(
            format!(
                "upstream {} runs {found}; pullgate needs CRI API {CRI_API_VERSION}",
                path.display()
            ),
            "upgrade containerd to 1.6 or later",
        );
    }
    Check::ok(format!("upstream {} answers: {found}", path.display()))
}

/// Where kubelet's image service endpoint was found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EndpointSource {
    /// `imageServiceEndpoint:` in the KubeletConfiguration file.
    Config(PathBuf),
    /// `--image-service-endpoint` in a systemd drop-in.
    Flag(PathBuf),
}

/// kubelet's image service endpoint is pullgate's listen socket, so its pulls are verified.
/// A command-line flag (from a drop-in) wins over the KubeletConfiguration file, as in kubelet.
fn kubelet_wiring(config: &Config, kubelet_config: &Path, dropins: &Path) -> Check {
    let listen = format!("unix://{}", config.listen.display());
    let add_line = format!(
        "add `imageServiceEndpoint: {listen}` to {} (or `--image-service-endpoint={listen}` to a drop-in in {}) and restart kubelet",
        kubelet_config.display(),
        dropins.display()
    );
    let from_flag = match endpoint_in_dropins(dropins) {
        Ok(found) => found,
        Err(e) => {
            return Check::fail(
                format!("kubelet drop-ins {}: {e}", dropins.display()),
                "run doctor as root",
            )
        }
    };
    let from_config = match endpoint_in_config(kubelet_config) {
        Ok(found) => found,
        Err(e) => {
            return Check::fail(
                format!("kubelet config {}: {e}", kubelet_config.display()),
                format!("correct it, then {add_line}"),
            )
        }
    };
    let Some((endpoint, source)) = from_flag
        .map(|(e, file)| (e, EndpointSource::Flag(file)))
        .or(from_config.map(|e| (e, EndpointSource::Config(kubelet_config.to_owned()))))
    else {
        return Check::fail(
            format!(
                "kubelet has no image service endpoint (none in {} or {}/*.conf): it pulls straight from its container runtime, bypassing verification",
                kubelet_config.display(),
                dropins.display()
            ),
            add_line,
        );
    };
    let (where_, set_it) = match &source {
        EndpointSource::Config(file) => (
            format!("imageServiceEndpoint in {}", file.display()),
            format!("set `imageServiceEndpoint: {listen}` in {} and restart kubelet", file.display()),
        ),
        EndpointSource::Flag(file) => (
            format!("--image-service-endpoint in {}", file.display()),
            format!(
                "set `--image-service-endpoint={listen}` in {}, then systemctl daemon-reload && systemctl restart kubelet",
                file.display()
            ),
        ),
    };
    let points_at = endpoint_path(&endpoint);
    if points_at.as_deref() == Some(normalize(&config.listen).as_path()) {
        return Check::ok(format!("kubelet pulls through pullgate: {where_} is {endpoint}"));
    }
    if points_at.as_deref() == Some(normalize(&config.upstream).as_path()) {
        return Check::fail(
            format!("kubelet's {where_} is containerd's socket {endpoint}: pulls bypass signature verification"),
            set_it,
        );
    }
    Check::fail(
        format!("kubelet's {where_} is {endpoint}, not pullgate's {listen}"),
        set_it,
    )
}

/// The last `--image-service-endpoint` in the `*.conf` drop-ins, read in systemd's (lexical)
/// order, with the file it is in. A missing directory holds none.
fn endpoint_in_dropins(dir: &Path) -> io::Result<Option<(String, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.map(|e| e.path()))
        .collect::<io::Result<Vec<_>>>()?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|ext| ext == "conf"))
        .collect();
    files.sort();
    let mut found = None;
    for file in files {
        let text = fs::read_to_string(&file)?;
        if let Some(endpoint) = image_service_flag(&text) {
            found = Some((endpoint, file));
        }
    }
    Ok(found)
}

/// The value of the last `--image-service-endpoint=V` (or `--image-service-endpoint V`) in a
/// unit file, skipping comments. Values end at whitespace or a quote, so the flag is found
/// inside `Environment="KUBELET_EXTRA_ARGS=…"` too.
fn image_service_flag(unit: &str) -> Option<String> {
    const FLAG: &str = "--image-service-endpoint";
    let mut found = None;
    for line in unit.lines() {
        let line = line.trim_start();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find(FLAG) {
            rest = &rest[at + FLAG.len()..];
            let value = match rest.chars().next() {
                Some('=') => &rest[1..],
                Some(c) if c.is_whitespace() => rest.trim_start(),
                _ => continue,
            };
            let value = value.trim_start_matches(['"', '\'']);
            let end = value
                .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                .unwrap_or(value.len());
            if end > 0 {
                found = Some(value[..end].to_string());
            }
        }
    }
    found
}

/// `imageServiceEndpoint` in a KubeletConfiguration file; a missing file names none.
fn endpoint_in_config(path: &Path) -> Result<Option<String>, String> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).map_err(|e| format!("not YAML: {e}"))?;
    match doc.get("imageServiceEndpoint") {
        None | Some(serde_yaml_ng::Value::Null) => Ok(None),
        Some(serde_yaml_ng::Value::String(s)) if s.is_empty() => Ok(None),
        Some(serde_yaml_ng::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err("imageServiceEndpoint is not a string".into()),
    }
}

/// The socket path a CRI endpoint names: `unix:///p` and a bare `/p` (which kubelet still
/// accepts) are `/p`; other schemes name no socket of this node.
fn endpoint_path(endpoint: &str) -> Option<PathBuf> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    path.starts_with('/').then(|| normalize(Path::new(path)))
}

/// `path` without repeated separators or `.` components, so equal sockets compare equal.
fn normalize(path: &Path) -> PathBuf {
    path.components().filter(|c| *c != Component::CurDir).collect()
}

/// The policy loads and validates, with its trusted root.
fn policy_loads(path: &Path, loaded: &Result<Policy, PolicyErrors>) -> Check {
    match loaded {
        Ok(policy) => {
            let rules = policy.rules().len();
            Check::ok(format!(
                "policy {} loads: {:?}, {rules} rule{}, hash {}",
                path.display(),
                policy.name(),
                if rules == 1 { "" } else { "s" },
                policy.hash()
            ))
        }
        Err(errors) => {
            let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
            Check::fail(
                format!("policy does not load: {}", all.join("; ")),
                format!(
                    "correct it (`pullgate policy check {}` lists every error), then reload pullgate (SIGHUP); a running pullgate keeps its last good policy",
                    path.display()
                ),
            )
        }
    }
}

/// Which kinds of trust material the policy's authorities cannot verify without.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TrustNeeds {
    /// Keyless: the certificate must chain to a Fulcio CA.
    ca: bool,
    /// Keyless: the certificate's SCT needs a CT log key.
    ctlog: bool,
    /// `tlog: required`: a Rekor entry must verify.
    tlog: bool,
    /// Keyless with `tlog: ignore`: the signing time can only come from a timestamp authority.
    tsa: bool,
}

/// The trust material the policy names is valid now and not about to expire, kind by kind.
///
/// When the policy does not load, its `spec.trustedRoot` and authorities are still read from
/// the YAML, so an expired root is reported beside the policy's other errors.
fn trust_material(policy_path: &Path, policy: Option<&Policy>, now: Timestamp) -> Vec<Check> {
    let (root_path, needs) = match policy {
        Some(policy) => (policy.trusted_root().map(Path::to_owned), needs_of_policy(policy)),
        None => match raw_trust_needs(policy_path) {
            Some(found) => found,
            None => return Vec::new(),
        },
    };
    let Some(root_path) = root_path else {
        // A keyless authority without a trusted root is a policy error, reported there.
        return match policy {
            Some(_) => vec![Check::ok("policy names no trustedRoot: key authorities only")],
            None => Vec::new(),
        };
    };
    let loaded = policy.and_then(Policy::trust).map(|t| Ok(t.root().clone()));
    let root = match loaded.unwrap_or_else(|| read_trusted_root(&root_path)) {
        Ok(root) => root,
        Err(e) => {
            return vec![Check::fail(
                format!("trusted root {}: {e}", root_path.display()),
                "install Sigstore's trusted_root.json there (the TUF target of that name) and reload pullgate",
            )]
        }
    };
    trust_expiry(&root_path, &root, needs, now)
}

/// The checks of each kind of trust material in `root`, at `now`.
fn trust_expiry(root_path: &Path, root: &TrustedRoot, needs: TrustNeeds, now: Timestamp) -> Vec<Check> {
    anchor_kinds(root, needs)
        .into_iter()
        .filter_map(|(kind, needed_because, windows)| expiry_of_kind(root_path, kind, needed_because, windows, now))
        .collect()
}

/// When the trust material `policy` needs stops being valid, in unix seconds, as
/// `pullgate_trust_material_expiry_timestamp_seconds` reports it: for each kind of anchor the
/// policy's authorities need, the end of the last one valid at `now` (what [`run`] warns
/// about), and the earliest of those. `+∞` when none of them ends (or nothing is needed); the
/// last end before `now`, or 0, when a needed kind has no valid anchor. `None` when the policy
/// has no trusted root.
pub fn trust_expiry_timestamp(policy: &Policy, now: Timestamp) -> Option<f64> {
    let trust = policy.trust()?;
    Some(expiry_timestamp(trust.root(), needs_of_policy(policy), now))
}

/// [`trust_expiry_timestamp`] of `root` for a policy that `needs` what it does.
fn expiry_timestamp(root: &TrustedRoot, needs: TrustNeeds, now: Timestamp) -> f64 {
    let end_of_kind = |windows: Vec<Result<Window, String>>| {
        // An anchor whose certificates do not parse verifies nothing.
        let windows: Vec<Window> = windows.into_iter().flatten().collect();
        let current: Vec<&Window> = windows.iter().filter(|w| w.contains(now)).collect();
        if current.is_empty() {
            let ended = windows.iter().filter_map(|w| w.end).filter(|end| *end < now).max();
            return ended.map_or(0.0, |end| end.as_second() as f64);
        }
        if current.iter().any(|w| w.end.is_none()) {
            return f64::INFINITY;
        }
        current
            .iter()
            .filter_map(|w| w.end)
            .max()
            .map_or(f64::INFINITY, |end| end.as_second() as f64)
    };
    anchor_kinds(root, needs)
        .into_iter()
        .filter(|(_, needed_because, _)| needed_because.is_some())
        .map(|(_, _, windows)| end_of_kind(windows))
        .fold(f64::INFINITY, f64::min)
}

/// Each kind of trust anchor in `root`: its name, why the policy needs it (`None` when it does
/// not), and the window of each anchor of that kind.
type AnchorKind = (&'static str, Option<&'static str>, Vec<Result<Window, String>>);

fn anchor_kinds(root: &TrustedRoot, needs: TrustNeeds) -> [AnchorKind; 4] {
    [
        (
            "Fulcio CA",
            needs.ca.then_some("keyless authorities need one"),
            root.certificate_authorities
                .iter()
                .map(|ca| certified_window(ca.valid_for.as_ref(), &ca.cert_chain))
                .collect(),
        ),
        (
            "Rekor log key",
            needs.tlog.then_some("authorities with tlog: required need one"),
            root.tlogs
                .iter()
                .map(|log| Ok(Window::of(log.public_key.valid_for.as_ref())))
                .collect(),
        ),
        (
            "CT log key",
            // A root that lists no CT log asks for no SCT (SPEC §4); one that lists some needs
            // a key valid now.
            (needs.ctlog && !root.ctlogs.is_empty())
                .then_some("keyless authorities need one for the certificate's SCT"),
            root.ctlogs
                .iter()
                .map(|log| Ok(Window::of(log.public_key.valid_for.as_ref())))
                .collect(),
        ),
        (
            "timestamp authority",
            needs.tsa.then_some("keyless authorities with tlog: ignore need one"),
            root.timestamp_authorities
                .iter()
                .map(|tsa| certified_window(tsa.valid_for.as_ref(), &tsa.cert_chain))
                .collect(),
        ),
    ]
}

/// When one trust anchor may be used: its `validFor`, narrowed by its certificates' validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    start: Option<Timestamp>,
    end: Option<Timestamp>,
}

// === impl Window ===

impl Window {
    fn of(valid_for: Option<&TimeRange>) -> Self {
        Self {
            start: valid_for.map(|r| r.start),
            end: valid_for.and_then(|r| r.end),
        }
    }

    fn contains(&self, at: Timestamp) -> bool {
        self.start.is_none_or(|s| s <= at) && self.end.is_none_or(|e| at <= e)
    }

    /// Narrowed to also lie within `[start, end]`.
    fn narrow(self, start: Timestamp, end: Timestamp) -> Self {
        Self {
            start: Some(self.start.map_or(start, |s| s.max(start))),
            end: Some(self.end.map_or(end, |e| e.min(end))),
        }
    }
}

/// A CA's or TSA's window: its `validFor`, within the notBefore/notAfter of every certificate
/// of its chain, since a chain with an expired certificate no longer verifies anything new.
fn certified_window(valid_for: Option<&TimeRange>, chain: &CertChain) -> Result<Window, String> {
    let mut window = Window::of(valid_for);
    for (i, entry) in chain.certificates.iter().enumerate() {
        let cert = Certificate::from_der(entry.raw_bytes.as_bytes())
            .map_err(|e| format!("certificate {i} of its chain does not parse: {e}"))?;
        let validity = &cert.tbs_certificate.validity;
        let time = |t: x509_cert::time::Time| {
            Timestamp::try_from(t.to_system_time()).map_err(|e| format!("certificate {i}: {e}"))
        };
        window = window.narrow(time(validity.not_before)?, time(validity.not_after)?);
    }
    Ok(window)
}

/// One kind of trust anchor: FAIL when the policy needs it and none is valid now, warn when
/// the last valid one ends within [`EXPIRY_WARNING`]. `None` for a kind neither present nor
/// needed.
fn expiry_of_kind(
    root_path: &Path,
    kind: &str,
    needed_because: Option<&str>,
    windows: Vec<Result<Window, String>>,
    now: Timestamp,
) -> Option<Check> {
    let root = root_path.display();
    let renew = format!(
        "install a current trusted_root.json at {root} (Sigstore's TUF target of that name) and reload pullgate (SIGHUP)"
    );
    if let Some(e) = windows.iter().find_map(|w| w.as_ref().err()) {
        return Some(Check::fail(format!("trusted root {root}: a {kind}: {e}"), renew));
    }
    let windows: Vec<Window> = windows.into_iter().flatten().collect();
    if windows.is_empty() {
        return needed_because.map(|why| {
            Check::fail(
                format!("trusted root {root} names no {kind}; {why}"),
                format!("use a trusted_root.json that lists one: {renew}"),
            )
        });
    }
    let current: Vec<&Window> = windows.iter().filter(|w| w.contains(now)).collect();
    if current.is_empty() {
        let ended = windows.iter().filter_map(|w| w.end).filter(|e| *e < now).max();
        let state = match ended {
            Some(end) => format!("the last one expired {end}"),
            None => "none has started yet".to_string(),
        };
        let message = format!("no {kind} in trusted root {root} is valid now: {state}");
        return Some(match needed_because {
            Some(why) => Check::fail(format!("{message}; {why}"), renew),
            None => Check::warn(format!("{message} (no authority of the policy needs one)"), renew),
        });
    }
    let count = current.len();
    let plural = if count == 1 { "" } else { "s" };
    // A window with no end never expires; otherwise what counts is the last to go.
    let last_end = if current.iter().any(|w| w.end.is_none()) {
        None
    } else {
        current.iter().filter_map(|w| w.end).max()
    };
    Some(match last_end {
        None => Check::ok(format!("trust: {count} {kind}{plural} valid now, with no end date")),
        Some(end) if end.duration_since(now) < EXPIRY_WARNING => {
            let days = end.duration_since(now).as_secs() / 86_400;
            Check::warn(
                format!("trust: the last valid {kind} in {root} expires {end} (in {days} days)"),
                format!("before then, {renew}"),
            )
        }
        Some(end) => Check::ok(format!("trust: {count} {kind}{plural} valid now, until {end}")),
    })
}

/// What the authorities of a loaded policy need from the trusted root.
fn needs_of_policy(policy: &Policy) -> TrustNeeds {
    needs_of(
        policy
            .rules()
            .iter()
            .flat_map(|rule| rule.authorities())
            .map(|a| (matches!(a.kind, AuthorityKind::Keyless(_)), a.tlog)),
    )
}

/// What authorities, as `(keyless, tlog)`, need from the trusted root.
fn needs_of(authorities: impl Iterator<Item = (bool, Tlog)>) -> TrustNeeds {
    authorities.fold(TrustNeeds::default(), |mut needs, (keyless, tlog)| {
        needs.ca |= keyless;
        needs.ctlog |= keyless;
        needs.tlog |= tlog == Tlog::Required;
        needs.tsa |= keyless && tlog == Tlog::Ignore;
        needs
    })
}

/// `spec.trustedRoot` (resolved against the policy's directory) and what the authorities need,
/// read leniently from a policy file that does not validate. `None` when it is not even YAML.
fn raw_trust_needs(policy_path: &Path) -> Option<(Option<PathBuf>, TrustNeeds)> {
    let text = fs::read_to_string(policy_path).ok()?;
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).ok()?;
    let spec = doc.get("spec")?;
    let base = policy_path.parent().unwrap_or(Path::new("."));
    let root = spec.get("trustedRoot").and_then(|v| v.as_str()).map(|p| base.join(p));
    let authorities = spec
        .get("rules")
        .and_then(|r| r.as_sequence())
        .into_iter()
        .flatten()
        .filter_map(|rule| rule.get("authorities").and_then(|a| a.as_sequence()))
        .flatten()
        .map(|authority| {
            let keyless = authority.get("keyless").is_some();
            let tlog = match authority.get("tlog").and_then(|t| t.as_str()) {
                Some("required") => Tlog::Required,
                Some("ignore") => Tlog::Ignore,
                Some(_) => Tlog::Optional,
                None if keyless => Tlog::Required,
                None => Tlog::Optional,
            };
            (keyless, tlog)
        });
    Some((root, needs_of(authorities)))
}

/// Reads a trusted root the policy could not load for us, bounded as the policy bounds it.
fn read_trusted_root(path: &Path) -> Result<TrustedRoot, String> {
    let meta = fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_TRUSTED_ROOT_BYTES {
        return Err(format!("larger than {MAX_TRUSTED_ROOT_BYTES} bytes"));
    }
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    TrustedRoot::from_json(&text).map_err(|e| format!("not a trusted root: {e}"))
}

/// The audit log: its directory is (or can be made) writable and only by its owners, and the
/// log, if it exists yet, is writable and not readable by every user.
fn audit_log(path: &Path) -> Check {
    let Some(dir) = path.parent() else {
        return Check::fail(
            format!("audit.path {} has no directory", path.display()),
            "set audit.path: to /var/log/pullgate/audit.jsonl",
        );
    };
    let fix_dir = format!(
        "create {} writable by root only (install -d -m 0750 {}), or set audit.path: elsewhere",
        dir.display(),
        dir.display()
    );
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            return Check::fail(format!("audit directory {} is not a directory", dir.display()), fix_dir)
        }
        Ok(meta) if meta.permissions().mode() & 0o002 != 0 => {
            return Check::fail(
                format!(
                    "audit directory {} is writable by every user: anyone could replace the log",
                    dir.display()
                ),
                format!("chmod o-w {}", dir.display()),
            )
        }
        Ok(_) => {
            if let Err(e) = writable(dir) {
                return Check::fail(
                    format!("audit directory {} is not writable: {e}", dir.display()),
                    fix_dir,
                );
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let existing = dir.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/"));
            return match writable(existing) {
                Ok(()) => Check::ok(format!(
                    "audit directory {} does not exist yet; pullgate can create it in {}",
                    dir.display(),
                    existing.display()
                )),
                Err(e) => Check::fail(
                    format!(
                        "audit directory {} does not exist and {} is not writable: {e}",
                        dir.display(),
                        existing.display()
                    ),
                    fix_dir,
                ),
            };
        }
        Err(e) => return Check::fail(format!("audit directory {}: {e}", dir.display()), "run doctor as root"),
    }
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Check::ok(format!(
                "audit directory {} is writable; no log written yet",
                dir.display()
            ))
        }
        Err(e) => return Check::fail(format!("audit log {}: {e}", path.display()), "run doctor as root"),
    };
    let mode = meta.permissions().mode() & 0o7777;
    if !meta.is_file() {
        return Check::fail(
            format!("audit log {} is not a regular file", path.display()),
            "move it away, or set audit.path: elsewhere",
        );
    }
    if mode & 0o004 != 0 {
        return Check::fail(
            format!(
                "audit log {} is readable by every user (mode {mode:04o}): it names images, pods and namespaces",
                path.display()
            ),
            format!("chmod o-r {} (pullgate creates it 0640)", path.display()),
        );
    }
    if let Err(e) = writable(path) {
        return Check::fail(
            format!("audit log {} is not writable: {e}", path.display()),
            format!("chown root {} and chmod u+w it", path.display()),
        );
    }
    Check::ok(format!("audit log {} is writable, mode {mode:04o}", path.display()))
}

/// Whether this process may write `path` (for a directory: create entries in it), as the
/// kernel decides, read-only mounts included.
fn writable(path: &Path) -> io::Result<()> {
    let wanted = if path.is_dir() {
        AccessFlags::W_OK | AccessFlags::X_OK
    } else {
        AccessFlags::W_OK
    };
    nix::unistd::access(path, wanted).map_err(io::Error::from)
}

/// Messages from other crates may hold newlines; a check is one line.
fn one_line(text: String) -> String {
    if text.contains('\n') {
        text.split('\n')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        text
    }
}
