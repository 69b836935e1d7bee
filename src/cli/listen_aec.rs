//! `listen`'s echo-cancelling thread (issue 16): between the microphone ring and the
//! conversation's input ring, it puts the speaker's played samples (the far end, pushed by the
//! speaker callback into a reference ring together with a [`ClockAnchor`]) onto the
//! microphone's sample clock and runs [`vr_aec::EchoCanceller`] on 16 kHz mono. Its own thread,
//! never the audio callbacks: they only push into rings and stamp anchors.

use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;
use vr_aec::{clock_offset, AecConfig, AecEvent, ClockPoint, EchoCanceller};
use vr_capture::device::ClockAnchor;
use vr_capture::resample::StreamResampler;
use vr_capture::{audio_ring, AudioConsumer, AudioFormat, AudioProducer};
use vr_core::{SampleIndex, SampleRate};

const RATE: SampleRate = SampleRate::PIPELINE;
/// Re-anchor the far→near mapping only when the smoothed anchors disagree with it by more than
/// this (the delay tracker absorbs the rest).
const REANCHOR_SAMPLES: i64 = 32;
/// Callback timestamps jitter (±60 samples at 16 kHz on PulseAudio with 20 ms buffers): the
/// anchors' offset is averaged (about 50 updates a second, so a time constant near 2 s) before
/// the mapping moves, since every move shifts the reference under the adaptive filter.
const SMOOTHING: f64 = 0.01;
/// An anchor this far from the average is a jump (device restart, backend buffer change),
/// followed at once.
const JUMP_SAMPLES: f64 = 320.0;

/// The far end's side of the canceller: the speaker callback's reference ring and anchor.
pub struct Reference {
    pub producer: AudioProducer,
    pub anchor: Arc<ClockAnchor>,
}

/// A running canceller thread; joined after the microphone stops (its ring closes, the thread
/// drains it and closes the conversation's input ring).
pub struct AecThread {
    thread: std::thread::JoinHandle<Result<()>>,
}

impl AecThread {
    pub fn join(self) -> Result<()> {
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("echo canceller thread panicked"))?
    }
}

/// The reference ring for a speaker of `format` (one second: the canceller drains it every few
/// ms; drop-newest if it ever stalls).
pub fn reference(format: AudioFormat) -> Result<(Reference, AudioConsumer)> {
    let (producer, consumer) = audio_ring("aec_reference", format, format.rate.hz() as usize)?;
    Ok((
        Reference {
            producer,
            anchor: Arc::new(ClockAnchor::default()),
        },
        consumer,
    ))
}

/// Starts the thread: `mic` (with `mic_anchor` stamped by the microphone callback) in, far end
/// from `far`/`far_anchor`; returns the 16 kHz mono ring the conversation reads.
pub fn start(
    cfg: &AecConfig,
    mic: AudioConsumer,
    mic_anchor: Arc<ClockAnchor>,
    far: AudioConsumer,
    far_anchor: Arc<ClockAnchor>,
    ring_frames: usize,
) -> Result<(AecThread, AudioConsumer)> {
    let aec = EchoCanceller::new(cfg, RATE).context("cannot start the echo canceller")?;
    let mono = AudioFormat {
        rate: RATE,
        channels: 1,
    };
    let (out, consumer) = audio_ring("input_aec", mono, ring_frames)?;
    let mic_rs = StreamResampler::new(mic.format(), RATE)?;
    let far_rs = StreamResampler::new(far.format(), RATE)?;
    let mut worker = Worker {
        aec,
        mic,
        mic_anchor,
        far,
        far_anchor,
        out,
        mic_rs,
        far_rs,
        mic16: 0,
        far16: 0,
        offset: None,
        smoothed: None,
        buf: Vec::with_capacity(8192),
        cleaned: Vec::with_capacity(8192),
    };
    let thread = std::thread::Builder::new()
        .name("aec".into())
        .spawn(move || worker.run())?;
    Ok((AecThread { thread }, consumer))
}

