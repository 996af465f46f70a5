//! Feeds arbitrary bytes to the S2 stream reader of routes and leaf nodes,
//! whole and in pieces, and frames them at every level (`s2_check.rs`,
//! shared with the corpus replay): refusals are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("s2_check.rs");

fuzz_target!(|data: &[u8]| s2_check(data));
