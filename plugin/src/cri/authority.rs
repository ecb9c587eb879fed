//! Lets in gRPC clients whose `:authority` HTTP/2 servers in Rust refuse.
//!
//! gRPC C-core (grpcio, grpc C++, Ruby, PHP) sends the percent-encoded socket path as
//! `:authority` on a unix socket (`%2Frun%2Fpullgate%2Fpullgate.sock`). That is no URI
//! authority, so h2 resets the stream with PROTOCOL_ERROR before pullgate sees the call, where
//! containerd (grpc-go) ignores it. pullgate routes by `:path` alone and never reads the
//! authority, so an unparseable one is replaced by `localhost`, what grpc-go sends.
//!
//! The fix sits between the socket and hyper, on the bytes the client sends: header blocks are
//! decoded with the client's HPACK state. While every authority parses they pass unchanged;
//! from the first one that does not, each block is written again as literals that never touch
//! hyper's dynamic table, so the two tables may differ without harm. Anything this layer
//! cannot read is passed on as it came, for hyper to refuse as it would have.

use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest frame hyper is told to accept (SETTINGS_MAX_FRAME_SIZE), and so the largest
/// header frame this layer reads or writes.
pub const MAX_FRAME_SIZE: u32 = 16 * 1024;

/// The HPACK dynamic table size hyper announces (SETTINGS_HEADER_TABLE_SIZE): the most a
/// client's encoder may use.
pub const HEADER_TABLE_SIZE: u32 = 4096;

/// A header block (HEADERS and its CONTINUATIONs) larger than this, compressed or decoded, is
/// not read here; hyper refuses header lists far smaller.
const MAX_BLOCK_BYTES: usize = 256 * 1024;

/// What a client sends before its first frame.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// The authority written in place of one that does not parse.
const LOCALHOST: &[u8] = b"localhost";

/// A client connection whose header blocks are read, and rewritten where their `:authority`
/// would make hyper refuse the stream. Writes go to the client unchanged.
pub struct AuthorityFix<S> {
    inner: S,
    /// Bytes read from the client and not yet looked at.
    input: BytesMut,
    /// Bytes ready for hyper.
    output: BytesMut,
    state: State,
    decoder: loona_hpack::Decoder<'static>,
    /// A block was rewritten: hyper's HPACK table no longer follows the client's, so every
    /// later block is rewritten too.
    rewriting: bool,
    /// The header block being collected, until END_HEADERS.
    block: Option<Block>,
    eof: bool,
}

enum State {
    /// This many bytes of the connection preface are still to come.
    Preface(usize),
    /// At a frame boundary, or inside a frame that is passed on as it arrives.
    Frames { passing: usize },
    /// Something here could not be read: everything else is passed on untouched.
    Opaque,
}

/// A header block as received: the HEADERS frame's stream, flags and priority, the fragments
/// joined, and the frames themselves, to send unchanged when no rewrite is needed.
#[derive(Default)]
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: BytesMut,
    frames: BytesMut,
}

/// Why a frame cannot be read here; hyper sees it as it was.
struct Unreadable;

