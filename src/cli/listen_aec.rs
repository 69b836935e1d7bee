//! `listen`'s echo-cancelling thread (issue 16): between the microphone ring and the
//! conversation's input ring, it puts the speaker's played samples (the far end, pushed by the
//! speaker callback into a reference ring together with a [`ClockAnchor`]) onto the
//! microphone's sample clock and runs [`vr_aec::EchoCanceller`] on 16 kHz mono. Its own thread,
//! never the audio callbacks: they only push into rings and stamp anchors.

use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;
use vr_aec::{clock_offset, AecConfig, AecEvent, AecStats, ClockPoint, EchoCanceller};
use vr_capture::device::ClockAnchor;
use vr_capture::resample::StreamResampler;
use vr_capture::{audio_ring, AudioConsumer, AudioFormat, AudioProducer};
use vr_core::{SampleIndex, SampleRate};

const RATE: SampleRate = SampleRate::PIPELINE;
/// The playback and capture timestamps place the far end on the microphone's clock only
/// coarsely: on PulseAudio they come from polled latencies, jitter by ±10 ms and wander by tens
/// of samples a second while the echo itself stays put. Every move of the mapping shifts the
/// reference under the adaptive filter and costs it its convergence, so the mapping is set once,
/// from the median of the first anchors, and the signal-based delay tracker
/// ([`vr_aec::delay`]) follows the real echo from there.
const STARTUP_ANCHORS: usize = 32;
/// The far end is placed this much earlier than the anchors say, so that their error cannot put
/// the reference after its own echo (the filter and the tracker model causal delays only).
const SAFETY_SAMPLES: i64 = 320;
/// The anchors are averaged (about 50 updates a second: a time constant near 2 s) and move the
/// mapping again only when they disagree with it by this much, beyond what the tracker's search
/// range can absorb slowly (a device restart, lost buffers).
const SMOOTHING: f64 = 0.01;
const REANCHOR_SAMPLES: f64 = 1600.0;
/// Far audio the anchors place more than this before the microphone's present is misplaced.
const PAST_SLACK_SAMPLES: i64 = 320;
/// An anchor this far from the average is a jump, followed by the average at once.
const JUMP_SAMPLES: f64 = 320.0;

/// The far end's side of the canceller: the speaker callback's reference ring and anchor.
pub struct Reference {
    pub producer: AudioProducer,
    pub anchor: Arc<ClockAnchor>,
}

/// A running canceller thread; joined after the microphone stops (its ring closes, the thread
/// drains it and closes the conversation's input ring).
pub struct AecThread {
    thread: std::thread::JoinHandle<Result<AecSummary>>,
    placed: Arc<std::sync::atomic::AtomicBool>,
}

impl AecThread {
    /// Both devices have delivered audio and the far end is placed on the microphone's clock:
    /// from now on what the speaker plays is cancelled.
    pub fn ready(&self) -> bool {
        self.placed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The canceller's figures at the end.
    pub fn join(self) -> Result<AecSummary> {
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("echo canceller thread panicked"))?
    }
}

/// What the canceller did over its run.
#[derive(Debug, Clone, Copy)]
pub struct AecSummary {
    /// The canceller's own figures at the end.
    pub stats: AecStats,
    /// The best one-second ERLE of the filter's output (before the startup gate): what it reached
    /// on this device, even if the echo moved afterwards (a loopback's 2.6 ms jump late in `devices --check` under load
    /// left 5.5 dB at the end after 39.8 dB the second before).
    pub best_second_erle_db: Option<f32>,
    /// How often the echo's delay moved after it was first found.
    pub delay_moves: u32,
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
        startup: Vec::with_capacity(STARTUP_ANCHORS),
        anchor_base: 0.0,
        placed: Arc::default(),
        buf: Vec::with_capacity(8192),
        cleaned: Vec::with_capacity(8192),
        dump: Dump::from_env()?,
        best_second_erle_db: None,
        delay_moves: 0,
    };
    let placed = worker.placed.clone();
    let thread = std::thread::Builder::new()
        .name("aec".into())
        .spawn(move || worker.run())?;
    Ok((AecThread { thread, placed }, consumer))
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
    /// The first anchors' offsets, until the mapping is set.
    startup: Vec<i64>,
    /// The smoothed anchors when the mapping was last set from them.
    anchor_base: f64,
    placed: Arc<std::sync::atomic::AtomicBool>,
    buf: Vec<f32>,
    cleaned: Vec<f32>,
    dump: Option<Dump>,
    best_second_erle_db: Option<f32>,
    delay_moves: u32,
}

/// `VOICERELAY_AEC_DUMP=DIR`: the canceller's input and output as 16 kHz WAVs (`near.wav`, the
/// microphone; `far.wav`, the reference placed where the anchors put it on the microphone's
/// clock; `out.wav`) and `anchors.csv`, so a run on a real device can be replayed offline
/// (`cargo run -p voicerelay-evals --example aec_replay -- DIR`). Like WebRTC's aecdump.
struct Dump {
    near: hound::WavWriter<std::io::BufWriter<std::fs::File>>,
    far: hound::WavWriter<std::io::BufWriter<std::fs::File>>,
    out: hound::WavWriter<std::io::BufWriter<std::fs::File>>,
    anchors: std::io::BufWriter<std::fs::File>,
    /// Next near-clock position `far.wav` will hold.
    far_cursor: u64,
}

