//! The token server of the distribution token-auth flow, the one test double of the rig (Debian
//! packages no token server): a minimal HTTP/1.1 server on 127.0.0.1 that answers
//! `GET /token?service=…&scope=…` with `{"token": "<JWT>"}`, a JWT that the real registry
//! verifies against the certificate this server puts in its `rootcertbundle`.
//!
//! Who gets what:
//! - the right basic credentials: a token granting every action each `repository` scope asks for;
//! - no `Authorization` header at all: a token with `access: []`, as Docker Hub does for anonymous
//!   requests, so the registry itself refuses the retried request with 401;
//! - wrong credentials, or any other kind of `Authorization`: 401;
//! - `POST /token` (the OAuth2 password grant that containerd tries first): 405, which makes
//!   containerd fall back to the `GET` with basic credentials;
//! - a `service` other than [`SERVICE`]: 400.
//!
//! The JWT is what distribution 2.8's token access controller reads: header
//! `{"typ":"JWT","alg":"ES256","x5c":[<signing certificate, base64 DER>]}`, claims `iss`, `sub`,
//! `aud`, `exp`, `nbf`, `iat`, `jti`, `access`, and an ES256 signature (ECDSA P-256 with SHA-256,
//! raw `r||s`) over `base64url(header).base64url(claims)`. The certificate is self-signed and is
//! itself the bundle's only root, so Go's chain verification accepts it as it stands.

use std::{
    fmt, io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING},
};
use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine as _,
};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

/// The `service` the registry names in its challenges and the tokens' `aud`.
pub const SERVICE: &str = "pullgate-test";

/// The tokens' `iss`, which the registry is configured to trust.
pub const ISSUER: &str = "pullgate-test-issuer";

/// How long a token is valid after it is issued.
const TOKEN_LIFETIME: Duration = Duration::from_secs(600);

/// The most a request line and headers together may take.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The most request body read (and thrown away) before answering.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// A bound on receiving one request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A running token server. Dropping it stops the server thread.
pub struct TokenServer {
    addr: SocketAddr,
    issuer: Arc<Issuer>,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// One request the server answered, for tests that want to know who asked for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub method: String,
    /// The user of the request's basic credentials, if it carried any.
    pub user: Option<String>,
    /// Every `scope` parameter, as sent.
    pub scopes: Vec<String>,
    pub user_agent: String,
    /// The HTTP status it was answered with.
    pub status: u16,
}

/// The signing half: the key, its certificate and the one user it knows.
struct Issuer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    cert_pem: String,
    user: String,
    pass: String,
}

/// An HTTP answer before it is written.
struct Answer {
    status: u16,
    extra_header: Option<String>,
    body: String,
}

// === impl TokenServer ===

impl TokenServer {
    /// Starts a token server on a fresh loopback port that knows one user, `user`/`pass`, and
    /// signs with a new P-256 key and self-signed certificate.
    pub fn start(user: &str, pass: &str) -> TokenServer {
        let issuer = Arc::new(Issuer::generate(user, pass));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the token server to a loopback port");
        listener
            .set_nonblocking(true)
            .expect("make the token listener non-blocking");
        let addr = listener.local_addr().expect("the token server's address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (shutdown, stopped) = oneshot::channel();

        let (server_issuer, server_requests) = (issuer.clone(), requests.clone());
        // A thread and runtime of its own: the server answers whatever the test's runtime does
        // (current-thread, or blocked in a synchronous call), and stops with this handle.
        let thread = thread::Builder::new()
            .name(format!("token-server-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build the token server's runtime");
                runtime.block_on(serve(listener, server_issuer, server_requests, stopped));
            })
            .expect("spawn the token server thread");
        TokenServer {
            addr,
            issuer,
            requests,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`, which a pullgate config must list as insecure to use the realm.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT/token`, the realm the registry names in its challenges.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The signing certificate as PEM, the registry's `rootcertbundle`.
    pub fn cert_pem(&self) -> &str {
        &self.issuer.cert_pem
    }

    /// A token for `subject` granting `actions` on repository `repo`, signed like the ones the
    /// server hands out, without any request.
    pub fn mint(&self, subject: &str, repo: &str, actions: &[&str]) -> String {
        self.issuer.token(subject, vec![repository_access(repo, actions)])
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl fmt::Debug for TokenServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenServer")
            .field("addr", &self.addr)
            .field("user", &self.issuer.user)
            .finish_non_exhaustive()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The accept loop ends at once; dropping its runtime cancels open connections.
            let _ = thread.join();
        }
    }
}

// === impl Issuer ===

impl Issuer {
    fn generate(user: &str, pass: &str) -> Issuer {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generate a P-256 key");
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pullgate test token signer");
        let cert = params.self_signed(&key_pair).expect("self-sign the token certificate");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key_pair.serialized_der())
            .expect("load the token key from its PKCS#8");
        Issuer {
            key,
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            user: user.to_owned(),
            pass: pass.to_owned(),
        }
    }

