//! The video ring: latest-frame semantics through a lock-free triple buffer.
//!
//! Three preallocated frame slots: the producer owns one (it writes there), the consumer owns one
//! (it reads there), and the third sits in the middle, exchanged atomically. Publishing swaps the
//! written slot into the middle; if the middle still held an unread frame, that frame is replaced
//! and counted. Reading swaps the middle out only when it holds something new. Neither side ever
//! waits for the other, and the consumer always sees the newest complete frame.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Pixel layout of [`VideoFrame::data`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PixelFormat {
    /// 4 bytes per pixel: R, G, B, x.
    #[default]
    Rgbx,
    /// Planar 4:2:0: Y plane then U and V at half resolution.
    I420,
}

impl PixelFormat {
    /// Bytes of one frame of `width` × `height`.
    pub fn frame_bytes(self, width: u32, height: u32) -> usize {
        let (w, h) = (width as usize, height as usize);
        match self {
            PixelFormat::Rgbx => w * h * 4,
            PixelFormat::I420 => w * h + 2 * (w.div_ceil(2) * h.div_ceil(2)),
        }
    }
}

/// One decoded picture with its capture time.
#[derive(Debug, Clone, Default)]
pub struct VideoFrame {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    /// Presentation time on the source's clock (from the first frame of the stream).
    pub pts: Duration,
    /// Sequence number assigned by the producer, starting at 0; gaps mean replaced frames.
    pub seq: u64,
    /// Tightly packed pixels (no row padding).
    pub data: Vec<u8>,
}

const INDEX_MASK: u8 = 0b011;
const FRESH: u8 = 0b100;

struct Shared {
    slots: [UnsafeCell<VideoFrame>; 3],
    /// Index of the middle slot, plus `FRESH` while it holds a frame the consumer has not taken.
    middle: AtomicU8,
    published: AtomicU64,
    replaced: AtomicU64,
}

// SAFETY: each slot is accessed by at most one side at a time: the producer only touches the slot
// whose index it holds in `write`, the consumer only the one in `read`, and the middle slot is
// touched by nobody until an atomic swap hands it to one side. The swaps use AcqRel so a slot's
// contents written before the hand-over are visible after it.
unsafe impl Sync for Shared {}

/// Counters of a video ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VideoStats {
    /// Frames the producer published.
    pub published: u64,
    /// Published frames overwritten before the consumer took them.
    pub replaced: u64,
}

/// Creates a video ring whose slots are preallocated for frames of up to `frame_bytes` bytes.
pub fn video_ring(frame_bytes: usize) -> (VideoProducer, VideoConsumer) {
    let slot = || {
        UnsafeCell::new(VideoFrame {
            data: Vec::with_capacity(frame_bytes),
            ..VideoFrame::default()
        })
    };
    let shared = Arc::new(Shared {
        slots: [slot(), slot(), slot()],
        middle: AtomicU8::new(1),
        published: AtomicU64::new(0),
        replaced: AtomicU64::new(0),
    });
    (
        VideoProducer {
            shared: shared.clone(),
            write: 0,
        },
        VideoConsumer {
            shared,
            read: 2,
            holding: false,
        },
    )
}

/// The writing end (one thread, e.g. a GStreamer streaming thread).
pub struct VideoProducer {
    shared: Arc<Shared>,
    write: u8,
}

impl VideoProducer {
    /// Fills the producer's slot in place with `fill` and publishes it. The slot's buffer keeps
    /// its capacity between frames, so a steady stream of same-sized frames never allocates.
    /// Returns the sequence number given to the frame.
    pub fn publish_with<F: FnOnce(&mut VideoFrame)>(&mut self, fill: F) -> u64 {
        let seq = self.shared.published.load(Ordering::Relaxed);
        // SAFETY: `write` is owned by this producer (see `Shared`); no one else touches it.
        let frame = unsafe { &mut *self.shared.slots[usize::from(self.write)].get() };
        fill(frame);
        frame.seq = seq;
        let prev = self
            .shared
            .middle
            .swap(self.write | FRESH, Ordering::AcqRel);
        self.write = prev & INDEX_MASK;
        self.shared.published.fetch_add(1, Ordering::Relaxed);
        if prev & FRESH != 0 {
            self.shared.replaced.fetch_add(1, Ordering::Relaxed);
        }
        seq
    }

