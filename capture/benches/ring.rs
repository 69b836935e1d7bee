//! Audio ring throughput against two baselines on the same bytes: a plain `memcpy` (the ceiling)
//! and a crossbeam bounded channel carrying one `Vec<f32>` per chunk (what the ring replaces).
//! Each iteration moves `TOTAL` samples in `CHUNK`-sample pieces from a producer thread to the
//! bench thread; ratios are printed at the end.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};
use voicerelay_capture::{audio_ring, AudioFormat};
use vr_core::SampleRate;

const CHUNK: usize = 480;
const TOTAL: usize = CHUNK * 2000;

fn ring_transfer() -> usize {
    let fmt = AudioFormat {
        rate: SampleRate(48_000),
        channels: 1,
    };
    let (mut p, mut c) = audio_ring("bench", fmt, 16_384).unwrap();
    let t = std::thread::spawn(move || {
        let chunk = vec![0.25f32; CHUNK];
        for _ in 0..TOTAL / CHUNK {
            p.push_blocking(&chunk, Duration::from_secs(10));
        }
    });
    let mut out = vec![0f32; CHUNK];
    let mut got = 0;
    while got < TOTAL {
        if let Some((_, n)) = c.pop_into(&mut out) {
            got += n;
            black_box(&out);
        } else {
            c.wait_for_data(Duration::from_millis(100));
        }
    }
    t.join().unwrap();
    got
}

fn channel_transfer() -> usize {
    let (tx, rx) = crossbeam::channel::bounded::<Vec<f32>>(16_384 / CHUNK);
    let t = std::thread::spawn(move || {
        let chunk = vec![0.25f32; CHUNK];
        for _ in 0..TOTAL / CHUNK {
            tx.send(chunk.clone()).unwrap();
        }
    });
    let mut out = vec![0f32; CHUNK];
    let mut got = 0;
    while let Ok(v) = rx.recv() {
        out.copy_from_slice(&v);
        black_box(&out);
        got += v.len();
    }
    t.join().unwrap();
    got
}

fn memcpy_transfer(src: &[f32], dst: &mut [f32]) -> usize {
    for (s, d) in src.chunks(CHUNK).zip(dst.chunks_mut(CHUNK)) {
        d.copy_from_slice(s);
    }
    black_box(&dst);
    src.len()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("audio_transfer");
    g.throughput(Throughput::Bytes((TOTAL * 4) as u64));
    g.bench_function("ring", |b| b.iter(ring_transfer));
    g.bench_function("crossbeam_vec_per_chunk", |b| b.iter(channel_transfer));
    let src = vec![0.25f32; TOTAL];
    let mut dst = vec![0f32; TOTAL];
    g.bench_function("memcpy", |b| b.iter(|| memcpy_transfer(&src, &mut dst)));
    g.finish();

    // Ratios from a direct timing of the same three operations (criterion's own numbers are
    // printed above; these make the comparison explicit in one line).
    let time = |f: &mut dyn FnMut() -> usize| {
        let reps = 20;
        let t = Instant::now();
        for _ in 0..reps {
            black_box(f());
        }
        t.elapsed().as_secs_f64() / reps as f64
    };
    let ring = time(&mut ring_transfer);
    let chan = time(&mut channel_transfer);
    let mem = time(&mut || memcpy_transfer(&src, &mut dst));
    let gbs = |s: f64| (TOTAL * 4) as f64 / s / 1e9;
    println!(
        "ring {:.2} GB/s, channel {:.2} GB/s, memcpy {:.2} GB/s; ring/memcpy = {:.2}x, ring/channel = {:.1}x",
        gbs(ring),
        gbs(chan),
        gbs(mem),
        mem / ring,
        chan / ring
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(10);
    targets = bench
}
criterion_main!(benches);
