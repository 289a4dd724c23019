//! A proxied answer encoded as it streams: the coding chosen by
//! `super::choose`, the rules of when not to encode, the head's changes
//! (no Content-Length, chunked on HTTP/1.1, a weakened ETag) and the
//! streaming writers of the brotli, zstd and flate2 crates, each finished
//! properly at the end of the body. (Pingora 0.9's brotli encoder flushes
//! but never finishes its stream: decoders see it cut short.)

use super::coding::{choose, Encoding, Levels, Worth};
use crate::domain::Hostname;
use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    ETAG, TRANSFER_ENCODING, VARY,
};
use http::HeaderMap;
use pingora_http::ResponseHeader;
use std::collections::HashMap;
use std::io::Write;
use tracing::warn;

/// When proxied answers are encoded, and how: `[compression]` with each
/// config site's override.
#[derive(Debug, Clone, Default)]
pub struct StreamPolicy {
    pub on: bool,
    pub prefer: Vec<Encoding>,
    pub levels: Levels,
    pub worth: Worth,
    pub sites: HashMap<Hostname, bool>,
}

impl StreamPolicy {
    /// The encoder for one request to `host`: whether its site encodes,
    /// and the coding its `Accept-Encoding` takes best among `prefer`.
    pub fn for_request(&self, host: Option<&Hostname>, req: &HeaderMap) -> Streaming {
        let on = host
            .and_then(|h| self.sites.get(h))
            .copied()
            .unwrap_or(self.on);
        if !on {
            return Streaming::default();
        }
        let accepted = req.get_all(ACCEPT_ENCODING).iter().map(|v| v.as_bytes());
        Streaming {
            on,
            chosen: choose(accepted, self.prefer.iter().copied()).ok().flatten(),
            writer: None,
        }
    }
}

/// One proxied response's encoder: nothing until the response head says
/// it may be encoded, then every body chunk through it.
#[derive(Default)]
pub struct Streaming {
    /// The site encodes proxied answers (so they vary by Accept-Encoding).
    on: bool,
    /// The coding the client accepts best (None: identity).
    chosen: Option<Encoding>,
    writer: Option<Writer>,
}

impl std::fmt::Debug for Streaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming")
            .field("chosen", &self.chosen)
            .field("encoding", &self.writer.is_some())
            .finish()
    }
}

impl Streaming {
    /// Whether the body is being encoded (after `response_head`).
    pub fn encoding(&self) -> Option<Encoding> {
        self.writer.as_ref().and(self.chosen)
    }

    /// Decides on the response head: encode what `policy` finds worth it,
    /// that the origin did not encode and did not mark `no-transform`. Any
    /// such response varies by Accept-Encoding, whether this client gets a
    /// coding or not.
    pub fn response_head(&mut self, resp: &mut ResponseHeader, policy: &StreamPolicy) {
        if !self.on || !could_encode(resp, &policy.worth) {
            return;
        }
        add_vary(resp);
        let Some(chosen) = self.chosen else {
            return;
        };
        let writer = match Writer::new(chosen, &policy.levels) {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, coding = chosen.as_str(), "encoder not made; sent as identity");
                return;
            }
        };
        // The length is not known ahead, and ranges of the identity body
        // are not ranges of this one.
        resp.remove_header(&CONTENT_LENGTH);
        resp.remove_header(&ACCEPT_RANGES);
        let _ = resp.insert_header(TRANSFER_ENCODING, "chunked");
        let _ = resp.insert_header("content-encoding", chosen.as_str());
        weaken_etag(resp);
        self.writer = Some(writer);
    }

    /// One body chunk (None with `end`: the end of the body) in, what to
    /// send instead out (None: send the chunk as it is). At `end` the
    /// coding's stream is finished.
    pub fn body(&mut self, data: Option<&Bytes>, end: bool) -> Option<Bytes> {
        let writer = self.writer.as_mut()?;
        let out = writer.write(data.map_or(&[][..], |d| d.as_ref()), end);
        match out {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                // Bytes already sent cannot be taken back: the rest is lost,
                // and the client sees a cut-short stream, as on any break.
                warn!(error = %e, "encoder failed mid-body");
                Some(Bytes::new())
            }
        }
    }
}

