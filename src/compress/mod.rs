//! S2 compression of server-to-server links (routes and leaf nodes), as
//! nats-server compresses them: the modes and how two servers agree on
//! one (`mode`), and the S2 stream framing both ways (`codec`); and the
//! compressed replies and events a request asks for with
//! `Accept-Encoding` (`encoding`). Sans-IO: bytes in, bytes out; the
//! shard's link tasks decide when to switch.

pub mod codec;
pub mod encoding;
pub mod mode;

pub use codec::{Deframer, Framer, S2Error};
pub use mode::{CompressionMode, Level, Negotiated};
