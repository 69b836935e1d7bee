//! The audio ring: a single-producer single-consumer lock-free ring of interleaved f32 PCM whose
//! consumer always knows the stream position ([`SampleIndex`], in frames) of what it holds.
//!
//! Overrun policy: when the ring is full the producer drops the *newest* frames (the ones that do
//! not fit), counts them, and publishes a gap marker before the next frames it manages to store.
//! Dropping the newest rather than the oldest keeps the producer's side a plain `push_slice` (the
//! producer may not move the consumer's read index), and makes the count exact and deterministic:
//! `dropped = offered - stored`, and the consumer's timestamps jump by exactly the dropped amount.
//!
//! Gap markers travel in a second small SPSC ring. The producer pushes a marker *before* the
//! samples that follow the gap, so a consumer that sees those samples also sees the marker (the
//! sample ring's release/acquire on its write index orders the two). If the marker ring itself is
//! full the producer keeps dropping until it can publish: timestamps never lie.
//!
//! Real-time use: [`AudioProducer::push`] never allocates, locks or blocks; it may issue one
//! `unpark` (a futex wake, non-blocking) when a consumer is parked in
//! [`AudioConsumer::wait_for_data`].
//!
//! Throughput: the two ends share as few cache lines as possible. Each end keeps the other's
//! ring index cached and re-reads it only when the cached value says the ring is full (producer)
//! or empty (consumer), so in steady state a push or a read costs one release store of the end's
//! own index rather than a cache miss on the other end's. Counters are split by writer onto
//! separate cache lines and updated with plain stores (one writer each), never read-modify-write
//! on a shared line; the fill level is derived (`stored - consumed`).
//!
//! Waiting: each waiting end spins (bounded, `spin_loop`), then yields, then parks; the other end
//! wakes it only when it is actually parked (a "parked" flag checked after a `SeqCst` fence on
//! both sides, Dekker-style, so no wake-up is lost), so a hand-off between two running threads
//! costs no system call. The fence is about two thirds of `push`'s own time (it waits for the
//! chunk just written to drain from the store buffer). An asymmetric handshake without it (the
//! parking side calling Linux `membarrier`) was tried and rejected: `membarrier` waits for an
//! interrupt on every CPU running one of the process's threads, which in this loaded VM took
//! 23 µs typically and up to 14 ms, a delay the consumer of a live capture cannot afford.
//!
//! A producer parked in [`AudioProducer::push_blocking`] asks for a batch of room (half the ring,
//! or what it still has to write if less) and the consumer wakes it only once that much is free:
//! one wake-up per half ring instead of one per chunk. Waiting calls read the clock only once
//! they are about to wait, never on the path that finds data or room.

use ringbuf::traits::{Consumer, Observer, Producer, Raw, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};
use vr_core::{SampleIndex, SampleRate};

use crate::AudioError;

mod monitor;
pub use monitor::{describe_metrics, RingMonitor, RingStats};

struct Shared {
    name: String,
    format: AudioFormat,
    capacity_frames: usize,
    produced: Padded<ProducerCounters>,
    consumed: Padded<ConsumerCounters>,
    /// Read by the producer on every push; written only when the consumer parks.
    consumer_parked: Padded<AtomicBool>,
    /// Read by the consumer on every release; written only when the producer parks.
    producer_parked: Padded<AtomicBool>,
    /// Free samples the parked producer waits for (meaningful while `producer_parked`).
    producer_wants: AtomicUsize,
    consumer_thread: OnceLock<Thread>,
    producer_thread: OnceLock<Thread>,
    closed: AtomicBool,
}

/// Gap markers the consumer may lag behind by before the producer drops whole pushes; one marker
/// per overrun episode, so this only fills when the consumer is stalled through many episodes.
const GAP_SLOTS: usize = 256;

/// Frames missing from the stream just before ring position `at` (frames stored before the gap).
#[derive(Debug, Clone, Copy)]
struct Gap {
    at: u64,
    missing: u64,
}

