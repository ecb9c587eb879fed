//! Registry authentication with the credentials kubelet sent in `PullImageRequest.auth`:
//! HTTP basic, and the bearer-token challenge flow of the distribution spec.

use std::fmt;

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use reqwest::header;

use super::{outcome_of, read_bounded, unavailable, RegistryError, Session};
use crate::metrics::RegistryOutcome;

/// Token responses larger than this are refused.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

/// Registry credentials from the CRI `AuthConfig`. Never printed: `Debug` hides the secrets.
#[derive(Clone, Default)]
pub struct Credentials {
    basic: Option<(String, String)>,
    identity_token: Option<String>,
    registry_token: Option<String>,
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
        Self {
            basic,
            identity_token: non_empty(&auth.identity_token),
            registry_token: non_empty(&auth.registry_token),
        }
    }

    pub fn basic(username: &str, password: &str) -> Self {
        Self {
            basic: Some((username.into(), password.into())),
            ..Self::default()
        }
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

/// Answers a 401 challenge and returns the `Authorization` header value to retry with.
pub(super) async fn answer(session: &Session<'_>, www_authenticate: &str) -> Result<String, RegistryError> {
    let unauthorized = |why: &str| RegistryError::Unavailable(format!("{}: unauthorized: {why}", session.base));
    let challenge =
        Challenge::parse(www_authenticate).ok_or_else(|| unauthorized("unreadable WWW-Authenticate challenge"))?;
    match challenge.scheme.as_str() {
        "basic" => session
            .credentials
            .basic_header()
            .ok_or_else(|| unauthorized("registry wants credentials and none were sent")),
        "bearer" => {
            if let Some(token) = &session.credentials.registry_token {
                return Ok(format!("Bearer {token}"));
            }
            let realm = challenge
                .param("realm")
                .ok_or_else(|| unauthorized("bearer challenge without a realm"))?;
            let realm = reqwest::Url::parse(realm).map_err(|_| unauthorized("bearer realm is not a URL"))?;
            let realm_host = match realm.port() {
                Some(p) => format!("{}:{p}", realm.host_str().unwrap_or_default()),
                None => realm.host_str().unwrap_or_default().to_string(),
            };
            if realm.scheme() != "https" && !(realm.scheme() == "http" && session.registries.is_insecure(&realm_host)) {
                return Err(unauthorized(
                    "token realm is not HTTPS and its host is not marked insecure",
                ));
            }
            let scope = format!("repository:{}:pull", session.repository);
            let token = fetch_token(session, &realm, challenge.param("service"), &scope).await?;
            Ok(format!("Bearer {token}"))
        }
        other => Err(unauthorized(&format!("unsupported auth scheme {other:?}"))),
    }
}

/// Gets a pull token from the realm: an OAuth2 refresh-token POST when kubelet sent an identity
/// token, otherwise the classic GET with basic credentials (or anonymously).
async fn fetch_token(
    session: &Session<'_>,
    realm: &reqwest::Url,
    service: Option<&str>,
    scope: &str,
) -> Result<String, RegistryError> {
    let url = realm.as_str();
    let request = if let Some(refresh) = &session.credentials.identity_token {
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
        session
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
        let mut request = session.client.get(get_url);
        if let Some(basic) = session.credentials.basic_header() {
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
    }
    let parsed: TokenResponse = serde_json::from_slice(&body)
        .map_err(|e| RegistryError::Unavailable(format!("{url}: token response is not JSON: {e}")))?;
    parsed
        .token
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| RegistryError::Unavailable(format!("{url}: token response has no token")))
}

fn url_encode(s: &str) -> String {
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

    #[test]
    fn url_encoding_escapes_reserved() {
        assert_eq!(url_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
