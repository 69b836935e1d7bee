//! The audio ring under two threads: lossless transfer of 10^8 samples with random chunk sizes
//! (content and timestamps checked sample by sample), and exact overrun accounting with a
//! deliberately slow consumer.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use voicerelay_audio as vr_audio;
use vr_audio::{audio_ring, AudioFormat, RingStats};
use vr_core::{SampleIndex, SampleRate};

/// The value of stream sample `i`: an integer below 2^24 (exact in f32) that differs between
/// neighbours, so a misplaced, repeated or skipped sample changes the value seen at an index.
fn value(i: u64) -> f32 {
    ((i.wrapping_mul(2_654_435_761) >> 7) & 0x00FF_FFFF) as f32
}

fn fill(buf: &mut [f32], start: u64) {
    for (k, s) in buf.iter_mut().enumerate() {
        *s = value(start + k as u64);
    }
}

/// Index of the first sample of `chunk` that is not `value(start + k)`.
fn first_mismatch(chunk: &[f32], start: u64) -> Option<usize> {
    chunk
        .iter()
        .enumerate()
        .position(|(k, &s)| s.to_bits() != value(start + k as u64).to_bits())
}

const MONO: AudioFormat = AudioFormat {
    rate: SampleRate(48_000),
    channels: 1,
};

#[test]
fn hundred_million_samples_arrive_exactly_once_in_order() {
    const TOTAL: u64 = 100_000_000;
    // Odd start: when the consumer only ever finds a full ring (a producer that refills it
    // while the consumer drains), every run would otherwise begin exactly at the wrap point.
    const SKEW: u64 = 1000;
    let (mut p, mut c) = audio_ring("stress", MONO, 16_384).unwrap();
    let mut head = vec![0f32; SKEW as usize];
    fill(&mut head, 0);
    assert_eq!(p.push(&head), SKEW as usize);
    let mut out = vec![0f32; SKEW as usize];
    assert_eq!(c.pop_into(&mut out), Some((SampleIndex(0), SKEW as usize)));
    assert_eq!(first_mismatch(&out, 0), None);
    let producer = std::thread::spawn(move || {
        let mut rng = StdRng::seed_from_u64(7);
        let mut buf = vec![0f32; 8192];
        let mut sent = SKEW;
        while sent < TOTAL {
            let n = rng.gen_range(1..=8192u64).min(TOTAL - sent) as usize;
            fill(&mut buf[..n], sent);
            let stored = p.push_blocking(&buf[..n], Duration::from_secs(30));
            assert_eq!(stored, n, "consumer stalled for 30 s");
            sent += n as u64;
        }
        p.monitor()
    });
    let mut rng = StdRng::seed_from_u64(8);
    let mut next = SKEW;
    let mut wrapped_reads = 0u64;
    while c.wait_for_data(Duration::from_secs(30)) {
        loop {
            // Half the reads take everything readable (both halves when it wraps), half only
            // the part before the wrap point; each takes a random prefix of what it is offered,
            // so reads and writes interleave at odd sizes.
            if rng.gen_bool(0.5) {
                let Some(run) = c.peek_all() else { break };
                assert_eq!(run.start, SampleIndex(next), "timestamp of the next run");
                let (a, b) = (run.first, run.second);
                let take = rng.gen_range(1..=a.len() + b.len());
                let in_a = take.min(a.len());
                if let Some(k) = first_mismatch(&a[..in_a], next) {
                    panic!("sample {} is wrong (first half)", next + k as u64);
                }
                if let Some(k) = first_mismatch(&b[..take - in_a], next + in_a as u64) {
                    panic!("sample {} is wrong (second half)", next + (in_a + k) as u64);
                }
                wrapped_reads += u64::from(!b.is_empty());
                c.consume(take);
                next += take as u64;
            } else {
                let Some(chunk) = c.peek() else { break };
                assert_eq!(
                    chunk.start,
                    SampleIndex(next),
                    "timestamp of the next chunk"
                );
                let take = rng.gen_range(1..=chunk.samples.len());
                if let Some(k) = first_mismatch(&chunk.samples[..take], next) {
                    panic!(
                        "sample {} is {} not {}",
                        next + k as u64,
                        chunk.samples[k],
                        value(next + k as u64)
                    );
                }
                c.consume(take);
                next += take as u64;
            }
        }
    }
    let monitor = producer.join().unwrap();
    assert_eq!(next, TOTAL, "every sample arrived");
    assert!(wrapped_reads > 0, "some reads spanned the wrap point");
    eprintln!("{wrapped_reads} reads took both halves of a wrapped run");
    assert_eq!(c.end_position(), Some(SampleIndex(TOTAL)));
    let s = monitor.stats();
    assert_eq!(
        (s.stored, s.overrun_frames, s.overrun_events, s.fill),
        (TOTAL, 0, 0, 0)
    );
}