/// Rate and interleaved channel count of a PCM stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormat {
    pub rate: SampleRate,
    pub channels: u16,
}

impl AudioFormat {
    pub const PIPELINE: AudioFormat = AudioFormat {
        rate: SampleRate::PIPELINE,
        channels: 1,
    };
}

/// Gives its content cache lines of its own (128 bytes: adjacent-line prefetch pairs lines), so
/// a write by one end never invalidates a line the other end reads on every call.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Padded<T>(T);

impl<T> Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Written only by the producer; all in frames (one sample per channel).
#[derive(Debug, Default)]
struct ProducerCounters {
    stored: AtomicU64,
    overrun_frames: AtomicU64,
    overrun_events: AtomicU64,
}

/// Written only by the consumer; all in frames.
#[derive(Debug, Default)]
struct ConsumerCounters {
    consumed: AtomicU64,
    underrun_frames: AtomicU64,
    underrun_events: AtomicU64,
}

/// Spin, then yield, then give up (the caller parks): how long a waiting end polls first.
struct Backoff(u32);

impl Backoff {
    const SPIN_STEPS: u32 = 6;
    const YIELD_STEPS: u32 = 10;

    /// Waits a little longer each call; false once the caller should park instead.
    fn snooze(&mut self) -> bool {
        if self.0 <= Self::SPIN_STEPS {
            for _ in 0..1u32 << self.0 {
                std::hint::spin_loop();
            }
        } else if self.0 <= Self::YIELD_STEPS {
            std::thread::yield_now();
        } else {
            return false;
        }
        self.0 += 1;
        true
    }
}

/// Creates a ring holding `capacity_frames` frames of `format`, returning its two ends.
pub fn audio_ring(
    name: &str,
    format: AudioFormat,
    capacity_frames: usize,
) -> Result<(AudioProducer, AudioConsumer), AudioError> {
    if capacity_frames == 0 || format.channels == 0 {
        return Err(AudioError::InvalidArgument {
            what: "audio ring",
            reason: format!(
                "capacity ({capacity_frames} frames) and channel count ({}) must be positive",
                format.channels
            ),
        });
    }
    let channels = usize::from(format.channels);
    // Whole frames only: with capacity a multiple of the channel count every wrap point and every
    // contiguous slice falls on a frame boundary.
    let (rb_p, rb_c) = HeapRb::<f32>::new(capacity_frames * channels).split();
    let (gap_p, gap_c) = HeapRb::<Gap>::new(GAP_SLOTS).split();
    let shared = Arc::new(Shared {
        name: name.to_string(),
        format,
        capacity_frames,
        produced: Padded::default(),
        consumed: Padded::default(),
        consumer_parked: Padded::default(),
        producer_parked: Padded::default(),
        producer_wants: AtomicUsize::new(0),
        consumer_thread: OnceLock::new(),
        producer_thread: OnceLock::new(),
        closed: AtomicBool::new(false),
    });
    let cap = capacity_frames * channels;
    Ok((
        AudioProducer {
            rb: rb_p,
            gaps: gap_p,
            channels,
            stored: 0,
            next: SampleIndex::ZERO,
            pending_gap: 0,
            overrun_frames: 0,
            overrun_events: 0,
            cap,
            read_cache: 0,
            shared: shared.clone(),
        },
        AudioConsumer {
            rb: rb_c,
            gaps: gap_c,
            channels,
            read: 0,
            next: SampleIndex::ZERO,
            underrun_frames: 0,
            underrun_events: 0,
            cap,
            write_cache: 0,
            shared,
        },
    ))
}

