//! The one table that maps every client-visible protocol condition to the
//! exact text nats-server sends and to whether the connection is closed.

use super::parser::ParseError;

/// A condition reported to a client with `-ERR '<text>'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Unknown op, bad bytes, or payload not followed by CRLF.
    UnknownProtocolOperation,
    /// Control-line arguments longer than `max_control_line`.
    MaxControlLineExceeded,
    /// PUB/HPUB size larger than the max payload.
    MaxPayloadViolation,
    /// SUB with a malformed subject.
    InvalidSubject,
    /// PUB to a wildcard or malformed subject in pedantic mode.
    InvalidPublishSubject,
    /// Too many PINGs unanswered.
    StaleConnection,
    /// No CONNECT within the auth timeout.
    AuthenticationTimeout,
    /// Authentication failed or a non-CONNECT op came first while auth is required.
    AuthorizationViolation,
    /// The server's `max_connections` was reached.
    MaxConnectionsExceeded,
    /// CONNECT `protocol` was neither 0 nor 1.
    InvalidClientProtocol,
    /// CONNECT asked for no_responders without headers.
    NoRespondersRequiresHeaders,
    /// Too many subscriptions for this client.
    MaxSubscriptionsExceeded,
    /// The account's connection limit (account JWT `conn`) was reached.
    MaxAccountConnectionsExceeded,
    /// The user JWT expired (or its time window ended) while connected.
    UserAuthenticationExpired,
    /// An account update revoked the connected user.
    UserAuthenticationRevoked,
    /// The account JWT expired while the client was connected.
    AccountAuthenticationExpired,
    /// A publish or subscription the user's permissions refuse; the text
    /// names the subject, see [`permissions_violation`].
    PermissionsViolation,
}

/// What a permissions violation was about.
#[derive(Debug, Clone, Copy)]
pub enum Violation<'a> {
    /// A publish to this subject.
    Publish(&'a [u8]),
    /// A subscription to this subject, in this queue group.
    Subscribe(&'a [u8], Option<&'a [u8]>),
    /// An existing subscription (subject, queue, sid) that changed
    /// permissions no longer allow; the server removed it.
    Removed(&'a [u8], Option<&'a [u8]>, &'a [u8]),
}

/// The text of a permissions violation `-ERR`, exactly as nats-server
/// words it (the connection stays open).
pub fn permissions_violation(v: Violation<'_>) -> String {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match v {
        Violation::Publish(subj) => format!("Permissions Violation for Publish to \"{}\"", s(subj)),
        Violation::Subscribe(subj, None) => format!("Permissions Violation for Subscription to \"{}\"", s(subj)),
        Violation::Subscribe(subj, Some(q)) => format!(
            "Permissions Violation for Subscription to \"{}\" using queue \"{}\"",
            s(subj),
            s(q)
        ),
        Violation::Removed(subj, None, sid) => format!(
            "Permissions Violation for Subscription to \"{}\" (sid \"{}\")",
            s(subj),
            s(sid)
        ),
        Violation::Removed(subj, Some(q), sid) => format!(
            "Permissions Violation for Subscription to \"{}\" using queue \"{}\" (sid \"{}\")",
            s(subj),
            s(q),
            s(sid)
        ),
    }
}