#[test]
fn slow_consumer_sees_gaps_that_match_the_overrun_count_exactly() {
    const TOTAL: u64 = 4_000_000;
    let (mut p, mut c) = audio_ring("slow", MONO, 4096).unwrap();
    let producer = std::thread::spawn(move || {
        let mut rng = StdRng::seed_from_u64(11);
        let mut buf = vec![0f32; 2048];
        let mut sent = 0u64;
        let mut stored = 0u64;
        while sent < TOTAL {
            let n = rng.gen_range(1..=2048u64).min(TOTAL - sent) as usize;
            fill(&mut buf[..n], sent);
            // A device callback: push what fits, never wait.
            stored += p.push(&buf[..n]) as u64;
            sent += n as u64;
            assert_eq!(p.position(), SampleIndex(sent));
            if rng.gen_ratio(1, 64) {
                std::thread::yield_now();
            }
        }
        (stored, p.monitor())
    });
    let mut next = 0u64;
    let mut received = 0u64;
    let mut gap_total = 0u64;
    let mut gaps = 0u64;
    while c.wait_for_data(Duration::from_secs(30)) {
        // Deliberately slow: a short nap per chunk lets the producer overrun the 4096-frame ring.
        std::thread::sleep(Duration::from_micros(200));
        while let Some(chunk) = c.peek() {
            let start = chunk.start.0;
            assert!(start >= next, "time went backwards: {start} < {next}");
            if start > next {
                gap_total += start - next;
                gaps += 1;
            }
            let n = chunk.samples.len();
            if let Some(k) = first_mismatch(chunk.samples, start) {
                panic!("sample at {} holds the wrong value", start + k as u64);
            }
            c.consume(n);
            next = start + n as u64;
            received += n as u64;
        }
    }
    let (stored, monitor) = producer.join().unwrap();
    let end = c
        .end_position()
        .expect("producer is gone and the ring is drained");
    // Frames dropped after the last stored frame show up only in the final position.
    gap_total += end.0 - next;
    let s: RingStats = monitor.stats();
    assert_eq!(end, SampleIndex(TOTAL));
    assert_eq!(received, stored);
    assert_eq!(s.stored, stored);
    assert!(
        s.overrun_frames > 0,
        "the slow consumer must cause overruns: {s:?}"
    );
    assert_eq!(
        s.overrun_frames,
        TOTAL - received,
        "every dropped frame is counted"
    );
    assert_eq!(
        s.overrun_frames, gap_total,
        "timestamps reveal exactly the dropped frames"
    );
    assert!(gaps >= 1 && gaps <= s.overrun_events, "{gaps} gaps, {s:?}");
    eprintln!(
        "slow consumer: {received} received, {} dropped in {} events, {gaps} gaps",
        s.overrun_frames, s.overrun_events
    );
}

#[test]
fn lockstep_overrun_counts_are_exact() {
    let (mut p, mut c) = audio_ring("lockstep", MONO, 1000).unwrap();
    let mut buf = vec![0f32; 300];
    let mut sent = 0u64;
    let mut push = |p: &mut vr_audio::AudioProducer| {
        fill(&mut buf, sent);
        sent += 300;
        p.push(&buf)
    };
    // 5 × 300 into 1000: 300, 300, 300, 100 stored; 200 + 300 dropped in two events.
    let stored: Vec<usize> = (0..5).map(|_| push(&mut p)).collect();
    assert_eq!(stored, [300, 300, 300, 100, 0]);
    let s = p.monitor().stats();
    assert_eq!(
        (s.stored, s.overrun_frames, s.overrun_events, s.fill),
        (1000, 500, 2, 1000)
    );
    // Drain: 1000 contiguous frames from 0 (the wrap point may split them).
    let mut out = vec![0f32; 1000];
    let (start, n) = c.pop_into(&mut out).unwrap();
    assert_eq!((start, n), (SampleIndex(0), 1000));
    assert_eq!(first_mismatch(&out, 0), None);
    // The next push lands after the 500-frame hole.
    assert_eq!(push(&mut p), 300);
    let chunk = c.peek().unwrap();
    assert_eq!((chunk.start, chunk.samples.len()), (SampleIndex(1500), 300));
    assert_eq!(first_mismatch(chunk.samples, 1500), None);
    c.consume(300);
    // Playback-style read of an empty ring: silence, counted as underrun.
    let mut play = [1f32; 64];
    assert_eq!(c.fill_or_silence(&mut play), 0);
    assert!(play.iter().all(|&x| x == 0.0));
    let s = c.monitor().stats();
    assert_eq!((s.underrun_frames, s.underrun_events), (64, 1));
    assert_eq!(
        (s.stored, s.overrun_frames, s.overrun_events),
        (1300, 500, 2)
    );
}