    /// A signed JWT for `subject` with the given `access` claim.
    fn token(&self, subject: &str, access: Vec<Value>) -> String {
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs();
        let header = json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [STANDARD.encode(&self.cert_der)],
        });
        let claims = json!({
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + TOKEN_LIFETIME.as_secs(),
            "nbf": now,
            "iat": now,
            "jti": format!("{now}-{}-{}", std::process::id(), SERIAL.fetch_add(1, Ordering::Relaxed)),
            "access": access,
        });
        let signing_input = format!("{}.{}", b64url_json(&header), b64url_json(&claims));
        let signature = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .expect("sign the token");
        // The FIXED algorithm gives the JWS form, r||s of 32 bytes each, not ASN.1 DER.
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// The answer to one `GET /token`: who is asking, and for what.
    fn answer(&self, query: &[(String, String)], authorization: Option<&str>) -> Answer {
        let service = query.iter().find(|(k, _)| k == "service").map(|(_, v)| v.as_str());
        if service != Some(SERVICE) {
            return error(400, &format!("unknown service {service:?}"));
        }
        let Some(authorization) = authorization else {
            // Anonymous: a valid token that grants nothing.
            return token_answer(self.token("", Vec::new()));
        };
        let Some((user, pass)) = basic_credentials(authorization) else {
            return unauthorized("only basic credentials are accepted");
        };
        if user != self.user || pass != self.pass {
            return unauthorized("wrong user or password");
        }
        let access = query
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' '))
            .filter_map(parse_repository_scope)
            .map(|(repo, actions)| repository_access(repo, &actions))
            .collect();
        token_answer(self.token(&user, access))
    }
}

/// Accepts connections until `stopped` fires, each served on a task of its own.
async fn serve(
    listener: std::net::TcpListener,
    issuer: Arc<Issuer>,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = TcpListener::from_std(listener).expect("register the token listener");
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (issuer, requests) = (issuer.clone(), requests.clone());
                tokio::spawn(async move {
                    // A client that goes away mid-request is no concern of the test.
                    let _ = serve_one(stream, &issuer, &requests).await;
                });
            }
        }
    }
}

/// Reads one request (bounded in size and time), answers it and closes the connection.
async fn serve_one(mut stream: TcpStream, issuer: &Issuer, requests: &Mutex<Vec<TokenRequest>>) -> io::Result<()> {
    let request = tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request not received in time"))??;
    let answer = match request {
        Err(answer) => answer,
        Ok(head) => {
            let answer = route(&head, issuer);
            let record = TokenRequest {
                method: head.method.clone(),
                user: head
                    .header("authorization")
                    .and_then(basic_credentials)
                    .map(|(user, _)| user),
                scopes: head.query("scope"),
                user_agent: head.header("user-agent").unwrap_or_default().to_owned(),
                status: answer.status,
            };
            requests.lock().unwrap_or_else(|p| p.into_inner()).push(record);
            answer
        }
    };
    stream.write_all(answer.to_http().as_bytes()).await?;
    stream.shutdown().await
}

fn route(head: &Head, issuer: &Issuer) -> Answer {
    let (path, _) = head.target.split_once('?').unwrap_or((&head.target, ""));
    if path != "/token" {
        return error(404, "not found");
    }
    match head.method.as_str() {
        "GET" => issuer.answer(&head.query_pairs(), head.header("authorization")),
        _ => Answer {
            status: 405,
            extra_header: Some("Allow: GET".to_owned()),
            body: json!({"errors": [{"code": "UNSUPPORTED", "message": "only GET"}]}).to_string(),
        },
    }
}

