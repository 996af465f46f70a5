//! Compression modes as nats-server names them, and how two servers agree
//! on what each writes (nats-server's `selectCompressionMode`): a side
//! that is `off` (or a peer that does not know compression) turns it off
//! for both, `accept` follows the peer, and a side with a level writes at
//! its own level whatever the peer writes at.

use std::time::Duration;

/// An S2 level a link writes at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// S2 framing, blocks stored plain.
    Uncompressed,
    /// The default encoder.
    Fast,
    /// The better encoder.
    Better,
    /// The best encoder.
    Best,
}

impl Level {
    /// nats-server's name (`/routez`, `/leafz`, INFO).
    pub fn name(self) -> &'static str {
        match self {
            Level::Uncompressed => "s2_uncompressed",
            Level::Fast => "s2_fast",
            Level::Better => "s2_better",
            Level::Best => "s2_best",
        }
    }
}

/// A configured compression mode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CompressionMode {
    /// Never compress.
    Off,
    /// Compress when the peer asks, at its level.
    Accept,
    /// A level chosen from the round-trip time: the first threshold the
    /// RTT is within picks uncompressed, fast, better, best in that order.
    Auto(Vec<Duration>),
    /// Always this level.
    Fixed(Level),
}

/// nats-server's default `s2_auto` thresholds.
pub const DEFAULT_RTT_THRESHOLDS: [Duration; 3] = [
    Duration::from_millis(10),
    Duration::from_millis(50),
    Duration::from_millis(100),
];

/// What a link agreed with its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    /// The peer does not know compression (no `compression` in its INFO).
    NotSupported,
    /// Compression is off.
    Off,
    /// This side writes S2 at this level (and reads S2).
    S2(Level),
}

impl Negotiated {
    /// The name `/routez` and `/leafz` show.
    pub fn name(self) -> &'static str {
        match self {
            Negotiated::NotSupported => "not supported",
            Negotiated::Off => "off",
            Negotiated::S2(l) => l.name(),
        }
    }
}

impl CompressionMode {
    /// nats-server's default for leaf nodes (both sides): `s2_auto`.
    pub fn default_leaf() -> CompressionMode {
        CompressionMode::Auto(DEFAULT_RTT_THRESHOLDS.to_vec())
    }

    /// Reads a mode the way nats-server normalizes it (any case); the
    /// error is nats-server's text.
    pub fn parse(mode: &str, thresholds: Vec<Duration>) -> Result<CompressionMode, String> {
        Ok(match mode.to_ascii_lowercase().as_str() {
            "disabled" | "off" | "false" => CompressionMode::Off,
            "accept" => CompressionMode::Accept,
            "auto" | "s2_auto" => CompressionMode::Auto(check_thresholds(mode, thresholds)?),
            "fast" | "s2_fast" => CompressionMode::Fixed(Level::Fast),
            "better" | "s2_better" => CompressionMode::Fixed(Level::Better),
            "best" | "s2_best" => CompressionMode::Fixed(Level::Best),
            _ => return Err(format!("unsupported compression mode {mode:?}")),
        })
    }

    /// Whether this side takes part in negotiating (everything but off).
    pub fn negotiates(&self) -> bool {
        *self != CompressionMode::Off
    }

    /// What this side says in the INFO that opens the negotiation.
    pub fn info_value(&self) -> &'static str {
        match self {
            CompressionMode::Off => "off",
            CompressionMode::Accept => "accept",
            CompressionMode::Auto(_) => "s2_auto",
            CompressionMode::Fixed(l) => l.name(),
        }
    }

    /// The mode for this side given the peer's INFO `compression` (`""`
    /// when absent) and the round-trip time so far (for `s2_auto`).
    pub fn select(&self, theirs: &str, rtt: Duration) -> Result<Negotiated, String> {
        if !self.negotiates() {
            return Ok(if theirs.is_empty() || theirs == "not supported" {
                Negotiated::NotSupported
            } else {
                Negotiated::Off
            });
        }
        let peer = match theirs {
            "" | "not supported" => return Ok(Negotiated::NotSupported),
            "off" => return Ok(Negotiated::Off),
            "accept" => None,
            "s2_auto" => Some(Level::Fast),
            "s2_uncompressed" => Some(Level::Uncompressed),
            "s2_fast" => Some(Level::Fast),
            "s2_better" => Some(Level::Better),
            "s2_best" => Some(Level::Best),
            other => return Err(format!("unsupported route compression mode {other:?}")),
        };
        Ok(match self {
            CompressionMode::Off => Negotiated::Off,
            CompressionMode::Accept => peer.map_or(Negotiated::Off, Negotiated::S2),
            CompressionMode::Auto(t) => Negotiated::S2(auto_level(t, rtt)),
            CompressionMode::Fixed(l) => Negotiated::S2(*l),
        })
    }

    /// What the negotiating INFOs say once compressing: `s2_auto` for an
    /// auto side, else the level.
    pub fn negotiated_info_value(&self, n: Negotiated) -> &'static str {
        match (self, n) {
            (CompressionMode::Auto(_), _) => "s2_auto",
            (_, n) => n.name(),
        }
    }

    /// The level an auto side writes at after a new RTT measure (`None`
    /// for other modes: their level is fixed).
    pub fn relevel(&self, rtt: Duration) -> Option<Level> {
        match self {
            CompressionMode::Auto(t) => Some(auto_level(t, rtt)),
            _ => None,
        }
    }
}

