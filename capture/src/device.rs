//! Sound devices through cpal: listing, selection by name, the microphone source and the speaker
//! sink.
//!
//! cpal is built with its pure-Rust PulseAudio host as well as ALSA; the default host is
//! PulseAudio when a server answers, ALSA otherwise. The data callbacks below only move samples
//! between the device buffer and a ring ([`AudioProducer::push`] / [`AudioConsumer::fill_or_silence`])
//! and bump atomics; conversion scratch space is allocated before the stream starts.

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vr_core::SampleRate;

use crate::ring::{AudioConsumer, AudioFormat, AudioProducer, RingMonitor};
use crate::CaptureError;

/// Samples converted per step when the device is not f32 (scratch is this big, preallocated).
const SCRATCH: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Input,
    Output,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }
}

/// One device as listed by the host.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    pub name: String,
    pub direction: Direction,
    pub is_default: bool,
    /// The device's preferred format, if it could be queried.
    pub default_format: Option<AudioFormat>,
    pub sample_format: Option<String>,
}

fn backend(context: impl Into<String>) -> impl FnOnce(cpal::Error) -> CaptureError {
    let context = context.into();
    move |e| CaptureError::Backend {
        context,
        message: e.to_string(),
    }
}

fn device_name(d: &cpal::Device) -> String {
    d.description()
        .map(|d| d.name().to_string())
        .unwrap_or_else(|_| d.to_string())
}

/// The host in use ("PulseAudio", "Alsa", ...).
pub fn host_name() -> String {
    format!("{:?}", cpal::default_host().id())
}

/// ALSA without `/dev/snd` has only software plugins (the unclocked "null" device, resamplers,
/// bridges to servers that are not running): nothing that really plays or records. Treat that as
/// "no device" so the user gets a clear error instead of a silent null microphone.
fn alsa_without_sound_card(host: &cpal::Host) -> bool {
    cfg!(target_os = "linux")
        && host.id().name().eq_ignore_ascii_case("alsa")
        && !std::path::Path::new("/dev/snd").exists()
}

const NO_CARD_HINT: &str =
    "; no sound card (/dev/snd is absent) and no PulseAudio server is running: \
     start one, or run under scripts/with-pulseaudio for a virtual device";

/// Every input and output device of the default host, defaults first. Empty when the host has
/// no real device (see [`find_device`]'s errors).
pub fn list_devices() -> Result<Vec<DeviceInfo>, CaptureError> {
    let host = cpal::default_host();
    let mut out = Vec::new();
    if alsa_without_sound_card(&host) {
        return Ok(out);
    }
    for dir in [Direction::Input, Direction::Output] {
        let default_name = match dir {
            Direction::Input => host.default_input_device(),
            Direction::Output => host.default_output_device(),
        }
        .map(|d| device_name(&d));
        let devices: Vec<cpal::Device> = match dir {
            Direction::Input => host
                .input_devices()
                .map_err(backend("listing input devices"))?
                .collect(),
            Direction::Output => host
                .output_devices()
                .map_err(backend("listing output devices"))?
                .collect(),
        };
        for d in devices {
            let name = device_name(&d);
            let cfg = match dir {
                Direction::Input => d.default_input_config(),
                Direction::Output => d.default_output_config(),
            };
            let (default_format, sample_format) = match cfg {
                Ok(c) => (
                    Some(AudioFormat {
                        rate: SampleRate(c.sample_rate()),
                        channels: c.channels(),
                    }),
                    Some(format!("{:?}", c.sample_format())),
                ),
                // A device that cannot report a config is still worth listing.
                Err(_) => (None, None),
            };
            out.push(DeviceInfo {
                is_default: default_name.as_deref() == Some(name.as_str()),
                name,
                direction: dir,
                default_format,
                sample_format,
            });
        }
    }
    out.sort_by_key(|d| (d.direction != Direction::Input, !d.is_default));
    Ok(out)
}

