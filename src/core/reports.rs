//! What the core has for the runtime to publish as the server: finished
//! message traces (`trace.rs`) and service latency measurements
//! (`latency.rs`), queued per shard and taken by its reports task
//! (`shard/reports.rs`).

use std::task::Waker;

use super::latency::LatencyReport;
use super::trace::FinishedTrace;
use super::ShardCore;

/// One thing to publish.
#[derive(Debug, Clone)]
pub enum Report {
    /// A finished message trace.
    Trace(FinishedTrace),
    /// A service latency measurement.
    Latency(LatencyReport),
}

/// A shard's reports not yet taken, and who to wake for the next.
#[derive(Default)]
pub(super) struct Reports {
    queued: Vec<Report>,
    waker: Option<Waker>,
}

impl ShardCore {
    /// Queues a finished trace.
    pub(super) fn report_trace(&mut self, t: FinishedTrace) {
        self.push_report(Report::Trace(t));
    }

    /// Queues a latency measurement.
    pub(super) fn report_latency(&mut self, r: LatencyReport) {
        self.push_report(Report::Latency(r));
    }

    fn push_report(&mut self, r: Report) {
        self.reports.queued.push(r);
        if let Some(w) = self.reports.waker.take() {
            w.wake();
        }
    }

    /// Moves the queued reports into `into`, or registers `waker` for the
    /// next one.
    pub fn poll_reports(&mut self, into: &mut Vec<Report>, waker: &Waker) -> bool {
        if self.reports.queued.is_empty() {
            self.reports.waker = Some(waker.clone());
            return false;
        }
        into.append(&mut self.reports.queued);
        true
    }
}
