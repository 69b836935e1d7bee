//! Steady-state audio ring throughput against two baselines moving the same bytes, for chunk
//! sizes typical of audio callbacks (64 to 1024 samples; 480 is 10 ms of 48 kHz mono):
//!
//! - `memcpy`: one thread copies the stream chunk by chunk into a destination of the stream's
//!   size (the baseline: the bytes are moved once, with no second thread and no
//!   synchronisation);
//! - `crossbeam_vec_per_chunk`: a crossbeam bounded channel carrying one `Vec<f32>` per chunk
//!   (what the ring replaces), with the same buffering in bytes as the ring.
//!
//! Ring and channel run the same structure: one long-lived producer thread and one long-lived
//! consumer thread per chunk size (spawned once, outside the timing), the stream cut in
//! chunk-sized pieces, and a consumer that reads every received sample into a checksum that is
//! checked against the source, so a lost or repeated sample fails the benchmark. The ring
//! consumer reads in place (`peek_all`/`consume`: everything readable, both halves when the data
//! wraps); the producer uses `push_blocking` (lossless, waits when full). The memcpy baseline
//! does not read its output back, which only favours the baseline.
//!
//! Ratios come from interleaved repeated runs of the three (so load from other processes hits
//! all three alike) and are printed after criterion's own report, one line per chunk size: the
//! medians (the headline figures), then each side's best run (on a shared machine a two-thread
//! pipeline loses most to other load: it needs both its threads scheduled at once). A fourth figure, `hot memcpy` (the same chunks copied into a ring-sized destination
//! that stays in cache), bounds what any ring can reach: its producer alone must copy every
//! byte into the ring's storage, which is at best this fast; so the ring/channel ratio cannot
//! exceed hot-memcpy/channel, printed as `ceiling`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam::channel::{bounded, Receiver, Sender};
use std::hint::black_box;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use voicerelay_audio::{audio_ring, AudioFormat};
use vr_core::SampleRate;

/// Callback sizes swept; 480 (10 ms at 48 kHz) is the reference case.
const CHUNKS: [usize; 5] = [64, 128, 256, 480, 1024];
/// Samples per benchmark iteration, a multiple of every chunk size: 20.48 s of 48 kHz audio,
/// 3.9 MB (more than this machine's 4 MB L2 holds together with the memcpy destination).
const BLOCK: usize = 983_040;
/// Ring capacity in samples; the channel gets the same number of bytes in chunk slots.
const RING: usize = 16_384;
/// Interleaved rounds per chunk size, and blocks each side moves per round.
const ROUNDS: usize = 21;
const ROUND_BLOCKS: usize = 3;

const MONO: AudioFormat = AudioFormat {
    rate: SampleRate(48_000),
    channels: 1,
};

/// Distinct, exactly representable sample values.
fn source() -> Vec<f32> {
    (0..BLOCK).map(|i| (i % (1 << 24)) as f32).collect()
}

/// Reads every sample once; independent of where chunk boundaries fall, but a lost or repeated
/// sample changes it.
fn checksum(samples: &[f32]) -> u32 {
    samples
        .iter()
        .fold(0u32, |a, s| a.wrapping_add(s.to_bits()))
}

/// Long-lived producer and consumer threads; `run(n)` moves `n` blocks and returns the time from
/// the go signal to the consumer holding the last sample.
struct Pipeline {
    to_producer: Option<mpsc::Sender<usize>>,
    to_consumer: Option<mpsc::Sender<usize>>,
    done: mpsc::Receiver<u32>,
    threads: Vec<JoinHandle<()>>,
    expected: u32,
}

impl Pipeline {
    fn spawn<P, C>(chunk: usize, mut produce: P, mut consume: C) -> Self
    where
        P: FnMut(&[f32]) + Send + 'static,
        C: FnMut(usize) -> u32 + Send + 'static,
    {
        let src = source();
        let expected = checksum(&src);
        let (to_producer, p_rx) = mpsc::channel::<usize>();
        let (to_consumer, c_rx) = mpsc::channel::<usize>();
        let (done_tx, done) = mpsc::channel();
        let producer = std::thread::spawn(move || {
            while let Ok(blocks) = p_rx.recv() {
                for _ in 0..blocks {
                    for piece in src.chunks(chunk) {
                        produce(piece);
                    }
                }
            }
        });
        let consumer = std::thread::spawn(move || {
            while let Ok(blocks) = c_rx.recv() {
                let sum = consume(blocks * BLOCK);
                if done_tx.send(sum).is_err() {
                    break;
                }
            }
        });
        Self {
            to_producer: Some(to_producer),
            to_consumer: Some(to_consumer),
            done,
            threads: vec![producer, consumer],
            expected,
        }
    }

