//! Registry authentication with the credentials kubelet sent in `PullImageRequest.auth`:
//! HTTP basic, and the bearer-token challenge flow of the distribution spec.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use reqwest::header;
use sha2::{Digest as _, Sha256};

use super::{outcome_of, read_bounded, unavailable, DockerConfig, Endpoint, RegistryError, Session};
use crate::metrics::RegistryOutcome;

/// Token responses larger than this are refused.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

/// How long a token lives when the realm does not say (the token spec's default), and the
/// longest pullgate keeps any answer, whatever the realm says.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
const MAX_REMEMBERED: Duration = Duration::from_secs(3600);
/// A token is dropped this long before it expires, so no request is sent with a dying one.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// How many answers are remembered; beyond that the soonest to expire is forgotten.
const MAX_ANSWERS: usize = 1024;

/// Registry credentials from the CRI `AuthConfig`. Never printed: `Debug` hides the secrets.
#[derive(Clone, Default)]
pub struct Credentials {
    basic: Option<(String, String)>,
    identity_token: Option<String>,
    registry_token: Option<String>,
    /// `AuthConfig.server_address` as containerd reads it: the `host[:port]` of the URL kubelet
    /// named (empty when it names none, so no host matches); `None` when kubelet named nothing.
    server: Option<String>,
    /// Not part of what is sent: only what messages say about a refusal.
    origin: Origin,
}

/// Where a request's credentials came from: kubelet, for the image's own registry; a Docker
/// config (`dockerConfig`) for another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Origin {
    /// `PullImageRequest.auth` (for `pullgate verify`, its stand-in).
    #[default]
    Kubelet,
    /// The key `key` of the Docker config `file`.
    DockerConfig { file: PathBuf, key: String },
    /// The Docker config `file` has no key for the registry; `None` when none is read.
    NotInDockerConfig(Option<PathBuf>),
}

impl Origin {
    /// Why a registry that answered 401 got nowhere with these credentials, for the message.
    pub fn refusal(&self) -> String {
        match self {
            Origin::Kubelet => "the registry refused the credentials kubelet sent (or the lack of them)".to_string(),
            Origin::DockerConfig { file, key } => {
                format!("the registry refused the credentials of {key:?} in {}", file.display())
            }
            Origin::NotInDockerConfig(Some(file)) => {
                format!("the registry wants credentials and {} has none for it", file.display())
            }
            Origin::NotInDockerConfig(None) => "the registry wants credentials and no dockerConfig is read".to_string(),
        }
    }
}

