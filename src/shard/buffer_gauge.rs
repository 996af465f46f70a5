//! Read buffers' memory as monitoring shows it: a reader keeps a gauge of
//! its buffer's capacity current, and takes its share back when it ends.

use std::cell::Cell;

/// One reader's share of a gauge (a connection's own, or the shard's for
/// route and leaf links).
pub struct BufferGauge<'a> {
    gauge: &'a Cell<usize>,
    counted: usize,
}

impl<'a> BufferGauge<'a> {
    /// A share of `gauge`, counting nothing yet.
    pub fn new(gauge: &'a Cell<usize>) -> Self {
        BufferGauge { gauge, counted: 0 }
    }

    /// The buffer now holds `capacity` bytes.
    #[inline]
    pub fn note(&mut self, capacity: usize) {
        if capacity != self.counted {
            self.gauge.set(self.gauge.get() - self.counted + capacity);
            self.counted = capacity;
        }
    }
}

impl Drop for BufferGauge<'_> {
    fn drop(&mut self) {
        self.gauge.set(self.gauge.get() - self.counted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_leave_nothing_behind() {
        let g = Cell::new(0);
        {
            let mut a = BufferGauge::new(&g);
            let mut b = BufferGauge::new(&g);
            a.note(512);
            b.note(65536);
            assert_eq!(g.get(), 66048);
            a.note(8192);
            assert_eq!(g.get(), 73728);
            drop(b);
            assert_eq!(g.get(), 8192);
        }
        assert_eq!(g.get(), 0);
    }
}
