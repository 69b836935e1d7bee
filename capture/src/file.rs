//! Audio files as sources (WAV through hound, FLAC through claxon, both pure Rust) and a WAV
//! writer as a sink.
//!
//! A file source runs on its own thread. Paced, it behaves like a microphone: it pushes a chunk
//! every `chunk` of audio time on an absolute schedule (no drift) and, like a device, drops and
//! counts what does not fit. Fast, it waits for ring space and never drops.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vr_core::SampleRate;

use crate::ring::{AudioConsumer, AudioFormat, AudioProducer};
use crate::CaptureError;

/// How a file source delivers samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// At the file's rate, in chunks of the given duration.
    RealTime { chunk: Duration },
    /// As fast as the ring drains.
    Fast,
}

impl Pacing {
    /// Real time in 10 ms chunks, like a typical device callback.
    pub fn real_time() -> Pacing {
        Pacing::RealTime {
            chunk: Duration::from_millis(10),
        }
    }
}

enum Decoder {
    Wav {
        reader: hound::WavReader<BufReader<File>>,
        float: bool,
        scale: f32,
    },
    Flac {
        reader: claxon::FlacReader<BufReader<File>>,
        scale: f32,
    },
}

/// An opened, validated audio file; decoding happens incrementally on the reader thread.
pub struct FileSource {
    path: PathBuf,
    format: AudioFormat,
    frames: Option<u64>,
    decoder: Decoder,
    pacing: Pacing,
}

