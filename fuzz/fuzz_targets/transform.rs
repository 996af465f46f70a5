//! Feeds arbitrary source, destination and subjects to subject transforms
//! and mappings (`transform_check.rs`, shared with the corpus replay):
//! refusals are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("transform_check.rs");

fuzz_target!(|data: &[u8]| transform_check(data));
