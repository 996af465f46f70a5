//! The per-connection protocol state machine, without sockets or clocks.
//!
//! A [`Session`] is fed the bytes a client sent and the current time, and
//! answers through a [`SessionHost`]: protocol replies go to the host's
//! outbound buffer, publishes and subscriptions go to the host's router.
//! Deadlines (server PINGs, the auth timeout) come out of
//! [`Session::poll_timeout`] and are acted on in [`Session::handle_timeout`].

use std::time::{Duration, Instant};

use super::connect::ClientOpts;
use super::encode;
use super::errors::{parse_error_outcome, CloseReason, Violation, WireError};
use super::parser::{parse, Op, ParseError, ParseLimits, Parsed};
use crate::subject;

/// Settings a session needs from the server options.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Longest control-line argument part.
    pub max_control_line: usize,
    /// Largest payload (headers included) a client may publish.
    pub max_payload: usize,
    /// Server-side header support (`no_header_support` turns it off).
    pub headers_supported: bool,
    /// Interval between server PINGs.
    pub ping_interval: Duration,
    /// Unanswered PINGs tolerated before the connection is stale.
    pub ping_max: u32,
    /// Whether the client must authenticate in CONNECT.
    pub auth_required: bool,
    /// How long the client has to send CONNECT when auth is required.
    pub auth_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_control_line: 4096,
            max_payload: 1024 * 1024,
            headers_supported: true,
            ping_interval: Duration::from_secs(120),
            ping_max: 2,
            auth_required: false,
            auth_timeout: Duration::from_secs(2),
        }
    }
}

/// A message a client published.
#[derive(Debug, Clone, Copy)]
pub struct Publish<'a> {
    /// Destination subject.
    pub subject: &'a [u8],
    /// Reply subject.
    pub reply: Option<&'a [u8]>,
    /// Length of the header block at the front of `message` (HPUB).
    pub header_len: Option<usize>,
    /// Header block (if any) followed by the payload.
    pub message: &'a [u8],
}

/// What an accepted CONNECT grants beyond the server's settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectGrant {
    /// A payload limit below the server's (user or account limits).
    pub max_payload: Option<usize>,
    /// When the user's credentials expire; the client is closed then with
    /// `User Authentication Expired`.
    pub expires: Option<Instant>,
    /// When the account's JWT expires; the client is closed then with
    /// `Account Authentication Expired`.
    pub account_expires: Option<Instant>,
}

/// What became of a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// At least one subscriber will receive it.
    Delivered,
    /// Nobody was interested.
    NoInterest,
}

