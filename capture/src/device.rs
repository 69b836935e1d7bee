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
    pub fn start(self, mut producer: AudioProducer) -> Result<RunningStream, CaptureError> {
        check_format("microphone ring", producer.format(), self.format())?;
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
                    move |data: &[f32], _| {
                        producer.push(data);
                    },
                    err_cb,
                    None,
                )
                .map_err(backend(ctx))?,
            cpal::SampleFormat::I16 => {
                let mut scratch = vec![0f32; SCRATCH];
                self.device
                    .build_input_stream::<i16, _, _>(
                        self.config,
                        move |data: &[i16], _| push_converted(&mut producer, &mut scratch, data),
                        err_cb,
                        None,
                    )
                    .map_err(backend(ctx))?
            }
            cpal::SampleFormat::I32 => {
                let mut scratch = vec![0f32; SCRATCH];
                self.device
                    .build_input_stream::<i32, _, _>(
                        self.config,
                        move |data: &[i32], _| push_converted(&mut producer, &mut scratch, data),
                        err_cb,
                        None,
                    )
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
            _stream: stream,
            monitor,
            errors,
            name: self.name,
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
    pub fn start(self, mut consumer: AudioConsumer) -> Result<RunningStream, CaptureError> {
        check_format("speaker ring", consumer.format(), self.format())?;
        let monitor = consumer.monitor();
        let errors = Arc::new(AtomicU64::new(0));
        let errors2 = errors.clone();
        let stream = self
            .device
            .build_output_stream::<f32, _, _>(
                self.config,
                move |out: &mut [f32], _| {
                    consumer.fill_or_silence(out);
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
        Ok(RunningStream {
            _stream: stream,
            monitor,
            errors,
            name: self.name,
        })
    }
}

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

impl Speaker {
    /// Like [`Speaker::start`], plus a [`PlaybackControl`] for the playback clock and barge-in
    /// flushes.
    pub fn start_flushable(
        self,
        mut consumer: AudioConsumer,
    ) -> Result<(RunningStream, PlaybackControl), CaptureError> {
        check_format("speaker ring", consumer.format(), self.format())?;
        let monitor = consumer.monitor();
        let errors = Arc::new(AtomicU64::new(0));
        let errors2 = errors.clone();
        let control = PlaybackControl::default();
        let shared = control.inner.clone();
        let channels = usize::from(self.config.channels.max(1));
        let mut seen = 0u64;
        let stream = self
            .device
            .build_output_stream::<f32, _, _>(
                self.config,
                move |out: &mut [f32], _| {
                    let requested = shared.requested.load(Ordering::Acquire);
                    if requested != seen {
                        let mut dropped = 0u64;
                        while let Some(chunk) = consumer.peek() {
                            let n = chunk.samples.len() / channels;
                            consumer.consume(n);
                            dropped += n as u64;
                        }
                        shared.dropped.store(dropped, Ordering::Release);
                        shared.done.store(requested, Ordering::Release);
                        seen = requested;
                    }
                    consumer.fill_or_silence(out);
                    shared
                        .played
                        .fetch_add((out.len() / channels) as u64, Ordering::AcqRel);
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
        tracing::info!(device = %self.name, format = ?self.format(), "speaker started (flushable)");
        Ok((
            RunningStream {
                _stream: stream,
                monitor,
                errors,
                name: self.name,
            },
            control,
        ))
    }
}

/// A live device stream; dropping it stops the device.
pub struct RunningStream {
    _stream: cpal::Stream,
    monitor: RingMonitor,
    errors: Arc<AtomicU64>,
    name: String,
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

    /// Stops the device.
    pub fn stop(self) -> Result<(), CaptureError> {
        let errors = self.errors();
        if errors > 0 {
            tracing::warn!(device = %self.name, errors, "audio stream reported errors");
        }
        Ok(())
    }
}
