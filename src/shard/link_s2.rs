//! S2 on one server-to-server link, as its tasks share it: the link's
//! protocol switches each direction on at the byte nats-server does (the
//! negotiating INFO), the writer frames what it sends from then on, the
//! reader inflates what it reads.

use std::cell::RefCell;
use std::rc::Rc;

use crate::compress::{Deframer, Framer, Level, S2Error};
use crate::core::ShardCore;
use crate::ids::ConnId;

/// Plain bytes one inflate step hands the parser at most (an S2 block of
/// a few bytes can stand for megabytes).
pub(crate) const INFLATE_STEP: usize = 1 << 20;

/// One link's S2 state.
#[derive(Debug, Default)]
pub(crate) struct LinkS2 {
    /// Outbound, once switched on: the level, and how many bytes queued
    /// before the switch still go out plain.
    out: Option<(Level, usize)>,
    framer: Framer,
    /// Inbound: the reader switches after the operation it is handling.
    switch_in: bool,
}

/// Shared by a link's protocol and its writer.
pub(crate) type SharedS2 = Rc<RefCell<LinkS2>>;

/// Which side of the negotiation sends the INFO that switches a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InfoGoes {
    /// As the last plain bytes (a route's dialer, a leaf).
    Plain,
    /// As the first S2 bytes (a route's acceptor, a hub).
    Compressed,
}

/// Switches connection `cid` to S2 at `level` around its negotiating
/// INFO `line` (queued plain or compressed, as `goes` says); what the
/// peer sends after the operation being read is inflated.
pub(crate) fn switch_on(core: &mut ShardCore, cid: ConnId, s2: &SharedS2, level: Level, line: &[u8], goes: InfoGoes) {
    if goes == InfoGoes::Plain {
        core.send_raw(cid, line);
    }
    let queued = core.conn(cid).map_or(0, |c| c.out.len());
    let mut s2 = s2.borrow_mut();
    s2.start_out(level, queued);
    s2.start_in();
    if goes == InfoGoes::Compressed {
        core.send_raw(cid, line);
    }
}

impl LinkS2 {
    /// From now on, bytes queued after the first `plain_left` (queued
    /// already) go out as S2 at `level`.
    fn start_out(&mut self, level: Level, plain_left: usize) {
        self.out = Some((level, plain_left));
    }

    /// A new level for what is sent next (`s2_auto` after an RTT).
    pub(crate) fn relevel(&mut self, level: Level) {
        if let Some((l, _)) = &mut self.out {
            *l = level;
        }
    }

    /// Whether outbound bytes are framed.
    pub(crate) fn is_out(&self) -> bool {
        self.out.is_some()
    }

    /// Asks the reader to inflate what follows the current operation.
    fn start_in(&mut self) {
        self.switch_in = true;
    }

    /// Whether the reader must switch now (once).
    pub(crate) fn take_switch_in(&mut self) -> bool {
        std::mem::take(&mut self.switch_in)
    }

    /// What the writer sends for the chunks it took: unchanged before the
    /// switch; after it, the plain part still owed, then one S2 stream.
    pub(crate) fn wire(&mut self, chunks: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
        let (level, plain_left) = self.out.as_mut()?;
        let mut wire = Vec::new();
        let mut rest: Vec<&[u8]> = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let plain = (*plain_left).min(chunk.len());
            if plain > 0 {
                wire.push(chunk[..plain].to_vec());
                *plain_left -= plain;
            }
            if plain < chunk.len() {
                rest.push(&chunk[plain..]);
            }
        }
        if !rest.is_empty() {
            let total: usize = rest.iter().map(|r| r.len()).sum();
            let mut framed = Vec::with_capacity(total + 64);
            self.framer.frame_parts(*level, &rest, &mut framed);
            wire.push(framed);
        }
        Some(wire)
    }
}

/// The reader's side: raw bytes in, plain bytes out, a bounded step at a
/// time.
#[derive(Debug, Default)]
pub(crate) struct Inflate {
    deframer: Deframer,
}

impl Inflate {
    /// Takes raw bytes from the peer.
    pub(crate) fn push(&mut self, raw: &[u8]) {
        self.deframer.push(raw);
    }

    /// Appends plain bytes to `out` (about [`INFLATE_STEP`] at most);
    /// true when whole chunks are left for the next step.
    pub(crate) fn step(&mut self, out: &mut Vec<u8>) -> Result<bool, S2Error> {
        self.deframer.decode(out, INFLATE_STEP)
    }
}