/// What a session needs from the server around it.
pub trait SessionHost {
    /// The connection's outbound buffer.
    fn out(&mut self) -> &mut Vec<u8>;
    /// Checks the credentials in CONNECT and records the options the router
    /// needs (echo, headers). `Err` is sent and closes the connection.
    fn connect(&mut self, opts: &ClientOpts) -> Result<ConnectGrant, WireError>;
    /// The subject a message to `subject` goes to under the account's
    /// subject mappings, when one applies (empty: dropped by a weighted
    /// pick). Applied before the permission check, as nats-server does.
    fn map_subject(&mut self, _subject: &[u8]) -> Option<Vec<u8>> {
        None
    }
    /// Whether the client's permissions let it publish to `subject` now
    /// (checked before `+OK`, as nats-server does).
    fn may_publish(&mut self, subject: &[u8]) -> bool;
    /// Routes a message the client may publish.
    fn publish(&mut self, msg: &Publish<'_>) -> Routed;
    /// Adds a subscription; `Err` is sent and the connection stays open
    /// (`PermissionsViolation` is worded with the subject and queue).
    fn subscribe(&mut self, subject: &[u8], queue: Option<&[u8]>, sid: &[u8]) -> Result<(), WireError>;
    /// Removes a subscription now, or after `max` messages in all.
    fn unsubscribe(&mut self, sid: &[u8], max: Option<u64>);
    /// Sends the no-responders status to this client's subscription on `reply`.
    fn no_responders(&mut self, reply: &[u8], subject: &[u8]);
    /// Sends PONG followed by `then`. The host may hold both back until
    /// subscriptions this client made have reached every shard.
    fn pong(&mut self, then: Option<Vec<u8>>);
    /// The INFO JSON sent after the first PONG (2.12 `connect_info`).
    fn connect_info_json(&mut self) -> Vec<u8>;
    /// Tells the client of a permissions violation (the connection stays
    /// open); a server host also logs it. `sid` names a refused
    /// subscription.
    fn violation(&mut self, _opts: &ClientOpts, v: Violation<'_>, _sid: Option<&[u8]>) {
        encode::violation(self.out(), v);
    }
    /// A limit refused an operation; a server host logs it as nats-server
    /// does (the `-ERR` is the session's to send).
    fn limit_refused(&mut self, _opts: &ClientOpts, _what: LimitRefusal) {}
    /// A message with headers `hdr` is about to be published to `subject`
    /// (`size` bytes in all): starts its trace when the headers ask for
    /// one (before its mapping), and says what to do with it.
    fn trace_begin(&mut self, _opts: &ClientOpts, _hdr: &[u8], _subject: &[u8], _size: usize) -> TraceStart {
        TraceStart::Untraced
    }
    /// The traced message has been routed (or refused): its trace is done.
    fn trace_end(&mut self) {}
    /// The client answered the server's PING after `rtt`.
    fn rtt_measured(&mut self, _rtt: Duration) {}
}

/// What [`SessionHost::trace_begin`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceStart {
    /// Not traced: publish as usual.
    Untraced,
    /// Traced: publish, then [`SessionHost::trace_end`].
    Traced,
    /// Neither traced nor published (only traced, and the trace cannot
    /// be made; or the destination is not the client's to publish to).
    Skip,
    /// Tracing is off for it: publish with `Nats-Trace-Dest` set to
    /// `trace disabled`, so no server traces it.
    Disabled,
}

/// What a limit refused (see [`SessionHost::limit_refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitRefusal {
    /// A payload of `size` bytes over the connection's `max`.
    Payload {
        /// The size the client announced.
        size: usize,
        /// The connection's limit.
        max: usize,
    },
    /// A subscription past the connection's limit.
    Subscriptions,
}

/// Protocol state of one client connection.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    opts: ClientOpts,
    connected: bool,
    sent_connect_info: bool,
    /// Whether the PONG to the first PING after CONNECT has gone out:
    /// clients wait for that PONG before anything else (nats-py reads the
    /// next line as it, and an INFO there left it without a writer), so
    /// async INFOs wait for it, as nats-server's `firstPongSent`.
    first_pong_sent: bool,
    pings_out: u32,
    next_ping: Instant,
    auth_deadline: Option<Instant>,
    last_activity: Option<Instant>,
    ping_sent_at: Option<Instant>,
    rtt: Option<(Duration, Instant)>,
    /// nats-server's estimate until a PONG measures it: accept to CONNECT.
    rtt_estimate: Option<Duration>,
    accepted: Instant,
    grant: ConnectGrant,
}

impl Session {
    /// A new session for a connection accepted at `now`. `first_ping` is the
    /// delay of the first server PING (nats-server: `min(interval, 2s)` plus
    /// up to 20 % jitter, which the caller draws).
    pub fn new(cfg: SessionConfig, now: Instant, first_ping: Duration) -> Session {
        let auth_deadline = cfg.auth_required.then(|| now + cfg.auth_timeout);
        Session {
            cfg,
            opts: ClientOpts::default(),
            connected: false,
            sent_connect_info: false,
            first_pong_sent: false,
            pings_out: 0,
            next_ping: now + first_ping,
            auth_deadline,
            last_activity: None,
            ping_sent_at: None,
            rtt: None,
            rtt_estimate: None,
            accepted: now,
            grant: ConnectGrant::default(),
        }
    }