// === impl AuthorityFix ===

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE as usize);
        Self {
            inner,
            input: BytesMut::new(),
            output: BytesMut::new(),
            state: State::Preface(PREFACE_LEN),
            decoder,
            rewriting: false,
            block: None,
            eof: false,
        }
    }

    /// Moves what can be decided from `input` to `output`.
    fn process(&mut self) {
        loop {
            match &mut self.state {
                State::Opaque => {
                    let all = self.input.split();
                    self.output.unsplit(all);
                    return;
                }
                State::Preface(left) | State::Frames { passing: left } if *left > 0 => {
                    let n = (*left).min(self.input.len());
                    if n == 0 {
                        return;
                    }
                    *left -= n;
                    let bytes = self.input.split_to(n);
                    self.output.unsplit(bytes);
                }
                State::Preface(_) => self.state = State::Frames { passing: 0 },
                State::Frames { .. } => {
                    if self.input.len() < FRAME_HEADER_LEN {
                        return;
                    }
                    let len = u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]]) as usize;
                    let kind = self.input[3];
                    if kind != HEADERS && kind != CONTINUATION && self.block.is_none() {
                        let header = self.input.split_to(FRAME_HEADER_LEN);
                        self.output.unsplit(header);
                        self.state = State::Frames { passing: len };
                        continue;
                    }
                    if len > MAX_FRAME_SIZE as usize {
                        self.give_up();
                        continue;
                    }
                    if self.input.len() < FRAME_HEADER_LEN + len {
                        return;
                    }
                    let frame = self.input.split_to(FRAME_HEADER_LEN + len).freeze();
                    if self.header_frame(frame).is_err() {
                        self.give_up();
                    }
                }
            }
        }
    }

    /// Takes one HEADERS or CONTINUATION frame (or any frame while a block is open, which is a
    /// protocol error hyper will report). Whatever happens, the frame joins the open block, so
    /// that one that cannot be read is passed on unchanged.
    fn header_frame(&mut self, frame: Bytes) -> Result<(), Unreadable> {
        let kind = frame[3];
        let flags = frame[4];
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let block = match (kind, self.block.take()) {
            (HEADERS, None) => self.block.insert(Block {
                stream,
                end_stream: flags & END_STREAM != 0,
                priority: None,
                fragment: BytesMut::new(),
                frames: BytesMut::new(),
            }),
            (CONTINUATION, Some(open)) if open.stream == stream => self.block.insert(open),
            (_, open) => {
                let open = self.block.insert(open.unwrap_or_default());
                open.frames.extend_from_slice(&frame);
                return Err(Unreadable);
            }
        };
        block.frames.extend_from_slice(&frame);
        if block.frames.len() > MAX_BLOCK_BYTES {
            return Err(Unreadable);
        }
        let mut payload = &frame[FRAME_HEADER_LEN..];
        if kind == HEADERS {
            if flags & PADDED != 0 {
                let (&pad, rest) = payload.split_first().ok_or(Unreadable)?;
                let kept = rest.len().checked_sub(usize::from(pad)).ok_or(Unreadable)?;
                payload = &rest[..kept];
            }
            if flags & PRIORITY != 0 {
                let (priority, rest) = payload.split_first_chunk::<5>().ok_or(Unreadable)?;
                block.priority = Some(*priority);
                payload = rest;
            }
        }
        block.fragment.extend_from_slice(payload);
        if flags & END_HEADERS != 0 {
            if let Some(done) = self.block.take() {
                let written = self.finish(&done);
                match written {
                    Ok(written) => self.output.unsplit(written),
                    Err(unreadable) => {
                        self.block = Some(done);
                        return Err(unreadable);
                    }
                }
            }
        }
        Ok(())
    }

    /// Decodes a whole block with the client's HPACK state and returns what hyper gets: the
    /// frames as sent, or the block written again without the authority it would refuse.
    fn finish(&mut self, block: &Block) -> Result<BytesMut, Unreadable> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut decoded = 0usize;
        let mut too_large = false;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                // An index costs one byte and may stand for a 4 KiB entry: count what it
                // expands to, and stop keeping fields past the bound.
                decoded += name.len() + value.len() + 32;
                if decoded > MAX_BLOCK_BYTES {
                    too_large = true;
                } else {
                    fields.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|_| Unreadable)?;
        if too_large {
            return Err(Unreadable);
        }
        let refused = |value: &[u8]| http::uri::Authority::try_from(value).is_err();
        let authority = fields.iter_mut().find(|(name, _)| name == b":authority");
        match authority {
            Some((_, value)) if refused(value) => {
                tracing::debug!(authority = %String::from_utf8_lossy(value), "replacing an :authority hyper would refuse");
                *value = LOCALHOST.to_vec();
                self.rewriting = true;
            }
            _ if !self.rewriting => return Ok(block.frames.clone()),
            _ => {}
        }
        let mut fragment = BytesMut::new();
        for (name, value) in &fields {
            literal_without_indexing(&mut fragment, name, value);
        }
        Ok(frames(block, fragment.freeze()))
    }

    /// Passes the open block and everything after it on as received.
    fn give_up(&mut self) {
        if let Some(block) = self.block.take() {
            self.output.unsplit(block.frames);
        }
        self.state = State::Opaque;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // A frame cut off by the client's end goes on as it is; hyper reports it.
                if let Some(block) = this.block.take() {
                    this.output.unsplit(block.frames);
                }
                let rest = this.input.split();
                this.output.unsplit(rest);
                if this.output.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let mut chunk = [0u8; 8 * 1024];
            let mut read_buf = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read_buf))?;
            match read_buf.filled() {
                [] => this.eof = true,
                read => this.input.extend_from_slice(read),
            }
            this.process();
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One field as an HPACK literal that is not added to the dynamic table, with a literal name
/// and no Huffman coding (RFC 7541 §6.2.2).
fn literal_without_indexing(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_u8(0x00);
    for string in [name, value] {
        integer(out, string.len(), 7, 0x00);
        out.put_slice(string);
    }
}

/// An HPACK integer with an `n`-bit prefix after the bits `first` (RFC 7541 §5.1).
fn integer(out: &mut BytesMut, value: usize, n: u8, first: u8) {
    let max = (1usize << n) - 1;
    if value < max {
        out.put_u8(first | value as u8);
        return;
    }
    out.put_u8(first | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.put_u8((rest % 0x80) as u8 | 0x80);
        rest /= 0x80;
    }
    out.put_u8(rest as u8);
}

/// `fragment` as a HEADERS frame for the block's stream and as many CONTINUATIONs as the frame
/// size needs; END_STREAM and the priority are kept, padding is not.
fn frames(block: &Block, fragment: Bytes) -> BytesMut {
    let max = MAX_FRAME_SIZE as usize;
    let first_room = max - if block.priority.is_some() { 5 } else { 0 };
    let mut out = BytesMut::with_capacity(fragment.len() + 2 * FRAME_HEADER_LEN + 5);
    let mut rest = fragment;
    let mut first = true;
    loop {
        let room = if first { first_room } else { max };
        let chunk = rest.split_to(rest.len().min(room));
        let last = rest.is_empty();
        let mut flags = if last { END_HEADERS } else { 0 };
        let (kind, priority) = if first {
            if block.end_stream {
                flags |= END_STREAM;
            }
            if block.priority.is_some() {
                flags |= PRIORITY;
            }
            (HEADERS, block.priority)
        } else {
            (CONTINUATION, None)
        };
        let len = chunk.len() + priority.map_or(0, |p| p.len());
        out.put_slice(&(len as u32).to_be_bytes()[1..]);
        out.put_u8(kind);
        out.put_u8(flags);
        out.put_u32(block.stream);
        if let Some(priority) = priority {
            out.put_slice(&priority);
        }
        out.put_slice(&chunk);
        if last {
            return out;
        }
        first = false;
    }
}

#[cfg(test)]
mod tests;
