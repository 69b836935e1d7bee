//! The outgoing audio path: [`OpusOutput`] is where the conversation writes answer audio (48 kHz
//! mono); [`Pacer`] takes it out 20 ms at a time on a real-time clock, encodes it to Opus and
//! hands each packet to the track. `flush()` (barge-in) empties the queue at once, so nothing
//! stale is sent after it returns: the pacer takes the same lock to pop a frame.
//!
//! The queue is a mutex around a pre-allocated `VecDeque`: neither side is an audio device
//! callback (the writer is the conversation thread, the reader a tokio task), both hold the lock
//! for a bounded copy, and a flush must be atomic with respect to the reader, which a lock-free
//! SPSC ring cannot offer from the producer's side.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use vr_core::{SampleIndex, SampleRate};

use crate::opus::{OpusEncoder, FRAME_SAMPLES, OPUS_RATE};
use crate::TransportError;

/// Frame period of the outgoing track.
pub const FRAME_PERIOD: Duration = Duration::from_millis(20);
/// When the pacer falls this far behind its schedule (a stalled runtime) it starts a new one
/// instead of bursting the backlog out.
const MAX_LAG: Duration = Duration::from_millis(200);

struct Shared {
    queue: Mutex<VecDeque<f32>>,
    capacity: usize,
    /// Frames sent, silence included: the output's clock runs like an idle speaker's.
    played: AtomicU64,
    flushed: AtomicU64,
    underrun: AtomicU64,
    packets: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, VecDeque<f32>> {
        // A panic while holding the lock leaves plain samples behind: still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The writing end, owned by the conversation (implements the dialog's `AudioOutput`).
pub struct OpusOutput {
    shared: Arc<Shared>,
}

/// The reading end, owned by the session's pacer task.
pub struct Pacer {
    shared: Arc<Shared>,
    encoder: OpusEncoder,
    frame: Vec<f32>,
    next_deadline: Option<Instant>,
}

/// A new output queue holding at most `capacity` of audio, and its pacer.
pub fn output_queue(capacity: Duration, encoder: OpusEncoder) -> (OpusOutput, Pacer) {
    let capacity = OPUS_RATE.samples_in(capacity) as usize;
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::with_capacity(capacity)),
        capacity,
        played: AtomicU64::new(0),
        flushed: AtomicU64::new(0),
        underrun: AtomicU64::new(0),
        packets: AtomicU64::new(0),
    });
    (
        OpusOutput {
            shared: shared.clone(),
        },
        Pacer {
            shared,
            encoder,
            frame: vec![0.0; FRAME_SAMPLES],
            next_deadline: None,
        },
    )
}

impl OpusOutput {
    pub fn rate(&self) -> SampleRate {
        OPUS_RATE
    }

    /// Enqueues 48 kHz mono samples. Fails, enqueuing nothing, when they do not fit.
    pub fn write(&mut self, samples: &[f32]) -> Result<(), TransportError> {
        let mut q = self.shared.lock();
        if q.len() + samples.len() > self.shared.capacity {
            return Err(TransportError::OutputFull {
                queued: q.len(),
                offered: samples.len(),
                capacity: self.shared.capacity,
            });
        }
        q.extend(samples.iter().copied());
        Ok(())
    }

    /// Drops everything queued and not yet sent; returns the frames dropped.
    pub fn flush(&mut self) -> usize {
        let n = {
            let mut q = self.shared.lock();
            let n = q.len();
            q.clear();
            n
        };
        self.shared.flushed.fetch_add(n as u64, Ordering::Relaxed);
        metrics::counter!("transport_output_flushed_frames_total").increment(n as u64);
        n
    }

    /// Frames sent so far, silence included (the output's clock; it starts with the connection).
    pub fn played(&self) -> SampleIndex {
        SampleIndex(self.shared.played.load(Ordering::Acquire))
    }

    pub fn queued(&self) -> usize {
        self.shared.lock().len()
    }
}

impl Pacer {
    /// Waits for the next 20 ms slot on the real-time clock. The schedule is absolute (start +
    /// n × 20 ms), so timer jitter does not accumulate into drift.
    pub async fn tick(&mut self) {
        let now = Instant::now();
        let deadline = match self.next_deadline {
            Some(d) if now.saturating_duration_since(d) <= MAX_LAG => d,
            _ => now,
        };
        self.next_deadline = Some(deadline + FRAME_PERIOD);
        tokio::time::sleep_until(deadline.into()).await;
    }

