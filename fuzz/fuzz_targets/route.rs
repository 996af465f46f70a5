//! Feeds arbitrary bytes to the route protocol parser and checks that what
//! it parses survives petrel's encoders (`route_check.rs`, shared with the
//! corpus replay): errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("route_check.rs");

fuzz_target!(|data: &[u8]| route_check(data));