/// The writing end; owned by exactly one thread (typically an audio callback).
pub struct AudioProducer {
    rb: HeapProd<f32>,
    gaps: HeapProd<Gap>,
    channels: usize,
    /// Frames stored so far (ring position).
    stored: u64,
    /// Stream position of the next frame offered (stored or dropped).
    next: SampleIndex,
    /// Frames dropped whose marker is not yet published.
    pending_gap: u64,
    /// This end's copies of its counters (it is their only writer).
    overrun_frames: u64,
    overrun_events: u64,
    /// Ring capacity in samples.
    cap: usize,
    /// The consumer's read index as last seen; it only lags, so free space is underestimated.
    read_cache: usize,
    shared: Arc<Shared>,
}

impl AudioProducer {
    /// Offers interleaved frames; stores what fits and drops (and counts) the rest. Returns the
    /// number of frames stored. A trailing partial frame (never produced by a device) is ignored.
    /// Real-time safe: no allocation, no lock, no blocking.
    pub fn push(&mut self, samples: &[f32]) -> usize {
        let frames = samples.len() / self.channels;
        if frames == 0 {
            return 0;
        }
        let vacant = self.vacant_samples(frames * self.channels) / self.channels;
        let n = frames.min(vacant);
        // A marker is published only when frames follow it, so one overrun episode (however many
        // pushes it spans) costs one marker.
        if n == 0 || (self.pending_gap > 0 && !self.publish_gap()) {
            self.drop_frames(frames);
            return 0;
        }
        self.write(&samples[..n * self.channels]);
        self.stored += n as u64;
        self.next = self.next.advance(n as u64);
        self.shared
            .produced
            .stored
            .store(self.stored, Ordering::Relaxed);
        if n < frames {
            self.drop_frames(frames - n);
        }
        // Pairs with the fence in `wait_for_data`: either the consumer's re-check sees these
        // frames or this load sees it parked (store-load order needs a full fence).
        std::sync::atomic::fence(Ordering::SeqCst);
        if n > 0 && self.shared.consumer_parked.load(Ordering::Acquire) {
            if let Some(t) = self.shared.consumer_thread.get() {
                t.unpark();
            }
        }
        n
    }

    /// Like [`AudioProducer::push`] but waits for room instead of dropping; for producers that
    /// are not real-time (file readers running as fast as possible). Gives up after `timeout`
    /// without progress and returns the frames stored; stops early if the consumer is gone.
    pub fn push_blocking(&mut self, samples: &[f32], timeout: Duration) -> usize {
        let total = samples.len() / self.channels;
        let mut done = 0usize;
        // Set once a wait starts: the path that finds room reads no clock.
        let mut deadline: Option<Instant> = None;
        let mut backoff = Backoff(0);
        while done < total && !self.shared.closed.load(Ordering::Acquire) {
            let left = (total - done) * self.channels;
            let vacant = self.vacant_samples(left) / self.channels;
            if vacant > 0 {
                let n = vacant.min(total - done);
                done += self.push(&samples[done * self.channels..(done + n) * self.channels]);
                deadline = None;
                backoff = Backoff(0);
                continue;
            }
            if backoff.snooze() {
                continue;
            }
            let now = Instant::now();
            let deadline = *deadline.get_or_insert(now + timeout);
            if now >= deadline {
                break;
            }
            if self.shared.producer_thread.get().is_none() {
                let _ = self.shared.producer_thread.set(std::thread::current());
            }
            // Ask for a batch, not one slot: waking per chunk would make the consumer pay a
            // futex wake and this thread a reschedule for every chunk it frees.
            let wants = left.min(self.cap / 2).max(self.channels);
            self.shared.producer_wants.store(wants, Ordering::Relaxed);
            self.shared.producer_parked.store(true, Ordering::Release);
            // Pairs with the fence in `consume`: either the consumer sees the flag, or this
            // re-check sees the room it made.
            std::sync::atomic::fence(Ordering::SeqCst);
            if self.rb.vacant_len() < wants && !self.shared.closed.load(Ordering::Acquire) {
                // The timeout also bounds a wait for room that never reaches `wants` (a consumer
                // that stopped reading with little free): the loop then pushes what fits.
                std::thread::park_timeout((deadline - now).min(Duration::from_millis(100)));
            }
            self.shared.producer_parked.store(false, Ordering::Relaxed);
            backoff = Backoff(0);
        }
        done
    }

