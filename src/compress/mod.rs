//! Content codings: which one a client gets (RFC 9110 §12.5.3, one function
//! both request paths call, over plain data), and the encoders. Pages are
//! encoded once, off the request path, at high levels (`encode`); proxied
//! answers are encoded as they stream (`Streaming`, the crates' writers).

mod coding;
mod stream;

pub use coding::{choose, encode, Encoding, Levels, NotAcceptable, Worth};
pub use stream::{add_vary, StreamPolicy, Streaming};
