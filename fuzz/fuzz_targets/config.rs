//! Feeds arbitrary text to the configuration parser, the options mapping
//! and a reload's decision (`config_check.rs`, shared with the corpus
//! replay): errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("config_check.rs");

fuzz_target!(|data: &[u8]| config_check(data));
