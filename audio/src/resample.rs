//! Rate and channel conversion with rubato: any device format to the pipeline's 16 kHz mono, TTS
//! rates (22.05 kHz) to 48 kHz for playback and Opus.
//!
//! Channels are averaged to mono *before* resampling (one filter instead of one per channel).
//! The resampler is rubato's synchronous FFT resampler with a fixed input chunk; its startup delay
//! is trimmed and the tail flushed so that streaming output is sample-for-sample the output of
//! [`resample_to_mono`] on the whole signal, whatever the push sizes.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};
use vr_core::SampleRate;

use crate::ring::AudioFormat;
use crate::AudioError;

/// Input frames per FFT chunk: large enough for a sharp anti-aliasing filter, small enough that
/// a 10 ms push at 48 kHz still flows out within ~20 ms.
const CHUNK_FRAMES: usize = 1024;

/// Streaming converter from interleaved `input` format to mono at `output_rate`. All buffers are
/// allocated in [`StreamResampler::new`]; `push` and `finish` allocate nothing.
pub struct StreamResampler {
    input: AudioFormat,
    output_rate: SampleRate,
    inner: Option<Fft<f32>>,
    /// Downmixed input waiting for a full chunk.
    pending: Vec<f32>,
    out: Vec<f32>,
    /// Output frames still to discard at the start (the filter's delay).
    to_trim: usize,
    frames_in: u64,
    frames_out: u64,
}

impl StreamResampler {
    pub fn new(input: AudioFormat, output_rate: SampleRate) -> Result<Self, AudioError> {
        if input.channels == 0 || input.rate.hz() == 0 || output_rate.hz() == 0 {
            return Err(AudioError::InvalidArgument {
                what: "resampler",
                reason: format!(
                    "{} channels at {} to {} is not a conversion",
                    input.channels, input.rate, output_rate
                ),
            });
        }
        let inner = if input.rate == output_rate {
            None
        } else {
            Some(
                Fft::<f32>::new(
                    input.rate.hz() as usize,
                    output_rate.hz() as usize,
                    CHUNK_FRAMES,
                    1,
                    FixedSync::Input,
                )
                .map_err(|e| AudioError::Resample(e.to_string()))?,
            )
        };
        let (out_max, delay) = inner.as_ref().map_or((CHUNK_FRAMES, 0), |r| {
            (r.output_frames_max(), r.output_delay())
        });
        Ok(Self {
            input,
            output_rate,
            inner,
            pending: Vec::with_capacity(CHUNK_FRAMES),
            out: vec![0.0; out_max],
            to_trim: delay,
            frames_in: 0,
            frames_out: 0,
        })
    }

    pub fn input_format(&self) -> AudioFormat {
        self.input
    }

    pub fn output_rate(&self) -> SampleRate {
        self.output_rate
    }

    /// Output frames the whole stream will have once finished: `ceil(in × ratio)`.
    pub fn expected_output_len(&self) -> u64 {
        let (i, o) = (
            u128::from(self.input.rate.hz()),
            u128::from(self.output_rate.hz()),
        );
        (u128::from(self.frames_in) * o).div_ceil(i) as u64
    }

    /// Feeds interleaved frames; each block of converted mono samples is handed to `emit` as
    /// soon as it exists (borrowed from an internal buffer: copy what you keep).
    pub fn push(
        &mut self,
        interleaved: &[f32],
        mut emit: impl FnMut(&[f32]),
    ) -> Result<(), AudioError> {
        let ch = usize::from(self.input.channels);
        let scale = 1.0 / ch as f32;
        for frame in interleaved.chunks_exact(ch) {
            let mono = if ch == 1 {
                frame[0]
            } else {
                frame.iter().sum::<f32>() * scale
            };
            self.pending.push(mono);
            self.frames_in += 1;
            if self.pending.len() == CHUNK_FRAMES {
                self.run_chunk(None, &mut emit)?;
            }
        }
        Ok(())
    }

    /// Ends the stream: converts what is pending and flushes the filter so that exactly
    /// [`StreamResampler::expected_output_len`] frames have been emitted in total. The resampler
    /// is then reset and can start a new stream.
    pub fn finish(&mut self, mut emit: impl FnMut(&[f32])) -> Result<(), AudioError> {
        let expected = self.expected_output_len();
        if !self.pending.is_empty() {
            let n = self.pending.len();
            self.run_chunk(Some(n), &mut emit)?;
        }
        while self.frames_out < expected {
            let before = self.frames_out;
            self.run_chunk_limited(Some(0), expected, &mut emit)?;
            if self.frames_out == before && self.to_trim == 0 && self.inner.is_none() {
                break;
            }
        }
        self.reset();
        Ok(())
    }