    /// Free samples, re-reading the consumer's index only if the cached one leaves less than
    /// `want` (in steady state the ring is rarely that full, so pushes touch no shared line).
    fn vacant_samples(&mut self, want: usize) -> usize {
        // The producer's own index is a plain field of its end; no shared access.
        let write = self.rb.write_index();
        let vacant = self.cap - index_distance(self.read_cache, write, self.cap);
        if vacant >= want {
            return vacant;
        }
        self.read_cache = self.rb.read_index();
        self.cap - index_distance(self.read_cache, write, self.cap)
    }

    /// Appends `samples`, which must fit in [`AudioProducer::vacant_samples`], and publishes them
    /// with one release store of the write index.
    fn write(&mut self, samples: &[f32]) {
        let write = self.rb.write_index();
        let used = index_distance(self.read_cache, write, self.cap);
        assert!(samples.len() <= self.cap - used, "write beyond free space");
        let end = index_add(write, samples.len(), self.cap);
        // SAFETY: this end holds the ring's producer rights for its whole life (it came from
        // `split`), and `write..end` lies within the free space computed from a read index that
        // can only lag the consumer's real one, so no slot in it is readable by the consumer.
        let (a, b) = unsafe { self.rb.unsafe_slices_mut(write, end) };
        debug_assert_eq!(a.len() + b.len(), samples.len());
        let (sa, sb) = samples.split_at(a.len());
        // SAFETY: `a` and `b` are exactly `sa.len()` and `sb.len()` slots of f32 storage
        // (MaybeUninit<f32> has f32's layout) that nothing else accesses; f32 needs no drop.
        unsafe {
            std::ptr::copy_nonoverlapping(sa.as_ptr(), a.as_mut_ptr().cast::<f32>(), sa.len());
            std::ptr::copy_nonoverlapping(sb.as_ptr(), b.as_mut_ptr().cast::<f32>(), sb.len());
            // Release store: the consumer that sees the new index sees the samples.
            self.rb.set_write_index(end);
        }
    }

    /// Frames that fit in the ring right now (a [`AudioProducer::push`] of at most this many
    /// stores everything).
    pub fn vacant_frames(&self) -> usize {
        self.rb.vacant_len() / self.channels
    }

    /// Stream position of the next frame this producer will be offered.
    pub fn position(&self) -> SampleIndex {
        self.next
    }

    pub fn format(&self) -> AudioFormat {
        self.shared.format
    }

    pub fn monitor(&self) -> RingMonitor {
        RingMonitor {
            shared: self.shared.clone(),
        }
    }

    /// True once the consumer has been dropped.
    pub fn is_abandoned(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    fn drop_frames(&mut self, frames: usize) {
        self.pending_gap += frames as u64;
        self.next = self.next.advance(frames as u64);
        self.overrun_frames += frames as u64;
        self.overrun_events += 1;
        let c = &self.shared.produced;
        c.overrun_frames
            .store(self.overrun_frames, Ordering::Relaxed);
        c.overrun_events
            .store(self.overrun_events, Ordering::Relaxed);
    }

    fn publish_gap(&mut self) -> bool {
        let gap = Gap {
            at: self.stored,
            missing: self.pending_gap,
        };
        if self.gaps.try_push(gap).is_ok() {
            self.pending_gap = 0;
            true
        } else {
            false
        }
    }
}

impl Drop for AudioProducer {
    fn drop(&mut self) {
        if self.pending_gap > 0 {
            // The consumer's final position then accounts for frames dropped at the very end.
            let _ = self.publish_gap();
        }
        self.shared.closed.store(true, Ordering::Release);
        // Pairs with the fence in `wait_for_data`: a consumer registering itself to park either
        // is seen here or sees `closed` in its re-check.
        std::sync::atomic::fence(Ordering::SeqCst);
        if let Some(t) = self.shared.consumer_thread.get() {
            t.unpark();
        }
    }
}

/// A contiguous run of frames in the ring, borrowed without copying.
#[derive(Debug)]
pub struct AudioChunk<'a> {
    /// Stream position of the first frame.
    pub start: SampleIndex,
    /// Interleaved samples, a whole number of frames, contiguous in time (no gap inside).
    pub samples: &'a [f32],
}