impl Credentials {
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Reads kubelet's `AuthConfig`: `username`/`password`, or `auth` (base64 `user:pass`),
    /// `identity_token` (an OAuth2 refresh token) and `registry_token` (a bearer token).
    pub fn from_cri(auth: Option<&pullgate_proto::cri::AuthConfig>) -> Self {
        let Some(auth) = auth else { return Self::default() };
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let basic = if !auth.username.is_empty() {
            Some((auth.username.clone(), auth.password.clone()))
        } else {
            BASE64
                .decode(auth.auth.trim())
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|pair| pair.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())))
        };
        // containerd parses it as a URL and compares its host: a name without a scheme has none.
        let server = non_empty(&auth.server_address).map(|address| {
            reqwest::Url::parse(&address)
                .ok()
                .and_then(|url| {
                    let host = url.host_str()?.to_ascii_lowercase();
                    Some(url.port().map_or_else(|| host.clone(), |p| format!("{host}:{p}")))
                })
                .unwrap_or_default()
        });
        Self {
            basic,
            identity_token: non_empty(&auth.identity_token),
            registry_token: non_empty(&auth.registry_token),
            server,
            origin: Origin::Kubelet,
        }
    }

    /// What may be sent to `host` (`host[:port]` of a request): nothing when these credentials
    /// name another server, as containerd's CRI withholds them, mirrors included.
    pub(super) fn for_host(&self, host: &str) -> Self {
        match &self.server {
            Some(server) if !server.eq_ignore_ascii_case(host) => Self {
                origin: self.origin.clone(),
                ..Self::default()
            },
            _ => self.clone(),
        }
    }

    /// The credentials Docker config `config` holds for repository `path` on registry `host`
    /// (canonical `host[:port]`), by kubelet's key matching (see [`DockerConfig`]); anonymous
    /// when it holds none. The one way a Docker config is read, by `serve`'s `dockerConfig` and
    /// `pullgate verify --docker-config` alike.
    pub fn from_docker_config(config: &DockerConfig, host: &str, path: &str) -> Self {
        config.credentials_for(host, path)
    }

    /// These credentials, as found under `key` in the Docker config `file`.
    pub(super) fn found_in(self, file: &Path, key: &str) -> Self {
        Self {
            origin: Origin::DockerConfig {
                file: file.to_owned(),
                key: key.to_string(),
            },
            ..self
        }
    }

    /// No credentials, because the Docker config `file` (if any is read) has no key for the
    /// registry.
    pub(super) fn not_in_docker_config(file: Option<&Path>) -> Self {
        Self {
            origin: Origin::NotInDockerConfig(file.map(Path::to_owned)),
            ..Self::default()
        }
    }

    /// Whether these credentials hold nothing to send.
    pub fn is_anonymous(&self) -> bool {
        self.basic.is_none() && self.identity_token.is_none() && self.registry_token.is_none()
    }

    /// The user name of basic credentials, if they are that.
    pub fn username(&self) -> Option<&str> {
        self.basic.as_ref().map(|(u, _)| u.as_str())
    }

    /// Where these credentials came from, as messages name it.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn basic(username: &str, password: &str) -> Self {
        Self {
            basic: Some((username.into(), password.into())),
            ..Self::default()
        }
    }

    /// A digest of everything the credentials hold, so answers earned with one set are never
    /// sent with another. The secrets themselves are not kept for this.
    pub(super) fn fingerprint(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        let mut field = |value: Option<&str>| {
            let value = value.unwrap_or_default();
            hash.update((value.len() as u64).to_be_bytes());
            hash.update(value.as_bytes());
        };
        field(self.basic.as_ref().map(|(u, _)| u.as_str()));
        field(self.basic.as_ref().map(|(_, p)| p.as_str()));
        field(self.identity_token.as_deref());
        field(self.registry_token.as_deref());
        field(self.server.as_deref());
        hash.finalize().into()
    }

    fn basic_header(&self) -> Option<String> {
        self.basic
            .as_ref()
            .map(|(u, p)| format!("Basic {}", BASE64.encode(format!("{u}:{p}"))))
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.basic.as_ref().map(|(u, _)| u))
            .field("identity_token", &self.identity_token.is_some())
            .field("registry_token", &self.registry_token.is_some())
            .field("origin", &self.origin)
            .finish()
    }
}

/// A parsed `WWW-Authenticate` header: the scheme and its `key="value"` parameters.
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    scheme: String,
    params: Vec<(String, String)>,
}

