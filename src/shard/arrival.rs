//! A client on its way between shards (connection affinity): what its
//! tasks held, carried beside the core's routing state. Its own module so
//! the mesh, the shard state and the connection code share it without
//! importing each other.

use crate::ids::ConnKind;
use crate::proto::session::Session;
use crate::shard::host::ConnAuth;

/// A plain TCP client on its way from one shard to another: what its
/// tasks held, beside the core's [`crate::core::ConnParcel`].
pub struct Arrival {
    pub(super) fd: std::os::fd::OwnedFd,
    pub(super) session: Session,
    pub(super) auth: ConnAuth,
    pub(super) ip: String,
    pub(super) port: u16,
    pub(super) start: std::time::SystemTime,
    pub(super) kind: ConnKind,
    /// Bytes read and not yet parsed (the front of an operation).
    pub(super) unread: Vec<u8>,
    /// The reload generation and account updates its old shard had applied.
    pub(super) generation: u64,
    pub(super) accounts_seen: u64,
}
