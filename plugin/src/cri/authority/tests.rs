use tokio::io::AsyncReadExt;

use super::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SOCKET_PATH: &[u8] = b"%2Frun%2Fpullgate%2Fpullgate.sock";

fn request(authority: &[u8]) -> Vec<(&'static [u8], Vec<u8>)> {
    vec![
        (b":method", b"POST".to_vec()),
        (b":scheme", b"http".to_vec()),
        (b":path", b"/runtime.v1.ImageService/ImageStatus".to_vec()),
        (b":authority", authority.to_vec()),
        (b"content-type", b"application/grpc".to_vec()),
        (
            b"user-agent",
            b"grpc-python/1.85.4 grpc-c/52.0.0 (linux; chttp2)".to_vec(),
        ),
    ]
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// A client's header block, encoded as a client's encoder does: with its dynamic table.
fn encode(encoder: &mut loona_hpack::Encoder<'_>, fields: &[(&'static [u8], Vec<u8>)]) -> Vec<u8> {
    encoder.encode(fields.iter().map(|(n, v)| (*n, &v[..])))
}

/// What hyper reads through the layer.
async fn through(client: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    AuthorityFix::new(client).read_to_end(&mut out).await.unwrap();
    out
}

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// The header blocks hyper would decode from `bytes`, with its own HPACK state, as (stream,
/// flags, fields); and the other frames' kinds.
fn hyper_view(bytes: &[u8]) -> (Vec<(u32, u8, Fields)>, Vec<u8>) {
    assert!(bytes.starts_with(PREFACE));
    let mut rest = &bytes[PREFACE.len()..];
    let mut decoder = loona_hpack::Decoder::new();
    let (mut blocks, mut others) = (Vec::new(), Vec::new());
    let mut open: Option<(u32, u8, Vec<u8>)> = None;
    while !rest.is_empty() {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        assert!(len <= MAX_FRAME_SIZE as usize, "frame of {len} bytes");
        let (kind, flags) = (rest[3], rest[4]);
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
        let mut payload = &rest[9..9 + len];
        rest = &rest[9 + len..];
        match kind {
            HEADERS => {
                assert!(open.is_none());
                if flags & PADDED != 0 {
                    let pad = payload[0] as usize;
                    payload = &payload[1..payload.len() - pad];
                }
                if flags & PRIORITY != 0 {
                    payload = &payload[5..];
                }
                open = Some((stream, flags, payload.to_vec()));
            }
            CONTINUATION => open.as_mut().unwrap().2.extend(payload),
            other => others.push(other),
        }
        if matches!(kind, HEADERS | CONTINUATION) && flags & END_HEADERS != 0 {
            let (stream, flags, block) = open.take().unwrap();
            blocks.push((stream, flags, decoder.decode(&block).unwrap()));
        }
    }
    (blocks, others)
}

fn authority_of(fields: &[(Vec<u8>, Vec<u8>)]) -> &[u8] {
    &fields.iter().find(|(n, _)| n == b":authority").unwrap().1
}

#[tokio::test]
async fn a_parseable_authority_passes_byte_for_byte() {
    let mut encoder = loona_hpack::Encoder::new();
    let mut client = PREFACE.to_vec();
    client.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    for stream in [1, 3] {
        let block = encode(&mut encoder, &request(b"localhost"));
        client.extend(frame(HEADERS, END_HEADERS, stream, &block));
        client.extend(frame(0x0, END_STREAM, stream, &[0, 0, 0, 0, 0]));
    }
    assert_eq!(through(&client).await, client);
}

#[tokio::test]
async fn a_socket_path_authority_becomes_localhost_and_later_blocks_still_decode() {
    let mut encoder = loona_hpack::Encoder::new();
    let mut client = PREFACE.to_vec();
    // A first call with a good authority goes through unchanged and fills both tables.
    let first = encode(&mut encoder, &request(b"localhost"));
    client.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &first));
    // Then the socket path: the client's encoder indexes it, so the next block refers to the
    // client's table by index only.
    for stream in [3, 5, 7] {
        let block = encode(&mut encoder, &request(SOCKET_PATH));
        client.extend(frame(HEADERS, END_HEADERS, stream, &block));
        client.extend(frame(0x0, END_STREAM, stream, &[0, 0, 0, 0, 0]));
    }
    let (blocks, others) = hyper_view(&through(&client).await);
    assert_eq!(others, vec![0x0, 0x0, 0x0], "data frames pass");
    assert_eq!(blocks.len(), 4);
    assert_eq!(authority_of(&blocks[0].2), b"localhost");
    for (stream, flags, fields) in &blocks[1..] {
        assert_eq!(authority_of(fields), LOCALHOST, "stream {stream}");
        assert_eq!(flags & END_STREAM, 0);
        let expected: Fields = request(LOCALHOST).into_iter().map(|(n, v)| (n.to_vec(), v)).collect();
        assert_eq!(fields, &expected, "every other field as the client sent it");
    }
}