/// Finds a device: empty `name` = the host default, else the first whose name contains `name`
/// (case-insensitive). Errors list what exists.
pub fn find_device(dir: Direction, name: &str) -> Result<cpal::Device, CaptureError> {
    let host = cpal::default_host();
    let hint = if cfg!(target_os = "linux") {
        "; no sound card and no PulseAudio server? (run under scripts/with-pulseaudio for a virtual device)"
            .to_string()
    } else {
        String::new()
    };
    if alsa_without_sound_card(&host) {
        return Err(CaptureError::NoDevice {
            direction: dir.as_str(),
            host: format!("{:?}", host.id()),
            hint: NO_CARD_HINT.to_string(),
        });
    }
    if name.is_empty() {
        let d = match dir {
            Direction::Input => host.default_input_device(),
            Direction::Output => host.default_output_device(),
        };
        return d.ok_or_else(|| CaptureError::NoDevice {
            direction: dir.as_str(),
            host: format!("{:?}", host.id()),
            hint,
        });
    }
    let devices: Vec<cpal::Device> = match dir {
        Direction::Input => host
            .input_devices()
            .map_err(backend("listing input devices"))?
            .collect(),
        Direction::Output => host
            .output_devices()
            .map_err(backend("listing output devices"))?
            .collect(),
    };
    let wanted = name.to_lowercase();
    let names: Vec<String> = devices.iter().map(device_name).collect();
    match names
        .iter()
        .position(|n| n.to_lowercase().contains(&wanted))
    {
        Some(i) => Ok(devices[i].clone()),
        None if devices.is_empty() => Err(CaptureError::NoDevice {
            direction: dir.as_str(),
            host: format!("{:?}", host.id()),
            hint,
        }),
        None => Err(CaptureError::DeviceNotFound {
            direction: dir.as_str(),
            name: name.to_string(),
            available: names.join(", "),
        }),
    }
}

/// Where a device stream's frames sit on one process-wide clock: the latest callback's first
/// frame index and the instant that frame is captured (microphone) or audible (speaker), in ns
/// since [`clock_epoch`]. Written by the real-time callback (a sequence lock of three atomics: no
/// lock, no allocation), read by any thread; used to put the speaker's played samples on the
/// microphone's sample clock for echo cancellation.
///
/// cpal's timestamps are per stream (the PulseAudio host counts from each stream's creation), so
/// the callback converts them: its own `Instant::now()` minus (callback − capture), or plus
/// (playback − callback).
#[derive(Debug, Default)]
pub struct ClockAnchor {
    seq: AtomicU64,
    frame: AtomicU64,
    ns: AtomicU64,
}

impl ClockAnchor {
    fn store(&self, frame: u64, ns: u64) {
        // Single writer (the callback): odd sequence while the pair is being written.
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        self.frame.store(frame, Ordering::Relaxed);
        self.ns.store(ns, Ordering::Relaxed);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// `(frame, ns since clock_epoch())` of the latest callback, or `None` before the first.
    pub fn load(&self) -> Option<(u64, u64)> {
        for _ in 0..64 {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let frame = self.frame.load(Ordering::Relaxed);
            let ns = self.ns.load(Ordering::Relaxed);
            std::sync::atomic::fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return (s1 > 0).then_some((frame, ns));
            }
        }
        None
    }
}