impl WireError {
    /// The text inside the quotes of `-ERR '...'`, exactly as nats-server sends it.
    pub fn text(self) -> &'static str {
        match self {
            WireError::UnknownProtocolOperation => "Unknown Protocol Operation",
            WireError::MaxControlLineExceeded => "maximum control line exceeded",
            WireError::MaxPayloadViolation => "Maximum Payload Violation",
            WireError::InvalidSubject => "Invalid Subject",
            WireError::InvalidPublishSubject => "Invalid Publish Subject",
            WireError::StaleConnection => "Stale Connection",
            WireError::AuthenticationTimeout => "Authentication Timeout",
            WireError::AuthorizationViolation => "Authorization Violation",
            WireError::MaxConnectionsExceeded => "maximum connections exceeded",
            WireError::InvalidClientProtocol => "invalid client protocol",
            WireError::NoRespondersRequiresHeaders => "no responders requires headers support",
            WireError::MaxSubscriptionsExceeded => "maximum subscriptions exceeded",
            WireError::MaxAccountConnectionsExceeded => "maximum account active connections exceeded",
            WireError::UserAuthenticationExpired => "User Authentication Expired",
            WireError::UserAuthenticationRevoked => "User Authentication Revoked",
            WireError::AccountAuthenticationExpired => "Account Authentication Expired",
            WireError::PermissionsViolation => "Permissions Violation",
        }
    }

    /// Whether nats-server closes the connection after sending this error,
    /// and with which recorded reason.
    pub fn closes(self) -> Option<CloseReason> {
        match self {
            WireError::UnknownProtocolOperation | WireError::MaxControlLineExceeded => Some(CloseReason::ParseError),
            WireError::MaxPayloadViolation => Some(CloseReason::MaxPayloadExceeded),
            WireError::StaleConnection => Some(CloseReason::StaleConnection),
            WireError::AuthenticationTimeout => Some(CloseReason::AuthenticationTimeout),
            WireError::AuthorizationViolation => Some(CloseReason::AuthenticationViolation),
            WireError::MaxConnectionsExceeded => Some(CloseReason::MaxConnectionsExceeded),
            WireError::InvalidClientProtocol => Some(CloseReason::BadClientProtocolVersion),
            WireError::NoRespondersRequiresHeaders => Some(CloseReason::ProtocolViolation),
            WireError::MaxAccountConnectionsExceeded => Some(CloseReason::MaxAccountConnectionsExceeded),
            WireError::UserAuthenticationExpired | WireError::AccountAuthenticationExpired => {
                Some(CloseReason::AuthenticationExpired)
            }
            WireError::UserAuthenticationRevoked => Some(CloseReason::CredentialsRevoked),
            WireError::InvalidSubject
            | WireError::InvalidPublishSubject
            | WireError::MaxSubscriptionsExceeded
            | WireError::PermissionsViolation => None,
        }
    }
}

/// Why a connection was closed (nats-server's closed-state names, used by
/// logs and, later, by connz).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed its side.
    ClientClosed,
    /// Unparseable input, or the client sent `-ERR`.
    ParseError,
    /// Malformed arguments or CONNECT (no -ERR sent).
    ProtocolViolation,
    /// PUB larger than the max payload.
    MaxPayloadExceeded,
    /// Too many PINGs unanswered.
    StaleConnection,
    /// No CONNECT within the auth timeout.
    AuthenticationTimeout,
    /// Authentication failed.
    AuthenticationViolation,
    /// Refused because `max_connections` was reached.
    MaxConnectionsExceeded,
    /// CONNECT named an unknown protocol level.
    BadClientProtocolVersion,
    /// Outbound data passed `max_pending`.
    SlowConsumerPendingBytes,
    /// A write did not finish within `write_deadline`.
    SlowConsumerWriteDeadline,
    /// A socket read failed.
    ReadError,
    /// A socket write failed.
    WriteError,
    /// The server is shutting down.
    ServerShutdown,
    /// The account's connection limit was reached.
    MaxAccountConnectionsExceeded,
    /// The user's or account's credentials expired.
    AuthenticationExpired,
    /// The user was revoked.
    CredentialsRevoked,
    /// Disconnected by a `$SYS.REQ.SERVER.<id>.KICK` request.
    Kicked,
    /// A second route to a server already connected (or to this server).
    DuplicateRoute,
    /// A route from another cluster.
    ClusterNameConflict,
    /// A route from a server with this server's name.
    DuplicateServerName,
    /// A client dialed the route port.
    IncorrectPort,
    /// The route was removed from the configuration.
    RouteRemoved,
    /// The client held as many subscriptions as its limit allows when the
    /// limit was applied (a user JWT with `subs: 0`, a lowered limit).
    MaxSubscriptionsExceeded,
}