impl Challenge {
    fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let mut params = Vec::new();
        let mut rest = rest.trim();
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=')?;
            let after = after.trim_start();
            let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            } else {
                after.split_once(',').map_or((after, ""), |(v, r)| (v, r))
            };
            params.push((key.trim().to_ascii_lowercase(), value.to_string()));
            rest = remainder.trim_start().trim_start_matches(',').trim_start();
        }
        Some(Self {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }

    fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The `Authorization` headers that answered a registry's challenge, remembered per registry,
/// repository and credentials until the token expires, so a pull does not pay the 401 and the
/// token request again. A header is only ever sent with the credentials that earned it.
#[derive(Default)]
pub(super) struct Answers(Mutex<HashMap<AnswerKey, Remembered>>);

/// (registry base URL, repository, fingerprint of the credentials).
pub(super) type AnswerKey = (String, String, [u8; 32]);

struct Remembered {
    authorization: String,
    until: Instant,
}

/// The header to retry with, and how long it may be used.
pub(super) struct Answer {
    pub authorization: String,
    pub lifetime: Duration,
}

impl Answers {
    /// The key a session's answers are remembered under.
    pub(super) fn key(base: &str, repository: &str, credentials: &Credentials) -> AnswerKey {
        (base.to_string(), repository.to_string(), credentials.fingerprint())
    }

    /// The remembered header for `key`, if it has not expired.
    pub(super) fn get(&self, key: &AnswerKey) -> Option<String> {
        let entries = self.0.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|r| r.until > Instant::now())
            .map(|r| r.authorization.clone())
    }

    /// Remembers `answer` for `key`, unless it would expire too soon to be worth it.
    pub(super) fn remember(&self, key: AnswerKey, answer: &Answer) {
        let Some(usable) = answer.lifetime.min(MAX_REMEMBERED).checked_sub(EXPIRY_MARGIN) else {
            return;
        };
        let now = Instant::now();
        let mut entries = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ANSWERS && !entries.contains_key(&key) {
            entries.retain(|_, r| r.until > now);
            if entries.len() >= MAX_ANSWERS {
                let soonest = entries.iter().min_by_key(|(_, r)| r.until).map(|(k, _)| k.clone());
                if let Some(soonest) = soonest {
                    entries.remove(&soonest);
                }
            }
        }
        entries.insert(
            key,
            Remembered {
                authorization: answer.authorization.clone(),
                until: now + usable,
            },
        );
    }

    /// Forgets the header for `key`: the registry refused it.
    pub(super) fn forget(&self, key: &AnswerKey) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// Answers a 401 challenge: the `Authorization` header value to retry with, and for how long it
/// may be used again.
pub(super) async fn answer(
    session: &Session<'_>,
    endpoint: &Endpoint,
    www_authenticate: &str,
) -> Result<Answer, RegistryError> {
    let unauthorized =
        |why: &str| RegistryError::Unavailable(format!("{}: unauthorized: {why}", endpoint.route.origin));
    let challenge =
        Challenge::parse(www_authenticate).ok_or_else(|| unauthorized("unreadable WWW-Authenticate challenge"))?;
    // Headers made from kubelet's own credentials are as good as those credentials; they are
    // remembered as long as a token the realm does not date.
    let own = |authorization: String| Answer {
        authorization,
        lifetime: DEFAULT_TOKEN_LIFETIME,
    };
    match challenge.scheme.as_str() {
        "basic" => endpoint
            .credentials
            .basic_header()
            .map(own)
            .ok_or_else(|| match endpoint.credentials.origin() {
                Origin::Kubelet => unauthorized("registry wants credentials and none were sent"),
                other => unauthorized(&other.refusal()),
            }),
        "bearer" => {
            if let Some(token) = &endpoint.credentials.registry_token {
                return Ok(own(format!("Bearer {token}")));
            }
            let realm = challenge
                .param("realm")
                .ok_or_else(|| unauthorized("bearer challenge without a realm"))?;
            let realm = reqwest::Url::parse(realm).map_err(|_| unauthorized("bearer realm is not a URL"))?;
            let realm_host = match realm.port() {
                Some(p) => format!("{}:{p}", realm.host_str().unwrap_or_default()),
                None => realm.host_str().unwrap_or_default().to_string(),
            };
            if realm.scheme() != "https" && !(realm.scheme() == "http" && session.routes.allows_plain_http(&realm_host))
            {
                return Err(unauthorized(
                    "token realm is not HTTPS and its host is not marked insecure",
                ));
            }
            let scope = format!("repository:{}:pull", session.repository);
            let (token, lifetime) = fetch_token(session, endpoint, &realm, challenge.param("service"), &scope).await?;
            Ok(Answer {
                authorization: format!("Bearer {token}"),
                lifetime,
            })
        }
        other => Err(unauthorized(&format!("unsupported auth scheme {other:?}"))),
    }
}

/// Gets a pull token and its lifetime from the realm: an OAuth2 refresh-token POST when kubelet
/// sent an identity token, otherwise the classic GET with basic credentials (or anonymously).
async fn fetch_token(
    session: &Session<'_>,
    endpoint: &Endpoint,
    realm: &reqwest::Url,
    service: Option<&str>,
    scope: &str,
) -> Result<(String, Duration), RegistryError> {
    let url = realm.as_str();
    let request = if let Some(refresh) = &endpoint.credentials.identity_token {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("client_id", "pullgate"),
            ("scope", scope),
        ];
        if let Some(service) = service {
            form.push(("service", service));
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", url_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        endpoint
            .route
            .client
            .post(realm.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
    } else {
        let mut get_url = realm.clone();
        {
            let mut query = get_url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
        }
        let mut request = endpoint.route.client.get(get_url);
        if let Some(basic) = endpoint.credentials.basic_header() {
            request = request.header(header::AUTHORIZATION, basic);
        }
        request
    };
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            session.registries.count(RegistryOutcome::Unavailable);
            return Err(unavailable(url, &e));
        }
    };
    session.registries.count(outcome_of(response.status(), &[]));
    if !response.status().is_success() {
        return Err(RegistryError::Unavailable(format!(
            "{url}: token request refused: HTTP {}",
            response.status()
        )));
    }
    let body = read_bounded(response, MAX_TOKEN_RESPONSE_BYTES, url).await?;
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let parsed: TokenResponse = serde_json::from_slice(&body)
        .map_err(|e| RegistryError::Unavailable(format!("{url}: token response is not JSON: {e}")))?;
    let lifetime = parsed.expires_in.map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
    let token = parsed
        .token
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| RegistryError::Unavailable(format!("{url}: token response has no token")))?;
    Ok((token, lifetime))
}