/// Everything readable up to the next gap, borrowed without copying: `first` then `second`
/// (empty unless the run wraps around the end of the ring's storage).
#[derive(Debug)]
pub struct AudioRun<'a> {
    /// Stream position of the first frame of `first`.
    pub start: SampleIndex,
    /// Interleaved samples, a whole number of frames.
    pub first: &'a [f32],
    /// The frames that follow `first` in time, from the start of the storage.
    pub second: &'a [f32],
}

/// The reading end; owned by exactly one thread.
pub struct AudioConsumer {
    rb: HeapCons<f32>,
    gaps: HeapCons<Gap>,
    channels: usize,
    /// Frames consumed so far (ring position).
    read: u64,
    /// Stream position of the next frame to be read.
    next: SampleIndex,
    /// This end's copies of its counters (it is their only writer).
    underrun_frames: u64,
    underrun_events: u64,
    /// Ring capacity in samples.
    cap: usize,
    /// The producer's write index as last seen; it only lags, so data is underestimated.
    write_cache: usize,
    shared: Arc<Shared>,
}

impl AudioConsumer {
    /// Stream position of the next frame [`AudioConsumer::peek`] will return. Gaps that lie
    /// before data already in the ring are applied first.
    pub fn position(&mut self) -> SampleIndex {
        if self.rb.occupied_len() > 0 {
            self.apply_gaps();
        }
        self.next
    }

    /// Position after everything the producer ever offered, once it has been dropped; at that
    /// point trailing drops (a gap with no frames after it) are accounted for too.
    pub fn end_position(&mut self) -> Option<SampleIndex> {
        if !self.shared.closed.load(Ordering::Acquire) || self.rb.occupied_len() > 0 {
            return None;
        }
        self.apply_gaps();
        Some(self.next)
    }

