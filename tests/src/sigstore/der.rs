//! Just enough DER for the test Sigstore: the few encodings the rig writes into certificate
//! extensions, and the one read it needs (a certificate's `tbsCertificate`).

/// A DER tag-length-value with `tag` and `content`.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A DER `UTF8String`.
pub fn utf8_string(value: &str) -> Vec<u8> {
    tlv(0x0c, value.as_bytes())
}

/// A DER `OCTET STRING`.
pub fn octet_string(value: &[u8]) -> Vec<u8> {
    tlv(0x04, value)
}

/// One DER element inside a larger buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element<'a> {
    pub tag: u8,
    /// The whole element: tag, length and content.
    pub whole: &'a [u8],
    pub content: &'a [u8],
}

/// Splits the DER element at the start of `der` from what follows it; `None` if it is truncated
/// or uses the indefinite length form.
pub fn split_element(der: &[u8]) -> Option<(Element<'_>, &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let count = (first & 0x7f) as usize;
        if count == 0 || count > std::mem::size_of::<usize>() || rest.len() < count {
            return None;
        }
        let len = rest[..count].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    let header = der.len() - rest.len();
    let element = Element {
        tag,
        whole: &der[..header + len],
        content: &rest[..len],
    };
    Some((element, &rest[len..]))
}

/// The `tbsCertificate` (the whole DER element) of the certificate `cert_der`.
pub fn tbs_certificate(cert_der: &[u8]) -> Option<&[u8]> {
    let (certificate, _) = split_element(cert_der)?;
    if certificate.tag != 0x30 {
        return None;
    }
    let (tbs, _) = split_element(certificate.content)?;
    (tbs.tag == 0x30).then_some(tbs.whole)
}

/// The elements of a constructed element's content, in order.
pub fn elements(mut content: &[u8]) -> Option<Vec<Element<'_>>> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (element, rest) = split_element(content)?;
        out.push(element);
        content = rest;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_short_and_long_lengths() {
        assert_eq!(utf8_string("ab"), vec![0x0c, 2, b'a', b'b']);
        let long = octet_string(&[7; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
        let (element, rest) = split_element(&long).unwrap();
        assert_eq!(
            (element.tag, element.whole.len(), element.content.len(), rest.len()),
            (0x04, 304, 300, 0)
        );
        assert!(split_element(&long[..100]).is_none());
    }
}