impl CloseReason {
    /// nats-server's name for the closed state.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "Client Closed",
            CloseReason::ParseError => "Parse Error",
            CloseReason::ProtocolViolation => "Protocol Violation",
            CloseReason::MaxPayloadExceeded => "Maximum Message Payload Exceeded",
            CloseReason::StaleConnection => "Stale Connection",
            CloseReason::AuthenticationTimeout => "Authentication Timeout",
            CloseReason::AuthenticationViolation => "Authentication Failure",
            CloseReason::MaxConnectionsExceeded => "Maximum Connections Exceeded",
            CloseReason::BadClientProtocolVersion => "Bad Client Protocol Version",
            CloseReason::SlowConsumerPendingBytes => "Slow Consumer (Pending Bytes)",
            CloseReason::SlowConsumerWriteDeadline => "Slow Consumer (Write Deadline)",
            CloseReason::ReadError => "Read Error",
            CloseReason::WriteError => "Write Error",
            CloseReason::ServerShutdown => "Server Shutdown",
            CloseReason::MaxAccountConnectionsExceeded => "Maximum Account Connections Exceeded",
            CloseReason::AuthenticationExpired => "Authentication Expired",
            CloseReason::CredentialsRevoked => "Credentials Revoked",
            CloseReason::Kicked => "Kicked",
            CloseReason::DuplicateRoute => "Duplicate Route",
            CloseReason::ClusterNameConflict => "Cluster Name Conflict",
            CloseReason::DuplicateServerName => "Duplicate Server Name",
            CloseReason::IncorrectPort => "Incorrect Port",
            CloseReason::RouteRemoved => "Route Removed",
            CloseReason::MaxSubscriptionsExceeded => "Maximum Subscriptions Exceeded",
        }
    }
}

/// What a peer server is told on a route before it is closed, with
/// nats-server's texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteWireError {
    /// The peer's CONNECT names another cluster.
    ClusterNameMismatch {
        /// The peer's cluster.
        theirs: String,
        /// This server's cluster.
        ours: String,
    },
    /// Wrong or missing route credentials, or a first operation other
    /// than CONNECT.
    AuthorizationViolation,
    /// No CONNECT within the route authorization timeout.
    AuthenticationTimeout,
    /// A NATS client connected to the route port.
    ClientOnRoutePort,
    /// Pings went unanswered.
    StaleConnection,
    /// A dedicated route for an account between servers of which one
    /// does not pool.
    NoDedicatedRoute(String),
    /// A dedicated route for an account this server does not pin.
    NoRouteForAccount(String),
    /// The dialer's pool index is outside the pool (`size`: the dialer's
    /// pool size, as nats-server words it).
    InvalidPoolIndex {
        /// The index asked for.
        idx: i32,
        /// The peer's pool size.
        size: i32,
    },
    /// The accepting side named a pool index (only dialers choose one).
    PoolIndexSet(i32),
    /// A compression mode this server does not know (the text says which).
    Compression(String),
}

impl RouteWireError {
    /// The `-ERR` text.
    pub fn text(&self) -> String {
        match self {
            RouteWireError::ClusterNameMismatch { theirs, ours } => {
                format!("Rejecting connection, cluster name \"{theirs}\" does not match \"{ours}\"")
            }
            RouteWireError::AuthorizationViolation => "Authorization Violation".into(),
            RouteWireError::AuthenticationTimeout => "Authentication Timeout".into(),
            RouteWireError::ClientOnRoutePort => "attempted to connect to route port".into(),
            RouteWireError::StaleConnection => "Stale Connection".into(),
            RouteWireError::NoDedicatedRoute(a) => {
                format!("Not possible to have a dedicated route for account \"{a}\" between those servers")
            }
            RouteWireError::NoRouteForAccount(a) => format!("No route for account \"{a}\""),
            RouteWireError::InvalidPoolIndex { idx, size } => {
                format!("Invalid route pool index: {idx} - pool size is {size}")
            }
            RouteWireError::PoolIndexSet(i) => format!("Route pool index should not be set but is set to {i}"),
            RouteWireError::Compression(text) => text.clone(),
        }
    }

    /// The close reason that goes with it.
    pub fn close_reason(&self) -> CloseReason {
        match self {
            RouteWireError::ClusterNameMismatch { .. } => CloseReason::ClusterNameConflict,
            RouteWireError::AuthorizationViolation => CloseReason::AuthenticationViolation,
            RouteWireError::AuthenticationTimeout => CloseReason::AuthenticationTimeout,
            RouteWireError::ClientOnRoutePort => CloseReason::IncorrectPort,
            RouteWireError::StaleConnection => CloseReason::StaleConnection,
            RouteWireError::NoDedicatedRoute(_)
            | RouteWireError::NoRouteForAccount(_)
            | RouteWireError::InvalidPoolIndex { .. }
            | RouteWireError::PoolIndexSet(_)
            | RouteWireError::Compression(_) => CloseReason::ProtocolViolation,
        }
    }
}