    /// Forgets the stream in progress.
    pub fn reset(&mut self) {
        if let Some(r) = self.inner.as_mut() {
            r.reset();
            self.to_trim = r.output_delay();
        }
        self.pending.clear();
        self.frames_in = 0;
        self.frames_out = 0;
    }

    /// Convenience: push and append the output to `out` (allocates if `out` must grow).
    pub fn push_into(&mut self, interleaved: &[f32], out: &mut Vec<f32>) -> Result<(), AudioError> {
        self.push(interleaved, |s| out.extend_from_slice(s))
    }

    fn run_chunk(
        &mut self,
        partial: Option<usize>,
        emit: &mut impl FnMut(&[f32]),
    ) -> Result<(), AudioError> {
        self.run_chunk_limited(partial, u64::MAX, emit)
    }

    fn run_chunk_limited(
        &mut self,
        partial: Option<usize>,
        limit: u64,
        emit: &mut impl FnMut(&[f32]),
    ) -> Result<(), AudioError> {
        let produced = match self.inner.as_mut() {
            None => {
                let n = self.pending.len();
                self.out[..n].copy_from_slice(&self.pending);
                n
            }
            Some(r) => {
                // The FFT resampler always reads a full chunk; `partial_len` marks how much of
                // `pending` is real, the rest is taken as silence.
                let frames = self.pending.len();
                let input_len = r.input_frames_next();
                if self.pending.len() < input_len {
                    self.pending.resize(input_len, 0.0);
                }
                let input = InterleavedSlice::new(&self.pending[..], 1, input_len)
                    .map_err(|e| AudioError::Resample(e.to_string()))?;
                let out_len = self.out.len();
                let mut output = InterleavedSlice::new_mut(&mut self.out[..], 1, out_len)
                    .map_err(|e| AudioError::Resample(e.to_string()))?;
                let indexing = Indexing {
                    partial_len: partial.map(|p| p.min(frames)),
                    ..Indexing::default()
                };
                let (_, n) = r
                    .process_into_buffer(&input, &mut output, Some(&indexing))
                    .map_err(|e| AudioError::Resample(e.to_string()))?;
                n
            }
        };
        self.pending.clear();
        let skip = self.to_trim.min(produced);
        self.to_trim -= skip;
        let room = limit.saturating_sub(self.frames_out);
        let n = ((produced - skip) as u64).min(room) as usize;
        if n > 0 {
            emit(&self.out[skip..skip + n]);
            self.frames_out += n as u64;
        }
        Ok(())
    }
}

/// Whole-buffer conversion of interleaved `input` to mono at `output_rate`: downmix, then
/// rubato's own `process_all` (delay trimmed, tail flushed). Deliberately not built on
/// [`StreamResampler`], so the streaming test compares two independent paths.
pub fn resample_to_mono(
    input: &[f32],
    format: AudioFormat,
    output_rate: SampleRate,
) -> Result<Vec<f32>, AudioError> {
    if format.channels == 0 || format.rate.hz() == 0 || output_rate.hz() == 0 {
        return Err(AudioError::InvalidArgument {
            what: "resampler",
            reason: format!(
                "{} channels at {} to {} is not a conversion",
                format.channels, format.rate, output_rate
            ),
        });
    }
    let mono = downmix(input, format.channels);
    if format.rate == output_rate {
        return Ok(mono);
    }
    let mut r = Fft::<f32>::new(
        format.rate.hz() as usize,
        output_rate.hz() as usize,
        CHUNK_FRAMES,
        1,
        FixedSync::Input,
    )
    .map_err(|e| AudioError::Resample(e.to_string()))?;
    let input = InterleavedSlice::new(&mono[..], 1, mono.len())
        .map_err(|e| AudioError::Resample(e.to_string()))?;
    let out = r
        .process_all(&input, mono.len(), None)
        .map_err(|e| AudioError::Resample(e.to_string()))?;
    Ok(out.take_data())
}

/// Mono average of interleaved frames (used where the rate already matches).
pub fn downmix(interleaved: &[f32], channels: u16) -> Vec<f32> {
    let ch = usize::from(channels.max(1));
    interleaved
        .chunks_exact(ch)
        .map(|f| f.iter().sum::<f32>() / ch as f32)
        .collect()
}