impl FileSource {
    /// Opens a WAV or FLAC file (chosen by content, not by extension).
    pub fn open(path: &Path, pacing: Pacing) -> Result<Self, CaptureError> {
        let file_err = |reason: String| CaptureError::File {
            path: path.to_path_buf(),
            reason,
        };
        let mut magic = [0u8; 4];
        {
            use std::io::Read;
            let mut f = File::open(path).map_err(|e| file_err(e.to_string()))?;
            f.read_exact(&mut magic)
                .map_err(|e| file_err(format!("too short to be audio ({e})")))?;
        }
        let unsupported = |reason: String| CaptureError::UnsupportedFile {
            path: path.to_path_buf(),
            reason,
        };
        let open = || {
            File::open(path)
                .map(BufReader::new)
                .map_err(|e| file_err(e.to_string()))
        };
        let (decoder, format, frames) = match &magic {
            b"RIFF" => {
                let reader =
                    hound::WavReader::new(open()?).map_err(|e| unsupported(e.to_string()))?;
                let spec = reader.spec();
                let float = spec.sample_format == hound::SampleFormat::Float;
                if float && spec.bits_per_sample != 32 {
                    return Err(unsupported(format!(
                        "{}-bit float samples",
                        spec.bits_per_sample
                    )));
                }
                if !float && !(1..=32).contains(&spec.bits_per_sample) {
                    return Err(unsupported(format!("{}-bit samples", spec.bits_per_sample)));
                }
                let frames = u64::from(reader.duration());
                let scale = 1.0 / (1u64 << (spec.bits_per_sample.max(1) - 1)) as f32;
                let fmt = AudioFormat {
                    rate: SampleRate(spec.sample_rate),
                    channels: spec.channels,
                };
                (
                    Decoder::Wav {
                        reader,
                        float,
                        scale,
                    },
                    fmt,
                    Some(frames),
                )
            }
            b"fLaC" => {
                let reader =
                    claxon::FlacReader::new(open()?).map_err(|e| unsupported(e.to_string()))?;
                let info = reader.streaminfo();
                let scale = 1.0 / (1u64 << (info.bits_per_sample.max(1) - 1)) as f32;
                let fmt = AudioFormat {
                    rate: SampleRate(info.sample_rate),
                    channels: info.channels as u16,
                };
                (Decoder::Flac { reader, scale }, fmt, info.samples)
            }
            _ => {
                return Err(unsupported(
                    "neither a RIFF/WAVE nor a FLAC stream".to_string(),
                ))
            }
        };
        if format.channels == 0 || format.rate.hz() == 0 {
            return Err(unsupported(format!(
                "{} channels at {}",
                format.channels, format.rate
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            format,
            frames,
            decoder,
            pacing,
        })
    }

    pub fn format(&self) -> AudioFormat {
        self.format
    }

    /// Frames in the file, when the header says.
    pub fn frames(&self) -> Option<u64> {
        self.frames
    }

    /// Starts the reader thread feeding `producer`. The thread ends at the end of the file, on a
    /// decode error, when stopped, or when the consumer is dropped.
    pub fn start(self, mut producer: AudioProducer) -> Result<RunningFile, CaptureError> {
        if producer.format() != self.format {
            return Err(CaptureError::InvalidArgument {
                what: "file source ring",
                reason: format!(
                    "ring carries {:?}, file is {:?}",
                    producer.format(),
                    self.format
                ),
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("vr-file-source".into())
            .spawn(move || {
                let mut me = self;
                me.run(&mut producer, &stop2)
            })
            .map_err(|e| CaptureError::Backend {
                context: "spawning file reader".into(),
                message: e.to_string(),
            })?;
        Ok(RunningFile {
            stop,
            handle: Some(handle),
        })
    }

    /// Decodes the whole file into interleaved f32 (for tests and offline tools).
    pub fn read_all(mut self) -> Result<(AudioFormat, Vec<f32>), CaptureError> {
        let ch = usize::from(self.format.channels);
        // The header's length is a hint, not a promise: a corrupt FLAC header asked for 467 GB
        // (the loader fuzz). Reserve at most 10 minutes up front; the rest grows as decoded.
        let hint = self
            .frames
            .unwrap_or(0)
            .min(u64::from(self.format.rate.hz()) * 600);
        let mut out = Vec::with_capacity(hint as usize * ch);
        while self.decode(&mut out, 1 << 16)? > 0 {}
        // A file cut inside its last frame: keep whole frames only.
        out.truncate(out.len() / ch * ch);
        Ok((self.format, out))
    }

    fn run(
        &mut self,
        producer: &mut AudioProducer,
        stop: &AtomicBool,
    ) -> Result<u64, CaptureError> {
        let rate = self.format.rate;
        let ch = usize::from(self.format.channels);
        let chunk_frames = match self.pacing {
            Pacing::RealTime { chunk } => rate.samples_in(chunk).max(1) as usize,
            Pacing::Fast => 4096,
        };
        let mut buf = Vec::with_capacity(chunk_frames * ch);
        let start = Instant::now();
        let mut sent = 0u64;
        while !stop.load(Ordering::Acquire) && !producer.is_abandoned() {
            buf.clear();
            if self.decode(&mut buf, chunk_frames * ch)? == 0 {
                break;
            }
            // Whole frames only (a file cut inside its last frame).
            buf.truncate(buf.len() / ch * ch);
            if buf.is_empty() {
                break;
            }
            let frames = (buf.len() / ch) as u64;
            match self.pacing {
                Pacing::RealTime { .. } => {
                    // Absolute schedule: chunk k is due at start + duration(k frames).
                    let due = start + rate.duration_of(sent);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    producer.push(&buf);
                }
                Pacing::Fast => {
                    producer.push_blocking(&buf, Duration::from_secs(3600));
                }
            }
            sent += frames;
        }
        tracing::debug!(path = %self.path.display(), frames = sent, "file source finished");
        Ok(sent)
    }

    /// Appends up to `max` interleaved samples; returns how many were appended (0 at the end).
    fn decode(&mut self, out: &mut Vec<f32>, max: usize) -> Result<usize, CaptureError> {
        let path = &self.path;
        let bad = |reason: String| CaptureError::File {
            path: path.clone(),
            reason,
        };
        let before = out.len();
        match &mut self.decoder {
            Decoder::Wav {
                reader,
                float,
                scale,
            } => {
                if *float {
                    for s in reader.samples::<f32>().take(max) {
                        let s = s.map_err(|e| bad(e.to_string()))?;
                        // NaN or infinity would poison every filter and model downstream.
                        if !s.is_finite() {
                            return Err(bad(format!(
                                "a non-finite float sample ({s}) after {} samples",
                                out.len()
                            )));
                        }
                        out.push(s);
                    }
                } else {
                    for s in reader.samples::<i32>().take(max) {
                        out.push(s.map_err(|e| bad(e.to_string()))? as f32 * *scale);
                    }
                }
            }
            Decoder::Flac { reader, scale } => {
                for s in reader.samples().take(max) {
                    out.push(s.map_err(|e| bad(e.to_string()))? as f32 * *scale);
                }
            }
        }
        Ok(out.len() - before)
    }
}

/// A running file source; dropping it stops the thread.
pub struct RunningFile {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<u64, CaptureError>>>,
}

impl RunningFile {
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Waits for the end of the file; returns the frames delivered (stored or dropped).
    pub fn join(mut self) -> Result<u64, CaptureError> {
        self.take_result()
    }

    /// Stops reading and returns the frames delivered so far.
    pub fn stop(mut self) -> Result<u64, CaptureError> {
        self.stop.store(true, Ordering::Release);
        self.take_result()
    }

    fn take_result(&mut self) -> Result<u64, CaptureError> {
        match self.handle.take() {
            Some(h) => h.join().map_err(|_| CaptureError::ThreadPanicked {
                what: "file source",
            })?,
            None => Ok(0),
        }
    }
}

impl Drop for RunningFile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Reads a whole WAV/FLAC file as interleaved f32.
pub fn read_audio_file(path: &Path) -> Result<(AudioFormat, Vec<f32>), CaptureError> {
    FileSource::open(path, Pacing::Fast)?.read_all()
}

/// Writes 16-bit PCM WAV (the format every player and `paplay` accepts).
pub struct WavSink {
    path: PathBuf,
    writer: hound::WavWriter<std::io::BufWriter<File>>,
    format: AudioFormat,
    frames: u64,
}

impl WavSink {
    pub fn create(path: &Path, format: AudioFormat) -> Result<Self, CaptureError> {
        let spec = hound::WavSpec {
            channels: format.channels,
            sample_rate: format.rate.hz(),
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(path, spec).map_err(|e| CaptureError::Write {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            writer,
            format,
            frames: 0,
        })
    }

    /// Appends interleaved samples (clipped to [-1, 1]).
    pub fn write(&mut self, samples: &[f32]) -> Result<(), CaptureError> {
        for &s in samples {
            let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
            self.writer
                .write_sample(v)
                .map_err(|e| CaptureError::Write {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?;
        }
        self.frames += (samples.len() / usize::from(self.format.channels.max(1))) as u64;
        Ok(())
    }

    /// Writes everything the consumer holds now.
    pub fn drain(&mut self, consumer: &mut AudioConsumer) -> Result<u64, CaptureError> {
        let ch = usize::from(consumer.format().channels);
        let mut n = 0u64;
        while let Some(chunk) = consumer.peek() {
            let frames = chunk.samples.len() / ch;
            self.write(chunk.samples)?;
            consumer.consume(frames);
            n += frames as u64;
        }
        Ok(n)
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Completes the header; without it the file's length fields are wrong.
    pub fn finalize(self) -> Result<u64, CaptureError> {
        let frames = self.frames;
        self.writer.finalize().map_err(|e| CaptureError::Write {
            path: self.path,
            reason: e.to_string(),
        })?;
        Ok(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::audio_ring;

    #[test]
    fn wav_sink_drains_a_ring_and_counts_each_frame_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.wav");
        let format = AudioFormat {
            rate: SampleRate(16_000),
            channels: 2,
        };
        let (mut p, mut c) = audio_ring("sink-test", format, 4096).unwrap();
        let frames: Vec<f32> = (0..2000).map(|i| (i as f32 / 2000.0) - 0.5).collect();
        assert_eq!(p.push(&frames), 1000);
        let mut sink = WavSink::create(&path, format).unwrap();
        assert_eq!(sink.drain(&mut c).unwrap(), 1000);
        sink.write(&[2.0, -2.0]).unwrap();
        assert_eq!(sink.frames(), 1001);
        assert_eq!(sink.finalize().unwrap(), 1001);
        let got: Vec<i16> = hound::WavReader::open(&path)
            .unwrap()
            .samples::<i16>()
            .map(|s| s.unwrap())
            .collect();
        let want: Vec<i16> = frames
            .iter()
            .chain(&[1.0, -1.0])
            .map(|s| (s * 32767.0).round() as i16)
            .collect();
        assert_eq!(got, want);
    }
}
