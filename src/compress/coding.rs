//! The codings, how a client's `Accept-Encoding` picks one, and a page's
//! body encoded in one go.

use std::io::Write;

/// A content coding edgepop produces (in a config: `"br"`, `"zstd"`, `"gzip"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Br,
    Zstd,
    Gzip,
}

impl Encoding {
    pub const ALL: [Encoding; 3] = [Encoding::Br, Encoding::Zstd, Encoding::Gzip];

    /// The token of `Content-Encoding` and `Accept-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }

    /// The coding a client's `Accept-Encoding` token names (`x-gzip` is gzip).
    fn from_token(token: &str) -> Option<Self> {
        let named = |name: &str| token.eq_ignore_ascii_case(name);
        match () {
            _ if named("br") => Some(Encoding::Br),
            _ if named("zstd") => Some(Encoding::Zstd),
            _ if named("gzip") || named("x-gzip") => Some(Encoding::Gzip),
            _ => None,
        }
    }
}

/// The client accepts none of the codings available, identity included
/// (`identity;q=0` or `*;q=0`): 406.
#[derive(Debug, PartialEq, Eq)]
pub struct NotAcceptable;

/// The coding to send, from the request's `Accept-Encoding` values and the
/// codings available in the server's order of preference. `Ok(None)` is
/// identity. No header: identity (as nginx and Caddy do, a client that
/// says nothing gets no coding). The highest q wins; among equal q, the
/// server's order, and any coding before identity.
pub fn choose<'a>(
    accept_encoding: impl IntoIterator<Item = &'a [u8]>,
    available: impl IntoIterator<Item = Encoding>,
) -> Result<Option<Encoding>, NotAcceptable> {
    let mut q_of = [None::<u16>; 3];
    let (mut identity, mut star) = (None::<u16>, None::<u16>);
    let mut said = false;
    for value in accept_encoding {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim();
            if token.is_empty() {
                continue;
            }
            said = true;
            let q = parts.find_map(|p| qvalue(p.trim())).unwrap_or(1000);
            match token {
                "*" => star = Some(q),
                t if t.eq_ignore_ascii_case("identity") => identity = Some(q),
                t => {
                    if let Some(e) = Encoding::from_token(t) {
                        let slot = &mut q_of[e as usize];
                        *slot = Some(slot.map_or(q, |old| old.max(q)));
                    }
                }
            }
        }
    }
    if !said {
        return Ok(None);
    }
    // The highest q; among equals the first in the server's order.
    let mut best: Option<(Encoding, u16)> = None;
    for e in available {
        let q = q_of[e as usize].or(star).unwrap_or(0);
        if q > 0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((e, q));
        }
    }
    // `*` covers identity too when identity is not named (§12.5.3).
    let identity_q = identity.or(star).unwrap_or(1000);
    match best {
        Some((e, q)) if q >= identity_q => Ok(Some(e)),
        _ if identity_q > 0 => Ok(None),
        Some((e, _)) => Ok(Some(e)),
        None => Err(NotAcceptable),
    }
}

/// `q=0.5` → 500 (thousandths, as RFC 9110 §12.4.2 allows three digits).
fn qvalue(param: &str) -> Option<u16> {
    let (name, value) = param.split_once('=')?;
    if !name.trim().eq_ignore_ascii_case("q") {
        return None;
    }
    let value = value.trim();
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    let int: u16 = match int {
        "0" => 0,
        "1" => 1,
        _ => return None,
    };
    let mut thousandths = 0u16;
    for (i, c) in frac.chars().take(3).enumerate() {
        let d = c.to_digit(10)? as u16;
        thousandths += d * [100, 10, 1][i];
    }
    Some((int * 1000 + thousandths).min(1000))
}

/// Which responses are worth encoding (`[compression]`): a 200, not
/// shorter than `min_bytes`, of a media type in `types` (`text/*` covers a
/// whole top-level type). Pages and proxied answers ask the same.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Worth {
    pub types: Vec<String>,
    pub min_bytes: usize,
}

impl Worth {
    /// `length`: None when not known ahead (a streamed answer).
    pub fn allows(&self, status: u16, content_type: &str, length: Option<usize>) -> bool {
        status == 200
            && length.is_none_or(|n| n >= self.min_bytes)
            && self.compressible(content_type)
    }

    fn compressible(&self, content_type: &str) -> bool {
        let media = content_type.split(';').next().unwrap_or("").trim();
        let top = media.split('/').next().unwrap_or("");
        self.types.iter().any(|t| match t.strip_suffix("/*") {
            Some(wanted) => top.eq_ignore_ascii_case(wanted),
            None => media.eq_ignore_ascii_case(t),
        })
    }
}

/// How hard each coding works (the levels of `[compression]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Levels {
    pub br: u32,
    pub zstd: i32,
    pub gzip: u32,
}