/// nats-server's `s2_auto` choice: the first threshold the RTT is within
/// (0 disables a level), else the last level the thresholds reach.
fn auto_level(thresholds: &[Duration], rtt: Duration) -> Level {
    let idx = thresholds
        .iter()
        .position(|t| !t.is_zero() && rtt <= *t)
        .unwrap_or(if thresholds.len() >= 3 {
            3
        } else {
            thresholds.len().saturating_sub(1)
        });
    match idx {
        0 => Level::Uncompressed,
        1 => Level::Fast,
        2 => Level::Better,
        _ => Level::Best,
    }
}

/// nats-server's checks of `rtt_thresholds`: ascending (zeros aside),
/// trailing zeros dropped, one to four left; none given means the
/// defaults.
fn check_thresholds(mode: &str, given: Vec<Duration>) -> Result<Vec<Duration>, String> {
    if given.is_empty() {
        return Ok(DEFAULT_RTT_THRESHOLDS.to_vec());
    }
    let shown = || {
        let parts: Vec<String> = given.iter().map(|d| crate::timefmt::go_duration(*d)).collect();
        format!("[{}]", parts.join(" "))
    };
    let mut max = Duration::ZERO;
    for t in &given {
        if !t.is_zero() {
            if *t < max {
                return Err(format!("RTT threshold values {} should be in ascending order", shown()));
            }
            max = *t;
        }
    }
    let mut t = given.clone();
    while t.last().is_some_and(|d| d.is_zero()) {
        t.pop();
    }
    if t.len() > 4 {
        return Err(format!(
            "compression mode {mode:?} should have no more than 4 RTT thresholds: {}",
            shown()
        ));
    }
    if t.is_empty() {
        return Err(format!("compression mode {mode:?} requires at least one RTT threshold"));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn modes_are_read_as_nats_server_reads_them() {
        assert_eq!(
            CompressionMode::parse("S2_Fast", vec![]),
            Ok(CompressionMode::Fixed(Level::Fast))
        );
        assert_eq!(CompressionMode::parse("disabled", vec![]), Ok(CompressionMode::Off));
        assert_eq!(
            CompressionMode::parse("auto", vec![]),
            Ok(CompressionMode::Auto(DEFAULT_RTT_THRESHOLDS.to_vec()))
        );
        assert_eq!(
            CompressionMode::parse("s2_uncompressed", vec![]),
            Err("unsupported compression mode \"s2_uncompressed\"".into())
        );
        assert_eq!(
            CompressionMode::parse("s2_auto", vec![ms(0), ms(10), ms(0), ms(0)]),
            Ok(CompressionMode::Auto(vec![ms(0), ms(10)]))
        );
        assert_eq!(
            CompressionMode::parse("s2_auto", vec![ms(5), ms(10), ms(2)]),
            Err("RTT threshold values [5ms 10ms 2ms] should be in ascending order".into())
        );
        assert_eq!(
            CompressionMode::parse("s2_auto", vec![ms(0)]),
            Err("compression mode \"s2_auto\" requires at least one RTT threshold".into())
        );
    }

    #[test]
    fn selection_matches_nats_servers_matrix() {
        let rtt = ms(1);
        let accept = CompressionMode::Accept;
        let fast = CompressionMode::Fixed(Level::Fast);
        let auto = CompressionMode::Auto(DEFAULT_RTT_THRESHOLDS.to_vec());
        assert_eq!(accept.select("accept", rtt), Ok(Negotiated::Off));
        assert_eq!(accept.select("s2_auto", rtt), Ok(Negotiated::S2(Level::Fast)));
        assert_eq!(accept.select("s2_best", rtt), Ok(Negotiated::S2(Level::Best)));
        assert_eq!(
            fast.select("s2_best", rtt),
            Ok(Negotiated::S2(Level::Fast)),
            "each writes its own"
        );
        assert_eq!(fast.select("accept", rtt), Ok(Negotiated::S2(Level::Fast)));
        assert_eq!(fast.select("off", rtt), Ok(Negotiated::Off));
        assert_eq!(fast.select("", rtt), Ok(Negotiated::NotSupported));
        assert_eq!(CompressionMode::Off.select("s2_fast", rtt), Ok(Negotiated::Off));
        assert_eq!(CompressionMode::Off.select("", rtt), Ok(Negotiated::NotSupported));
        assert_eq!(auto.select("accept", rtt), Ok(Negotiated::S2(Level::Uncompressed)));
        assert_eq!(auto.select("accept", ms(30)), Ok(Negotiated::S2(Level::Fast)));
        assert_eq!(auto.select("accept", ms(80)), Ok(Negotiated::S2(Level::Better)));
        assert_eq!(auto.select("accept", ms(500)), Ok(Negotiated::S2(Level::Best)));
        assert_eq!(
            accept.select("zip", rtt),
            Err("unsupported route compression mode \"zip\"".into())
        );
        // nats-server's quirks: [1ms] is always uncompressed, [1ms, 2ms]
        // is fast past 2 ms.
        assert_eq!(auto_level(&[ms(1)], ms(500)), Level::Uncompressed);
        assert_eq!(auto_level(&[ms(1), ms(2)], ms(500)), Level::Fast);
    }
}
