//! What the core has for the runtime to publish as the server: finished
//! message traces (`trace.rs`) and service latency measurements
//! (`latency.rs`), queued per shard and taken by its reports task
//! (`shard/reports.rs`).

use std::task::Waker;

use super::latency::{LatencyReport, MeasuredReport};
use super::mailbox::Mailbox;
use super::trace::FinishedTrace;
use super::ShardCore;

/// One thing to publish.
#[derive(Debug, Clone)]
pub enum Report {
    /// A finished message trace.
    Trace(FinishedTrace),
    /// A service latency measurement.
    Latency(LatencyReport),
    /// A responder's server's measurement for the requester's server.
    Measured(MeasuredReport),
}

/// A shard's reports not yet taken.
pub(super) type Reports = Mailbox<Report>;

impl ShardCore {
    /// Queues a finished trace.
    pub(super) fn report_trace(&mut self, t: FinishedTrace) {
        self.reports.push(Report::Trace(t));
    }

    /// Queues a latency measurement.
    pub(super) fn report_latency(&mut self, r: LatencyReport) {
        self.reports.push(Report::Latency(r));
    }

    /// Queues a measurement for another server.
    pub(super) fn report_measured(&mut self, r: MeasuredReport) {
        self.reports.push(Report::Measured(r));
    }

    /// Moves the queued reports into `into`, or registers `waker` for the
    /// next one.
    pub fn poll_reports(&mut self, into: &mut Vec<Report>, waker: &Waker) -> bool {
        self.reports.poll(into, waker)
    }
}
