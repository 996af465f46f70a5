//! Newtypes for the identifiers that travel through the server.

use std::fmt;

/// The base-62 digits nats-server writes its tokens and hashes in (reply
/// subject tokens, server hashes, event ids).
pub const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

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
    /// The leaf node port (a leaf authenticating as a user).
    Leaf,
    /// A leaf node on the WebSocket port.
    LeafWs,
}

impl ConnKind {
    /// The JWT `allowed_connection_types` name.
    pub fn jwt_name(self) -> &'static str {
        match self {
            ConnKind::Standard => "STANDARD",
            ConnKind::WebSocket => "WEBSOCKET",
            ConnKind::Leaf => "LEAFNODE",
            ConnKind::LeafWs => "LEAFNODE_WS",
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
            ConnKind::Leaf | ConnKind::LeafWs => "leafnode",
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

/// What is at the other end of a connection the core routes for. Each kind
/// has its own encoder and its own forwarding rules (see
/// [`LinkKind::forwards_to`]); nats-server tells the same kinds apart
/// (CLIENT, SYSTEM, ROUTER, LEAF).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// An application's client: MSG/HMSG per subscription id.
    #[default]
    Client,
    /// The server's own internal client (system account services):
    /// deliveries become values in the core's internal inbox.
    System,
    /// A cluster route to another server: RMSG/HMSG naming the account.
    Route,
    /// A leaf node connection: LMSG/HMSG.
    Leaf,
}

impl LinkKind {
    const ALL: [LinkKind; 4] = [LinkKind::Client, LinkKind::System, LinkKind::Route, LinkKind::Leaf];

    /// Whether a message that arrived over a link of this kind may be
    /// delivered to a subscription held by a link of kind `to`. Routes are
    /// one hop: what a route brought in goes to this server's clients and
    /// leaf nodes, never out on another route (every server of a full mesh
    /// got it from the publisher's own server). A leaf node's own
    /// subscriptions never get the message back through the same link:
    /// that is the publisher's no-echo rule, decided per connection.
    pub fn forwards_to(self, to: LinkKind) -> bool {
        !(self == LinkKind::Route && to == LinkKind::Route)
    }

    /// Whether links of this kind are the server's own, local side
    /// (clients and the internal client), which queue groups prefer over
    /// members behind routes and leaf nodes.
    pub fn is_local(self) -> bool {
        matches!(self, LinkKind::Client | LinkKind::System)
    }

    fn bits(self) -> u64 {
        self as u64
    }
}

/// A subscription's server-wide key: the owning shard in the top 16 bits,
/// the kind of link holding it in the next 2, and a per-shard counter below.
/// Other shards name a subscription by this key, and the link kind in it
/// lets the publishing shard apply forwarding rules without asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubKey(pub u64);

impl SubKey {
    const COUNTER_BITS: u32 = 46;

    /// Builds the key of the `n`th subscription made on `shard`, held by a client.
    pub fn new(shard: ShardId, n: u64) -> SubKey {
        Self::of_link(shard, LinkKind::Client, n)
    }

    /// Builds the key of the `n`th subscription made on `shard`, held by a
    /// link of kind `link`.
    pub fn of_link(shard: ShardId, link: LinkKind, n: u64) -> SubKey {
        SubKey(((shard.0 as u64) << 48) | (link.bits() << Self::COUNTER_BITS) | (n & ((1 << Self::COUNTER_BITS) - 1)))
    }

    /// Builds the key a subscription gets when its connection moves to
    /// `to`: allocated by the shard it leaves (`by`, its `n`th key) with a
    /// mark no key made on `to` itself carries, so it is unique there.
    pub fn moved(to: ShardId, by: ShardId, n: u64) -> SubKey {
        let counter =
            Self::MOVED | ((by.0 as u64 & Self::MOVED_BY_MASK) << Self::MOVED_BY_SHIFT) | (n & Self::MOVED_N_MASK);
        Self::of_link(to, LinkKind::Client, counter)
    }

    /// Marks a moved key (a shard's own counter never reaches it).
    const MOVED: u64 = 1 << 45;
    const MOVED_BY_SHIFT: u32 = 36;
    const MOVED_BY_MASK: u64 = (1 << 9) - 1;
    const MOVED_N_MASK: u64 = (1 << 36) - 1;
    /// Shards a moved key can name as the one that made it.
    pub const MOVED_MAX_SHARDS: usize = 1 << 9;

    /// The shard that owns the subscription.
    pub fn shard(self) -> ShardId {
        ShardId((self.0 >> 48) as u16)
    }

    /// The kind of link that holds the subscription.
    pub fn link(self) -> LinkKind {
        LinkKind::ALL[((self.0 >> Self::COUNTER_BITS) & 3) as usize]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_keys_carry_shard_and_link() {
        for link in LinkKind::ALL {
            let k = SubKey::of_link(ShardId(513), link, (1 << 46) + 5);
            assert_eq!((k.shard(), k.link()), (ShardId(513), link));
        }
        assert_eq!(SubKey::new(ShardId(3), 9).link(), LinkKind::Client);
        let m = SubKey::moved(ShardId(3), ShardId(5), 9);
        assert_eq!((m.shard(), m.link()), (ShardId(3), LinkKind::Client));
        assert_ne!(m, SubKey::new(ShardId(3), 9));
        assert_ne!(m, SubKey::moved(ShardId(3), ShardId(4), 9));
    }

    #[test]
    fn routes_are_one_hop() {
        use LinkKind::*;
        assert!(!Route.forwards_to(Route));
        for to in [Client, System, Leaf] {
            assert!(Route.forwards_to(to));
        }
        for from in [Client, System, Leaf] {
            assert!(LinkKind::ALL.iter().all(|&to| from.forwards_to(to)));
        }
    }
}