#[test]
fn stereo_frames_stay_whole_and_timestamps_count_frames() {
    let fmt = AudioFormat {
        rate: SampleRate(48_000),
        channels: 2,
    };
    let (mut p, mut c) = audio_ring("stereo", fmt, 3).unwrap();
    assert_eq!(p.push(&[1.0, -1.0, 2.0, -2.0]), 2);
    assert_eq!(p.push(&[3.0, -3.0, 4.0, -4.0]), 1, "one frame of room");
    let chunk = c.peek().unwrap();
    assert_eq!(chunk.start, SampleIndex(0));
    assert_eq!(chunk.samples, &[1.0, -1.0, 2.0, -2.0, 3.0, -3.0]);
    c.consume(3);
    assert_eq!(p.push(&[5.0, -5.0]), 1);
    let chunk = c.peek().unwrap();
    assert_eq!(
        (chunk.start, chunk.samples),
        (SampleIndex(4), &[5.0f32, -5.0][..]),
        "frame 3 was dropped, so the next stored frame is 4"
    );
    assert!(audio_ring("bad", fmt, 0).is_err());
}

#[test]
fn peek_all_hands_out_both_halves_of_a_wrapped_run_and_stops_at_a_gap() {
    let (mut p, mut c) = audio_ring("wrap", MONO, 1000).unwrap();
    let mut buf = vec![0f32; 800];
    fill(&mut buf, 0);
    assert_eq!(p.push(&buf), 800);
    c.consume(800);
    // 500 frames from ring position 800: 200 before the end of the storage, 300 after.
    fill(&mut buf[..500], 800);
    assert_eq!(p.push(&buf[..500]), 500);
    let chunk = c.peek().unwrap();
    assert_eq!((chunk.start, chunk.samples.len()), (SampleIndex(800), 200));
    let run = c.peek_all().unwrap();
    assert_eq!(
        (run.start, run.first.len(), run.second.len()),
        (SampleIndex(800), 200, 300)
    );
    assert_eq!(first_mismatch(run.first, 800), None);
    assert_eq!(first_mismatch(run.second, 1000), None);
    // Fill the ring (500 more fit), then overrun by 100: the next stored frames follow a gap.
    fill(&mut buf[..600], 1300);
    assert_eq!(p.push(&buf[..600]), 500);
    c.consume(300);
    fill(&mut buf[..50], 1900);
    assert_eq!(p.push(&buf[..50]), 50);
    // Readable before the gap: stream frames 1100..1800; after it, 1900..1950.
    let run = c.peek_all().unwrap();
    assert_eq!(run.start, SampleIndex(1100));
    assert_eq!(run.first.len() + run.second.len(), 700, "stops at the gap");
    let (first, second) = (run.first.len(), run.second.len());
    assert_eq!(first_mismatch(run.first, 1100), None);
    assert_eq!(first_mismatch(run.second, 1100 + first as u64), None);
    c.consume(first + second);
    let run = c.peek_all().unwrap();
    assert_eq!(
        (run.start, run.first.len() + run.second.len()),
        (SampleIndex(1900), 50),
        "the 100 dropped frames show as a jump in the timestamp"
    );
    assert_eq!(first_mismatch(run.first, 1900), None);
    c.consume(50);
    assert!(c.peek_all().is_none());
    let s = c.monitor().stats();
    assert_eq!(
        (s.stored, s.overrun_frames, s.overrun_events, s.fill),
        (1850, 100, 1, 0)
    );
}
