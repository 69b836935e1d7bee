//! Thin safe wrapper over SpeexDSP's echo canceller (`speex_echo.h`: the MDF adaptive filter of
//! Valin, "On Adjusting the Learning Rate in Frequency Domain Echo Cancellation With Double-Talk",
//! IEEE TASLP 2007) and its preprocessor (`speex_preprocess.h`), which, given the echo state,
//! suppresses the residual echo the linear filter leaves (non-linearities, tail beyond the filter,
//! the first seconds before convergence).
//!
//! SpeexDSP works on `i16` frames of a fixed size; this wrapper converts from and to the
//! pipeline's `f32` with preallocated buffers, so `process` never allocates.

use std::os::raw::{c_int, c_void};
use std::ptr::NonNull;

use vr_core::SampleRate;

use crate::AecError;

#[repr(C)]
struct SpeexEchoState {
    _private: [u8; 0],
}
#[repr(C)]
struct SpeexPreprocessState {
    _private: [u8; 0],
}

// speex_echo.h / speex_preprocess.h request codes (stable since SpeexDSP 1.2rc1).
const SPEEX_ECHO_SET_SAMPLING_RATE: c_int = 24;
const SPEEX_PREPROCESS_SET_DENOISE: c_int = 0;
const SPEEX_PREPROCESS_SET_AGC: c_int = 2;
const SPEEX_PREPROCESS_SET_DEREVERB: c_int = 8;
const SPEEX_PREPROCESS_SET_NOISE_SUPPRESS: c_int = 18;
const SPEEX_PREPROCESS_SET_ECHO_SUPPRESS: c_int = 20;
const SPEEX_PREPROCESS_SET_ECHO_SUPPRESS_ACTIVE: c_int = 22;
const SPEEX_PREPROCESS_SET_ECHO_STATE: c_int = 24;

extern "C" {
    fn speex_echo_state_init(frame_size: c_int, filter_length: c_int) -> *mut SpeexEchoState;
    fn speex_echo_state_destroy(st: *mut SpeexEchoState);
    fn speex_echo_cancellation(
        st: *mut SpeexEchoState,
        rec: *const i16,
        play: *const i16,
        out: *mut i16,
    );
    fn speex_echo_state_reset(st: *mut SpeexEchoState);
    fn speex_echo_ctl(st: *mut SpeexEchoState, request: c_int, ptr: *mut c_void) -> c_int;
    fn speex_preprocess_state_init(
        frame_size: c_int,
        sampling_rate: c_int,
    ) -> *mut SpeexPreprocessState;
    fn speex_preprocess_state_destroy(st: *mut SpeexPreprocessState);
    fn speex_preprocess_run(st: *mut SpeexPreprocessState, x: *mut i16) -> c_int;
    fn speex_preprocess_ctl(
        st: *mut SpeexPreprocessState,
        request: c_int,
        ptr: *mut c_void,
    ) -> c_int;
}

/// Settings of one Speex canceller instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeexSettings {
    /// Samples per frame (SpeexDSP recommends 10–20 ms).
    pub frame_size: usize,
    /// Adaptive filter length in samples: the echo tail it can model past the aligned delay.
    pub filter_length: usize,
    pub rate: SampleRate,
    /// Residual echo suppression, dB (negative), while the far end is silent or the near end talks
    /// (`None`: linear cancellation only, no preprocessor).
    pub residual_suppress_db: Option<i32>,
    /// Residual echo suppression while only the far end is active, dB (negative).
    pub residual_suppress_active_db: i32,
    /// Largest attenuation of stationary noise by the preprocessor, dB (negative).
    pub noise_suppress_db: i32,
}

/// One SpeexDSP echo canceller plus residual-echo preprocessor.
pub struct SpeexAec {
    echo: NonNull<SpeexEchoState>,
    pre: Option<NonNull<SpeexPreprocessState>>,
    settings: SpeexSettings,
    near: Vec<i16>,
    far: Vec<i16>,
    out: Vec<i16>,
}

// SAFETY: the states are plain heap objects owned exclusively by this value (no thread-local or
// global state in SpeexDSP's echo/preprocess code); moving them to another thread is fine, and
// `&mut self` on every call rules out concurrent use.
unsafe impl Send for SpeexAec {}

