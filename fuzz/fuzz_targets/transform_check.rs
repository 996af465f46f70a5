// The `transform` fuzz target's property, shared with the corpus replay in
// tests/fuzz_corpus.rs (both `include!` this file). The input's lines are a
// source, a destination and subjects. Compiling (strict or not) never
// panics; a compiled transform applies to any subject without panicking;
// a weighted mapping of the destination picks without panicking; and the
// source mapped to itself (`*` as `$1`, `$2`, ...) gives every subject it
// takes back unchanged (unless a source token reads as a placeholder).

use petrel::mapping::{numbered_wildcards, MapDest, Mapping, Mappings};
use petrel::transform::{subset_match, tokenize, Transform};

fn transform_check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let source = lines.next().unwrap_or_default();
    let dest = lines.next().unwrap_or_default();
    let subjects: Vec<&str> = lines.take(16).collect();
    let mut rng = fastrand::Rng::with_seed(data.len() as u64);
    let _ = Transform::new(source, dest, true);
    if let Ok(t) = Transform::for_mapping(source, dest) {
        for s in &subjects {
            let mut out = Vec::new();
            t.apply(&tokenize(s.as_bytes()), &mut rng, &mut out);
        }
    }
    let weight = data.first().copied().unwrap_or(0) % 101;
    let dests = [
        MapDest {
            subject: dest.to_string(),
            weight,
            cluster: String::new(),
        },
        MapDest {
            subject: source.to_string(),
            weight: 100 - weight,
            cluster: "c".into(),
        },
    ];
    if let Ok(m) = Mapping::new(source, &dests) {
        let mut all = Mappings::default();
        all.add(m);
        for s in &subjects {
            let _ = all.map(s.as_bytes(), Some("c"), &mut rng);
            let _ = all.map(s.as_bytes(), None, &mut rng);
        }
    }
    // A source token that reads as a placeholder (`$x`, `{{...}}`) is a
    // function in the destination too: no identity then.
    if source.split('.').any(|t| t.starts_with('$') || (t.starts_with("{{") && t.ends_with("}}"))) {
        return;
    }
    if let Ok(t) = Transform::for_mapping(source, &numbered_wildcards(source)) {
        for s in &subjects {
            let tokens = tokenize(s.as_bytes());
            if !subset_match(&tokens, source.as_bytes()) {
                continue;
            }
            let mut out = Vec::new();
            t.apply(&tokens, &mut rng, &mut out);
            assert_eq!(out, s.as_bytes(), "{source:?} to itself changed {s:?}");
        }
    }
}
