//! The verifier: from a CONNECT's credentials to an [`Identity`], or a
//! refusal. An `Identity` can only be made here, so a session that holds
//! one was verified.
//!
//! Config mode checks tokens, user/password (plain or bcrypt) and nkey
//! signatures over the nonce. Operator mode checks the whole JWT chain:
//! user JWT signature and times, the account JWT (from the resolver) issued
//! by a trusted operator key, the user's issuer among the account's keys
//! (scoped keys supply the user's permissions), bearer, nonce signature,
//! revocations, source networks, time windows and limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use super::accounts::{Account, AccountTable, ConnSlot};
use super::config::{
    implicit_resolver, AccountConfig, AuthConfig, Credential, ExchangeKind, ExportConfig, ImportConfig, ResolverConfig,
    ResponseRule, ResponseType, DEFAULT_RESPONSE_THRESHOLD, GLOBAL_ACCOUNT,
};
use super::jwt;
use super::password;
use super::perms::{PatternList, Permissions, ResponsePermission, SubjectRule};
use super::store::DirStore;
use crate::core::imports::Imports;
use crate::proto::connect::ClientOpts;
use crate::proto::errors::WireError;

/// Why a CONNECT was refused. Every variant but the connection limit is an
/// `Authorization Violation` on the wire; the variants say why in the log.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No credentials matched.
    #[error("no matching credentials")]
    NoMatch,
    /// A password or token did not match.
    #[error("bad password or token")]
    BadPassword,
    /// The nonce signature was missing or wrong.
    #[error("signature verification failed")]
    BadSignature,
    /// The user JWT failed to decode or validate.
    #[error("user JWT: {0}")]
    UserJwt(String),
    /// The account could not be found or failed validation.
    #[error("account {0}: {1}")]
    Account(String, String),
    /// The user's issuer is not the account or one of its signing keys.
    #[error("user issuer {0} is not a signing key of account {1}")]
    Issuer(String, String),
    /// The user was revoked.
    #[error("user revoked")]
    Revoked,
    /// Bearer tokens are not allowed for the account.
    #[error("bearer token not allowed")]
    BearerNotAllowed,
    /// The client's address is outside the user's `src` networks.
    #[error("client address {0} not allowed")]
    SourceNotAllowed(String),
    /// Outside the user's connect time windows.
    #[error("outside allowed connect times")]
    OutsideTimes,
    /// The user may not use this kind of connection.
    #[error("connection type not allowed")]
    ConnectionType,
    /// The account's connection limit is reached.
    #[error("maximum account active connections exceeded")]
    MaxAccountConnections,
    /// Too many slow checks (bcrypt, account fetches) are already waiting
    /// for this client's address or for the server.
    #[error("too many authentications waiting")]
    Overloaded,
    /// The user JWT's `exp` is negative: Go's validation lets it through
    /// and nats-server's expiry timer fires at once.
    #[error("user JWT expired")]
    UserExpired,
}

impl AuthError {
    /// The `-ERR` the client gets.
    pub fn wire(&self) -> WireError {
        match self {
            AuthError::MaxAccountConnections => WireError::MaxAccountConnectionsExceeded,
            AuthError::UserExpired => WireError::UserAuthenticationExpired,
            _ => WireError::AuthorizationViolation,
        }
    }
}

/// A verified client: its account, name, permissions, limits and expiry.
/// Only this module constructs it.
#[derive(Debug)]
pub struct Identity {
    slot: ConnSlot,
    user: String,
    permissions: Option<Arc<Permissions>>,
    expires: Option<SystemTime>,
    max_payload: Option<usize>,
    max_subs: Option<usize>,
    /// The user JWT (operator mode), for re-checks after account updates.
    jwt: Option<String>,
    /// When the account JWT expires.
    account_expires: Option<SystemTime>,
}

impl Identity {
    /// A user from the configuration (or an anonymous client): counted in
    /// `account`, with `permissions`, no expiry and no limits of its own.
    fn configured(
        account: &Arc<Account>,
        user: String,
        permissions: Option<Arc<Permissions>>,
    ) -> Result<Identity, AuthError> {
        Ok(Identity {
            slot: ConnSlot::take(account).ok_or(AuthError::MaxAccountConnections)?,
            user,
            permissions,
            expires: None,
            max_payload: account.max_payload(),
            max_subs: account.max_subscriptions(),
            jwt: None,
            account_expires: None,
        })
    }

    /// The account the client is bound to.
    pub fn account(&self) -> &Arc<Account> {
        self.slot.account()
    }

    /// The user name, nkey or user public key ("" when anonymous).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Permissions; `None` allows everything.
    pub fn permissions(&self) -> Option<&Arc<Permissions>> {
        self.permissions.as_ref()
    }

    /// When the credentials stop being valid.
    pub fn expires(&self) -> Option<SystemTime> {
        self.expires
    }

    /// When the account's JWT expires.
    pub fn account_expires(&self) -> Option<SystemTime> {
        self.account_expires
    }

    /// A payload limit below the server's, from the user or account.
    pub fn max_payload(&self) -> Option<usize> {
        self.max_payload
    }

    /// A subscription limit from the user or account.
    pub fn max_subscriptions(&self) -> Option<usize> {
        self.max_subs
    }
}

/// What a CONNECT presents.
#[derive(Debug, Clone, Copy)]
pub struct ConnectRequest<'a> {
    /// The CONNECT options (credentials among them).
    pub opts: &'a ClientOpts,
    /// The nonce sent in this connection's INFO ("" when none).
    pub nonce: &'a str,
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// With TLS `verify_and_map`: the names the client certificate carries
    /// (email and DNS names, then the subject), one of which must name a
    /// configured user; empty otherwise.
    pub cert_names: &'a [String],
    /// The listener it came through (JWT `allowed_connection_types`).
    pub kind: crate::ids::ConnKind,
}

#[derive(Debug)]
struct UserRec {
    name: String,
    password: Option<String>,
    account: Arc<Account>,
    perms: Option<Arc<Permissions>>,
    /// Listener kinds it may use (empty: all).
    connection_types: Vec<String>,
}

#[derive(Debug, Default)]
struct ConfigUsers {
    token: Option<String>,
    by_name: HashMap<String, Arc<UserRec>>,
    by_nkey: HashMap<String, Arc<UserRec>>,
    no_auth: Option<Arc<UserRec>>,
}

impl ConfigUsers {
    /// Whether a token is the only credential configured.
    fn token_only(&self) -> bool {
        self.token.is_some() && self.by_name.is_empty() && self.by_nkey.is_empty()
    }
}

/// How long a fetched account JWT is kept before it is fetched again.
const ACCOUNT_CACHE_TTL: Duration = Duration::from_secs(120);
/// How long an account the resolver did not have is remembered as missing.
const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// nats-server's URL resolver fetch timeout.
pub const FETCH_TIMEOUT: Duration = Duration::from_millis(1900);