    pub fn stats(&self) -> VideoStats {
        stats(&self.shared)
    }
}

/// The reading end (one thread).
pub struct VideoConsumer {
    shared: Arc<Shared>,
    read: u8,
    /// Whether `read` holds a frame [`VideoConsumer::latest`] handed out.
    holding: bool,
}

impl VideoConsumer {
    /// The newest frame published since the last call, or `None` if nothing new arrived.
    pub fn latest(&mut self) -> Option<&VideoFrame> {
        if self.shared.middle.load(Ordering::Acquire) & FRESH == 0 {
            return None;
        }
        let prev = self.shared.middle.swap(self.read, Ordering::AcqRel);
        self.read = prev & INDEX_MASK;
        self.holding = true;
        // SAFETY: `read` now names the slot handed over by the swap; only this consumer has it.
        Some(unsafe { &*self.shared.slots[usize::from(self.read)].get() })
    }

    /// The frame the last [`VideoConsumer::latest`] returned (still this consumer's until the
    /// next swap), or `None` before the first. Lets one reader sample often and still use the
    /// newest picture it saw when nothing newer has arrived.
    pub fn current(&self) -> Option<&VideoFrame> {
        if !self.holding {
            return None;
        }
        // SAFETY: as in `latest`: `read` is this consumer's slot, and `holding` says a producer
        // filled it before the swap that handed it over.
        Some(unsafe { &*self.shared.slots[usize::from(self.read)].get() })
    }

    pub fn stats(&self) -> VideoStats {
        stats(&self.shared)
    }
}

fn stats(s: &Shared) -> VideoStats {
    VideoStats {
        published: s.published.load(Ordering::Relaxed),
        replaced: s.replaced.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_is_the_frame_latest_returned_until_a_newer_one_is_taken() {
        let (mut p, mut c) = video_ring(16);
        assert!(c.current().is_none());
        p.publish_with(|f| f.width = 7);
        assert_eq!(c.latest().map(|f| f.width), Some(7));
        assert!(c.latest().is_none());
        assert_eq!(c.current().map(|f| f.width), Some(7));
        p.publish_with(|f| f.width = 9);
        assert_eq!(c.current().map(|f| f.width), Some(7));
        assert_eq!(c.latest().map(|f| f.width), Some(9));
        assert_eq!(c.current().map(|f| f.width), Some(9));
    }

    #[test]
    fn newest_frame_wins_and_replacements_are_counted() {
        let (mut p, mut c) = video_ring(16);
        assert!(c.latest().is_none());
        for i in 0..5u8 {
            p.publish_with(|f| {
                f.data.clear();
                f.data.push(i);
                f.pts = Duration::from_millis(u64::from(i) * 40);
            });
        }
        let f = c.latest().unwrap();
        assert_eq!(
            (f.seq, f.data[0], f.pts),
            (4, 4, Duration::from_millis(160))
        );
        assert!(c.latest().is_none(), "a frame is delivered once");
        assert_eq!(
            c.stats(),
            VideoStats {
                published: 5,
                replaced: 4
            }
        );
        p.publish_with(|f| f.data[0] = 9);
        assert_eq!(c.latest().unwrap().data[0], 9);
        assert_eq!(p.stats().replaced, 4);
    }

    #[test]
    fn threads_see_monotonic_complete_frames() {
        let (mut p, mut c) = video_ring(1024);
        let n = 20_000u64;
        let t = std::thread::spawn(move || {
            for i in 0..n {
                p.publish_with(|f| {
                    f.data.clear();
                    f.data.resize(1024, (i % 251) as u8);
                });
            }
        });
        let mut last = None;
        let mut seen = 0u64;
        loop {
            let done = t.is_finished();
            if let Some(f) = c.latest() {
                let v = (f.seq % 251) as u8;
                assert!(f.data.iter().all(|&b| b == v), "torn frame {}", f.seq);
                if let Some(l) = last {
                    assert!(f.seq > l);
                }
                last = Some(f.seq);
                seen += 1;
            } else if done {
                break;
            }
        }
        t.join().unwrap();
        let s = c.stats();
        assert_eq!(last, Some(n - 1), "the very last frame is always delivered");
        assert_eq!(s.published, n);
        assert_eq!(
            s.replaced + seen,
            n,
            "every frame is either seen or counted"
        );
    }
}
