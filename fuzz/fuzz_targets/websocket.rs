//! Feeds arbitrary bytes to the WebSocket frame decoder (in pieces of
//! varying size, with and without compression and masking) and to the
//! upgrade request parser: errors are fine, panics are not, and the
//! decoder must give the same bytes however the input is cut
//! (`websocket_check.rs`, shared with the corpus replay).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("websocket_check.rs");

fuzz_target!(|data: &[u8]| websocket_check(data, &[]));