/// The `-ERR` texts of leaf node connections, as nats-server 2.15 words
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeafWireError {
    /// Wrong or missing credentials, or a first operation other than
    /// CONNECT.
    AuthorizationViolation,
    /// No CONNECT within the authorization timeout.
    AuthenticationTimeout,
    /// A NATS client connected to the leaf port.
    ClientOnLeafPort,
    /// The leaf's cluster name is this server's.
    SameClusterName,
    /// A cluster name with spaces.
    ClusterNameSpaces,
    /// This server's loop-detection subject came back (`account`: the
    /// local account of the connection).
    LoopDetected(String),
    /// The hub did not confirm the CONNECT in time.
    StaleLeafConnection,
    /// Pings went unanswered.
    StaleConnection,
    /// The account's leaf limit (JWT `leaf`) is reached.
    MaxAccountConnections,
    /// The leaf's version is below the hub's `min_version`.
    MinVersion(String),
    /// A compression mode this server does not know (the text says which).
    Compression(String),
    /// A hub's leaf user subscribed or published outside its permissions
    /// (the text names the subject, see [`permissions_violation`]).
    Permissions(String),
}

impl LeafWireError {
    /// The `-ERR` text.
    pub fn text(&self) -> String {
        match self {
            LeafWireError::AuthorizationViolation => "Authorization Violation".into(),
            LeafWireError::AuthenticationTimeout => "Authentication Timeout".into(),
            LeafWireError::ClientOnLeafPort => "attempted to connect to leaf node port".into(),
            LeafWireError::SameClusterName => "remote leafnode has same cluster name".into(),
            LeafWireError::ClusterNameSpaces => "cluster name cannot contain spaces".into(),
            LeafWireError::LoopDetected(a) => {
                format!("Loop detected for leafnode account=\"{a}\". Delaying attempt to reconnect for 30s")
            }
            LeafWireError::StaleLeafConnection => "Stale Leaf Node Connection - Closing".into(),
            LeafWireError::StaleConnection => "Stale Connection".into(),
            LeafWireError::Permissions(text) => text.clone(),
            LeafWireError::MaxAccountConnections => "maximum account active connections exceeded".into(),
            LeafWireError::MinVersion(v) => format!("connection rejected since minimum version required is {v:?}"),
            LeafWireError::Compression(text) => text.clone(),
        }
    }

    /// The close reason that goes with it.
    pub fn close_reason(&self) -> CloseReason {
        match self {
            LeafWireError::AuthorizationViolation => CloseReason::AuthenticationViolation,
            LeafWireError::AuthenticationTimeout => CloseReason::AuthenticationTimeout,
            LeafWireError::ClientOnLeafPort => CloseReason::IncorrectPort,
            LeafWireError::StaleLeafConnection | LeafWireError::StaleConnection => CloseReason::StaleConnection,
            LeafWireError::MaxAccountConnections => CloseReason::MaxAccountConnectionsExceeded,
            LeafWireError::MinVersion(_) | LeafWireError::Compression(_) => CloseReason::ProtocolViolation,
            LeafWireError::SameClusterName
            | LeafWireError::ClusterNameSpaces
            | LeafWireError::LoopDetected(_)
            | LeafWireError::Permissions(_) => CloseReason::ProtocolViolation,
        }
    }
}

/// What the connection does about a parse error: an optional `-ERR` and the
/// close reason.
pub fn parse_error_outcome(e: ParseError) -> (Option<WireError>, CloseReason) {
    match e {
        ParseError::UnknownOp => (Some(WireError::UnknownProtocolOperation), CloseReason::ParseError),
        ParseError::MaxControlLine => (Some(WireError::MaxControlLineExceeded), CloseReason::ParseError),
        ParseError::MaxPayload(_) => (Some(WireError::MaxPayloadViolation), CloseReason::MaxPayloadExceeded),
        ParseError::BadArgs(_) | ParseError::HeadersNotSupported => (None, CloseReason::ProtocolViolation),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_match_nats_server() {
        assert_eq!(WireError::MaxConnectionsExceeded.text(), "maximum connections exceeded");
        assert_eq!(
            WireError::MaxControlLineExceeded.text(),
            "maximum control line exceeded"
        );
        assert_eq!(WireError::AuthenticationTimeout.text(), "Authentication Timeout");
        assert!(WireError::InvalidSubject.closes().is_none());
        assert!(WireError::StaleConnection.closes().is_some());
        assert_eq!(parse_error_outcome(ParseError::BadArgs("PUB")).0, None);
    }
}