struct Worker {
    aec: EchoCanceller,
    mic: AudioConsumer,
    mic_anchor: Arc<ClockAnchor>,
    far: AudioConsumer,
    far_anchor: Arc<ClockAnchor>,
    out: AudioProducer,
    mic_rs: StreamResampler,
    far_rs: StreamResampler,
    /// 16 kHz samples produced so far from each ring.
    mic16: u64,
    far16: u64,
    /// Near-clock index − far-clock index at 16 kHz, once both devices have stamped an anchor.
    offset: Option<i64>,
    /// The anchors' offset averaged over their jitter.
    smoothed: Option<f64>,
    buf: Vec<f32>,
    cleaned: Vec<f32>,
}

impl Worker {
    fn run(&mut self) -> Result<()> {
        let mut last_report = 0u64;
        loop {
            let has_mic = self.mic.wait_for_data(Duration::from_millis(20));
            // Far first: what was played is normally known before its echo is captured.
            self.drain_far()?;
            if !has_mic {
                if self.mic.is_producer_closed() {
                    return Ok(());
                }
                continue;
            }
            let mic_ch = usize::from(self.mic.format().channels);
            while let Some(chunk) = self.mic.peek() {
                let frames = chunk.samples.len() / mic_ch;
                self.buf.clear();
                self.mic_rs.push_into(chunk.samples, &mut self.buf)?;
                self.mic.consume(frames);
                self.cleaned.clear();
                let events =
                    self.aec
                        .process(&self.buf, SampleIndex(self.mic16), &mut self.cleaned)?;
                self.mic16 += self.buf.len() as u64;
                for e in events {
                    if let AecEvent::DelayChanged { change, .. } = e {
                        tracing::info!(
                            delay_ms = change.delay as f64 / 16.0,
                            previous_ms = change.previous.map(|d| d as f64 / 16.0),
                            psr = change.psr,
                            "echo delay"
                        );
                    }
                }
                // Drop-newest if the conversation stalls (the ring counts it), like the mic.
                self.out.push(&self.cleaned);
            }
            if self.mic16 >= last_report + u64::from(RATE.hz()) {
                last_report = self.mic16;
                let st = self.aec.stats();
                // Once a second: how much echo the canceller removes (the null-sink test reads it).
                tracing::debug!(
                    converged = st.converged,
                    erle_db = st.erle_db,
                    delay_ms = st.delay.map(|d| d as f64 / 16.0),
                    "aec"
                );
                if let Some(e) = st.erle_db {
                    metrics::gauge!("aec_erle_db").set(f64::from(e));
                }
                if let Some(d) = st.delay {
                    metrics::gauge!("aec_delay_ms").set(d as f64 / 16.0);
                }
            }
        }
    }

    fn drain_far(&mut self) -> Result<()> {
        let ch = usize::from(self.far.format().channels);
        while let Some(chunk) = self.far.peek() {
            let frames = chunk.samples.len() / ch;
            self.buf.clear();
            self.far_rs.push_into(chunk.samples, &mut self.buf)?;
            self.far.consume(frames);
            self.update_offset();
            if let Some(off) = self.offset {
                let at = self.far16 as i64 + off;
                if at >= 0 {
                    self.aec.push_far(&self.buf, SampleIndex(at as u64));
                }
            }
            self.far16 += self.buf.len() as u64;
        }
        Ok(())
    }

    fn update_offset(&mut self) {
        let (Some((ff, fns)), Some((mf, mns))) = (self.far_anchor.load(), self.mic_anchor.load())
        else {
            return;
        };
        let far = ClockPoint {
            frame: ff,
            ns: fns,
            rate: self.far.format().rate,
        };
        let near = ClockPoint {
            frame: mf,
            ns: mns,
            rate: self.mic.format().rate,
        };
        let measured = clock_offset(far, near, RATE) as f64;
        let smoothed = match self.smoothed {
            Some(s) if (measured - s).abs() <= JUMP_SAMPLES => s + SMOOTHING * (measured - s),
            _ => measured,
        };
        self.smoothed = Some(smoothed);
        let new = smoothed.round() as i64;
        match self.offset {
            Some(cur) if (new - cur).abs() <= REANCHOR_SAMPLES => {}
            cur => {
                tracing::debug!(offset = new, previous = ?cur, "aec clock anchor");
                self.offset = Some(new);
            }
        }
    }
}