    /// nats-server's first-ping delay before jitter.
    pub fn first_ping_base(ping_interval: Duration) -> Duration {
        ping_interval.min(Duration::from_secs(2))
    }

    /// The options from the client's CONNECT (defaults before it).
    pub fn opts(&self) -> &ClientOpts {
        &self.opts
    }

    /// Whether a CONNECT was accepted.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether the client may be sent an async INFO (connect URLs changed,
    /// lame duck mode): it asked for them (`protocol` 1) and has had the
    /// PONG to its first PING; before that, the INFO that follows that PONG
    /// carries what changed.
    pub fn takes_async_info(&self) -> bool {
        self.first_pong_sent && self.opts.protocol >= 1
    }

    /// The last measured round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt.map(|r| r.0).or(self.rtt_estimate)
    }

    /// The parse limits in force for this client now.
    pub fn limits(&self) -> ParseLimits {
        ParseLimits {
            max_control_line: self.cfg.max_control_line,
            max_payload: self
                .grant
                .max_payload
                .map_or(self.cfg.max_payload, |m| m.min(self.cfg.max_payload)),
            headers: self.headers(),
        }
    }

    fn headers(&self) -> bool {
        self.cfg.headers_supported && self.opts.headers
    }

    /// Applies settings changed at run time (config reload).
    pub fn update_config(&mut self, cfg: SessionConfig) {
        self.cfg = cfg;
    }

    /// Processes every complete operation at the front of `buf` and returns
    /// how many bytes were used. `Err` means the connection must close; any
    /// `-ERR` is already in the host's outbound buffer.
    pub fn receive<H: SessionHost>(&mut self, buf: &[u8], now: Instant, host: &mut H) -> Result<usize, CloseReason> {
        let mut used = 0;
        loop {
            // Under auth nats-server refuses at the first byte of any op
            // before CONNECT that cannot begin one.
            if self.cfg.auth_required && !self.connected && buf.get(used).is_some_and(|b| !matches!(b, b'C' | b'c')) {
                encode::err(host.out(), WireError::AuthorizationViolation);
                return Err(CloseReason::AuthenticationViolation);
            }
            let limits = self.limits();
            match parse(&buf[used..], &limits) {
                Ok(Parsed::Op(op, n)) => {
                    self.handle_op(op, now, host)?;
                    used += n;
                }
                Ok(Parsed::Incomplete { .. }) => return Ok(used),
                Err(e) => {
                    if let ParseError::MaxPayload(size) = e {
                        let max = limits.max_payload;
                        host.limit_refused(&self.opts, LimitRefusal::Payload { size, max });
                    }
                    let (wire, reason) = parse_error_outcome(e);
                    if let Some(w) = wire {
                        encode::err(host.out(), w);
                    }
                    return Err(reason);
                }
            }
        }
    }

    /// How many bytes the operation at the front of `buf` needs in all, when
    /// known: lets the caller size its read buffer for a large payload.
    pub fn bytes_needed(&self, buf: &[u8]) -> Option<usize> {
        match parse(buf, &self.limits()) {
            Ok(Parsed::Incomplete { need }) => need,
            _ => None,
        }
    }

    fn fail<H: SessionHost>(host: &mut H, e: WireError) -> Result<(), CloseReason> {
        encode::err(host.out(), e);
        match e.closes() {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    fn ok<H: SessionHost>(&self, host: &mut H) {
        if self.opts.verbose {
            host.out().extend_from_slice(encode::OK);
        }
    }

    fn handle_op<H: SessionHost>(&mut self, op: Op<'_>, now: Instant, host: &mut H) -> Result<(), CloseReason> {
        if self.cfg.auth_required && !self.connected && !matches!(op, Op::Connect(_)) {
            return Self::fail(host, WireError::AuthorizationViolation);
        }
        match op {
            Op::Connect(json) => self.connect(json, now, host),
            Op::Pub {
                subject,
                reply,
                payload,
            } => {
                self.publish(
                    Publish {
                        subject,
                        reply,
                        header_len: None,
                        message: payload,
                    },
                    now,
                    host,
                );
                Ok(())
            }
            Op::HPub {
                subject,
                reply,
                header_len,
                message,
            } => {
                self.publish(
                    Publish {
                        subject,
                        reply,
                        header_len: Some(header_len),
                        message,
                    },
                    now,
                    host,
                );
                Ok(())
            }
            Op::Sub { subject, queue, sid } => {
                self.last_activity = Some(now);
                if !subject::is_valid_subject(subject) || queue.is_some_and(|q| !subject::is_valid_queue(q)) {
                    return Self::fail(host, WireError::InvalidSubject);
                }
                match host.subscribe(subject, queue, sid) {
                    Ok(()) => self.ok(host),
                    Err(WireError::PermissionsViolation) => {
                        host.violation(&self.opts, Violation::Subscribe(subject, queue), Some(sid));
                    }
                    Err(e) => {
                        if e == WireError::MaxSubscriptionsExceeded {
                            host.limit_refused(&self.opts, LimitRefusal::Subscriptions);
                        }
                        Self::fail(host, e)?
                    }
                }
                Ok(())
            }
            Op::Unsub { sid, max } => {
                self.last_activity = Some(now);
                host.unsubscribe(sid, max);
                self.ok(host);
                Ok(())
            }
            Op::Ping => {
                self.last_activity = Some(now);
                self.first_pong_sent |= self.connected;
                let then = (self.connected && self.opts.protocol >= 1 && !self.sent_connect_info).then(|| {
                    self.sent_connect_info = true;
                    let mut line = Vec::new();
                    encode::info(&mut line, &host.connect_info_json());
                    line
                });
                host.pong(then);
                Ok(())
            }
            Op::Pong => {
                self.pings_out = 0;
                if let Some(sent) = self.ping_sent_at.take() {
                    let rtt = now.saturating_duration_since(sent);
                    self.rtt = Some((rtt, now));
                    host.rtt_measured(rtt);
                }
                Ok(())
            }
            Op::Ok => Ok(()),
            Op::Err(_) => Err(CloseReason::ParseError),
            Op::Info(json) => match serde_json::from_slice::<serde_json::Value>(json) {
                Ok(_) => Ok(()),
                Err(_) => Err(CloseReason::ProtocolViolation),
            },
        }
    }

    fn connect<H: SessionHost>(&mut self, json: &[u8], now: Instant, host: &mut H) -> Result<(), CloseReason> {
        let Some(opts) = ClientOpts::from_json(json) else {
            return Err(CloseReason::ProtocolViolation);
        };
        let grant = match host.connect(&opts) {
            Ok(g) => g,
            Err(e) => return Self::fail(host, e),
        };
        if opts.account.is_some() || opts.new_account.is_some() {
            return Self::fail(host, WireError::AuthorizationViolation);
        }
        if !(0..=1).contains(&opts.protocol) {
            return Self::fail(host, WireError::InvalidClientProtocol);
        }
        let headers = opts.headers && self.cfg.headers_supported;
        if opts.no_responders && !headers {
            return Self::fail(host, WireError::NoRespondersRequiresHeaders);
        }
        self.opts = opts;
        self.grant = grant;
        self.connected = true;
        self.auth_deadline = None;
        if self.rtt.is_none() {
            // As nats-server: the time from accept to CONNECT stands for
            // the round trip until a PONG measures it.
            let estimate = now
                .saturating_duration_since(self.accepted)
                .max(Duration::from_nanos(1));
            self.rtt_estimate = Some(estimate);
            host.rtt_measured(estimate);
        }
        self.ok(host);
        Ok(())
    }

    fn publish<H: SessionHost>(&mut self, msg: Publish<'_>, now: Instant, host: &mut H) {
        self.last_activity = Some(now);
        if self.opts.pedantic && !subject::is_valid_literal_subject(msg.subject) {
            encode::err(host.out(), WireError::InvalidPublishSubject);
        }
        let mut traced = false;
        let disabled;
        let msg = match msg.header_len {
            Some(h) => match host.trace_begin(&self.opts, &msg.message[..h], msg.subject, msg.message.len()) {
                TraceStart::Untraced => msg,
                TraceStart::Traced => {
                    traced = true;
                    msg
                }
                TraceStart::Skip => return,
                TraceStart::Disabled => {
                    disabled = super::trace::with_header(
                        msg.message,
                        h,
                        super::trace::TRACE_DEST,
                        super::trace::TRACE_DISABLED,
                    );
                    Publish {
                        header_len: Some(disabled.1),
                        message: &disabled.0,
                        ..msg
                    }
                }
            },
            None => msg,
        };
        self.publish_checked(msg, host);
        if traced {
            host.trace_end();
        }
    }

    /// Maps, checks and routes a message.
    fn publish_checked<H: SessionHost>(&mut self, msg: Publish<'_>, host: &mut H) {
        let mapped = host.map_subject(msg.subject);
        let msg = match &mapped {
            Some(subject) => Publish { subject, ..msg },
            None => msg,
        };
        if !host.may_publish(msg.subject) {
            host.violation(&self.opts, Violation::Publish(msg.subject), None);
            return;
        }
        self.ok(host);
        match host.publish(&msg) {
            Routed::Delivered => {}
            Routed::NoInterest => {
                if let (true, Some(reply)) = (self.opts.no_responders, msg.reply) {
                    host.no_responders(reply, msg.subject);
                }
            }
        }
    }

    /// The next instant at which [`Session::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Instant {
        [self.auth_deadline, self.grant.expires, self.grant.account_expires]
            .into_iter()
            .flatten()
            .fold(self.next_ping, Instant::min)
    }

    /// Acts on deadlines that have passed: the auth timeout, server PINGs and
    /// the stale-connection check.
    pub fn handle_timeout<H: SessionHost>(&mut self, now: Instant, host: &mut H) -> Result<(), CloseReason> {
        if let Some(d) = self.auth_deadline {
            if now >= d && !self.connected {
                return Self::fail(host, WireError::AuthenticationTimeout);
            }
        }
        if self.grant.expires.is_some_and(|e| now >= e) {
            return Self::fail(host, WireError::UserAuthenticationExpired);
        }
        if self.grant.account_expires.is_some_and(|e| now >= e) {
            return Self::fail(host, WireError::AccountAuthenticationExpired);
        }
        if now < self.next_ping {
            return Ok(());
        }
        let interval = self.cfg.ping_interval;
        self.next_ping = now + interval;
        // nats-server skips the PING when the client was active within the
        // interval and the RTT is fresh (measured within the hour).
        let active = self
            .last_activity
            .is_some_and(|t| now.saturating_duration_since(t) < interval);
        let rtt_fresh = self
            .rtt
            .is_some_and(|(_, at)| now.saturating_duration_since(at) < Duration::from_secs(3600));
        if active && rtt_fresh {
            return Ok(());
        }
        if self.pings_out + 1 > self.cfg.ping_max {
            return Self::fail(host, WireError::StaleConnection);
        }
        self.pings_out += 1;
        self.ping_sent_at = Some(now);
        host.out().extend_from_slice(encode::PING);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Published = (Vec<u8>, Option<Vec<u8>>, Vec<u8>);

    #[derive(Default)]
    struct Host {
        out: Vec<u8>,
        published: Vec<Published>,
        subs: Vec<(Vec<u8>, Vec<u8>)>,
        deliver: bool,
        fail_auth: bool,
        grant: ConnectGrant,
    }

    impl SessionHost for Host {
        fn out(&mut self) -> &mut Vec<u8> {
            &mut self.out
        }
        fn connect(&mut self, _: &ClientOpts) -> Result<ConnectGrant, WireError> {
            if self.fail_auth {
                Err(WireError::AuthorizationViolation)
            } else {
                Ok(self.grant)
            }
        }
        fn may_publish(&mut self, subject: &[u8]) -> bool {
            !subject.starts_with(b"denied")
        }
        fn publish(&mut self, m: &Publish<'_>) -> Routed {
            self.published
                .push((m.subject.to_vec(), m.reply.map(<[u8]>::to_vec), m.message.to_vec()));
            if self.deliver {
                Routed::Delivered
            } else {
                Routed::NoInterest
            }
        }
        fn subscribe(&mut self, s: &[u8], _: Option<&[u8]>, sid: &[u8]) -> Result<(), WireError> {
            if s.starts_with(b"denied") {
                return Err(WireError::PermissionsViolation);
            }
            self.subs.push((s.to_vec(), sid.to_vec()));
            Ok(())
        }
        fn unsubscribe(&mut self, _: &[u8], _: Option<u64>) {}
        fn no_responders(&mut self, reply: &[u8], _: &[u8]) {
            self.out.extend_from_slice(b"NR ");
            self.out.extend_from_slice(reply);
        }
        fn pong(&mut self, then: Option<Vec<u8>>) {
            self.out.extend_from_slice(encode::PONG);
            if let Some(t) = then {
                self.out.extend_from_slice(&t);
            }
        }
        fn connect_info_json(&mut self) -> Vec<u8> {
            b"{\"connect_info\":true}".to_vec()
        }
    }

    fn run(cfg: SessionConfig, host: &mut Host, input: &[u8]) -> (Session, Result<usize, CloseReason>) {
        let now = Instant::now();
        let mut s = Session::new(cfg, now, Duration::from_secs(2));
        let r = s.receive(input, now, host);
        (s, r)
    }

    #[test]
    fn verbose_is_default() {
        let mut h = Host::default();
        let (_, r) = run(
            SessionConfig::default(),
            &mut h,
            b"SUB foo 1\r\nPUB foo 2\r\nhi\r\nPING\r\n",
        );
        assert!(r.is_ok());
        assert_eq!(h.out, b"+OK\r\n+OK\r\nPONG\r\n");
    }

    #[test]
    fn connect_info_after_first_ping_only_for_protocol_1() {
        let mut h = Host::default();
        let (_, _) = run(
            SessionConfig::default(),
            &mut h,
            b"CONNECT {\"verbose\":false,\"protocol\":1}\r\nPING\r\nPING\r\n",
        );
        assert_eq!(h.out, b"PONG\r\nINFO {\"connect_info\":true} \r\nPONG\r\n");
        let mut h = Host::default();
        let _ = run(
            SessionConfig::default(),
            &mut h,
            b"CONNECT {\"verbose\":false}\r\nPING\r\n",
        );
        assert_eq!(h.out, b"PONG\r\n");
    }

    #[test]
    fn async_info_only_after_the_first_pong_to_a_connected_client() {
        let cases: [(&[u8], bool); 5] = [
            (b"CONNECT {\"verbose\":false,\"protocol\":1}\r\n", false),
            (b"PING\r\nCONNECT {\"verbose\":false,\"protocol\":1}\r\n", false),
            (b"CONNECT {\"verbose\":false,\"protocol\":1}\r\nPING\r\n", true),
            (b"CONNECT {\"verbose\":false,\"protocol\":0}\r\nPING\r\n", false),
            (b"CONNECT {\"verbose\":false,\"protocol\":1}\r\nPUB a 0\r\n\r\n", false),
        ];
        for (input, takes) in cases {
            let (s, _) = run(SessionConfig::default(), &mut Host::default(), input);
            assert_eq!(s.takes_async_info(), takes, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn pedantic_subject_is_reported_but_processed() {
        let mut h = Host::default();
        let _ = run(SessionConfig::default(), &mut h, b"PUB foo.* 1\r\nx\r\n");
        assert_eq!(h.out, b"-ERR 'Invalid Publish Subject'\r\n+OK\r\n");
        assert_eq!(h.published.len(), 1);
    }

    #[test]
    fn invalid_sub_subject_stays_open() {
        let mut h = Host::default();
        let (_, r) = run(SessionConfig::default(), &mut h, b"SUB foo..bar 1\r\nPING\r\n");
        assert!(r.is_ok());
        assert_eq!(h.out, b"-ERR 'Invalid Subject'\r\nPONG\r\n");
    }

    #[test]
    fn no_responders_and_header_rules() {
        let mut h = Host::default();
        let (_, r) = run(
            SessionConfig::default(),
            &mut h,
            b"CONNECT {\"verbose\":false,\"headers\":true,\"no_responders\":true}\r\nPUB foo r 0\r\n\r\n",
        );
        assert!(r.is_ok());
        assert_eq!(h.out, b"NR r");
        let mut h = Host::default();
        let (_, r) = run(
            SessionConfig::default(),
            &mut h,
            b"CONNECT {\"no_responders\":true}\r\n",
        );
        assert_eq!(r, Err(CloseReason::ProtocolViolation));
        assert_eq!(h.out, b"-ERR 'no responders requires headers support'\r\n");
        let mut h = Host::default();
        let (_, r) = run(SessionConfig::default(), &mut h, b"HPUB foo 0 0\r\n\r\n");
        assert_eq!(r, Err(CloseReason::ProtocolViolation));
        assert!(h.out.is_empty());
    }

    #[test]
    fn bad_connect_closes_silently_and_protocol_is_checked() {
        let mut h = Host::default();
        let (_, r) = run(SessionConfig::default(), &mut h, b"CONNECT {bad\r\n");
        assert_eq!(r, Err(CloseReason::ProtocolViolation));
        assert!(h.out.is_empty());
        let mut h = Host::default();
        let (_, r) = run(SessionConfig::default(), &mut h, b"CONNECT {\"protocol\":2}\r\n");
        assert_eq!(r, Err(CloseReason::BadClientProtocolVersion));
        assert_eq!(h.out, b"-ERR 'invalid client protocol'\r\n");
    }

    #[test]
    fn client_err_closes() {
        let mut h = Host::default();
        let (_, r) = run(SessionConfig::default(), &mut h, b"-ERR 'boom'\r\n");
        assert_eq!(r, Err(CloseReason::ParseError));
        assert!(h.out.is_empty());
    }

    #[test]
    fn auth_required_first_op_and_timeout() {
        let cfg = SessionConfig {
            auth_required: true,
            ..Default::default()
        };
        let mut h = Host::default();
        let (_, r) = run(cfg.clone(), &mut h, b"PING\r\n");
        assert_eq!(r, Err(CloseReason::AuthenticationViolation));
        assert_eq!(h.out, b"-ERR 'Authorization Violation'\r\n");

        let now = Instant::now();
        let mut h = Host::default();
        let mut s = Session::new(cfg, now, Duration::from_secs(60));
        assert_eq!(s.poll_timeout(), now + Duration::from_secs(2));
        assert!(s.handle_timeout(now + Duration::from_secs(1), &mut h).is_ok());
        let r = s.handle_timeout(now + Duration::from_secs(2), &mut h);
        assert_eq!(r, Err(CloseReason::AuthenticationTimeout));
        assert_eq!(h.out, b"-ERR 'Authentication Timeout'\r\n");
    }

    #[test]
    fn pings_then_stale() {
        let now = Instant::now();
        let mut h = Host::default();
        let cfg = SessionConfig {
            ping_interval: Duration::from_secs(10),
            ..Default::default()
        };
        let mut s = Session::new(cfg, now, Duration::from_secs(2));
        let t1 = s.poll_timeout();
        assert_eq!(t1, now + Duration::from_secs(2));
        s.handle_timeout(t1, &mut h).unwrap();
        let t2 = s.poll_timeout();
        assert_eq!(t2, t1 + Duration::from_secs(10));
        s.handle_timeout(t2, &mut h).unwrap();
        assert_eq!(h.out, b"PING\r\nPING\r\n");
        let r = s.handle_timeout(s.poll_timeout(), &mut h);
        assert_eq!(r, Err(CloseReason::StaleConnection));
        assert!(h.out.ends_with(b"-ERR 'Stale Connection'\r\n"));
    }

    #[test]
    fn pong_resets_and_activity_skips_ping() {
        let now = Instant::now();
        let mut h = Host::default();
        let cfg = SessionConfig {
            ping_interval: Duration::from_secs(10),
            ..Default::default()
        };
        let mut s = Session::new(cfg, now, Duration::from_secs(2));
        let t1 = s.poll_timeout();
        s.handle_timeout(t1, &mut h).unwrap();
        s.receive(b"PONG\r\n", t1 + Duration::from_millis(1), &mut h).unwrap();
        assert!(s.rtt().is_some());
        s.receive(b"PUB a 0\r\n\r\n", t1 + Duration::from_secs(5), &mut h)
            .unwrap();
        h.out.clear();
        let t2 = s.poll_timeout();
        s.handle_timeout(t2, &mut h).unwrap();
        assert!(h.out.is_empty(), "active client with fresh RTT is not pinged");
    }

    #[test]
    fn violations_are_worded_and_keep_the_connection() {
        let mut h = Host::default();
        let (_, r) = run(
            SessionConfig::default(),
            &mut h,
            b"CONNECT {\"verbose\":false}\r\nPUB denied.x 1\r\nx\r\nSUB denied.y q 1\r\nPING\r\n",
        );
        assert!(r.is_ok());
        assert_eq!(
            String::from_utf8_lossy(&h.out),
            "-ERR 'Permissions Violation for Publish to \"denied.x\"'\r\n\
             -ERR 'Permissions Violation for Subscription to \"denied.y\" using queue \"q\"'\r\nPONG\r\n"
        );
    }

    #[test]
    fn grant_lowers_payload_and_expires() {
        let now = Instant::now();
        let mut h = Host {
            grant: ConnectGrant {
                max_payload: Some(4),
                expires: Some(now + Duration::from_secs(1)),
                account_expires: None,
            },
            ..Default::default()
        };
        let mut s = Session::new(SessionConfig::default(), now, Duration::from_secs(60));
        s.receive(b"CONNECT {\"verbose\":false}\r\n", now, &mut h).unwrap();
        assert_eq!(s.poll_timeout(), now + Duration::from_secs(1));
        let r = s.handle_timeout(now + Duration::from_secs(1), &mut h);
        assert_eq!(r, Err(CloseReason::AuthenticationExpired));
        assert!(h.out.ends_with(b"-ERR 'User Authentication Expired'\r\n"));
        let r = s.receive(b"PUB a 5\r\nhello\r\n", now, &mut h);
        assert_eq!(r, Err(CloseReason::MaxPayloadExceeded));
    }

    #[test]
    fn partial_input_is_left_for_later() {
        let mut h = Host::default();
        let (mut s, r) = run(SessionConfig::default(), &mut h, b"PUB foo 5\r\nhel");
        assert_eq!(r, Ok(0));
        assert_eq!(s.bytes_needed(b"PUB foo 5\r\nhel"), Some(18));
        let r = s.receive(b"PUB foo 5\r\nhello\r\nPI", Instant::now(), &mut h);
        assert_eq!(r, Ok(18));
        assert_eq!(h.published[0].2, b"hello");
    }
}
