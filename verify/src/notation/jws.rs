//! The JWS JSON serialization envelope (signature-envelope-jws.md): flattened JWS with the
//! payload and protected header base64url-encoded, signed as `protected '.' payload`, and the
//! certificate chain and timestamp token in the unprotected header.

use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine as _,
};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    envelope::{
        check_spelling, Algorithm, Envelope, SignedAttributes, AUTHENTIC_SIGNING_TIME, EXPIRY, MAX_CHAIN,
        SIGNING_SCHEME, SIGNING_TIME, TIMESTAMP_SIGNATURE,
    },
    NotationRefusal,
};

/// The envelope: "no additional top level fields are supported".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Jws {
    payload: String,
    protected: String,
    header: Unprotected,
    signature: String,
}

#[derive(Deserialize)]
struct Unprotected {
    x5c: Vec<String>,
    #[serde(rename = "io.cncf.notary.timestampSignature")]
    timestamp: Option<String>,
}

/// Reads a JWS envelope and its protected header.
pub(super) fn parse(bytes: &[u8]) -> Result<Envelope, NotationRefusal> {
    let malformed = |what: &str, e: &dyn std::fmt::Display| NotationRefusal::Malformed(format!("{what}: {e}"));
    let jws: Jws = serde_json::from_slice(bytes).map_err(|e| malformed("JWS", &e))?;
    let payload = URL_SAFE_NO_PAD
        .decode(&jws.payload)
        .map_err(|e| malformed("payload", &e))?;
    let protected = URL_SAFE_NO_PAD
        .decode(&jws.protected)
        .map_err(|e| malformed("protected header", &e))?;
    let signature = URL_SAFE_NO_PAD
        .decode(&jws.signature)
        .map_err(|e| malformed("signature", &e))?;
    let header: Map<String, Value> =
        serde_json::from_slice(&protected).map_err(|e| malformed("protected header", &e))?;
    check_spelling(
        header.keys(),
        &[
            "alg",
            "cty",
            "crit",
            SIGNING_SCHEME,
            SIGNING_TIME,
            AUTHENTIC_SIGNING_TIME,
            EXPIRY,
        ],
        "protected header",
    )?;

    let algorithm = match header.get("alg").and_then(Value::as_str) {
        Some("PS256") => Algorithm::Ps256,
        Some("PS384") => Algorithm::Ps384,
        Some("PS512") => Algorithm::Ps512,
        Some("ES256") => Algorithm::Es256,
        Some("ES384") => Algorithm::Es384,
        Some("ES512") => Algorithm::Es512,
        Some(other) => return Err(NotationRefusal::Algorithm(format!("unsupported alg {other:?}"))),
        None => return Err(NotationRefusal::Malformed("no alg header".into())),
    };
    let text = |name: &str| -> Result<Option<String>, NotationRefusal> {
        match header.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(NotationRefusal::Malformed(format!("{name} is not a string"))),
        }
    };
    let time = |name: &str| -> Result<Option<Timestamp>, NotationRefusal> {
        text(name)?
            .map(|s| s.parse::<Timestamp>().map_err(|e| malformed(name, &e)))
            .transpose()
    };
    let critical = match header.get("crit") {
        None => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| NotationRefusal::Malformed("crit holds a non-string".into()))?,
        ),
        Some(_) => return Err(NotationRefusal::Malformed("crit is not an array".into())),
    };
    let (scheme, authentic_signing_time, expiry) = SignedAttributes {
        content_type: text("cty")?,
        scheme: text(SIGNING_SCHEME)?,
        signing_time: time(SIGNING_TIME)?,
        authentic_signing_time: time(AUTHENTIC_SIGNING_TIME)?,
        expiry: time(EXPIRY)?,
        critical,
    }
    .check()?;

    if jws.header.x5c.is_empty() || jws.header.x5c.len() > MAX_CHAIN {
        return Err(NotationRefusal::Malformed(format!(
            "x5c holds {} certificates; 1 to {MAX_CHAIN} are accepted",
            jws.header.x5c.len()
        )));
    }
    let chain = jws
        .header
        .x5c
        .iter()
        .map(|c| STANDARD.decode(c).map_err(|e| malformed("x5c", &e)))
        .collect::<Result<_, _>>()?;
    let timestamp = jws
        .header
        .timestamp
        .map(|t| STANDARD.decode(t).map_err(|e| malformed(TIMESTAMP_SIGNATURE, &e)))
        .transpose()?;
    Ok(Envelope {
        payload,
        // The signing input is the text as sent, not a re-encoding of what it decodes to.
        signed: format!("{}.{}", jws.protected, jws.payload).into_bytes(),
        signature,
        algorithm,
        scheme,
        authentic_signing_time,
        expiry,
        chain,
        timestamp,
    })
}