#[derive(Debug)]
struct OperatorTrust {
    /// Keys that may sign account JWTs.
    trusted: Vec<String>,
    resolver: ResolverConfig,
    preload: HashMap<String, String>,
    cache: Mutex<HashMap<String, (Option<String>, Instant)>>,
    /// Accounts in use, whose imports and exports make the imports table.
    loaded: Mutex<HashMap<String, jwt::AccountClaims>>,
    /// Account JWTs whose signature was checked, by token: a connect then
    /// verifies two signatures (user JWT, nonce) instead of three.
    verified: Mutex<HashMap<String, Arc<jwt::AccountClaims>>>,
    /// Accounts being fetched now: one fetch per account, however many
    /// clients wait for it.
    fetching: Mutex<std::collections::HashSet<String>>,
    /// Signalled when a fetch ends.
    fetched: std::sync::Condvar,
    /// The NATS resolver's directory.
    store: Option<DirStore>,
    /// The system account's key.
    system: Option<String>,
}

#[derive(Debug)]
enum Mode {
    Open,
    Config(ConfigUsers),
    Operator(Box<OperatorTrust>),
}

/// Checks CONNECT credentials against the configuration.
#[derive(Debug)]
pub struct Verifier {
    mode: Mode,
    /// WebSocket clients' verifier when the `websocket` block has its own
    /// authentication (same account table).
    websocket: Option<Arc<Verifier>>,
    accounts: Arc<AccountTable>,
    global: Arc<Account>,
    imports: Mutex<Arc<Imports>>,
    imports_gen: AtomicU64,
    warnings: Vec<String>,
}

/// Work that makes a verification slow, so the shard layer runs it on its
/// own bounded workers instead of the shard's thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowWork {
    /// A bcrypt comparison whose verdict is not remembered.
    Bcrypt,
    /// An account JWT the URL resolver must be asked for.
    AccountFetch,
}

