//! The COSE_Sign1 envelope (signature-envelope-cose.md, RFC 9052): tag 18 over
//! `[protected: bstr, unprotected: map, payload: bstr, signature: bstr]`, signed as the
//! `Sig_structure` `["Signature1", protected, h'', payload]`. Times are tag 1 epoch seconds;
//! the certificate chain is `x5chain` (label 33).
//!
//! Only definite lengths are read and a map may not repeat a label, so that no two readers can
//! see different headers in the same bytes.

use jiff::Timestamp;
use minicbor::{data::Type, Decoder, Encoder};

use super::{
    envelope::{
        Algorithm, Envelope, SignedAttributes, AUTHENTIC_SIGNING_TIME, EXPIRY, MAX_CHAIN, SIGNING_SCHEME, SIGNING_TIME,
        TIMESTAMP_SIGNATURE,
    },
    NotationRefusal,
};

const COSE_SIGN1_TAG: u64 = 18;
const EPOCH_TIME_TAG: u64 = 1;
const ALG: i64 = 1;
const CRIT: i64 = 2;
const CONTENT_TYPE: i64 = 3;
const X5CHAIN: i64 = 33;
/// More headers than any Notary envelope has; bounds the work on a hostile map.
const MAX_HEADERS: u64 = 64;

/// A header label: an integer or a text string (RFC 9052 §3).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Label {
    Int(i64),
    Text(String),
}

/// Reads a COSE_Sign1_Tagged envelope.
pub(super) fn parse(bytes: &[u8]) -> Result<Envelope, NotationRefusal> {
    let mut d = Decoder::new(bytes);
    if d.tag().map_err(cbor)?.as_u64() != COSE_SIGN1_TAG {
        return Err(malformed("not a tagged COSE_Sign1"));
    }
    if d.array().map_err(cbor)? != Some(4) {
        return Err(malformed("COSE_Sign1 is not an array of four"));
    }
    let protected = d.bytes().map_err(cbor)?;
    let mut attributes = SignedAttributes::default();
    let mut algorithm = None;
    let mut protected_chain = None;
    read_map(&mut Decoder::new(protected), true, |label, d| {
        match label {
            Label::Int(ALG) => algorithm = Some(alg(d.i64().map_err(cbor)?)?),
            Label::Int(CRIT) => attributes.critical = Some(crit(d)?),
            Label::Int(CONTENT_TYPE) => attributes.content_type = Some(text(d)?),
            Label::Int(X5CHAIN) => protected_chain = Some(chain(d)?),
            Label::Text(t) if t == SIGNING_SCHEME => attributes.scheme = Some(text(d)?),
            Label::Text(t) if t == SIGNING_TIME => attributes.signing_time = Some(time(d)?),
            Label::Text(t) if t == AUTHENTIC_SIGNING_TIME => attributes.authentic_signing_time = Some(time(d)?),
            Label::Text(t) if t == EXPIRY => attributes.expiry = Some(time(d)?),
            _ => d.skip().map_err(cbor)?,
        }
        Ok(())
    })?;
    let algorithm = algorithm.ok_or_else(|| malformed("no alg header"))?;
    let (scheme, authentic_signing_time, expiry) = attributes.check()?;

    let mut unprotected_chain = None;
    let mut timestamp = None;
    read_map(&mut d, false, |label, d| {
        match label {
            Label::Int(X5CHAIN) => unprotected_chain = Some(chain(d)?),
            Label::Text(t) if t == TIMESTAMP_SIGNATURE => timestamp = Some(d.bytes().map_err(cbor)?.to_vec()),
            _ => d.skip().map_err(cbor)?,
        }
        Ok(())
    })?;
    // The chain may sit in either header (the spec allows both), but not in both.
    let chain = match (protected_chain, unprotected_chain) {
        (Some(chain), None) | (None, Some(chain)) => chain,
        (None, None) => return Err(malformed("no x5chain")),
        (Some(_), Some(_)) => return Err(malformed("x5chain in both headers")),
    };
    if d.datatype().map_err(cbor)? != Type::Bytes {
        return Err(malformed("the payload is detached or not a byte string"));
    }
    let payload = d.bytes().map_err(cbor)?.to_vec();
    let signature = d.bytes().map_err(cbor)?.to_vec();
    if d.position() != bytes.len() {
        return Err(malformed("bytes after the COSE_Sign1"));
    }
    Ok(Envelope {
        signed: sig_structure(protected, &payload),
        payload,
        signature,
        algorithm,
        scheme,
        authentic_signing_time,
        expiry,
        chain,
        timestamp,
    })
}

