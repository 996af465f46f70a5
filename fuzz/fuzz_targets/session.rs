//! Drives a whole session (parser, CONNECT handling, replies) over a
//! one-shard core with arbitrary bytes: nothing may panic.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use petrel::shard::host::{ConnAuth, CoreHost};
use petrel::core::{CoreConfig, ShardCore};
use petrel::ids::{ConnId, ShardId};
use petrel::proto::info::ServerInfo;
use petrel::proto::session::{Session, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut core = ShardCore::new(ShardId(0), 2, CoreConfig { max_pending: 1 << 16, ..Default::default() }, now);
    let info = ServerInfo { proto: 1, headers: true, max_payload: 1024, ..Default::default() };
    let cid = ConnId(1);
    core.add_conn(cid);
    let mut s = Session::new(SessionConfig { max_payload: 1024, ..Default::default() }, now, Duration::from_secs(1));
    let mut auth = ConnAuth::open();
    let mut buf = Vec::new();
    for chunk in data.chunks(7) {
        buf.extend_from_slice(chunk);
        let mut host = CoreHost { core: &mut core, cid, info: &info, client_ip: "127.0.0.1", headers_supported: true, auth: &mut auth };
        match s.receive(&buf, now, &mut host) {
            Ok(used) => {
                buf.drain(..used);
            }
            Err(_) => break,
        }
        let _ = core.take_batches();
    }
    let mut host = CoreHost { core: &mut core, cid, info: &info, client_ip: "127.0.0.1", headers_supported: true, auth: &mut auth };
    let _ = s.handle_timeout(now + Duration::from_secs(10), &mut host);
});