    /// The oldest contiguous run of frames in the ring (no copy), or `None` when empty. The run
    /// ends at the ring's wrap point or at the next gap, whichever comes first; release it with
    /// [`AudioConsumer::consume`]. [`AudioConsumer::peek_all`] also hands out the part after the
    /// wrap point.
    pub fn peek(&mut self) -> Option<AudioChunk<'_>> {
        let run = self.peek_run(false)?;
        Some(AudioChunk {
            start: run.start,
            samples: run.first,
        })
    }

    /// Everything readable up to the next gap (no copy), or `None` when empty: one run of frames
    /// contiguous in time, in one slice, or two when it wraps around the end of the ring's
    /// storage. Release it (or a prefix) with [`AudioConsumer::consume`]. Reads the producer's
    /// index afresh (one acquire load), so the run includes everything published so far.
    pub fn peek_all(&mut self) -> Option<AudioRun<'_>> {
        self.peek_run(true)
    }

    /// `fresh`: re-read the producer's index even if the cached one still shows data (`peek`
    /// does not: its callers loop until the ring looks empty, which re-reads it anyway).
    fn peek_run(&mut self, fresh: bool) -> Option<AudioRun<'_>> {
        if fresh {
            self.write_cache = self.rb.write_index();
        }
        let frames = self.readable_frames();
        if frames == 0 {
            return None;
        }
        let read = self.rb.read_index();
        let len = frames * self.channels;
        // SAFETY: this end holds the consumer rights; `read..read + len` is published data
        // (below a write index acquired from the producer), and the producer does not touch it
        // until `consume` moves the read index past it. The borrow of `self` keeps `consume`
        // from running while the slices live.
        let (a, b) = unsafe { self.rb.unsafe_slices(read, index_add(read, len, self.cap)) };
        debug_assert_eq!(a.len() + b.len(), len);
        // SAFETY: published slots are initialised f32 (MaybeUninit<f32> has f32's layout).
        let (first, second) = unsafe {
            (
                std::slice::from_raw_parts(a.as_ptr().cast::<f32>(), a.len()),
                std::slice::from_raw_parts(b.as_ptr().cast::<f32>(), b.len()),
            )
        };
        Some(AudioRun {
            start: self.next,
            first,
            second,
        })
    }

    /// Releases the first `frames` frames (at most what the last [`peek`] or [`peek_all`]
    /// handed out), publishing the new read index with one release store.
    ///
    /// [`peek`]: AudioConsumer::peek
    /// [`peek_all`]: AudioConsumer::peek_all
    pub fn consume(&mut self, frames: usize) {
        let frames = frames.min(self.readable_frames());
        if frames == 0 {
            return;
        }
        let read = self.rb.read_index();
        // SAFETY: consumer rights; the released slots were published (see `peek`) and f32 needs
        // no drop. Release store: the producer that sees the index may reuse the slots.
        unsafe {
            self.rb
                .set_read_index(index_add(read, frames * self.channels, self.cap))
        };
        self.read += frames as u64;
        self.next = self.next.advance(frames as u64);
        self.shared
            .consumed
            .consumed
            .store(self.read, Ordering::Relaxed);
        // Pairs with the fence in `push_blocking` (see `push`).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.shared.producer_parked.load(Ordering::Acquire) {
            // Written before the flag, so the release/acquire pair makes it current.
            let wants = self.shared.producer_wants.load(Ordering::Relaxed);
            // Fresh read of the producer's index: the cached one overstates what is occupied.
            if self.rb.vacant_len() >= wants {
                if let Some(t) = self.shared.producer_thread.get() {
                    t.unpark();
                }
            }
        }
    }

    /// Copies up to `out.len()` samples (whole frames) that are contiguous in time into `out`.
    /// Returns the stream position of the first and the number of frames copied; stops at a gap,
    /// so one call never mixes frames from both sides of a drop.
    pub fn pop_into(&mut self, out: &mut [f32]) -> Option<(SampleIndex, usize)> {
        let want = out.len() / self.channels;
        let mut start = None;
        let mut done = 0usize;
        while done < want {
            let ch = self.channels;
            let Some(chunk) = self.peek() else { break };
            if let Some(s) = start {
                if chunk.start != SampleIndex(s + done as u64) {
                    break;
                }
            } else {
                start = Some(chunk.start.0);
            }
            let n = (chunk.samples.len() / ch).min(want - done);
            out[done * ch..(done + n) * ch].copy_from_slice(&chunk.samples[..n * ch]);
            self.consume(n);
            done += n;
        }
        start.map(|s| (SampleIndex(s), done))
    }

    /// Fills `out` completely for playback: ring contents first (across gaps; playback does not
    /// care about capture timestamps), then silence. Silence is counted as underrun. Real-time
    /// safe. Returns the frames that came from the ring.
    pub fn fill_or_silence(&mut self, out: &mut [f32]) -> usize {
        let ch = self.channels;
        let want = out.len() / ch;
        let mut done = 0usize;
        while done < want {
            let Some(chunk) = self.peek() else { break };
            let n = (chunk.samples.len() / ch).min(want - done);
            out[done * ch..(done + n) * ch].copy_from_slice(&chunk.samples[..n * ch]);
            self.consume(n);
            done += n;
        }
        out[done * ch..].fill(0.0);
        if done < want {
            self.underrun_frames += (want - done) as u64;
            self.underrun_events += 1;
            let c = &self.shared.consumed;
            c.underrun_frames
                .store(self.underrun_frames, Ordering::Relaxed);
            c.underrun_events
                .store(self.underrun_events, Ordering::Relaxed);
        }
        done
    }

    /// Parks until data is available, the producer is gone, or `timeout` passes. Returns true
    /// when data is available.
    pub fn wait_for_data(&mut self, timeout: Duration) -> bool {
        // Set once a wait starts: the path that finds data reads no clock.
        let mut deadline: Option<Instant> = None;
        let mut backoff = Backoff(0);
        loop {
            if self.has_data() {
                return true;
            }
            if self.shared.closed.load(Ordering::Acquire) {
                return self.rb.occupied_len() > 0;
            }
            if backoff.snooze() {
                continue;
            }
            let now = Instant::now();
            let deadline = *deadline.get_or_insert(now + timeout);
            if now >= deadline {
                return false;
            }
            if self.shared.consumer_thread.get().is_none() {
                let _ = self.shared.consumer_thread.set(std::thread::current());
            }
            self.shared.consumer_parked.store(true, Ordering::Relaxed);
            // Pairs with the fence in `push`: either the producer sees the flag, or this
            // re-check sees its frames.
            std::sync::atomic::fence(Ordering::SeqCst);
            if self.rb.occupied_len() == 0 && !self.shared.closed.load(Ordering::Acquire) {
                std::thread::park_timeout(deadline - now);
            }
            self.shared.consumer_parked.store(false, Ordering::Relaxed);
            backoff = Backoff(0);
        }
    }

    /// True when a frame is readable; re-reads the producer's index only when the cached one
    /// shows none, so polling a ring that has data touches no shared line.
    fn has_data(&mut self) -> bool {
        let read = self.rb.read_index();
        if index_distance(read, self.write_cache, self.cap) >= self.channels {
            return true;
        }
        self.write_cache = self.rb.write_index();
        index_distance(read, self.write_cache, self.cap) >= self.channels
    }

    /// Frames available to read now.
    pub fn available(&self) -> usize {
        self.rb.occupied_len() / self.channels
    }

    /// True once the producer has been dropped (remaining frames can still be read).
    pub fn is_producer_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    pub fn format(&self) -> AudioFormat {
        self.shared.format
    }

    pub fn monitor(&self) -> RingMonitor {
        RingMonitor {
            shared: self.shared.clone(),
        }
    }

    /// Frames readable before the next gap (across the wrap point).
    fn readable_frames(&mut self) -> usize {
        // The consumer's own index is a plain field of its end; the producer's is re-read (an
        // acquire load of a line the producer writes) only when the cached one shows no data.
        let read = self.rb.read_index();
        let mut occupied = index_distance(read, self.write_cache, self.cap);
        if occupied == 0 {
            self.write_cache = self.rb.write_index();
            occupied = index_distance(read, self.write_cache, self.cap);
        }
        let frames = occupied / self.channels;
        if frames == 0 {
            return 0;
        }
        // Frames are visible, so every marker before them is too (published before the frames).
        self.apply_gaps();
        match self.gaps.try_peek() {
            Some(g) => frames.min((g.at - self.read) as usize),
            None => frames,
        }
    }

    fn apply_gaps(&mut self) {
        while let Some(g) = self.gaps.try_peek() {
            if g.at != self.read {
                break;
            }
            self.next = self.next.advance(g.missing);
            self.gaps.skip(1);
        }
    }
}

impl Drop for AudioConsumer {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        // Pairs with the fence in `push_blocking` (see the producer's `drop`).
        std::sync::atomic::fence(Ordering::SeqCst);
        if let Some(t) = self.shared.producer_thread.get() {
            t.unpark();
        }
    }
}

/// Samples from ring index `from` forward to `to`; ringbuf's indices run modulo twice the
/// capacity so that full and empty differ.
fn index_distance(from: usize, to: usize, cap: usize) -> usize {
    (to + 2 * cap - from) % (2 * cap)
}

fn index_add(index: usize, n: usize, cap: usize) -> usize {
    (index + n) % (2 * cap)
}
