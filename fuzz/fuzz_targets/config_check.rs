// The `config` fuzz target's property, shared with the corpus replay in
// tests/fuzz_corpus.rs (both `include!` this file): text is parsed and
// mapped onto options, then taken through what a reload decides before
// it applies anything (defaults for 0 limits, the cross-field rules, the
// diff against the options in force). Errors are fine; panics are not.

use std::path::Path;

use petrel::conf;
use petrel::options::Options;

fn config_check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(parsed) = conf::parse_str(text, Path::new("fuzz.conf")) else { return };
    let mut o = Options::default();
    if conf::options::apply(&mut o, &parsed).is_err() {
        return;
    }
    o.apply_baseline();
    let _ = o.cross_check();
    let outcome = petrel::reload::diff(&Options::default(), &o);
    let _ = outcome.accepted();
    let _ = outcome.error_text();
}
