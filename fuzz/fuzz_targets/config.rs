//! Feeds arbitrary text to the configuration parser and the options
//! mapping: errors are fine, panics are not.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use petrel::conf;
use petrel::options::Options;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(parsed) = conf::parse_str(text, Path::new("fuzz.conf")) {
        let mut o = Options::default();
        let _ = conf::options::apply(&mut o, &parsed);
    }
});