/// `body` encoded with `e` in one go (a page, on a blocking thread).
pub fn encode(e: Encoding, body: &[u8], levels: &Levels) -> std::io::Result<Vec<u8>> {
    match e {
        Encoding::Br => {
            let mut out = Vec::with_capacity(body.len() / 4);
            let params = brotli::enc::BrotliEncoderParams {
                quality: levels.br.min(11) as i32,
                lgwin: 22,
                size_hint: body.len(),
                ..Default::default()
            };
            brotli::BrotliCompress(&mut &body[..], &mut out, &params)?;
            Ok(out)
        }
        Encoding::Zstd => zstd::bulk::compress(body, levels.zstd.clamp(1, 22)),
        Encoding::Gzip => {
            let level = flate2::Compression::new(levels.gzip.min(9));
            let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), level);
            enc.write_all(body)?;
            enc.finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Encoding::*;

    fn pick(header: &str, available: &[Encoding]) -> Result<Option<Encoding>, NotAcceptable> {
        choose([header.as_bytes()], available.iter().copied())
    }

    #[test]
    fn negotiation_follows_q_values_and_the_servers_order() {
        let all = [Br, Zstd, Gzip];
        assert_eq!(choose([], all), Ok(None), "no header: identity");
        assert_eq!(pick("", &all), Ok(None), "empty header: identity");
        assert_eq!(
            pick("gzip, br", &all),
            Ok(Some(Br)),
            "equal q: server's order"
        );
        assert_eq!(pick("gzip;q=1, br;q=0.5", &all), Ok(Some(Gzip)));
        assert_eq!(pick("x-gzip", &all), Ok(Some(Gzip)));
        assert_eq!(pick("GZIP", &all), Ok(Some(Gzip)));
        assert_eq!(pick("br;q=0", &all), Ok(None), "q=0 refuses br");
        assert_eq!(pick("*", &all), Ok(Some(Br)));
        assert_eq!(pick("*;q=0.5, br;q=0", &all), Ok(Some(Zstd)));
        assert_eq!(pick("deflate", &all), Ok(None), "unknown codings: identity");
        assert_eq!(pick("gzip", &[Br]), Ok(None), "no such variant: identity");
        assert_eq!(pick("gzip, identity;q=0", &all), Ok(Some(Gzip)));
        assert_eq!(pick("identity;q=0", &[]), Err(NotAcceptable));
        assert_eq!(pick("br, *;q=0", &[Gzip]), Err(NotAcceptable));
        assert_eq!(pick("gzip;q=0.3, identity;q=0.8", &all), Ok(None));
        assert_eq!(pick("gzip;q=0.8, identity;q=0.3", &all), Ok(Some(Gzip)));
        assert_eq!(
            pick("gzip;q=0.001, br;q=0.0005, identity;q=0", &all),
            Ok(Some(Gzip)),
            "three digits: br is 0"
        );
        assert_eq!(pick("gzip;q=2", &all), Ok(Some(Gzip)), "bad q: 1");
        assert_eq!(
            choose([&b"br;q=0.1"[..], &b"zstd"[..]], all),
            Ok(Some(Zstd)),
            "two header lines are one list"
        );
    }

    #[test]
    fn worth_is_status_size_and_media_type() {
        let worth = Worth {
            types: vec!["text/*".to_string(), "application/json".to_string()],
            min_bytes: 1024,
        };
        assert!(worth.allows(200, "text/html; charset=utf-8", Some(2048)));
        assert!(
            worth.allows(200, "Application/JSON", None),
            "length unknown"
        );
        assert!(worth.allows(200, "TEXT/plain", Some(1024)));
        assert!(!worth.allows(200, "image/png", Some(2048)));
        assert!(!worth.allows(200, "application/jsonx", Some(2048)));
        assert!(!worth.allows(200, "text/html", Some(1023)), "too small");
        assert!(!worth.allows(206, "text/html", Some(2048)), "not a 200");
    }

    #[test]
    fn every_coding_round_trips() {
        let levels = Levels {
            br: 11,
            zstd: 19,
            gzip: 9,
        };
        let body = "<p>storefront</p>".repeat(500);
        for e in Encoding::ALL {
            let out = encode(e, body.as_bytes(), &levels).unwrap();
            assert!(out.len() < body.len() / 10, "{e:?}: {}", out.len());
            let back = match e {
                Br => {
                    let mut v = Vec::new();
                    brotli::BrotliDecompress(&mut &out[..], &mut v).unwrap();
                    v
                }
                Zstd => zstd::stream::decode_all(&out[..]).unwrap(),
                Gzip => {
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&out[..]), &mut v)
                        .unwrap();
                    v
                }
            };
            assert_eq!(back, body.as_bytes(), "{e:?}");
        }
    }
}