fn to_i16(x: f32) -> i16 {
    // Saturate rather than wrap: a clipped sample is what the ADC would have produced.
    (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

impl SpeexAec {
    /// # Errors
    /// [`AecError::InvalidSetting`] for a zero frame or a filter shorter than a frame,
    /// [`AecError::Init`] if SpeexDSP returns no state, [`AecError::Control`] if it rejects a
    /// setting.
    pub fn new(settings: SpeexSettings) -> Result<Self, AecError> {
        if settings.frame_size == 0 || settings.filter_length < settings.frame_size {
            return Err(AecError::InvalidSetting {
                what: "speex filter_length must be at least one frame, frame_size > 0",
                value: settings.filter_length as f64,
            });
        }
        let frame = c_int::try_from(settings.frame_size).map_err(|_| AecError::InvalidSetting {
            what: "speex frame_size",
            value: settings.frame_size as f64,
        })?;
        let tail =
            c_int::try_from(settings.filter_length).map_err(|_| AecError::InvalidSetting {
                what: "speex filter_length",
                value: settings.filter_length as f64,
            })?;
        let mut rate =
            c_int::try_from(settings.rate.hz()).map_err(|_| AecError::InvalidSetting {
                what: "sample rate",
                value: f64::from(settings.rate.hz()),
            })?;
        // SAFETY: plain constructor; a null return is handled below.
        let echo =
            NonNull::new(unsafe { speex_echo_state_init(frame, tail) }).ok_or(AecError::Init {
                what: "speex_echo_state_init",
            })?;
        let mut me = SpeexAec {
            echo,
            pre: None,
            settings,
            near: vec![0; settings.frame_size],
            far: vec![0; settings.frame_size],
            out: vec![0; settings.frame_size],
        };
        // SAFETY: `echo` is a live state; the request takes a pointer to one c_int.
        let r = unsafe {
            speex_echo_ctl(
                me.echo.as_ptr(),
                SPEEX_ECHO_SET_SAMPLING_RATE,
                (&raw mut rate).cast(),
            )
        };
        if r != 0 {
            return Err(AecError::Control {
                request: "SPEEX_ECHO_SET_SAMPLING_RATE",
            });
        }
        if let Some(suppress) = settings.residual_suppress_db {
            // SAFETY: plain constructor; null handled below.
            let pre = NonNull::new(unsafe { speex_preprocess_state_init(frame, rate) }).ok_or(
                AecError::Init {
                    what: "speex_preprocess_state_init",
                },
            )?;
            me.pre = Some(pre);
            // The preprocessor applies its spectral gain (where residual echo is suppressed) only
            // with denoising on (preprocess.c sets the gains to 1 otherwise), so denoising is
            // on, its own attenuation capped at `noise_suppress_db`. AGC and dereverberation
            // stay off: they would reshape the user's voice, and the recogniser is tuned on
            // unprocessed speech.
            let ints: [(c_int, &'static str, c_int); 6] = [
                (
                    SPEEX_PREPROCESS_SET_DENOISE,
                    "SPEEX_PREPROCESS_SET_DENOISE",
                    1,
                ),
                (
                    SPEEX_PREPROCESS_SET_NOISE_SUPPRESS,
                    "SPEEX_PREPROCESS_SET_NOISE_SUPPRESS",
                    settings.noise_suppress_db,
                ),
                (SPEEX_PREPROCESS_SET_AGC, "SPEEX_PREPROCESS_SET_AGC", 0),
                (
                    SPEEX_PREPROCESS_SET_DEREVERB,
                    "SPEEX_PREPROCESS_SET_DEREVERB",
                    0,
                ),
                (
                    SPEEX_PREPROCESS_SET_ECHO_SUPPRESS,
                    "SPEEX_PREPROCESS_SET_ECHO_SUPPRESS",
                    suppress,
                ),
                (
                    SPEEX_PREPROCESS_SET_ECHO_SUPPRESS_ACTIVE,
                    "SPEEX_PREPROCESS_SET_ECHO_SUPPRESS_ACTIVE",
                    settings.residual_suppress_active_db,
                ),
            ];
            for (req, name, mut v) in ints {
                // SAFETY: live state; each of these requests reads one c_int (spx_int32_t).
                let r = unsafe { speex_preprocess_ctl(pre.as_ptr(), req, (&raw mut v).cast()) };
                if r != 0 {
                    return Err(AecError::Control { request: name });
                }
            }
            // SAFETY: the request stores the echo state pointer, which lives as long as `pre`
            // (both are destroyed together in Drop, the preprocessor first).
            let r = unsafe {
                speex_preprocess_ctl(
                    pre.as_ptr(),
                    SPEEX_PREPROCESS_SET_ECHO_STATE,
                    me.echo.as_ptr().cast(),
                )
            };
            if r != 0 {
                return Err(AecError::Control {
                    request: "SPEEX_PREPROCESS_SET_ECHO_STATE",
                });
            }
        }
        Ok(me)
    }

    pub fn settings(&self) -> SpeexSettings {
        self.settings
    }

    /// Cancels one frame: `near` is the microphone, `far` what the speaker played at the same
    /// moment (already aligned to within the filter length), `out` receives the cleaned mic.
    ///
    /// # Errors
    /// [`AecError::FrameSize`] if a slice is not exactly one frame.
    pub fn process(&mut self, near: &[f32], far: &[f32], out: &mut [f32]) -> Result<(), AecError> {
        let n = self.settings.frame_size;
        for len in [near.len(), far.len(), out.len()] {
            if len != n {
                return Err(AecError::FrameSize {
                    expected: n,
                    actual: len,
                });
            }
        }
        for (d, &s) in self.near.iter_mut().zip(near) {
            *d = to_i16(s);
        }
        for (d, &s) in self.far.iter_mut().zip(far) {
            *d = to_i16(s);
        }
        // SAFETY: live state; the three buffers hold exactly frame_size samples, the size the
        // state was created with, and `out` does not alias the inputs.
        unsafe {
            speex_echo_cancellation(
                self.echo.as_ptr(),
                self.near.as_ptr(),
                self.far.as_ptr(),
                self.out.as_mut_ptr(),
            );
        }
        if let Some(pre) = self.pre {
            // SAFETY: live state created for frame_size samples; the buffer holds that many.
            // The return value is the preprocessor's VAD decision, unused (VAD is off).
            unsafe {
                speex_preprocess_run(pre.as_ptr(), self.out.as_mut_ptr());
            }
        }
        for (d, &s) in out.iter_mut().zip(&self.out) {
            *d = f32::from(s) / 32768.0;
        }
        Ok(())
    }

    /// Forgets the adapted echo path (after the far/near alignment jumped).
    pub fn reset(&mut self) {
        // SAFETY: live state.
        unsafe { speex_echo_state_reset(self.echo.as_ptr()) };
    }
}

impl Drop for SpeexAec {
    fn drop(&mut self) {
        // SAFETY: each state was created by its init function, is destroyed exactly once, the
        // preprocessor (which points at the echo state) first.
        unsafe {
            if let Some(pre) = self.pre.take() {
                speex_preprocess_state_destroy(pre.as_ptr());
            }
            speex_echo_state_destroy(self.echo.as_ptr());
        }
    }
}

impl std::fmt::Debug for SpeexAec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeexAec")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SpeexSettings {
        SpeexSettings {
            frame_size: 160,
            filter_length: 1024,
            rate: SampleRate(16_000),
            residual_suppress_db: None,
            residual_suppress_active_db: -15,
            noise_suppress_db: -3,
        }
    }

    #[test]
    fn rejects_wrong_frame_sizes_and_settings() {
        let mut a = SpeexAec::new(settings()).expect("init");
        let mut out = vec![0.0; 160];
        let e = a.process(&[0.0; 100], &[0.0; 160], &mut out).unwrap_err();
        assert!(matches!(
            e,
            AecError::FrameSize {
                expected: 160,
                actual: 100
            }
        ));
        let bad = SpeexSettings {
            filter_length: 80,
            ..settings()
        };
        assert!(matches!(
            SpeexAec::new(bad),
            Err(AecError::InvalidSetting { .. })
        ));
    }

    /// White-noise far end through a pure 20-sample delay at -6 dB: the linear filter alone must
    /// take out more than 25 dB after two seconds.
    #[test]
    fn cancels_a_delayed_copy_of_white_noise() {
        let mut a = SpeexAec::new(settings()).expect("init");
        let mut noise = vr_core::rng::Xorshift32::new(0x1234_5678);
        let far: Vec<f32> = (0..16_000 * 4)
            .map(|_| noise.next_centred() * 0.2)
            .collect();
        let near: Vec<f32> = (0..far.len())
            .map(|i| if i >= 20 { far[i - 20] * 0.5 } else { 0.0 })
            .collect();
        let (mut e_in, mut e_out) = (0.0f64, 0.0f64);
        let mut out = vec![0.0; 160];
        for (k, (n, f)) in near.chunks(160).zip(far.chunks(160)).enumerate() {
            a.process(n, f, &mut out).expect("frame");
            if k * 160 >= 32_000 {
                e_in += n.iter().map(|&x| f64::from(x * x)).sum::<f64>();
                e_out += out.iter().map(|&x| f64::from(x * x)).sum::<f64>();
            }
        }
        let erle = 10.0 * (e_in / e_out).log10();
        assert!(erle > 25.0, "ERLE {erle:.1} dB");
    }
}