/// The request line and headers of one HTTP/1.1 request.
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The target's query, percent- and `+`-decoded.
    fn query_pairs(&self) -> Vec<(String, String)> {
        reqwest::Url::parse(&format!("http://token{}", self.target))
            .map(|url| {
                url.query_pairs()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn query(&self, key: &str) -> Vec<String> {
        self.query_pairs()
            .into_iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect()
    }
}

/// Reads the head, then as much body as `Content-Length` says (so closing the socket never
/// resets a client still sending). `Ok(Err(answer))` when the request is refused unread.
async fn read_request(stream: &mut TcpStream) -> io::Result<Result<Head, Answer>> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Ok(Err(error(431, "request head too large")));
        }
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let Ok(text) = std::str::from_utf8(&buf[..head_end]) else {
        return Ok(Err(error(400, "request head is not UTF-8")));
    };
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(_version)) = (request_line.next(), request_line.next(), request_line.next())
    else {
        return Ok(Err(error(400, "malformed request line")));
    };
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let head = Head {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
    };

    let body_len: usize = head
        .header("content-length")
        .map(|v| v.parse().unwrap_or(usize::MAX))
        .unwrap_or(0);
    if body_len > MAX_BODY_BYTES {
        return Ok(Err(error(413, "request body too large")));
    }
    let mut unread = body_len.saturating_sub(buf.len() - head_end - 4);
    while unread > 0 {
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk[..unread.min(2048)]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        unread -= n;
    }
    Ok(Ok(head))
}

// === impl Answer ===

impl Answer {
    fn to_http(&self) -> String {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            405 => "Method Not Allowed",
            413 => "Content Too Large",
            431 => "Request Header Fields Too Large",
            _ => "Error",
        };
        let extra = self
            .extra_header
            .as_ref()
            .map(|h| format!("{h}\r\n"))
            .unwrap_or_default();
        format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\
             Connection: close\r\n{extra}\r\n{body}",
            status = self.status,
            len = self.body.len(),
            body = self.body,
        )
    }
}

fn token_answer(token: String) -> Answer {
    Answer {
        status: 200,
        extra_header: None,
        body: json!({"token": token, "expires_in": TOKEN_LIFETIME.as_secs()}).to_string(),
    }
}

fn unauthorized(message: &str) -> Answer {
    Answer {
        extra_header: Some(format!("WWW-Authenticate: Basic realm=\"{SERVICE}\"")),
        ..error(401, message)
    }
}

fn error(status: u16, message: &str) -> Answer {
    Answer {
        status,
        extra_header: None,
        body: json!({"errors": [{"code": "DENIED", "message": message}]}).to_string(),
    }
}

/// `Basic base64(user:pass)` as (`user`, `pass`).
fn basic_credentials(authorization: &str) -> Option<(String, String)> {
    let (scheme, encoded) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

/// `repository:<name>:<a>,<b>` as (`name`, [`a`, `b`]); `None` for other resource types. The
/// name is everything between the first and the last colon.
fn parse_repository_scope(scope: &str) -> Option<(&str, Vec<&str>)> {
    let rest = scope.strip_prefix("repository:")?;
    let (name, actions) = rest.rsplit_once(':')?;
    let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
    (!name.is_empty()).then_some((name, actions))
}

fn repository_access(repo: &str, actions: &[&str]) -> Value {
    json!({"type": "repository", "name": repo, "actions": actions})
}

fn b64url_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("serialize JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{KeyPair as _, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    fn decode_part(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn minted_token_is_an_es256_jws_over_its_first_two_parts() {
        let server = TokenServer::start("alice", "s3cret");
        let token = server.mint("alice", "signed/app", &["pull"]);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode_part(parts[0]);
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["typ"], "JWT");
        let cert_der = STANDARD.decode(header["x5c"][0].as_str().unwrap()).unwrap();
        assert_eq!(cert_der, server.issuer.cert_der);
        let claims = decode_part(parts[1]);
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["aud"], SERVICE);
        assert_eq!(claims["sub"], "alice");
        assert_eq!(
            claims["access"],
            json!([{"type": "repository", "name": "signed/app", "actions": ["pull"]}])
        );
        assert!(claims["exp"].as_u64() > claims["nbf"].as_u64());

        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert_eq!(signature.len(), 64, "raw r||s, not DER");
        let public = server.issuer.key.public_key().as_ref().to_vec();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("the signature verifies with the certificate's key");
    }

    #[test]
    fn scopes_and_credentials() {
        assert_eq!(
            parse_repository_scope("repository:a/b:pull,push"),
            Some(("a/b", vec!["pull", "push"]))
        );
        assert_eq!(parse_repository_scope("registry:catalog:*"), None);
        assert_eq!(
            basic_credentials(&format!("Basic {}", STANDARD.encode("u:p:q"))),
            Some(("u".to_owned(), "p:q".to_owned()))
        );
        assert_eq!(basic_credentials("Bearer x"), None);
    }
}