fn unix_now(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Verifier {
    /// Builds the verifier for `cfg`. The account table gets every
    /// configured account; `Err` names what is wrong with the operator set-up.
    pub fn new(cfg: &AuthConfig) -> Result<Verifier, String> {
        Self::with_table(cfg, None)
    }

    /// Builds the verifier for `cfg` over an existing account table (a
    /// reload), or a new one.
    pub fn with_table(cfg: &AuthConfig, table: Option<Arc<AccountTable>>) -> Result<Verifier, String> {
        if let Some(op) = &cfg.operator {
            let mut trusted = Vec::new();
            let mut system = cfg.system_account.clone();
            for token in &op.jwts {
                let c = jwt::decode_operator(token).map_err(|e| format!("operator JWT: {e}"))?;
                if !c.nats.strict_signing_key_usage {
                    trusted.push(c.sub.clone());
                }
                trusted.extend(c.nats.signing_keys.iter().cloned());
                if !c.nats.system_account.is_empty() {
                    match &system {
                        Some(s) if *s != c.nats.system_account => {
                            return Err(format!(
                                "system_account {s} differs from the operator's system account {}",
                                c.nats.system_account
                            ))
                        }
                        Some(_) => {}
                        None => system = Some(c.nats.system_account.clone()),
                    }
                }
            }
            trusted.extend(cfg.trusted_keys.iter().cloned());
            let resolver = match (&op.resolver, implicit_resolver(&op.jwts)) {
                (Some(r), _) => r.clone(),
                (None, Some(r)) => r,
                (None, None) => ResolverConfig::Memory,
            };
            let mut preload: HashMap<String, String> = op.preload.iter().cloned().collect();
            let store = match &resolver {
                ResolverConfig::Nats(n) => {
                    if system.is_none() {
                        return Err("the NATS resolver needs a system account".into());
                    }
                    let st = DirStore::open(&n.dir, n.limit)
                        .map_err(|e| format!("resolver dir {}: {e}", n.dir.display()))?;
                    // Preloaded accounts go into the store (newer ones win).
                    for (k, j) in preload.drain() {
                        let newer = st
                            .get(&k)
                            .and_then(|old| jwt::decode_account(&old).ok())
                            .is_none_or(|old| jwt::decode_account(&j).is_ok_and(|new| new.iat >= old.iat));
                        if newer {
                            st.put(&k, &j).map_err(|e| format!("resolver_preload {k}: {e}"))?;
                        }
                    }
                    Some(st)
                }
                _ => None,
            };
            let accounts = Arc::new(AccountTable::new(system.as_deref()));
            let global = accounts.get_or_create(GLOBAL_ACCOUNT);
            return Ok(Verifier {
                websocket: None,
                mode: Mode::Operator(Box::new(OperatorTrust {
                    trusted,
                    resolver,
                    preload,
                    cache: Mutex::new(HashMap::new()),
                    loaded: Mutex::new(HashMap::new()),
                    verified: Mutex::new(HashMap::new()),
                    fetching: Mutex::new(Default::default()),
                    fetched: std::sync::Condvar::new(),
                    store,
                    system,
                })),
                accounts,
                global,
                imports: Mutex::new(Arc::new(Imports::default())),
                imports_gen: AtomicU64::new(0),
                warnings: Vec::new(),
            });
        }
        let accounts = table.unwrap_or_else(|| Arc::new(AccountTable::new(cfg.system_account.as_deref())));
        let global = accounts.get_or_create(GLOBAL_ACCOUNT);
        for a in &cfg.accounts {
            // An account's `limits`, as nats-server applies them (a reload
            // sets them again; absent is none).
            let acc = accounts.get_or_create(&a.name);
            let l = a.limits;
            acc.set_max_connections(l.max_connections.unwrap_or(-1));
            acc.set_max_leafnodes(l.max_leafnodes.unwrap_or(-1));
            acc.set_client_limits(l.max_payload.unwrap_or(-1), l.max_subscriptions.unwrap_or(-1));
        }
        let (imports, warnings) = Imports::build(&accounts, &cfg.accounts);
        let imports = Mutex::new(Arc::new(imports));
        let imports_gen = AtomicU64::new(0);
        let websocket = match &cfg.websocket {
            Some(ws) => {
                let mut c = cfg.clone();
                c.websocket = None;
                c.token = ws.token.clone();
                c.no_auth_user = ws.no_auth_user.clone();
                if let Some(user) = &ws.username {
                    c.users = vec![crate::auth::config::UserConfig {
                        credential: Credential::Password {
                            user: user.clone(),
                            password: ws.password.clone().unwrap_or_default(),
                        },
                        account: GLOBAL_ACCOUNT.to_string(),
                        permissions: None,
                        connection_types: Vec::new(),
                    }];
                }
                Some(Arc::new(Verifier::with_table(&c, Some(accounts.clone()))?))
            }
            None => None,
        };
        if !cfg.is_enabled() {
            return Ok(Verifier {
                websocket,
                mode: Mode::Open,
                accounts,
                global,
                imports,
                imports_gen,
                warnings,
            });
        }
        let default_perms = cfg.default_permissions.clone().map(Arc::new);
        let mut users = ConfigUsers {
            token: cfg.token.clone(),
            ..Default::default()
        };
        for u in &cfg.users {
            let rec = Arc::new(UserRec {
                name: u.name().to_string(),
                password: match &u.credential {
                    Credential::Password { password, .. } => Some(password.clone()),
                    Credential::Nkey(_) => None,
                },
                account: accounts.get_or_create(&u.account),
                perms: u.permissions.clone().map(Arc::new).or_else(|| default_perms.clone()),
                connection_types: u.connection_types.clone(),
            });
            match &u.credential {
                Credential::Password { user, .. } => users.by_name.insert(user.clone(), rec),
                Credential::Nkey(k) => users.by_nkey.insert(k.clone(), rec),
            };
        }
        if let Some(n) = &cfg.no_auth_user {
            users.no_auth = users.by_name.get(n).or_else(|| users.by_nkey.get(n)).cloned();
        }
        Ok(Verifier {
            websocket,
            mode: Mode::Config(users),
            accounts,
            global,
            imports,
            imports_gen,
            warnings,
        })
    }

    /// The account table.
    pub fn accounts(&self) -> &Arc<AccountTable> {
        &self.accounts
    }

    /// The accounts' imports.
    pub fn imports(&self) -> Arc<Imports> {
        self.imports.lock().expect("imports lock").clone()
    }

    /// Bumped whenever the imports change (operator mode loads accounts as
    /// clients arrive); shards compare it before each read.
    pub fn imports_generation(&self) -> u64 {
        self.imports_gen.load(Relaxed)
    }

    /// Records an account JWT in use; when it (or an account it imports
    /// from) brings imports, rebuilds the imports.
    fn note_loaded(&self, op: &OperatorTrust, acc: &jwt::AccountClaims) {
        let mut loaded = op.loaded.lock().expect("loaded accounts lock");
        if loaded
            .get(&acc.sub)
            .is_some_and(|old| old.jti == acc.jti && old.iat == acc.iat)
        {
            return;
        }
        loaded.insert(acc.sub.clone(), acc.clone());
        // Exporters of this account's imports are needed to resolve them.
        let now_s = unix_now(SystemTime::now());
        for imp in &acc.nats.imports {
            if loaded.contains_key(&imp.account) {
                continue;
            }
            let exporter = self
                .account_jwt(op, &imp.account)
                .and_then(|t| self.trusted_account(op, &t, &imp.account, now_s));
            if let Ok(e) = exporter {
                loaded.insert(e.sub.clone(), (*e).clone());
            }
        }
        // Imports need every account loaded to resolve; mappings only
        // their own. A table with neither stays empty.
        if !loaded
            .values()
            .any(|a| !a.nats.imports.is_empty() || !a.nats.mappings.is_empty())
            && !self.imports.lock().expect("imports lock").has_mappings()
        {
            return;
        }
        let configs = jwt_account_configs(&loaded, now_s);
        let (imports, warnings) = Imports::build(&self.accounts, &configs);
        for w in warnings {
            crate::warn!("{w}");
        }
        *self.imports.lock().expect("imports lock") = Arc::new(imports);
        self.imports_gen.fetch_add(1, Relaxed);
    }

    /// Problems with the configuration worth a warning at start-up
    /// (imports no export allows).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// In operator mode, the exports and imports of the account JWTs in
    /// use, as the imports table reads them (monitoring's account detail);
    /// `None` in the other modes.
    pub fn jwt_account_configs(&self) -> Option<Vec<AccountConfig>> {
        let Mode::Operator(op) = &self.mode else { return None };
        let loaded = op.loaded.lock().expect("loaded accounts lock");
        Some(jwt_account_configs(&loaded, unix_now(SystemTime::now())))
    }

    /// Whether the server runs in operator (JWT) mode.
    pub fn is_operator_mode(&self) -> bool {
        matches!(self.mode, Mode::Operator(_))
    }

    /// The verifier for clients of `kind`: the `websocket` block's own when
    /// it has one, this one otherwise.
    pub fn for_kind(self: &Arc<Self>, kind: crate::ids::ConnKind) -> Arc<Verifier> {
        match (kind, &self.websocket) {
            (crate::ids::ConnKind::WebSocket, Some(ws)) => ws.clone(),
            _ => self.clone(),
        }
    }

    /// Whether clients must authenticate (INFO `auth_required`).
    pub fn auth_required(&self) -> bool {
        !matches!(self.mode, Mode::Open)
    }

    /// Whether a client must send CONNECT before anything else (INFO
    /// `auth_required`): not with `no_auth_user`, whose clients act as that
    /// user until a CONNECT says otherwise, as in nats-server.
    pub fn requires_connect(&self) -> bool {
        match &self.mode {
            Mode::Config(u) => u.no_auth.is_none(),
            Mode::Open => false,
            Mode::Operator(_) => true,
        }
    }

    /// The identity a new connection has before its CONNECT, with
    /// `no_auth_user`.
    pub fn no_auth_identity(&self) -> Option<Result<Identity, AuthError>> {
        match &self.mode {
            Mode::Config(ConfigUsers { no_auth: Some(rec), .. }) => Some(Self::identity_of(rec)),
            _ => None,
        }
    }

    /// Whether INFO carries a nonce to sign (nkey users or operator mode).
    pub fn needs_nonce(&self) -> bool {
        match &self.mode {
            Mode::Open => false,
            Mode::Config(u) => !u.by_nkey.is_empty(),
            Mode::Operator(_) => true,
        }
    }

    /// The URL resolver's base URL, for the start-up probe.
    pub fn resolver_url(&self) -> Option<&str> {
        match &self.mode {
            Mode::Operator(op) => match &op.resolver {
                ResolverConfig::Url(u) => Some(u),
                _ => None,
            },
            _ => None,
        }
    }

    /// What, if anything, makes verifying `opts` slow: a bcrypt check not
    /// remembered, or an account the URL resolver must be asked for.
    /// Clients whose password verdict is remembered and clients of cached
    /// accounts are never slow.
    pub fn slow_work(&self, req: &ConnectRequest<'_>) -> Option<SlowWork> {
        let o = req.opts;
        match &self.mode {
            Mode::Open => None,
            Mode::Config(u) => {
                if !req.cert_names.is_empty() || (o.nkey.is_some() && !u.token_only()) {
                    return None;
                }
                let (stored, given) = match (&o.user, &u.token) {
                    (Some(name), _) if !u.token_only() => {
                        (u.by_name.get(name)?.password.as_deref()?, o.pass.as_deref())
                    }
                    (_, Some(token)) => (token.as_str(), o.auth_token.as_deref()),
                    _ => return None,
                };
                password::is_slow(stored, given.unwrap_or("")).then_some(SlowWork::Bcrypt)
            }
            Mode::Operator(op) => {
                if !matches!(op.resolver, ResolverConfig::Url(_)) {
                    return None;
                }
                // Unverified: it only chooses where the real check runs.
                let key = jwt::peek_user_account(o.jwt.as_deref()?)?;
                (!Self::account_known(op, &key)).then_some(SlowWork::AccountFetch)
            }
        }
    }

    /// Whether the account JWT for `key` can be had without the resolver:
    /// preloaded, or cached (found or missing) and still fresh.
    fn account_known(op: &OperatorTrust, key: &str) -> bool {
        if op.preload.contains_key(key) {
            return true;
        }
        let cache = op.cache.lock().expect("account cache lock");
        cache.get(key).is_some_and(|(jwt, at)| {
            let ttl = if jwt.is_some() { ACCOUNT_CACHE_TTL } else { NEGATIVE_TTL };
            at.elapsed() < ttl
        })
    }

    /// The identity of a client when no authentication is configured (or a
    /// shared token admits it): the global account, no permissions.
    fn open_identity(&self) -> Result<Identity, AuthError> {
        Identity::configured(&self.global, String::new(), None)
    }

    /// Checks a CONNECT. May block (bcrypt, resolver fetch): see [`Self::slow_work`].
    pub fn verify(&self, req: &ConnectRequest<'_>, now: SystemTime) -> Result<Identity, AuthError> {
        match &self.mode {
            Mode::Open => self.open_identity(),
            Mode::Config(u) => self.verify_config(u, req),
            Mode::Operator(op) => self.verify_jwt(op, req, now),
        }
    }

    /// The identity of `rec` for a client that came through `kind`, when
    /// the user's `allowed_connection_types` admit it.
    fn admit(rec: &UserRec, kind: crate::ids::ConnKind) -> Result<Identity, AuthError> {
        if !kind.allowed_by(&rec.connection_types) {
            return Err(AuthError::ConnectionType);
        }
        Self::identity_of(rec)
    }

    fn identity_of(rec: &UserRec) -> Result<Identity, AuthError> {
        Identity::configured(&rec.account, rec.name.clone(), rec.perms.clone())
    }

    fn verify_config(&self, u: &ConfigUsers, req: &ConnectRequest<'_>) -> Result<Identity, AuthError> {
        let o = req.opts;
        // TLS verify_and_map: the certificate, not the CONNECT, names the user.
        if !req.cert_names.is_empty() {
            let rec = req
                .cert_names
                .iter()
                .find_map(|n| u.by_name.get(n))
                .ok_or(AuthError::NoMatch)?;
            return Self::admit(rec, req.kind);
        }
        // A token server (no users) checks the token alone, whatever else
        // the CONNECT carries, as nats-server does.
        if !u.token_only() {
            if let Some(nkey) = &o.nkey {
                let rec = u.by_nkey.get(nkey).ok_or(AuthError::NoMatch)?;
                let sig = o.sig.as_deref().ok_or(AuthError::BadSignature)?;
                if !jwt::verify_nonce(nkey, req.nonce.as_bytes(), sig) {
                    return Err(AuthError::BadSignature);
                }
                return Self::admit(rec, req.kind);
            }
            if let Some(user) = &o.user {
                let rec = u.by_name.get(user).ok_or(AuthError::NoMatch)?;
                let given = o.pass.as_deref().unwrap_or("");
                if !password::matches(rec.password.as_deref().unwrap_or(""), given) {
                    return Err(AuthError::BadPassword);
                }
                return Self::admit(rec, req.kind);
            }
        }
        if let Some(token) = &u.token {
            let given = o.auth_token.as_deref().ok_or(AuthError::NoMatch)?;
            if !password::matches(token, given) {
                return Err(AuthError::BadPassword);
            }
            return self.open_identity();
        }
        let nothing = o.auth_token.is_none() && o.jwt.is_none() && o.pass.is_none();
        match (&u.no_auth, nothing) {
            (Some(rec), true) => Self::admit(rec, req.kind),
            _ => Err(AuthError::NoMatch),
        }
    }

    /// The account JWT for `key`, from the preload, the cache or the URL.
    fn account_jwt(&self, op: &OperatorTrust, key: &str) -> Result<String, AuthError> {
        let missing = |why: String| AuthError::Account(key.to_string(), why);
        {
            let cache = op.cache.lock().expect("account cache lock");
            if let Some((jwt, at)) = cache.get(key) {
                let ttl = if jwt.is_some() { ACCOUNT_CACHE_TTL } else { NEGATIVE_TTL };
                if at.elapsed() < ttl || matches!(op.resolver, ResolverConfig::Memory) {
                    return jwt.clone().ok_or_else(|| missing("account missing".into()));
                }
            }
        }
        if let Some(j) = op.preload.get(key) {
            return Ok(j.clone());
        }
        let fetched = match &op.resolver {
            ResolverConfig::Memory => None,
            ResolverConfig::Url(base) => {
                return Self::fetch_once(op, base, key).ok_or_else(|| missing("account missing".into()))
            }
            // Standalone: the store is all there is (no peers to ask).
            ResolverConfig::Nats(_) => op.store.as_ref().and_then(|st| st.get(key)),
        };
        op.cache
            .lock()
            .expect("account cache lock")
            .insert(key.to_string(), (fetched.clone(), Instant::now()));
        fetched.ok_or_else(|| missing("account missing".into()))
    }

    /// Fetches the account JWT for `key` from the URL resolver and caches
    /// the outcome; while one fetch for `key` runs, other callers wait for
    /// its outcome instead of asking again.
    fn fetch_once(op: &OperatorTrust, base: &str, key: &str) -> Option<String> {
        let mut fetching = op.fetching.lock().expect("fetching lock");
        while fetching.contains(key) {
            let (f, _) = op
                .fetched
                .wait_timeout(fetching, FETCH_TIMEOUT * 2)
                .expect("fetching lock");
            fetching = f;
            if !fetching.contains(key) {
                let cache = op.cache.lock().expect("account cache lock");
                if let Some((jwt, _)) = cache.get(key) {
                    return jwt.clone();
                }
            }
        }
        fetching.insert(key.to_string());
        drop(fetching);
        let fetched = fetch(&format!("{base}{key}")).ok();
        op.cache
            .lock()
            .expect("account cache lock")
            .insert(key.to_string(), (fetched.clone(), Instant::now()));
        op.fetching.lock().expect("fetching lock").remove(key);
        op.fetched.notify_all();
        fetched
    }

    fn verify_jwt(&self, op: &OperatorTrust, req: &ConnectRequest<'_>, now: SystemTime) -> Result<Identity, AuthError> {
        let o = req.opts;
        let now_s = unix_now(now);
        let token = o.jwt.as_deref().ok_or(AuthError::NoMatch)?;
        let user = jwt::decode_user(token).map_err(|e| AuthError::UserJwt(e.to_string()))?;
        user.check_time(now_s).map_err(|e| AuthError::UserJwt(e.to_string()))?;
        if user.exp.is_some_and(|e| e < 0) {
            return Err(AuthError::UserExpired);
        }
        let acc_key = if user.nats.issuer_account.is_empty() {
            user.iss.clone()
        } else {
            user.nats.issuer_account.clone()
        };
        let acc_token = self.account_jwt(op, &acc_key)?;
        let acc = self.trusted_account(op, &acc_token, &acc_key, now_s)?;
        let limits = user_against_account(&user, &acc, &acc_key)?;
        self.note_loaded(op, &acc);
        if !limits.bearer_token {
            let sig = o.sig.as_deref().ok_or(AuthError::BadSignature)?;
            if !jwt::verify_nonce(&user.sub, req.nonce.as_bytes(), sig) {
                return Err(AuthError::BadSignature);
            }
        }
        if !limits.src.is_empty() {
            let ip = req.ip.ok_or_else(|| AuthError::SourceNotAllowed("unknown".into()))?;
            if !limits.src.iter().any(|c| cidr_contains(c, ip)) {
                return Err(AuthError::SourceNotAllowed(ip.to_string()));
            }
        }
        let window_end = match times_window(&limits.times, &limits.times_location, now) {
            TimeCheck::Inside(end) => end,
            TimeCheck::Outside => return Err(AuthError::OutsideTimes),
        };
        if !req.kind.allowed_by(&limits.allowed_connection_types) {
            return Err(AuthError::ConnectionType);
        }

        let account = self.accounts.get_or_create(&acc_key);
        account.set_max_connections(acc.nats.limits.conn);
        account.set_max_leafnodes(acc.nats.limits.leaf);
        let slot = ConnSlot::take(&account).ok_or(AuthError::MaxAccountConnections)?;
        let perms = jwt_permissions(&limits).or_else(|| default_permissions(&acc.nats.default_permissions));
        let user_exp = user
            .exp
            .filter(|e| *e > 0)
            .map(|e| UNIX_EPOCH + Duration::from_secs(e as u64));
        let expires = match (user_exp, window_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(Identity {
            slot,
            user: user.sub.clone(),
            permissions: perms.map(Arc::new),
            expires,
            max_payload: min_limit(limits.payload, acc.nats.limits.payload),
            max_subs: min_limit(limits.subs, acc.nats.limits.subs),
            jwt: Some(token.to_string()),
            account_expires: acc
                .exp
                .filter(|e| *e > 0)
                .map(|e| UNIX_EPOCH + Duration::from_secs(e as u64)),
        })
    }

    /// Decodes an account JWT and checks it is issued by a trusted key, is
    /// for `key` and is within its times.
    fn trusted_account(
        &self,
        op: &OperatorTrust,
        token: &str,
        key: &str,
        now_s: i64,
    ) -> Result<Arc<jwt::AccountClaims>, AuthError> {
        let acc_err = |why: String| AuthError::Account(key.to_string(), why);
        let known = op.verified.lock().expect("verified lock").get(token).cloned();
        let acc = match known {
            Some(a) => a,
            None => {
                let a = Arc::new(jwt::decode_account(token).map_err(|e| acc_err(e.to_string()))?);
                let mut v = op.verified.lock().expect("verified lock");
                if v.len() >= 4096 {
                    v.clear();
                }
                v.insert(token.to_string(), a.clone());
                a
            }
        };
        if acc.sub != key {
            return Err(acc_err("account JWT subject mismatch".into()));
        }
        if !op.trusted.contains(&acc.iss) {
            return Err(acc_err("account not issued by a trusted operator".into()));
        }
        acc.check_time(now_s).map_err(|e| acc_err(e.to_string()))?;
        Ok(acc)
    }

    /// Handles a claims update (`$SYS.ACCOUNT.<id>.CLAIMS.UPDATE` and the
    /// `$SYS.REQ` form): the account it is for, and the reply message or
    /// error. Only accounts already loaded are updated, as nats-server's
    /// MEMORY and URL resolvers do; an update older than the held JWT is
    /// refused.
    pub fn claims_update(&self, token: &str, subject_account: Option<&str>) -> (String, Result<&'static str, String>) {
        let Mode::Operator(op) = &self.mode else {
            return (String::new(), Err("not in operator mode".into()));
        };
        let c = match jwt::decode_account(token) {
            Ok(c) => c,
            Err(e) => return (String::new(), Err(format!("jwt validation failed: {e}"))),
        };
        let key = c.sub.clone();
        if subject_account.is_some_and(|s| s != key) {
            return (key, Err("subject does not match jwt content".into()));
        }
        if let Err(e) = self.trusted_account(op, token, &key, unix_now(SystemTime::now())) {
            return (key, Err(format!("jwt update resulted in error - {e}")));
        }
        let nats = match &op.resolver {
            ResolverConfig::Nats(n) => Some(n),
            _ => None,
        };
        let mut cache = op.cache.lock().expect("account cache lock");
        let cached = cache.get(&key).and_then(|(j, _)| j.clone());
        let held = cached
            .clone()
            .or_else(|| op.preload.get(&key).cloned())
            .or_else(|| op.store.as_ref().and_then(|st| st.get(&key)));
        if let Some(old) = &held {
            if jwt::decode_account(old).is_ok_and(|o| o.iat > c.iat) {
                return (
                    key,
                    Err("jwt update resulted in error - the update is older than the held JWT".into()),
                );
            }
        }
        let message = match nats {
            // A full resolver keeps every account it is given.
            Some(n) if n.full => "jwt updated",
            // A cache resolver only refreshes accounts it holds.
            Some(_) if held.is_none() => return (key, Ok("jwt update cache skipped")),
            Some(_) => "jwt updated cache",
            // MEMORY and URL resolvers update accounts already loaded.
            None if held.is_none() => return (key, Ok("jwt update skipped")),
            None => "jwt updated",
        };
        if let Some(st) = &op.store {
            if let Err(e) = st.put(&key, token) {
                return (key, Err(format!("jwt update resulted in error - {e}")));
            }
        }
        if cached.is_some() || nats.is_none() {
            cache.insert(key.clone(), (Some(token.to_string()), Instant::now()));
        } else {
            cache.remove(&key);
        }
        drop(cache);
        let loaded = op.loaded.lock().expect("loaded accounts lock").contains_key(&key);
        if loaded {
            self.note_loaded(op, &c);
        }
        if let Some(acc) = self.accounts.get(&key) {
            acc.set_max_connections(c.nats.limits.conn);
            acc.set_max_leafnodes(c.nats.limits.leaf);
            acc.mark_excess();
        }
        (key, Ok(message))
    }

    /// The NATS resolver's store, when that is the resolver.
    fn nats_store(&self) -> Option<(&OperatorTrust, &DirStore, &super::config::NatsResolver)> {
        let Mode::Operator(op) = &self.mode else { return None };
        let ResolverConfig::Nats(n) = &op.resolver else {
            return None;
        };
        Some((op, op.store.as_ref()?, n))
    }

    /// Start-up warnings about the operator's JWT fields that point at
    /// nothing: a system account the resolver does not know, an account
    /// server this server does not use.
    pub fn operator_warnings(&self, operator_jwts: &[String]) -> Vec<String> {
        let Mode::Operator(op) = &self.mode else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(sys) = &op.system {
            if self.account_jwt(op, sys).is_err() {
                out.push(format!(
                    "the system account {sys} is not known to the account resolver: system users cannot connect"
                ));
            }
        }
        for token in operator_jwts {
            let Ok(c) = jwt::decode_operator(token) else { continue };
            let asu = c.nats.account_server_url.trim_end_matches('/');
            let uses_it = matches!(&op.resolver, ResolverConfig::Url(u) if !asu.is_empty() && u.starts_with(asu));
            if !asu.is_empty() && !uses_it {
                out.push(format!(
                    "operator {} names account server {asu}, which this server does not resolve accounts from",
                    c.name
                ));
            }
        }
        out
    }

    /// Whether the NATS (full or cache) resolver is in use.
    pub fn is_nats_resolver(&self) -> bool {
        self.nats_store().is_some()
    }

    /// Whether the NATS resolver keeps every account (`type: full`).
    pub fn is_full_resolver(&self) -> bool {
        self.nats_store().is_some_and(|(_, _, n)| n.full)
    }

    /// `$SYS.REQ.ACCOUNT.<id>.CLAIMS.LOOKUP` (full resolver): the stored JWT.
    pub fn claims_lookup(&self, key: &str) -> Option<String> {
        let (_, st, n) = self.nats_store()?;
        n.full.then(|| st.get(key)).flatten()
    }

    /// `$SYS.REQ.CLAIMS.LIST`: the stored account keys.
    pub fn claims_list(&self) -> Vec<String> {
        self.nats_store().map(|(_, st, _)| st.list()).unwrap_or_default()
    }

    /// `$SYS.REQ.CLAIMS.PACK` (full resolver): one `key|jwt` message per
    /// account then an empty one, or only the empty one when the
    /// requester's hash matches.
    pub fn claims_pack(&self, their_hash: &[u8]) -> Vec<String> {
        let Some((_, st, n)) = self.nats_store() else {
            return Vec::new();
        };
        if !n.full {
            return Vec::new();
        }
        let mut out = Vec::new();
        if their_hash != st.hash() {
            for k in st.list() {
                if let Some(j) = st.get(&k) {
                    out.push(format!("{k}|{j}"));
                }
            }
        }
        out.push(String::new());
        out
    }

    /// `$SYS.REQ.CLAIMS.DELETE`: a generic JWT signed by the operator (or an
    /// operator signing key), self-signed, listing `nats.accounts`. Returns
    /// the message and the accounts deleted.
    pub fn claims_delete(&self, token: &str) -> Result<(String, Vec<String>), String> {
        let Some((op, st, n)) = self.nats_store() else {
            return Err("delete must be enabled in server config".into());
        };
        if !n.allow_delete {
            return Err("delete must be enabled in server config".into());
        }
        let c = jwt::decode_generic(token).map_err(|_| "malformed request".to_string())?;
        if c.iss != c.sub {
            return Err("not self signed".into());
        }
        if !op.trusted.contains(&c.iss) {
            return Err("not trusted".into());
        }
        let accounts: Vec<String> = c
            .nats
            .get("accounts")
            .and_then(|a| a.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .ok_or_else(|| "malformed request".to_string())?;
        if op.system.as_ref().is_some_and(|s| accounts.contains(s)) {
            return Err("not allowed to delete system account".into());
        }
        let mut deleted = Vec::new();
        for k in &accounts {
            if st.delete(k, n.hard_delete).map_err(|e| e.to_string())? {
                deleted.push(k.clone());
            }
            op.cache.lock().expect("account cache lock").remove(k);
            op.loaded.lock().expect("loaded accounts lock").remove(k);
        }
        Ok((format!("deleted {} accounts", deleted.len()), deleted))
    }

    /// Re-checks a connected client against its account's current JWT:
    /// revocations, removed signing keys, bearer rules and expiry close it;
    /// otherwise its permissions and limits are recomputed.
    pub fn recheck(&self, id: &Identity) -> Result<Recheck, WireError> {
        let (Mode::Operator(op), Some(token)) = (&self.mode, &id.jwt) else {
            return Ok(Recheck {
                permissions: id.permissions.clone(),
                max_subs: id.max_subs,
            });
        };
        let key = id.account().name.clone();
        let now_s = unix_now(SystemTime::now());
        let user = jwt::decode_user(token).map_err(|_| WireError::AuthorizationViolation)?;
        let acc_token = op
            .cache
            .lock()
            .expect("account cache lock")
            .get(&key)
            .and_then(|(j, _)| j.clone())
            .or_else(|| op.preload.get(&key).cloned())
            .or_else(|| op.store.as_ref().and_then(|st| st.get(&key)))
            .ok_or(WireError::AccountAuthenticationExpired)?;
        let acc = self
            .trusted_account(op, &acc_token, &key, now_s)
            .map_err(|_| WireError::AccountAuthenticationExpired)?;
        let limits = user_against_account(&user, &acc, &key).map_err(|e| match e {
            AuthError::Revoked => WireError::UserAuthenticationRevoked,
            _ => WireError::AuthorizationViolation,
        })?;
        id.account().set_max_connections(acc.nats.limits.conn);
        id.account().set_max_leafnodes(acc.nats.limits.leaf);
        Ok(Recheck {
            permissions: jwt_permissions(&limits)
                .or_else(|| default_permissions(&acc.nats.default_permissions))
                .map(Arc::new),
            max_subs: min_limit(limits.subs, acc.nats.limits.subs),
        })
    }
}

/// A JWT service export's latency tracking (`latency: {sampling,
/// results}`; sampling 0 is "headers", as the Go library has it).
fn jwt_latency(e: &jwt::Export) -> Option<crate::auth::config::LatencyConfig> {
    use crate::auth::config::{LatencyConfig, LatencySampling};
    let l = e.latency.as_ref()?;
    let results = l.get("results")?.as_str()?;
    let sampling = match l.get("sampling").and_then(|s| s.as_i64()).unwrap_or(0) {
        0 => LatencySampling::Headers,
        n => LatencySampling::Percent(n.clamp(1, 100) as u8),
    };
    Some(LatencyConfig {
        sampling,
        subject: results.to_string(),
    })
}

/// A JWT service export's response rules: `response_type` as the Go
/// library names them (anything else is a singleton, as in nats-server),
/// `response_threshold` in nanoseconds (0: the default).
fn response_rule(e: &jwt::Export) -> ResponseRule {
    let kind = match e.response_type.as_str() {
        "Stream" => ResponseType::Stream,
        "Chunked" => ResponseType::Chunked,
        _ => ResponseType::Singleton,
    };
    let threshold = match u64::try_from(e.response_threshold) {
        Ok(ns) if ns > 0 => Duration::from_nanos(ns),
        _ => DEFAULT_RESPONSE_THRESHOLD,
    };
    ResponseRule { kind, threshold }
}

/// The loaded account JWTs' exports and imports in the form the imports are
/// built from. A `token_req` export admits the importers whose activation
/// token is signed by the exporter (or one of its signing keys), names the
/// importer and covers the subject.
fn jwt_account_configs(loaded: &HashMap<String, jwt::AccountClaims>, now_s: i64) -> Vec<AccountConfig> {
    let kind = |t: &str| {
        if t.eq_ignore_ascii_case("service") {
            ExchangeKind::Service
        } else {
            ExchangeKind::Stream
        }
    };
    let activated = |exporter: &jwt::AccountClaims, export: &jwt::Export, importer: &str, imp: &jwt::Import| {
        let Ok(act) = jwt::decode_generic(&imp.token) else {
            return false;
        };
        let subject = act.nats.get("subject").and_then(|v| v.as_str()).unwrap_or_default();
        act.check_time(now_s).is_ok()
            && act.sub == importer
            && (act.iss == exporter.sub || exporter.nats.signing_key(&act.iss).is_some())
            && crate::subject::matches(subject.as_bytes(), imp.subject.as_bytes())
            && export.revocations.get(importer).is_none_or(|t| *t < act.iat)
    };
    loaded
        .values()
        .map(|a| AccountConfig {
            name: a.sub.clone(),
            exports: a
                .nats
                .exports
                .iter()
                .map(|e| ExportConfig {
                    kind: kind(&e.export_type),
                    subject: e.subject.clone(),
                    accounts: e.token_req.then(|| {
                        loaded
                            .values()
                            .filter(|imp_acc| {
                                imp_acc.nats.imports.iter().any(|i| {
                                    i.account == a.sub && !i.token.is_empty() && activated(a, e, &imp_acc.sub, i)
                                })
                            })
                            .map(|imp_acc| imp_acc.sub.clone())
                            .collect()
                    }),
                    response: response_rule(e),
                    allow_trace: e.allow_trace,
                    latency: jwt_latency(e),
                })
                .collect(),
            imports: a
                .nats
                .imports
                .iter()
                .map(|i| {
                    let k = kind(&i.import_type);
                    let local = if !i.local_subject.is_empty() {
                        Some(i.local_subject.clone())
                    } else if i.to.is_empty() {
                        None
                    } else if k == ExchangeKind::Stream {
                        // For streams the legacy `to` is a prefix.
                        Some(format!("{}.{}", i.to, i.subject))
                    } else {
                        Some(i.to.clone())
                    };
                    ImportConfig {
                        kind: k,
                        account: i.account.clone(),
                        subject: i.subject.clone(),
                        local,
                        allow_trace: i.allow_trace,
                        share: i.share,
                    }
                })
                .collect(),
            mappings: jwt_mappings(&a.nats.mappings),
            trace_dest: a
                .nats
                .trace
                .as_ref()
                .filter(|t| !t.dest.is_empty())
                .map(|t| crate::auth::config::TraceDest {
                    dest: t.dest.clone(),
                    sampling: t.sampling.clamp(0, 100) as u8,
                }),
            // A JWT account's limits are applied where it is loaded.
            limits: Default::default(),
        })
        .collect()
}

/// An account JWT's mappings, sources in sorted order (nats-server takes
/// them in a Go map's order). A weight left out (0) means 100, as the JWT
/// library reads it.
fn jwt_mappings(m: &HashMap<String, Vec<jwt::WeightedMapping>>) -> Vec<crate::mapping::MappingConfig> {
    let mut sources: Vec<&String> = m.keys().collect();
    sources.sort();
    sources
        .into_iter()
        .map(|source| crate::mapping::MappingConfig {
            source: source.clone(),
            dests: m[source]
                .iter()
                .map(|w| crate::mapping::MapDest {
                    subject: w.subject.clone(),
                    weight: match w.weight {
                        0 => 100,
                        n => u8::try_from(n).unwrap_or(u8::MAX),
                    },
                    cluster: w.cluster.clone(),
                })
                .collect(),
        })
        .collect()
}

/// What a re-check leaves a connected client with.
#[derive(Debug, Clone)]
pub struct Recheck {
    /// Permissions now in force.
    pub permissions: Option<Arc<Permissions>>,
    /// Subscription limit now in force.
    pub max_subs: Option<usize>,
}

/// The user's standing in its account: issuer among the account's keys
/// (a scoped key's template supplies the permissions), bearer allowed, not
/// revoked. Returns the limits in force.
fn user_against_account(
    user: &jwt::UserClaims,
    acc: &jwt::AccountClaims,
    acc_key: &str,
) -> Result<jwt::UserPermissionLimits, AuthError> {
    let mut limits = user.nats.limits.clone();
    if user.iss != acc_key {
        let Some(sk) = acc.nats.signing_key(&user.iss) else {
            return Err(AuthError::Issuer(user.iss.clone(), acc_key.to_string()));
        };
        if let jwt::SigningKey::Scoped { template, .. } = sk {
            if !scoped_user_is_plain(&limits) {
                return Err(AuthError::UserJwt(
                    "scoped users require no permissions or limits set".into(),
                ));
            }
            limits = apply_template(template, user, acc);
        }
    }
    if limits.bearer_token && acc.nats.limits.disallow_bearer {
        return Err(AuthError::BearerNotAllowed);
    }
    if acc.nats.is_revoked(&user.sub, user.iat) {
        return Err(AuthError::Revoked);
    }
    Ok(limits)
}

/// The smaller of two JWT limits (−1: unlimited) as an optional limit.
fn min_limit(a: i64, b: i64) -> Option<usize> {
    let v = match (a, b) {
        (-1, -1) => return None,
        (-1, x) | (x, -1) => x,
        (x, y) => x.min(y),
    };
    Some(v.max(0) as usize)
}

fn scoped_user_is_plain(l: &jwt::UserPermissionLimits) -> bool {
    let empty = |p: &jwt::Permission| {
        p.allow.as_ref().is_none_or(|a| a.is_empty()) && p.deny.as_ref().is_none_or(|d| d.is_empty())
    };
    empty(&l.pub_)
        && empty(&l.sub)
        && l.resp.is_none()
        && l.src.is_empty()
        && l.times.is_empty()
        && [l.subs, l.data, l.payload].iter().all(|v| *v == -1 || *v == 0)
}

/// Fills a scoped signing key's template for `user`.
fn apply_template(
    template: &jwt::UserPermissionLimits,
    user: &jwt::UserClaims,
    acc: &jwt::AccountClaims,
) -> jwt::UserPermissionLimits {
    let fill = |s: &String| -> String {
        let mut out = s
            .replace("{{name()}}", &user.name)
            .replace("{{subject()}}", &user.sub)
            .replace("{{account-name()}}", &acc.name)
            .replace("{{account-subject()}}", &acc.sub);
        for t in &user.nats.tags {
            if let Some((k, v)) = t.split_once(':') {
                out = out.replace(&format!("{{{{tag({k})}}}}"), v);
            }
        }
        for t in &acc.nats.tags {
            if let Some((k, v)) = t.split_once(':') {
                out = out.replace(&format!("{{{{account-tag({k})}}}}"), v);
            }
        }
        out
    };
    let fill_perm = |p: &jwt::Permission| jwt::Permission {
        allow: p.allow.as_ref().map(|v| v.iter().map(fill).collect()),
        deny: p.deny.as_ref().map(|v| v.iter().map(fill).collect()),
    };
    let mut t = template.clone();
    t.pub_ = fill_perm(&template.pub_);
    t.sub = fill_perm(&template.sub);
    t
}

fn list(v: &Option<Vec<String>>) -> Option<PatternList> {
    v.as_ref().filter(|l| !l.is_empty()).map(|l| PatternList::new(l))
}

/// Permissions from a JWT's `pub`, `sub` and `resp`; `None` when they
/// restrict nothing.
fn permissions_from(
    publish: &jwt::Permission,
    subscribe: &jwt::Permission,
    resp: Option<&jwt::ResponsePermission>,
) -> Option<Permissions> {
    let p = Permissions {
        publish: SubjectRule {
            allow: list(&publish.allow),
            deny: list(&publish.deny),
        },
        subscribe: SubjectRule {
            allow: list(&subscribe.allow),
            deny: list(&subscribe.deny),
        },
        response: resp.map(|r| ResponsePermission {
            max: r.max.max(0) as u64,
            expires: Duration::from_nanos(r.ttl_ns.max(0) as u64),
        }),
    };
    let empty = p.publish.is_open() && p.subscribe.is_open() && p.response.is_none();
    (!empty).then(|| p.normalized())
}

fn jwt_permissions(l: &jwt::UserPermissionLimits) -> Option<Permissions> {
    permissions_from(&l.pub_, &l.sub, l.resp.as_ref())
}

fn default_permissions(d: &jwt::DefaultPermissions) -> Option<Permissions> {
    permissions_from(&d.pub_, &d.sub, d.resp.as_ref())
}

/// Whether CIDR `net` (`a.b.c.d/n`, `::1/128`, or a bare address) holds `ip`.
pub fn cidr_contains(net: &str, ip: IpAddr) -> bool {
    let (addr, bits) = match net.trim().split_once('/') {
        Some((a, b)) => (a, b.parse::<u32>().ok()),
        None => (net.trim(), None),
    };
    let Ok(base) = addr.parse::<IpAddr>() else {
        return false;
    };
    match (base, ip) {
        (IpAddr::V4(b), IpAddr::V4(i)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(b) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(b), IpAddr::V6(i)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(b) & mask == u128::from(i) & mask
        }
        (IpAddr::V4(b), IpAddr::V6(i)) => i
            .to_ipv4_mapped()
            .is_some_and(|m| cidr_contains(&b.to_string(), m.into())),
        _ => false,
    }
}

enum TimeCheck {
    /// Inside a window (or no windows); the end of that window if any.
    Inside(Option<SystemTime>),
    Outside,
}

fn hms(s: &str) -> Option<u32> {
    let mut it = s.split(':');
    let h: u32 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let sec: u32 = it.next().unwrap_or("0").parse().ok()?;
    (h < 24 && m < 60 && sec < 60).then_some(h * 3600 + m * 60 + sec)
}

/// Checks the user's connect windows. Times are in UTC when
/// `times_location` is empty or "UTC"; other zones are refused (petrel has
/// no zone database), which is stricter, never looser, than nats-server.
fn times_window(times: &[jwt::TimeRange], location: &str, now: SystemTime) -> TimeCheck {
    if times.is_empty() {
        return TimeCheck::Inside(None);
    }
    if !(location.is_empty() || location.eq_ignore_ascii_case("UTC")) {
        return TimeCheck::Outside;
    }
    let secs = unix_now(now);
    let day_start = secs - secs.rem_euclid(86400);
    let of_day = secs.rem_euclid(86400) as u32;
    for t in times {
        let (Some(start), Some(end)) = (hms(&t.start), hms(&t.end)) else {
            continue;
        };
        let inside = if start <= end {
            of_day >= start && of_day < end
        } else {
            of_day >= start || of_day < end
        };
        if inside {
            let mut end_abs = day_start + end as i64;
            if end_abs <= secs {
                end_abs += 86400;
            }
            return TimeCheck::Inside(Some(UNIX_EPOCH + Duration::from_secs(end_abs as u64)));
        }
    }
    TimeCheck::Outside
}

/// HTTP GET of an account JWT (or the resolver's probe): the body on 200.
pub fn fetch(url: &str) -> Result<String, String> {
    let agent = ureq::AgentBuilder::new().timeout(FETCH_TIMEOUT).build();
    match agent.get(url).call() {
        Ok(r) if r.status() == 200 => r.into_string().map_err(|e| e.to_string()),
        Ok(r) => Err(format!("status {}", r.status())),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Account claims as the Go library writes them: response rules,
    /// latency, `allow_trace`, `share` and the account's trace
    /// destination reach the account configuration the imports are built
    /// from.
    #[test]
    fn jwt_exchange_options_are_read() {
        use crate::auth::config::{LatencySampling, ResponseType};
        let exporter: jwt::AccountClaims = serde_json::from_value(serde_json::json!({
            "iss": "O", "sub": "AEXP", "iat": 1,
            "nats": {
                "exports": [
                    {"subject": "svc.a", "type": "service", "response_type": "Stream", "response_threshold": 5000000000_i64,
                     "allow_trace": true},
                    {"subject": "svc.b", "type": "service", "latency": {"sampling": 25, "results": "lat.b"}},
                    {"subject": "svc.c", "type": "service", "latency": {"sampling": 0, "results": "lat.c"}}
                ],
                "trace": {"dest": "trace.here", "sampling": 40}
            }
        }))
        .unwrap();
        let importer: jwt::AccountClaims = serde_json::from_value(serde_json::json!({
            "iss": "O", "sub": "AIMP", "iat": 1,
            "nats": {"imports": [{"subject": "svc.a", "account": "AEXP", "type": "service", "share": true},
                                 {"subject": "feed", "account": "AEXP", "type": "stream", "allow_trace": true}]}
        }))
        .unwrap();
        let loaded: HashMap<String, jwt::AccountClaims> =
            [("AEXP".to_string(), exporter), ("AIMP".to_string(), importer)].into();
        let configs = jwt_account_configs(&loaded, 10);
        let exp = configs.iter().find(|a| a.name == "AEXP").unwrap();
        assert_eq!(exp.exports[0].response.kind, ResponseType::Stream);
        assert_eq!(exp.exports[0].response.threshold, Duration::from_secs(5));
        assert!(exp.exports[0].allow_trace);
        let lat = |i: usize| exp.exports[i].latency.clone().map(|l| (l.sampling, l.subject));
        assert_eq!(lat(1), Some((LatencySampling::Percent(25), "lat.b".to_string())));
        assert_eq!(lat(2), Some((LatencySampling::Headers, "lat.c".to_string())));
        let t = exp.trace_dest.clone().unwrap();
        assert_eq!((t.dest.as_str(), t.sampling), ("trace.here", 40));
        let imp = configs.iter().find(|a| a.name == "AIMP").unwrap();
        assert!(imp.imports[0].share && !imp.imports[0].allow_trace);
        assert!(imp.imports[1].allow_trace);
    }

    #[test]
    fn cidrs() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(cidr_contains("127.0.0.0/8", ip));
        assert!(cidr_contains("127.0.0.1", ip));
        assert!(!cidr_contains("10.0.0.0/8", ip));
        assert!(cidr_contains("0.0.0.0/0", ip));
        assert!(cidr_contains("::1/128", "::1".parse().unwrap()));
        assert!(!cidr_contains("garbage", ip));
    }

    #[test]
    fn limits_combine() {
        assert_eq!(min_limit(-1, -1), None);
        assert_eq!(min_limit(-1, 10), Some(10));
        assert_eq!(min_limit(5, 10), Some(5));
        assert_eq!(min_limit(0, -1), Some(0));
    }

    #[test]
    fn time_windows() {
        let noon = UNIX_EPOCH + Duration::from_secs(86400 * 100 + 12 * 3600);
        let w = |s: &str, e: &str| jwt::TimeRange {
            start: s.into(),
            end: e.into(),
        };
        assert!(matches!(times_window(&[], "", noon), TimeCheck::Inside(None)));
        match times_window(&[w("11:00:00", "13:00:00")], "", noon) {
            TimeCheck::Inside(Some(end)) => assert_eq!(end, noon + Duration::from_secs(3600)),
            _ => panic!("inside"),
        }
        assert!(matches!(
            times_window(&[w("13:00:00", "14:00:00")], "UTC", noon),
            TimeCheck::Outside
        ));
        assert!(matches!(
            times_window(&[w("22:00:00", "13:00:00")], "", noon),
            TimeCheck::Inside(Some(_))
        ));
        assert!(matches!(
            times_window(&[w("11:00:00", "13:00:00")], "Europe/Paris", noon),
            TimeCheck::Outside
        ));
    }
}