pub(super) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c.param("service"), Some("registry.docker.io"));
        assert_eq!(c.param("scope"), Some("repository:library/nginx:pull"));
    }

    #[test]
    fn parses_basic_challenge_and_garbage() {
        let c = Challenge::parse(r#"Basic realm="basic-realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.param("realm"), Some("basic-realm"));
        assert!(Challenge::parse(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn credentials_from_cri_auth_field() {
        let auth = pullgate_proto::cri::AuthConfig {
            auth: BASE64.encode("alice:s3:cr3t"),
            ..Default::default()
        };
        let creds = Credentials::from_cri(Some(&auth));
        assert_eq!(creds.basic, Some(("alice".into(), "s3:cr3t".into())));
        assert!(!format!("{creds:?}").contains("s3:cr3t"));
        let explicit = pullgate_proto::cri::AuthConfig {
            username: "bob".into(),
            password: "pw".into(),
            ..Default::default()
        };
        assert_eq!(
            Credentials::from_cri(Some(&explicit)).basic_header().unwrap(),
            format!("Basic {}", BASE64.encode("bob:pw"))
        );
    }

    fn bearer(token: &str, lifetime: Duration) -> Answer {
        Answer {
            authorization: format!("Bearer {token}"),
            lifetime,
        }
    }

    #[test]
    fn answers_are_kept_per_repository_and_credentials() {
        let answers = Answers::default();
        let alice = Credentials::basic("alice", "pw");
        let key = Answers::key("https://r.example", "team/app", &alice);
        answers.remember(key.clone(), &bearer("t1", Duration::from_secs(300)));
        assert_eq!(answers.get(&key).as_deref(), Some("Bearer t1"));

        // Another password, another repository, another registry, no credentials: none of
        // them may be sent alice's token.
        let others = [
            Answers::key("https://r.example", "team/app", &Credentials::basic("alice", "other")),
            Answers::key("https://r.example", "team/other", &alice),
            Answers::key("https://s.example", "team/app", &alice),
            Answers::key("https://r.example", "team/app", &Credentials::anonymous()),
        ];
        for other in &others {
            assert_eq!(answers.get(other), None, "{other:?}");
        }
        // The fingerprint does not run fields together: "ab"+"c" is not "a"+"bc".
        assert_ne!(
            Credentials::basic("ab", "c").fingerprint(),
            Credentials::basic("a", "bc").fingerprint()
        );

        answers.forget(&key);
        assert_eq!(answers.get(&key), None);
    }

    #[test]
    fn answers_expire_before_their_tokens_and_short_ones_are_not_kept() {
        let answers = Answers::default();
        let key = |repo: &str| Answers::key("https://r.example", repo, &Credentials::anonymous());
        // A token living no longer than the margin is used once and not remembered.
        answers.remember(key("short"), &bearer("s", EXPIRY_MARGIN));
        assert_eq!(answers.get(&key("short")), None);
        // A longer one is remembered until the margin before its expiry, capped at an hour.
        answers.remember(key("day"), &bearer("d", Duration::from_secs(86_400)));
        let until = answers.0.lock().unwrap()[&key("day")].until;
        let left = until.saturating_duration_since(Instant::now());
        assert!(left <= MAX_REMEMBERED - EXPIRY_MARGIN, "{left:?}");
        assert!(
            left > MAX_REMEMBERED - EXPIRY_MARGIN - Duration::from_secs(60),
            "{left:?}"
        );
        // An expired entry is not handed out.
        answers.0.lock().unwrap().get_mut(&key("day")).unwrap().until = Instant::now();
        assert_eq!(answers.get(&key("day")), None);
    }

    #[test]
    fn answers_are_bounded() {
        let answers = Answers::default();
        let key = |i: usize| Answers::key("https://r.example", &format!("repo{i}"), &Credentials::anonymous());
        for i in 0..MAX_ANSWERS + 10 {
            // Each later one lives longer, so the earliest are the soonest to expire.
            answers.remember(key(i), &bearer("t", Duration::from_secs(100 + i as u64)));
        }
        assert_eq!(answers.0.lock().unwrap().len(), MAX_ANSWERS);
        assert_eq!(answers.get(&key(0)), None);
        assert!(answers.get(&key(MAX_ANSWERS + 9)).is_some());
    }

    #[test]
    fn url_encoding_escapes_reserved() {
        assert_eq!(url_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