    /// Takes the next 20 ms of queued audio (silence if there is none, zero-padded if there is
    /// less) and encodes it. Returns the packet and whether it carried answer audio.
    pub fn next_packet(&mut self) -> Result<(&[u8], bool), TransportError> {
        let taken = {
            let mut q = self.shared.lock();
            let n = q.len().min(FRAME_SAMPLES);
            for (dst, src) in self.frame.iter_mut().zip(q.drain(..n)) {
                *dst = src;
            }
            n
        };
        self.frame[taken..].fill(0.0);
        self.shared
            .played
            .fetch_add(FRAME_SAMPLES as u64, Ordering::Release);
        if taken > 0 && taken < FRAME_SAMPLES {
            // Synthesis fell behind real time mid-answer.
            let gap = (FRAME_SAMPLES - taken) as u64;
            self.shared.underrun.fetch_add(gap, Ordering::Relaxed);
            metrics::counter!("transport_output_underrun_frames_total").increment(gap);
        }
        self.shared.packets.fetch_add(1, Ordering::Relaxed);
        let packet = self.encoder.encode(&self.frame)?;
        Ok((packet, taken > 0))
    }

    pub fn packets(&self) -> u64 {
        self.shared.packets.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opus::{EncoderSettings, OpusDecoder};

    fn encoder() -> OpusEncoder {
        OpusEncoder::new(EncoderSettings {
            bitrate: 32_000,
            complexity: 5,
            fec: true,
            expected_loss_percent: 5,
        })
        .unwrap()
    }

    #[test]
    fn flush_drops_everything_queued_and_nothing_stale_is_sent() {
        let (mut out, mut pacer) = output_queue(Duration::from_secs(2), encoder());
        let tone: Vec<f32> = (0..FRAME_SAMPLES * 10 + 100)
            .map(|i| 0.5 * (i as f32 * 2.0 * std::f32::consts::PI * 300.0 / 48_000.0).sin())
            .collect();
        out.write(&tone).unwrap();
        assert_eq!(out.queued(), tone.len());
        let mut dec = OpusDecoder::new().unwrap();
        let (p, speech) = pacer.next_packet().unwrap();
        assert!(speech);
        dec.decode(p).unwrap();
        assert_eq!(out.played(), SampleIndex(FRAME_SAMPLES as u64));
        assert_eq!(out.flush(), tone.len() - FRAME_SAMPLES);
        assert_eq!(out.queued(), 0);
        // After the flush only silence goes out (the clock keeps running). The first
        // packet still carries the codec's own delay line (≤ 6.5 ms of the last sent frame),
        // nothing from the dropped queue.
        for i in 0..5 {
            let (p, speech) = pacer.next_packet().unwrap();
            assert!(!speech);
            let s = dec.decode(p).unwrap();
            let from = if i == 0 { FRAME_SAMPLES / 2 } else { 0 };
            let tail = &s[from..];
            let rms = (tail.iter().map(|v| v * v).sum::<f32>() / tail.len() as f32).sqrt();
            // The tone's RMS is 0.35: anything from the queue would be at that level; the
            // codec's decaying tail is > 17 dB below it, then nothing.
            let limit = if i == 0 { 0.05 } else { 0.005 };
            assert!(
                rms < limit,
                "stale audio after flush in packet {i}: rms {rms}"
            );
        }
        assert_eq!(out.played(), SampleIndex(6 * FRAME_SAMPLES as u64));
        assert_eq!(pacer.packets(), 6);
    }

    #[test]
    fn a_write_that_does_not_fit_is_refused_whole() {
        let (mut out, _pacer) = output_queue(Duration::from_millis(100), encoder());
        out.write(&[0.1; 4000]).unwrap();
        let e = out.write(&[0.1; 1000]).unwrap_err();
        assert!(
            matches!(e, TransportError::OutputFull { queued: 4000, .. }),
            "{e}"
        );
        assert_eq!(out.queued(), 4000);
    }

    #[tokio::test]
    async fn pacer_keeps_real_time() {
        let (_out, mut pacer) = output_queue(Duration::from_secs(1), encoder());
        let t0 = Instant::now();
        for _ in 0..26 {
            pacer.tick().await;
        }
        // 26 ticks = 25 periods after the first (immediate) one.
        let el = t0.elapsed();
        assert!(el >= Duration::from_millis(500), "{el:?}");
    }
}
