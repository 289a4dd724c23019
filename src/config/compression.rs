//! `[compression]`: encoded variants of pages (made once per version) and
//! proxied answers encoded as they stream.

use crate::compress::{Encoding, Levels, Worth};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// br / zstd / gzip variants of replica pages, made off the request path.
    pub pages: bool,
    /// Proxied answers encoded on the fly (sites may turn it off:
    /// `[[sites]] compress_proxied = false`).
    pub proxied: bool,
    /// Media types worth encoding; `text/*` covers a top-level type.
    pub types: Vec<String>,
    /// Pages smaller than this are sent as they are.
    pub min_bytes: usize,
    /// A page variant is kept only if it saves at least this share.
    pub min_saving: f64,
    /// The server's order among codings the client accepts equally.
    pub prefer: Vec<Encoding>,
    /// Levels for pages (once per version, so the highest that pay).
    pub page_levels: LevelsConfig,
    /// Levels for proxied answers (every response: cheap ones).
    pub proxied_levels: LevelsConfig,
    /// Blocking threads encoding pages at once.
    pub workers: usize,
    /// Page jobs waiting beyond them; more are dropped (counted) and asked
    /// again on the page's next hit.
    pub queue: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelsConfig {
    pub br: u32,
    pub zstd: i32,
    pub gzip: u32,
}

impl From<LevelsConfig> for Levels {
    fn from(l: LevelsConfig) -> Self {
        Levels {
            br: l.br,
            zstd: l.zstd,
            gzip: l.gzip,
        }
    }
}

impl CompressionConfig {
    /// What both pages and proxied answers must be to get encoded.
    pub fn worth(&self) -> Worth {
        Worth {
            types: self.types.clone(),
            min_bytes: self.min_bytes,
        }
    }
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            pages: true,
            proxied: true,
            types: [
                "text/*",
                "application/json",
                "application/javascript",
                "application/xml",
                "application/rss+xml",
                "application/atom+xml",
                "application/ld+json",
                "application/manifest+json",
                "image/svg+xml",
            ]
            .map(String::from)
            .to_vec(),
            min_bytes: 1024,
            min_saving: 0.1,
            prefer: vec![Encoding::Br, Encoding::Zstd, Encoding::Gzip],
            page_levels: LevelsConfig {
                br: 11,
                zstd: 19,
                gzip: 9,
            },
            proxied_levels: LevelsConfig {
                br: 4,
                zstd: 3,
                gzip: 6,
            },
            workers: 1,
            queue: 10_000,
        }
    }
}