#[tokio::test]
async fn padding_priority_and_continuations_are_read() {
    let mut encoder = loona_hpack::Encoder::new();
    let block = encode(&mut encoder, &request(SOCKET_PATH));
    let (a, b) = block.split_at(block.len() / 2);
    let mut headers = vec![3u8]; // pad length
    headers.extend([0x80, 0, 0, 0, 16]); // exclusive dependency on stream 0, weight 16
    headers.extend(a);
    headers.extend([0, 0, 0]);
    let mut client = PREFACE.to_vec();
    client.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &headers));
    client.extend(frame(CONTINUATION, END_HEADERS, 1, b));
    let out = through(&client).await;
    let (blocks, _) = hyper_view(&out);
    assert_eq!(blocks.len(), 1);
    assert_eq!(authority_of(&blocks[0].2), LOCALHOST);
    assert_ne!(blocks[0].1 & END_STREAM, 0, "END_STREAM is kept");
    assert_ne!(blocks[0].1 & PRIORITY, 0, "the priority is kept");
}

#[tokio::test]
async fn a_block_larger_than_a_frame_is_written_as_continuations() {
    let mut encoder = loona_hpack::Encoder::new();
    let mut fields = request(SOCKET_PATH);
    fields.push((b"x-big", vec![b'a'; 40_000]));
    let block = encode(&mut encoder, &fields);
    let mut client = PREFACE.to_vec();
    for (i, chunk) in block.chunks(MAX_FRAME_SIZE as usize).enumerate() {
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let last = (i + 1) * MAX_FRAME_SIZE as usize >= block.len();
        client.extend(frame(kind, if last { END_HEADERS } else { 0 }, 1, chunk));
    }
    let (blocks, _) = hyper_view(&through(&client).await);
    assert_eq!(blocks.len(), 1);
    assert_eq!(authority_of(&blocks[0].2), LOCALHOST);
    assert_eq!(blocks[0].2.last().unwrap().1.len(), 40_000);
}

#[tokio::test]
async fn what_cannot_be_read_passes_unchanged() {
    // Not HPACK, a CONTINUATION without HEADERS, and a bomb: one-byte indexes to a 4 KiB entry.
    let mut bomb = BytesMut::from(&[0x40, 1, b'x'][..]); // literal with indexing, name "x"
    integer(&mut bomb, 4000, 7, 0);
    bomb.extend(vec![b'v'; 4000]);
    bomb.extend(vec![0x80 | 62; 200]);
    let bomb = bomb.to_vec();
    let expanded = loona_hpack::Decoder::new().decode(&bomb).unwrap();
    assert_eq!(expanded.len(), 201, "valid HPACK, 800 KB once decoded");
    for payload in [vec![0xff, 0xff, 0xff, 0xff, 0xff], bomb] {
        let mut client = PREFACE.to_vec();
        client.extend(frame(HEADERS, END_HEADERS, 1, &payload));
        client.extend(frame(0x0, END_STREAM, 1, b"after"));
        assert_eq!(through(&client).await, client);
    }
    let mut client = PREFACE.to_vec();
    client.extend(frame(CONTINUATION, END_HEADERS, 1, b"stray"));
    client.extend(frame(0x0, 0, 1, b"after"));
    assert_eq!(through(&client).await, client);
}

#[tokio::test]
async fn a_cut_off_frame_reaches_hyper_as_sent() {
    let mut encoder = loona_hpack::Encoder::new();
    let block = encode(&mut encoder, &request(SOCKET_PATH));
    let mut client = PREFACE.to_vec();
    client.extend(&frame(HEADERS, END_HEADERS, 1, &block)[..20]);
    assert_eq!(through(&client).await, client);
}

#[test]
fn integers_follow_rfc_7541() {
    // RFC 7541 C.1: 10 and 1337 with a 5-bit prefix, 42 with an 8-bit prefix.
    for (value, n, expected) in [
        (10usize, 5u8, vec![0x0a]),
        (1337, 5, vec![0x1f, 0x9a, 0x0a]),
        (42, 8, vec![0x2a]),
    ] {
        let mut out = BytesMut::new();
        integer(&mut out, value, n, 0);
        assert_eq!(&out[..], &expected[..], "{value}");
    }
}