    fn run(&self, blocks: usize) -> Duration {
        let t = Instant::now();
        self.to_consumer.as_ref().unwrap().send(blocks).unwrap();
        self.to_producer.as_ref().unwrap().send(blocks).unwrap();
        let sum = self.done.recv().unwrap();
        let elapsed = t.elapsed();
        let want = self.expected.wrapping_mul(blocks as u32);
        assert_eq!(sum, want, "consumer saw different samples than were sent");
        elapsed
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.to_producer.take();
        self.to_consumer.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn ring_pipeline(chunk: usize) -> Pipeline {
    let (mut p, mut c) = audio_ring("bench", MONO, RING).unwrap();
    Pipeline::spawn(
        chunk,
        move |piece| {
            let stored = p.push_blocking(piece, Duration::from_secs(10));
            assert_eq!(stored, piece.len(), "consumer stalled");
        },
        move |samples| {
            let mut got = 0;
            let mut acc = 0u32;
            while got < samples {
                if let Some(run) = c.peek_all() {
                    let (a, b) = (run.first, run.second);
                    let n = (a.len() + b.len()).min(samples - got);
                    let na = a.len().min(n);
                    acc = acc
                        .wrapping_add(checksum(&a[..na]))
                        .wrapping_add(checksum(&b[..n - na]));
                    c.consume(n);
                    got += n;
                } else {
                    assert!(c.wait_for_data(Duration::from_secs(10)), "producer stalled");
                }
            }
            acc
        },
    )
}

fn channel_pipeline(chunk: usize) -> Pipeline {
    let (tx, rx): (Sender<Vec<f32>>, Receiver<Vec<f32>>) = bounded(RING / chunk);
    Pipeline::spawn(
        chunk,
        move |piece| tx.send(piece.to_vec()).unwrap(),
        move |samples| {
            let mut got = 0;
            let mut acc = 0u32;
            while got < samples {
                let v = rx.recv().unwrap();
                acc = acc.wrapping_add(checksum(&v));
                got += v.len();
            }
            acc
        },
    )
}

/// Copies `blocks` blocks of `src` chunk by chunk on this thread into `dst`, cycling through it
/// (`dst` of the stream's size: the baseline; of the ring's size: the in-cache bound).
fn memcpy_blocks(src: &[f32], dst: &mut [f32], chunk: usize, blocks: usize) -> Duration {
    let t = Instant::now();
    let slots = dst.len() / chunk;
    for _ in 0..blocks {
        for (i, s) in src.chunks(chunk).enumerate() {
            let at = (i % slots) * chunk;
            dst[at..at + s.len()].copy_from_slice(black_box(s));
        }
        black_box(&mut *dst);
    }
    t.elapsed()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn bench(c: &mut Criterion) {
    let src = source();
    let mut dst = vec![0f32; BLOCK];
    let mut hot = vec![0f32; RING];
    let (mut median_lines, mut best_lines) = (Vec::new(), Vec::new());
    for chunk in CHUNKS {
        let ring = ring_pipeline(chunk);
        let chan = channel_pipeline(chunk);
        // Warm both pipelines (thread start-up, first-touch page faults) outside any timing.
        ring.run(2);
        chan.run(2);
        memcpy_blocks(&src, &mut dst, chunk, 2);

        let mut g = c.benchmark_group("audio_transfer");
        g.throughput(Throughput::Bytes((BLOCK * 4) as u64));
        g.bench_function(BenchmarkId::new("ring", chunk), |b| {
            b.iter_custom(|n| ring.run(n as usize))
        });
        g.bench_function(BenchmarkId::new("crossbeam_vec_per_chunk", chunk), |b| {
            b.iter_custom(|n| chan.run(n as usize))
        });
        g.bench_function(BenchmarkId::new("memcpy", chunk), |b| {
            b.iter_custom(|n| memcpy_blocks(&src, &mut dst, chunk, n as usize))
        });
        g.finish();

        let (mut r, mut ch, mut m, mut h) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            r.push(ring.run(ROUND_BLOCKS).as_secs_f64());
            ch.push(chan.run(ROUND_BLOCKS).as_secs_f64());
            m.push(memcpy_blocks(&src, &mut dst, chunk, ROUND_BLOCKS).as_secs_f64());
            h.push(memcpy_blocks(&src, &mut hot, chunk, ROUND_BLOCKS).as_secs_f64());
        }
        let load = load_average();
        let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        best_lines.push(row(chunk, best(&r), best(&ch), best(&m), best(&h), &load));
        median_lines.push(row(
            chunk,
            median(r),
            median(ch),
            median(m),
            median(h),
            &load,
        ));
    }
    let header =
        "chunk |   ring | channel| memcpy | hot mc | ring/mc | ring/ch | chan/mc | ceiling | load avg";
    println!(
        "\nsteady state, {ROUNDS} interleaved runs of {:.1} MB per chunk size; GB/s and ratios; \
         ceiling = hot memcpy / channel, the most ring/channel any ring could reach",
        (ROUND_BLOCKS * BLOCK * 4) as f64 / 1e6
    );
    for (what, lines) in [
        ("median (headline)", median_lines),
        ("best of each (least disturbed by other load)", best_lines),
    ] {
        println!("{what}:\n{header}");
        for l in lines {
            println!("{l}");
        }
    }
}

/// One table row from the times of one round size.
fn row(chunk: usize, r: f64, ch: f64, m: f64, h: f64, load: &str) -> String {
    let gbs = |s: f64| (ROUND_BLOCKS * BLOCK * 4) as f64 / s / 1e9;
    format!(
        "{chunk:>5} | {:>6.2} | {:>6.2} | {:>6.2} | {:>6.2} | {:>6.2}x | {:>6.1}x | {:>6.2}x | {:>6.1}x | {load}",
        gbs(r),
        gbs(ch),
        gbs(m),
        gbs(h),
        m / r,
        ch / r,
        m / ch,
        ch / h,
    )
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(1))
        .warm_up_time(Duration::from_millis(300))
        .sample_size(10);
    targets = bench
}
criterion_main!(benches);
