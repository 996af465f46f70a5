//! Newtypes for the identifiers that travel through the server.

use std::fmt;

/// Index of a shard (one executor pinned to one core).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl ShardId {
    /// The shard index as a `usize`, for indexing per-shard arrays.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// How a client connected: the listener it came through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConnKind {
    /// The NATS client port (plain or TLS).
    #[default]
    Standard,
    /// The WebSocket port.
    WebSocket,
}

impl ConnKind {
    /// The JWT `allowed_connection_types` name.
    pub fn jwt_name(self) -> &'static str {
        match self {
            ConnKind::Standard => "STANDARD",
            ConnKind::WebSocket => "WEBSOCKET",
        }
    }

    /// Whether an `allowed_connection_types` list (a user JWT's or a
    /// configured user's) admits this kind; an empty list admits all.
    pub fn allowed_by(self, types: &[String]) -> bool {
        types.is_empty() || types.iter().any(|t| t.eq_ignore_ascii_case(self.jwt_name()))
    }

    /// The `client_type` monitoring and events report.
    pub fn client_type(self) -> &'static str {
        match self {
            ConnKind::Standard => "nats",
            ConnKind::WebSocket => "websocket",
        }
    }
}

/// A client connection id (`cid`), unique across the server and all shards.
/// It is the `client_id` sent in INFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cid:{}", self.0)
    }
}

/// A subscription's server-wide key: the owning shard in the top 16 bits and
/// a per-shard counter below. Other shards name a subscription by this key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubKey(pub u64);

impl SubKey {
    /// Builds the key of the `n`th subscription made on `shard`.
    pub fn new(shard: ShardId, n: u64) -> SubKey {
        SubKey(((shard.0 as u64) << 48) | (n & ((1 << 48) - 1)))
    }

    /// The shard that owns the subscription.
    pub fn shard(self) -> ShardId {
        ShardId((self.0 >> 48) as u16)
    }
}

/// The client's subscription id (`sid`), an opaque token chosen by the client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Sid(pub Box<[u8]>);

impl Sid {
    /// Copies a sid out of a protocol line.
    pub fn from_bytes(b: &[u8]) -> Sid {
        Sid(b.into())
    }

    /// The sid's bytes as the client sent them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Lets maps keyed by `Sid` be searched with the bytes of a protocol line
/// (the derived `Hash` hashes exactly those bytes).
impl std::borrow::Borrow<[u8]> for Sid {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

/// An account, numbered densely from 0 in the order the server met it; the
/// same number on every shard (the account table hands them out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct AccountId(pub u32);

impl AccountId {
    /// The global account `$G`, where clients land when no accounts are configured.
    pub const GLOBAL: AccountId = AccountId(0);

    /// The id as a `usize`, for indexing per-account arrays.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}