/// The `ToBeSigned` bytes: `["Signature1", protected, h'', payload]` (RFC 9052 §4.4), over the
/// protected header exactly as it was sent.
fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = e
        .array(4)
        .and_then(|e| e.str("Signature1"))
        .and_then(|e| e.bytes(protected))
        .and_then(|e| e.bytes(&[]))
        .and_then(|e| e.bytes(payload));
    e.into_writer()
}

/// Reads a definite-length map of at most [`MAX_HEADERS`] entries with unique labels, giving
/// each label to `value`, which must consume the value. `whole`: the map must be all of `d`.
fn read_map(
    d: &mut Decoder<'_>,
    whole: bool,
    mut value: impl FnMut(Label, &mut Decoder<'_>) -> Result<(), NotationRefusal>,
) -> Result<(), NotationRefusal> {
    let entries = d
        .map()
        .map_err(cbor)?
        .ok_or_else(|| malformed("a header map of indefinite length"))?;
    if entries > MAX_HEADERS {
        return Err(malformed("too many headers"));
    }
    let mut seen = Vec::new();
    for _ in 0..entries {
        let label = match d.datatype().map_err(cbor)? {
            Type::String => Label::Text(d.str().map_err(cbor)?.to_string()),
            Type::U8 | Type::U16 | Type::U32 | Type::U64 | Type::I8 | Type::I16 | Type::I32 | Type::I64 => {
                Label::Int(d.i64().map_err(cbor)?)
            }
            other => return Err(malformed(&format!("a header label of type {other}"))),
        };
        if seen.contains(&label) {
            return Err(malformed(&format!("header {label:?} appears twice")));
        }
        seen.push(label.clone());
        value(label, d)?;
    }
    if whole && d.position() != d.input().len() {
        return Err(malformed("bytes after the protected header"));
    }
    Ok(())
}

fn alg(value: i64) -> Result<Algorithm, NotationRefusal> {
    Ok(match value {
        -37 => Algorithm::Ps256,
        -38 => Algorithm::Ps384,
        -39 => Algorithm::Ps512,
        -7 => Algorithm::Es256,
        -35 => Algorithm::Es384,
        -36 => Algorithm::Es512,
        other => return Err(NotationRefusal::Algorithm(format!("unsupported COSE alg {other}"))),
    })
}

/// `crit`: text labels. An integer label is a COSE header pullgate does not process.
fn crit(d: &mut Decoder<'_>) -> Result<Vec<String>, NotationRefusal> {
    let len = definite_array(d)?;
    (0..len)
        .map(|_| match d.datatype().map_err(cbor)? {
            Type::String => Ok(d.str().map_err(cbor)?.to_string()),
            _ => Err(NotationRefusal::UnknownCritical(
                d.i64().map(|l| l.to_string()).unwrap_or_else(|_| "?".into()),
            )),
        })
        .collect()
}

/// `x5chain`: one certificate as a byte string, or an array of them (RFC 9360 §2).
fn chain(d: &mut Decoder<'_>) -> Result<Vec<Vec<u8>>, NotationRefusal> {
    if d.datatype().map_err(cbor)? == Type::Bytes {
        return Ok(vec![d.bytes().map_err(cbor)?.to_vec()]);
    }
    let len = definite_array(d)?;
    if len == 0 || len > MAX_CHAIN as u64 {
        return Err(malformed(&format!(
            "x5chain holds {len} certificates; 1 to {MAX_CHAIN} are accepted"
        )));
    }
    (0..len).map(|_| Ok(d.bytes().map_err(cbor)?.to_vec())).collect()
}

fn text(d: &mut Decoder<'_>) -> Result<String, NotationRefusal> {
    Ok(d.str().map_err(cbor)?.to_string())
}

/// An epoch-based date/time (RFC 8949 §3.4.2): tag 1 over whole seconds.
fn time(d: &mut Decoder<'_>) -> Result<Timestamp, NotationRefusal> {
    if d.tag().map_err(cbor)?.as_u64() != EPOCH_TIME_TAG {
        return Err(malformed("a time that is not tag 1"));
    }
    let seconds = d.i64().map_err(cbor)?;
    Timestamp::from_second(seconds).map_err(|e| malformed(&format!("time {seconds}: {e}")))
}

fn definite_array(d: &mut Decoder<'_>) -> Result<u64, NotationRefusal> {
    d.array()
        .map_err(cbor)?
        .ok_or_else(|| malformed("an array of indefinite length"))
}

fn malformed(what: &str) -> NotationRefusal {
    NotationRefusal::Malformed(format!("COSE: {what}"))
}

fn cbor(e: minicbor::decode::Error) -> NotationRefusal {
    malformed(&e.to_string())
}
