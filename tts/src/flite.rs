//! flite 2.2 through its C API with the built-in `cmu_us_slt` (female) and `cmu_us_kal` (male,
//! diphone) voices: a small, fully deterministic fallback that needs no model files.
//!
//! flite's lexicon and feature tables are process globals, so calls are serialised by [`FLITE`].

use std::ffi::{c_char, c_int, c_short, c_void, CString};
use std::sync::Mutex;

use vr_core::SampleRate;

use crate::TtsError;

/// `cst_wave` from cst_wave.h.
#[repr(C)]
struct CstWave {
    kind: *const c_char,
    sample_rate: c_int,
    num_samples: c_int,
    num_channels: c_int,
    samples: *mut c_short,
}

#[link(name = "flite_cmu_us_slt")]
#[link(name = "flite_cmu_us_kal")]
#[link(name = "flite_cmulex")]
#[link(name = "flite_usenglish")]
#[link(name = "flite")]
extern "C" {
    fn flite_init() -> c_int;
    fn register_cmu_us_slt(voxdir: *const c_char) -> *mut c_void;
    fn register_cmu_us_kal(voxdir: *const c_char) -> *mut c_void;
    fn flite_text_to_wave(text: *const c_char, voice: *mut c_void) -> *mut CstWave;
    fn delete_wave(w: *mut CstWave);
}

extern "C" {
    /// libc: flite's mixed excitation draws noise from `rand()`.
    fn srand(seed: std::ffi::c_uint);
}

/// Seed for `rand()` before every synthesis, so the same text always gives the same samples.
const NOISE_SEED: std::ffi::c_uint = 1;

/// Which built-in flite voice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FliteVoice {
    Slt,
    Kal,
}

struct Voices {
    slt: *mut c_void,
    kal: *mut c_void,
}

// SAFETY: the voice pointers are only dereferenced by flite while the FLITE mutex is held.
unsafe impl Send for Voices {}

static FLITE: Mutex<Option<Voices>> = Mutex::new(None);

/// Synthesise `text` with flite; returns mono samples and their rate (16 kHz for slt, 8 kHz kal).
pub fn synthesize(text: &str, voice: FliteVoice) -> Result<(Vec<f32>, SampleRate), TtsError> {
    let ctext = CString::new(text.replace('\0', " "))
        .map_err(|_| TtsError::Flite("text contains NUL".into()))?;
    let mut guard = FLITE.lock().unwrap_or_else(|p| p.into_inner());
    let voices = guard.get_or_insert_with(|| {
        // SAFETY: one-time global initialisation under the FLITE lock; registering a built-in
        // voice with a null voxdir is how flite's own main() does it.
        unsafe {
            flite_init();
            Voices {
                slt: register_cmu_us_slt(std::ptr::null()),
                kal: register_cmu_us_kal(std::ptr::null()),
            }
        }
    });
    let v = match voice {
        FliteVoice::Slt => voices.slt,
        FliteVoice::Kal => voices.kal,
    };
    if v.is_null() {
        return Err(TtsError::Flite(format!(
            "flite voice {voice:?} failed to register"
        )));
    }
    let _rand = crate::LIBC_RAND.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: srand only sets libc's PRNG state. `ctext` is NUL-terminated and alive; `v` is a
    // registered voice; FLITE and LIBC_RAND locks held, so the noise sequence flite sees is fixed.
    let wave = unsafe {
        srand(NOISE_SEED);
        flite_text_to_wave(ctext.as_ptr(), v)
    };
    if wave.is_null() {
        return Err(TtsError::Flite(
            "flite_text_to_wave returned no audio".into(),
        ));
    }
    // SAFETY: `wave` is a valid cst_wave owned by us until delete_wave; `samples` holds
    // num_samples * num_channels shorts (or is null when empty).
    let (samples, rate) = unsafe {
        let w = &*wave;
        let channels = w.num_channels.max(1) as usize;
        let n = w.num_samples.max(0) as usize * channels;
        let data = if w.samples.is_null() || n == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(w.samples, n)
        };
        // flite voices are mono; take channel 0 if that ever changes.
        let s: Vec<f32> = data
            .iter()
            .step_by(channels)
            .map(|&x| f32::from(x) / 32768.0)
            .collect();
        let rate = w.sample_rate;
        delete_wave(wave);
        (s, rate)
    };
    if rate <= 0 {
        return Err(TtsError::Flite(format!(
            "flite reported sample rate {rate}"
        )));
    }
    Ok((samples, SampleRate(rate as u32)))
}
