// The `s2` fuzz target's property, shared with the corpus replay in
// tests/fuzz_corpus.rs (both `include!` this file): a peer's bytes read as
// an S2 stream never panic, whole or cut in pieces give the same plain
// bytes (or the same refusal), no step hands out much more than its
// bound, and the input framed at every level reads back as itself.

use petrel::compress::{Deframer, Framer, Level};

const STEP: usize = 1 << 16;

/// Deframes `data` cut every `cut` bytes; the plain bytes, or None when
/// refused.
fn s2_read(data: &[u8], cut: usize) -> Option<Vec<u8>> {
    let mut d = Deframer::default();
    let mut out = Vec::new();
    for piece in data.chunks(cut.max(1)) {
        d.push(piece);
        loop {
            let before = out.len();
            let more = d.decode(&mut out, STEP).ok()?;
            // One chunk past the bound at most (4 MiB a block).
            assert!(out.len() - before <= STEP + (4 << 20), "a step is bounded");
            if !more {
                break;
            }
        }
    }
    Some(out)
}

fn s2_check(data: &[u8]) {
    let whole = s2_read(data, data.len());
    for cut in [1, 7] {
        let cuts = s2_read(data, cut);
        // Where both read the whole input, the bytes agree.
        if let (Some(a), Some(b)) = (&whole, &cuts) {
            assert_eq!(a, b, "cut {cut}");
        }
    }
    let mut f = Framer::default();
    for level in [Level::Uncompressed, Level::Fast, Level::Better, Level::Best] {
        let mut wire = Vec::new();
        f.frame(level, data, &mut wire);
        assert_eq!(s2_read(&wire, 13).as_deref(), Some(data), "{level:?}");
    }
}