/// Worth encoding, identity, and transformable.
fn could_encode(resp: &ResponseHeader, worth: &Worth) -> bool {
    let h = &resp.headers;
    let length = h
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok());
    h.get(CONTENT_ENCODING).is_none()
        && !h
            .get_all(CACHE_CONTROL)
            .iter()
            .any(|v| has_token(v.as_bytes(), b"no-transform"))
        && h.get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| worth.allows(resp.status.as_u16(), t, length))
}

/// RFC 9110 §8.8.1: another representation, so the origin's strong tag
/// becomes weak (as nginx's gzip filter does); one not quoted is dropped.
fn weaken_etag(resp: &mut ResponseHeader) {
    let Some(tag) = resp.headers.get(ETAG).map(|v| v.as_bytes().to_vec()) else {
        return;
    };
    if tag.starts_with(b"\"") {
        let weak = [&b"W/"[..], &tag].concat();
        let _ = resp.insert_header(ETAG, weak);
    } else if !tag.starts_with(b"W/") {
        resp.remove_header(&ETAG);
    }
}

/// The crates' streaming encoders, writing into a buffer taken after each
/// chunk.
enum Writer {
    Br(Option<Box<brotli::CompressorWriter<Vec<u8>>>>),
    Zstd(Option<zstd::stream::write::Encoder<'static, Vec<u8>>>),
    Gzip(Option<flate2::write::GzEncoder<Vec<u8>>>),
}

impl Writer {
    fn new(e: Encoding, levels: &Levels) -> std::io::Result<Self> {
        Ok(match e {
            Encoding::Br => Writer::Br(Some(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 * 1024,
                levels.br.min(11),
                22,
            )))),
            Encoding::Zstd => Writer::Zstd(Some(zstd::stream::write::Encoder::new(
                Vec::new(),
                levels.zstd.clamp(1, 22),
            )?)),
            Encoding::Gzip => Writer::Gzip(Some(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(levels.gzip.min(9)),
            ))),
        })
    }

    fn write(&mut self, input: &[u8], end: bool) -> std::io::Result<Bytes> {
        let out = match self {
            Writer::Br(w) => step(w, input, end, |e| e.get_mut(), |e| Ok(e.into_inner()))?,
            Writer::Zstd(w) => step(w, input, end, |e| e.get_mut(), |e| e.finish())?,
            Writer::Gzip(w) => step(w, input, end, |e| e.get_mut(), |e| e.finish())?,
        };
        Ok(Bytes::from(out))
    }
}

/// One chunk into a streaming encoder writing into a `Vec`: what it has
/// produced so far, or at `end` the rest of its stream, finished.
fn step<W: Write>(
    slot: &mut Option<W>,
    input: &[u8],
    end: bool,
    buffer: impl FnOnce(&mut W) -> &mut Vec<u8>,
    finish: impl FnOnce(W) -> std::io::Result<Vec<u8>>,
) -> std::io::Result<Vec<u8>> {
    let gone = || std::io::Error::other("encoder already finished");
    let mut enc = slot.take().ok_or_else(gone)?;
    enc.write_all(input)?;
    if end {
        return finish(enc);
    }
    let out = std::mem::take(buffer(&mut enc));
    *slot = Some(enc);
    Ok(out)
}

fn has_token(list: &[u8], token: &[u8]) -> bool {
    list.split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// `Vary: Accept-Encoding`, once.
pub fn add_vary(resp: &mut ResponseHeader) {
    let present = resp.headers.get_all(VARY).iter().any(|v| {
        let v = v.as_bytes();
        has_token(v, b"accept-encoding") || has_token(v, b"*")
    });
    if !present {
        let _ = resp.append_header(VARY, "Accept-Encoding");
    }
}