/// The process-wide instant [`ClockAnchor`] times count from (fixed on first use, before any
/// stream starts, so callbacks only read it).
pub fn clock_epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn since_epoch(epoch: Instant) -> u64 {
    u64::try_from(Instant::now().saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// A chosen input device with the format it will deliver.
pub struct Microphone {
    device: cpal::Device,
    name: String,
    config: cpal::StreamConfig,
    sample_format: cpal::SampleFormat,
}

impl Microphone {
    /// Opens the input device named `name` (see [`find_device`]) at its default format.
    /// `buffer_frames` = 0 keeps the backend's buffer size.
    pub fn open(name: &str, buffer_frames: u32) -> Result<Self, CaptureError> {
        let device = find_device(Direction::Input, name)?;
        let name = device_name(&device);
        let supported = device
            .default_input_config()
            .map_err(backend(format!("default config of input {name:?}")))?;
        let mut config = supported.config();
        if buffer_frames > 0 {
            config.buffer_size = cpal::BufferSize::Fixed(buffer_frames);
        }
        Ok(Self {
            device,
            name,
            config,
            sample_format: supported.sample_format(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn format(&self) -> AudioFormat {
        AudioFormat {
            rate: SampleRate(self.config.sample_rate),
            channels: self.config.channels,
        }
    }

    /// Starts capturing into `producer` (whose format must be [`Microphone::format`]).
    pub fn start(self, producer: AudioProducer) -> Result<RunningStream, CaptureError> {
        self.start_anchored(producer, Arc::new(ClockAnchor::default()))
    }

    /// Like [`Microphone::start`], and each callback records in `anchor` when its first frame
    /// was captured.
    pub fn start_anchored(
        self,
        mut producer: AudioProducer,
        anchor: Arc<ClockAnchor>,
    ) -> Result<RunningStream, CaptureError> {
        check_format("microphone ring", producer.format(), self.format())?;
        let epoch = clock_epoch();
        let monitor = producer.monitor();
        let errors = Arc::new(AtomicU64::new(0));
        let err_cb = {
            let errors = errors.clone();
            move |_e: cpal::Error| {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        };
        let ctx = format!("opening input {:?}", self.name);
        let stream = match self.sample_format {
            cpal::SampleFormat::F32 => self
                .device
                .build_input_stream::<f32, _, _>(
                    self.config,
                    move |data: &[f32], info: &cpal::InputCallbackInfo| {
                        stamp_input(&anchor, &producer, info, epoch);
                        producer.push(data);
                    },
                    err_cb,
                    None,
                )
                .map_err(backend(ctx))?,
            cpal::SampleFormat::I16 => {
                integer_input::<i16>(&self.device, self.config, producer, anchor, err_cb)
                    .map_err(backend(ctx))?
            }
            cpal::SampleFormat::I32 => {
                integer_input::<i32>(&self.device, self.config, producer, anchor, err_cb)
                    .map_err(backend(ctx))?
            }
            other => {
                return Err(CaptureError::Backend {
                    context: format!("input {:?}", self.name),
                    message: format!("sample format {other:?} is not supported"),
                })
            }
        };
        stream
            .play()
            .map_err(backend(format!("starting input {:?}", self.name)))?;
        tracing::info!(device = %self.name, format = ?self.format(), "microphone started");
        Ok(RunningStream {
            stream,
            monitor,
            errors,
            name: self.name,
            playback: None,
        })
    }
}

trait ToF32: Copy {
    fn to_f32(self) -> f32;
}
impl ToF32 for i16 {
    fn to_f32(self) -> f32 {
        f32::from(self) / 32768.0
    }
}
impl ToF32 for i32 {
    fn to_f32(self) -> f32 {
        self as f32 / 2_147_483_648.0
    }
}

/// An input stream of integer samples, converted to f32 in a scratch buffer allocated here,
/// before the stream starts: the callback itself never allocates.
fn integer_input<T: ToF32 + cpal::SizedSample + Send + 'static>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    mut producer: AudioProducer,
    anchor: Arc<ClockAnchor>,
    err_cb: impl FnMut(cpal::Error) + Send + 'static,
) -> Result<cpal::Stream, cpal::Error> {
    let mut scratch = vec![0f32; SCRATCH];
    let epoch = clock_epoch();
    device.build_input_stream::<T, _, _>(
        config,
        move |data: &[T], info: &cpal::InputCallbackInfo| {
            stamp_input(&anchor, &producer, info, epoch);
            push_converted(&mut producer, &mut scratch, data);
        },
        err_cb,
        None,
    )
}

/// Records when the callback's first frame was captured (see [`ClockAnchor`]).
fn stamp_input(
    anchor: &ClockAnchor,
    producer: &AudioProducer,
    info: &cpal::InputCallbackInfo,
    epoch: Instant,
) {
    let t = info.timestamp();
    let age = t.callback.duration_since(t.capture).as_nanos() as u64;
    anchor.store(
        producer.position().0,
        since_epoch(epoch).saturating_sub(age),
    );
}

/// Converts in scratch-sized steps so the callback never allocates, whatever the buffer size.
fn push_converted<T: ToF32>(producer: &mut AudioProducer, scratch: &mut [f32], data: &[T]) {
    let ch = usize::from(producer.format().channels);
    let step = (scratch.len() / ch).max(1) * ch;
    for part in data.chunks(step) {
        for (d, s) in scratch.iter_mut().zip(part) {
            *d = s.to_f32();
        }
        producer.push(&scratch[..part.len()]);
    }
}

fn check_format(
    what: &'static str,
    ring: AudioFormat,
    device: AudioFormat,
) -> Result<(), CaptureError> {
    if ring == device {
        Ok(())
    } else {
        Err(CaptureError::InvalidArgument {
            what,
            reason: format!("ring carries {ring:?}, device delivers {device:?}"),
        })
    }
}

/// A chosen output device.
pub struct Speaker {
    device: cpal::Device,
    name: String,
    config: cpal::StreamConfig,
}

impl Speaker {
    /// Opens the output device `name` (see [`find_device`]) in f32 at `rate` (the device's
    /// default rate if `None`) with its default channel count.
    pub fn open(
        name: &str,
        rate: Option<SampleRate>,
        buffer_frames: u32,
    ) -> Result<Self, CaptureError> {
        let device = find_device(Direction::Output, name)?;
        let name = device_name(&device);
        let supported = device
            .default_output_config()
            .map_err(backend(format!("default config of output {name:?}")))?;
        let mut config = supported.config();
        if let Some(r) = rate {
            config.sample_rate = r.hz();
        }
        if buffer_frames > 0 {
            config.buffer_size = cpal::BufferSize::Fixed(buffer_frames);
        }
        Ok(Self {
            device,
            name,
            config,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn format(&self) -> AudioFormat {
        AudioFormat {
            rate: SampleRate(self.config.sample_rate),
            channels: self.config.channels,
        }
    }

    /// Starts playing from `consumer`; when it runs dry the device gets silence and the ring
    /// counts an underrun.
    pub fn start(self, consumer: AudioConsumer) -> Result<RunningStream, CaptureError> {
        self.start_flushable(consumer).map(|(stream, _)| stream)
    }

    /// Like [`Speaker::start`], plus a [`PlaybackControl`] for the playback clock and barge-in
    /// flushes. One callback serves both: it carries out flush requests (it owns the ring's
    /// consuming end, so only it can drop queued frames), keeps the playback clock, and records
    /// when the last real frame will be audible for [`RunningStream::drain`].
    pub fn start_flushable(
        self,
        consumer: AudioConsumer,
    ) -> Result<(RunningStream, PlaybackControl), CaptureError> {
        self.start_with_reference(consumer, None)
    }

    /// Like [`Speaker::start_flushable`], and with `reference` = (producer, anchor) the callback
    /// also pushes exactly what it handed to the device (silence included, so the reference
    /// ring's positions are the playback clock) and records in the anchor when the buffer's first
    /// frame becomes audible: the far end for echo cancellation.
    pub fn start_with_reference(
        self,
        mut consumer: AudioConsumer,
        mut reference: Option<(AudioProducer, Arc<ClockAnchor>)>,
    ) -> Result<(RunningStream, PlaybackControl), CaptureError> {
        check_format("speaker ring", consumer.format(), self.format())?;
        if let Some((r, _)) = &reference {
            check_format("speaker reference ring", r.format(), self.format())?;
        }
        let epoch = clock_epoch();
        let monitor = consumer.monitor();
        let errors = Arc::new(AtomicU64::new(0));
        let errors2 = errors.clone();
        let playback = Arc::new(PlaybackProgress::default());
        let progress = playback.clone();
        let control = PlaybackControl::default();
        let shared = control.inner.clone();
        let rate = self.format().rate;
        let channels = usize::from(self.config.channels.max(1));
        let mut seen = 0u64;
        let stream = self
            .device
            .build_output_stream::<f32, _, _>(
                self.config,
                move |out: &mut [f32], info: &cpal::OutputCallbackInfo| {
                    let requested = shared.requested.load(Ordering::Acquire);
                    if requested != seen {
                        let mut dropped = 0u64;
                        while let Some(chunk) = consumer.peek() {
                            let n = chunk.samples.len() / channels;
                            consumer.consume(n);
                            dropped += n as u64;
                        }
                        // Dropped frames count as handed over, so a drain after a flush ends.
                        progress.handed_frames.fetch_add(dropped, Ordering::Release);
                        shared.dropped.store(dropped, Ordering::Release);
                        shared.done.store(requested, Ordering::Release);
                        seen = requested;
                    }
                    let frames = consumer.fill_or_silence(out);
                    if let Some((r, anchor)) = reference.as_mut() {
                        let t = info.timestamp();
                        let ahead = t.playback.duration_since(t.callback).as_nanos() as u64;
                        anchor.store(r.position().0, since_epoch(epoch).saturating_add(ahead));
                        // Drop-newest on overrun: a stalled canceller loses reference, never
                        // blocks playback.
                        r.push(out);
                    }
                    shared
                        .played
                        .fetch_add((out.len() / channels) as u64, Ordering::AcqRel);
                    if frames > 0 {
                        // Real frames go first in `out`, so the last one is audible `frames`
                        // after the buffer's predicted playback instant.
                        let end = info.timestamp().playback.as_nanos()
                            + rate.duration_of(frames as u64).as_nanos();
                        let end = u64::try_from(end).unwrap_or(u64::MAX);
                        progress.audible_until_ns.fetch_max(end, Ordering::Relaxed);
                        // Release: a drain that sees this count also sees the instant above.
                        progress
                            .handed_frames
                            .fetch_add(frames as u64, Ordering::Release);
                    }
                },
                move |_e| {
                    errors2.fetch_add(1, Ordering::Relaxed);
                },
                None,
            )
            .map_err(backend(format!("opening output {:?}", self.name)))?;
        stream
            .play()
            .map_err(backend(format!("starting output {:?}", self.name)))?;
        tracing::info!(device = %self.name, format = ?self.format(), "speaker started");
        Ok((
            RunningStream {
                stream,
                monitor,
                errors,
                name: self.name,
                playback: Some(playback),
            },
            control,
        ))
    }
}

/// What a speaker callback has handed to the device, for [`RunningStream::drain`]. Written only
/// by the real-time callback (atomics, no lock).
#[derive(Debug, Default)]
struct PlaybackProgress {
    /// Frames taken from the ring and given to the device (silence not included).
    handed_frames: AtomicU64,
    /// Stream-clock instant (ns, cpal's [`StreamTrait::now`] base) at which the last of them is
    /// predicted to be audible; the backend's own latency estimate, so server-side buffering
    /// (PulseAudio's default target is about 2 s) is included.
    audible_until_ns: AtomicU64,
}

/// Slack over the backend's playback prediction: its latency estimate is interpolated between
/// polls (cpal's PulseAudio backend polls every 100 ms at most).
const DRAIN_MARGIN: Duration = Duration::from_millis(150);

/// The control side of a speaker started with [`Speaker::start_flushable`]: its playback clock and
/// a flush that the output callback carries out (the callback owns the ring's consuming end, so
/// only it can drop queued frames). Lock-free: atomics only.
#[derive(Clone, Default)]
pub struct PlaybackControl {
    inner: Arc<PlaybackShared>,
}

#[derive(Default)]
struct PlaybackShared {
    /// Frames handed to the device so far, silence included: the playback clock.
    played: AtomicU64,
    /// Flush requests made / carried out (the callback copies `requested` into `done`).
    requested: AtomicU64,
    done: AtomicU64,
    /// Frames the last flush dropped.
    dropped: AtomicU64,
}

impl PlaybackControl {
    /// Frames played so far (silence included), on the device's clock.
    pub fn played(&self) -> u64 {
        self.inner.played.load(Ordering::Acquire)
    }

    /// Asks the callback to drop everything queued at its next period and waits for it, at most
    /// `timeout`. Returns the frames dropped, or `None` if the callback did not run in time
    /// (a stalled device; the flush still happens when it runs again).
    pub fn flush(&self, timeout: std::time::Duration) -> Option<u64> {
        let ticket = self.inner.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.inner.done.load(Ordering::Acquire) >= ticket {
                return Some(self.inner.dropped.load(Ordering::Acquire));
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// A live device stream; dropping it stops the device.
pub struct RunningStream {
    stream: cpal::Stream,
    monitor: RingMonitor,
    errors: Arc<AtomicU64>,
    name: String,
    /// Set for output streams only.
    playback: Option<Arc<PlaybackProgress>>,
}

impl RunningStream {
    pub fn device_name(&self) -> &str {
        &self.name
    }

    pub fn monitor(&self) -> &RingMonitor {
        &self.monitor
    }

    /// Errors the backend reported on this stream so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// For a speaker whose producer has finished: waits until every frame that entered the ring
    /// has been handed to the device *and* is predicted to have been played, so stopping the
    /// stream afterwards cuts nothing off (stopping discards whatever the backend still buffers).
    /// Fails if the device makes no progress for `stall_timeout`.
    pub fn drain(&self, stall_timeout: Duration) -> Result<(), CaptureError> {
        let Some(progress) = &self.playback else {
            return Err(CaptureError::InvalidArgument {
                what: "drain",
                reason: format!("{:?} is an input stream", self.name),
            });
        };
        let poll = Duration::from_millis(10);
        let mut last = progress.handed_frames.load(Ordering::Acquire);
        let mut last_progress = Instant::now();
        // The producer is done, so `stored` is final: wait for the callback to take all of it.
        while last < self.monitor.stats().stored {
            std::thread::sleep(poll);
            let now = progress.handed_frames.load(Ordering::Acquire);
            if now != last {
                last = now;
                last_progress = Instant::now();
            } else if last_progress.elapsed() > stall_timeout {
                return Err(CaptureError::Backend {
                    context: format!("draining output {:?}", self.name),
                    message: format!(
                        "the device stopped taking audio ({} of {} frames played)",
                        last,
                        self.monitor.stats().stored
                    ),
                });
            }
        }
        let until = progress.audible_until_ns.load(Ordering::Relaxed);
        let now = u64::try_from(self.stream.now().as_nanos()).unwrap_or(u64::MAX);
        let wait = Duration::from_nanos(until.saturating_sub(now)) + DRAIN_MARGIN;
        if wait > stall_timeout + DRAIN_MARGIN {
            // A prediction this far out is a backend estimate gone wrong, not real buffering.
            tracing::warn!(device = %self.name, ?wait, "implausible playback latency; waiting the stall timeout");
        }
        std::thread::sleep(wait.min(stall_timeout + DRAIN_MARGIN));
        Ok(())
    }

    /// Stops the device.
    pub fn stop(self) -> Result<(), CaptureError> {
        let errors = self.errors();
        if errors > 0 {
            tracing::warn!(device = %self.name, errors, "audio stream reported errors");
        }
        Ok(())
    }
}
