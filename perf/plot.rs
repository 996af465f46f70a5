//! `petrel-plot`: SVG plots of a `perf/compare.py --json` result.
fn main() {}
