//! The ring's counters, readable from any thread and published through `metrics`.

use super::{AudioFormat, Shared};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A snapshot of a ring's counters (frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingStats {
    /// Frames that entered the ring.
    pub stored: u64,
    /// Frames the producer dropped because the ring was full.
    pub overrun_frames: u64,
    /// Pushes that dropped at least one frame.
    pub overrun_events: u64,
    /// Frames a consumer had to invent (silence) because the ring was empty.
    pub underrun_frames: u64,
    /// Reads that came up short.
    pub underrun_events: u64,
    /// Frames in the ring when the snapshot was taken.
    pub fill: u64,
}

/// Read-only view of a ring's counters for any thread; also publishes them through `metrics`.
#[derive(Clone)]
pub struct RingMonitor {
    pub(super) shared: Arc<Shared>,
}

impl RingMonitor {
    pub fn stats(&self) -> RingStats {
        let (p, c) = (&self.shared.produced, &self.shared.consumed);
        // Consumed first: `stored` only grows, so the difference never goes below the truth.
        let consumed = c.consumed.load(Ordering::Relaxed);
        let stored = p.stored.load(Ordering::Relaxed);
        RingStats {
            stored,
            overrun_frames: p.overrun_frames.load(Ordering::Relaxed),
            overrun_events: p.overrun_events.load(Ordering::Relaxed),
            underrun_frames: c.underrun_frames.load(Ordering::Relaxed),
            underrun_events: c.underrun_events.load(Ordering::Relaxed),
            fill: stored.saturating_sub(consumed),
        }
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn format(&self) -> AudioFormat {
        self.shared.format
    }

    pub fn capacity_frames(&self) -> usize {
        self.shared.capacity_frames
    }

    /// Copies the counters into the global `metrics` recorder (labels: `ring`). Called from a
    /// housekeeping thread, never from a callback: a recorder may lock or allocate.
    pub fn publish_metrics(&self) {
        let s = self.stats();
        let ring = self.shared.name.clone();
        metrics::counter!("capture_ring_stored_frames_total", "ring" => ring.clone())
            .absolute(s.stored);
        metrics::counter!("capture_ring_overrun_frames_total", "ring" => ring.clone())
            .absolute(s.overrun_frames);
        metrics::counter!("capture_ring_overrun_events_total", "ring" => ring.clone())
            .absolute(s.overrun_events);
        metrics::counter!("capture_ring_underrun_frames_total", "ring" => ring.clone())
            .absolute(s.underrun_frames);
        metrics::counter!("capture_ring_underrun_events_total", "ring" => ring.clone())
            .absolute(s.underrun_events);
        metrics::gauge!("capture_ring_fill_frames", "ring" => ring).set(s.fill as f64);
    }
}

/// Describes the ring metrics once so exporters show units and help text.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "capture_ring_stored_frames_total",
        metrics::Unit::Count,
        "frames that entered an audio ring"
    );
    metrics::describe_counter!(
        "capture_ring_overrun_frames_total",
        metrics::Unit::Count,
        "frames dropped by an audio ring's producer because the ring was full"
    );
    metrics::describe_counter!(
        "capture_ring_overrun_events_total",
        metrics::Unit::Count,
        "pushes into an audio ring that dropped frames"
    );
    metrics::describe_counter!(
        "capture_ring_underrun_frames_total",
        metrics::Unit::Count,
        "frames replaced by silence because an audio ring was empty"
    );
    metrics::describe_counter!(
        "capture_ring_underrun_events_total",
        metrics::Unit::Count,
        "reads from an audio ring that came up short"
    );
    metrics::describe_gauge!(
        "capture_ring_fill_frames",
        metrics::Unit::Count,
        "frames waiting in an audio ring"
    );
}