impl Dump {
    fn from_env() -> Result<Option<Dump>> {
        let Some(dir) = std::env::var_os("VOICERELAY_AEC_DUMP") else {
            return Ok(None);
        };
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("VOICERELAY_AEC_DUMP: cannot create {}", dir.display()))?;
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: RATE.hz(),
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let wav = |name: &str| {
            hound::WavWriter::create(dir.join(name), spec)
                .with_context(|| format!("VOICERELAY_AEC_DUMP: cannot write {name}"))
        };
        let mut anchors = std::io::BufWriter::new(std::fs::File::create(dir.join("anchors.csv"))?);
        use std::io::Write;
        writeln!(anchors, "far16,measured,smoothed,applied")?;
        tracing::warn!(dir = %dir.display(), "dumping the echo canceller's audio");
        Ok(Some(Dump {
            near: wav("near.wav")?,
            far: wav("far.wav")?,
            out: wav("out.wav")?,
            anchors,
            far_cursor: 0,
        }))
    }

    /// Far samples placed at `at` on the near clock: gaps are silence, overlaps are dropped
    /// (what [`EchoCanceller::push_far`] does).
    fn far(&mut self, samples: &[f32], at: u64) -> Result<()> {
        while self.far_cursor < at {
            self.far.write_sample(0.0f32)?;
            self.far_cursor += 1;
        }
        let skip = (self.far_cursor - at).min(samples.len() as u64) as usize;
        for &s in &samples[skip..] {
            self.far.write_sample(s)?;
        }
        self.far_cursor += (samples.len() - skip) as u64;
        Ok(())
    }
}

impl Worker {
    fn run(&mut self) -> Result<AecSummary> {
        let mut last_report = 0u64;
        let mut last_echo = (0.0f64, 0.0f64);
        loop {
            let has_mic = self.mic.wait_for_data(Duration::from_millis(20));
            // Far first: what was played is normally known before its echo is captured.
            self.drain_far()?;
            if !has_mic {
                if self.mic.is_producer_closed() {
                    return Ok(AecSummary {
                        stats: self.aec.stats(),
                        best_second_erle_db: self.best_second_erle_db,
                        delay_moves: self.delay_moves,
                    });
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
                        self.delay_moves += u32::from(change.previous.is_some());
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
                if let Some(d) = self.dump.as_mut() {
                    for &v in &self.buf {
                        d.near.write_sample(v)?;
                    }
                    for &v in &self.cleaned {
                        d.out.write_sample(v)?;
                    }
                }
            }
            if self.mic16 >= last_report + u64::from(RATE.hz()) {
                last_report = self.mic16;
                let st = self.aec.stats();
                // Once a second: how much echo the canceller removed over that second's far-active
                // audio (the null-sink test reads it; none when nothing played).
                let (e_in, e_out) = (
                    st.echo_in_energy - last_echo.0,
                    st.echo_out_energy - last_echo.1,
                );
                last_echo = (st.echo_in_energy, st.echo_out_energy);
                let erle = (e_in > 0.0).then(|| (10.0 * (e_in / e_out.max(1e-20)).log10()) as f32);
                tracing::debug!(
                    converged = st.converged,
                    erle_db = erle,
                    delay_ms = st.delay.map(|d| d as f64 / 16.0),
                    "aec"
                );
                if let Some(e) = erle {
                    metrics::gauge!("aec_erle_db").set(f64::from(e));
                    self.best_second_erle_db =
                        Some(self.best_second_erle_db.map_or(e, |b| b.max(e)));
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
                let mut at = self.far16 as i64 + off;
                // The callback hands a sample over before it is played, so it cannot have been
                // audible before the microphone's present. Anchors that say so are wrong (right
                // after a null sink's loopback was loaded they put the far end 1.25 s in the
                // past, where neither the filter nor the tracker ever sees it): place it at the
                // present and let the tracker find the rest.
                if at < self.mic16 as i64 - PAST_SLACK_SAMPLES {
                    let placed = self.mic16 as i64 - self.far16 as i64;
                    tracing::info!(
                        offset = placed,
                        anchors = off,
                        "aec far end placed at the present"
                    );
                    self.offset = Some(placed);
                    at = self.mic16 as i64;
                }
                if at >= 0 {
                    self.aec.push_far(&self.buf, SampleIndex(at as u64));
                    if let Some(d) = self.dump.as_mut() {
                        d.far(&self.buf, at as u64)?;
                    }
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
        let measured = clock_offset(far, near, RATE);
        let m = measured as f64;
        let smoothed = match self.smoothed {
            Some(s) if (m - s).abs() <= JUMP_SAMPLES => s + SMOOTHING * (m - s),
            _ => m,
        };
        self.smoothed = Some(smoothed);
        if let Some(d) = self.dump.as_mut() {
            use std::io::Write;
            let applied = self.offset.map_or(String::new(), |o| o.to_string());
            let _ = writeln!(
                d.anchors,
                "{},{measured},{smoothed:.1},{applied}",
                self.far16
            );
        }
        match self.offset {
            None => {
                self.startup.push(measured);
                if self.startup.len() >= STARTUP_ANCHORS {
                    self.startup.sort_unstable();
                    let median = self.startup[self.startup.len() / 2];
                    let spread = self.startup[self.startup.len() - 1] - self.startup[0];
                    self.offset = Some(median - SAFETY_SAMPLES);
                    self.smoothed = Some(median as f64);
                    self.anchor_base = median as f64;
                    self.placed
                        .store(true, std::sync::atomic::Ordering::Release);
                    tracing::debug!(offset = median - SAFETY_SAMPLES, spread, "aec clock anchor");
                }
            }
            Some(cur) => {
                // A step in the anchors (not their value: the placement may have been corrected
                // since) moves the mapping by the same amount.
                let step = smoothed - self.anchor_base;
                if step.abs() > REANCHOR_SAMPLES {
                    let new = cur + step.round() as i64;
                    tracing::info!(offset = new, previous = cur, "aec clock anchor moved");
                    self.offset = Some(new);
                    self.anchor_base = smoothed;
                }
            }
        }
    }
}
