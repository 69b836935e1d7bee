//! Steady-state audio ring throughput against two baselines moving the same bytes:
//!
//! - `memcpy`: one thread copies the stream chunk by chunk into a destination (the ceiling: the
//!   bytes are moved once, with no second thread and no synchronisation);
//! - `crossbeam_vec_per_chunk`: a crossbeam bounded channel carrying one `Vec<f32>` per chunk
//!   (what the ring replaces), with the same buffering in bytes as the ring.
//!
//! Ring and channel run the same structure: one long-lived producer thread and one long-lived
//! consumer thread (spawned once, outside the timing), the stream cut in `CHUNK`-sample pieces,
//! and a consumer that reads every received sample into a checksum that is checked against the
//! source, so a lost or repeated sample fails the benchmark. The ring consumer reads
//! in place (`peek`/`consume`); the producer uses `push_blocking` (lossless, parks when full).
//! The memcpy baseline does not read its output back, which only favours the baseline.
//!
//! Ratios come from interleaved repeated runs of the three (so load from other processes hits
//! all three alike) and are printed as medians after criterion's own report.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam::channel::{bounded, Receiver, Sender};
use std::hint::black_box;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use voicerelay_capture::{audio_ring, AudioConsumer, AudioFormat, AudioProducer};
use vr_core::SampleRate;

/// 10 ms of 48 kHz mono: a typical device callback.
const CHUNK: usize = 480;
/// Samples per benchmark iteration: 20 s of audio, 3.84 MB.
const BLOCK: usize = CHUNK * 2000;
/// Ring capacity in samples; the channel gets the same number of bytes in chunk slots.
const RING: usize = 16_384;

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
    fn spawn<P, C>(mut produce: P, mut consume: C) -> Self
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
                    for chunk in src.chunks(CHUNK) {
                        produce(chunk);
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

fn ring_pipeline() -> Pipeline {
    let (p, c) = audio_ring("bench", MONO, RING).unwrap();
    let mut p: AudioProducer = p;
    let mut c: AudioConsumer = c;
    Pipeline::spawn(
        move |chunk| {
            let stored = p.push_blocking(chunk, Duration::from_secs(10));
            assert_eq!(stored, chunk.len(), "consumer stalled");
        },
        move |samples| {
            let mut got = 0;
            let mut acc = 0u32;
            while got < samples {
                while let Some(chunk) = c.peek() {
                    let n = chunk.samples.len().min(samples - got);
                    acc = acc.wrapping_add(checksum(&chunk.samples[..n]));
                    c.consume(n);
                    got += n;
                    if got == samples {
                        break;
                    }
                }
                if got < samples {
                    assert!(c.wait_for_data(Duration::from_secs(10)), "producer stalled");
                }
            }
            acc
        },
    )
}

fn channel_pipeline() -> Pipeline {
    let (tx, rx): (Sender<Vec<f32>>, Receiver<Vec<f32>>) = bounded(RING / CHUNK);
    Pipeline::spawn(
        move |chunk| tx.send(chunk.to_vec()).unwrap(),
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

/// Copies `blocks` blocks of `src` into `dst` chunk by chunk on this thread.
fn memcpy_blocks(src: &[f32], dst: &mut [f32], blocks: usize) -> Duration {
    let t = Instant::now();
    for _ in 0..blocks {
        for (s, d) in src.chunks(CHUNK).zip(dst.chunks_mut(CHUNK)) {
            d.copy_from_slice(black_box(s));
        }
        black_box(&mut *dst);
    }
    t.elapsed()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(c: &mut Criterion) {
    let ring = ring_pipeline();
    let chan = channel_pipeline();
    let src = source();
    let mut dst = vec![0f32; BLOCK];
    // Warm both pipelines (thread start-up, first-touch page faults) outside any timing.
    ring.run(2);
    chan.run(2);
    memcpy_blocks(&src, &mut dst, 2);

    let mut g = c.benchmark_group("audio_transfer");
    g.throughput(Throughput::Bytes((BLOCK * 4) as u64));
    g.bench_function("ring", |b| b.iter_custom(|n| ring.run(n as usize)));
    g.bench_function("crossbeam_vec_per_chunk", |b| {
        b.iter_custom(|n| chan.run(n as usize))
    });
    g.bench_function("memcpy", |b| {
        b.iter_custom(|n| memcpy_blocks(&src, &mut dst, n as usize))
    });
    g.finish();

    let rounds = 15;
    let blocks = 5;
    let (mut r, mut ch, mut m) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        r.push(ring.run(blocks).as_secs_f64());
        ch.push(chan.run(blocks).as_secs_f64());
        m.push(memcpy_blocks(&src, &mut dst, blocks).as_secs_f64());
    }
    let (r, ch, m) = (median(r), median(ch), median(m));
    let gbs = |s: f64| (blocks * BLOCK * 4) as f64 / s / 1e9;
    println!(
        "steady state, median of {rounds} interleaved runs of {} MB in {CHUNK}-sample chunks: \
         ring {:.2} GB/s, channel {:.2} GB/s, memcpy {:.2} GB/s; \
         ring/memcpy = {:.2}x, ring/channel = {:.1}x",
        blocks * BLOCK * 4 / 1_000_000,
        gbs(r),
        gbs(ch),
        gbs(m),
        m / r,
        ch / r
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(10);
    targets = bench
}
criterion_main!(benches);
