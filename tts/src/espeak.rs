//! espeak-ng through its C API: IPA phonemes for Piper, and a robotic but dependable voice.
//!
//! espeak-ng keeps its translator, voice and output buffers in process globals, so every call goes
//! through one process-wide mutex ([`ENGINE`]); the library is initialised once, on first use, in
//! synchronous mode (audio is handed to a callback, never played).

use std::ffi::{c_char, c_int, c_short, c_uint, c_void, CStr, CString};
use std::sync::Mutex;

use vr_core::SampleRate;

use crate::TtsError;

const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
const ESPEAK_INITIALIZE_DONT_EXIT: c_int = 0x8000;
const ESPEAK_CHARS_UTF8: c_int = 1;
/// Bit 1 of `phonememode`: IPA as UTF-8 instead of espeak's ASCII names.
const ESPEAK_PHONEMES_IPA: c_int = 0x02;
const ESPEAK_RATE: c_int = 1;
const EE_OK: c_int = 0;
const POS_CHARACTER: c_int = 1;

/// `espeak_EVENT` from speak_lib.h; only `user_data` is read, the rest fixes the layout.
#[repr(C)]
struct EspeakEvent {
    kind: c_int,
    unique_identifier: c_uint,
    text_position: c_int,
    length: c_int,
    audio_position: c_int,
    sample: c_int,
    user_data: *mut c_void,
    id: [u8; 8],
}

type SynthCallback = unsafe extern "C" fn(*mut c_short, c_int, *mut EspeakEvent) -> c_int;

#[link(name = "espeak-ng")]
extern "C" {
    fn espeak_Initialize(
        output: c_int,
        buflength: c_int,
        path: *const c_char,
        options: c_int,
    ) -> c_int;
    fn espeak_SetVoiceByName(name: *const c_char) -> c_int;
    fn espeak_TextToPhonemes(
        textptr: *mut *const c_void,
        textmode: c_int,
        phonememode: c_int,
    ) -> *const c_char;
    fn espeak_SetSynthCallback(cb: SynthCallback);
    fn espeak_SetParameter(parameter: c_int, value: c_int, relative: c_int) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn espeak_Synth(
        text: *const c_void,
        size: usize,
        position: c_uint,
        position_type: c_int,
        end_position: c_uint,
        flags: c_uint,
        unique_identifier: *mut c_uint,
        user_data: *mut c_void,
    ) -> c_int;
}

struct Engine {
    rate: SampleRate,
    voice: Option<CString>,
}

/// `None` until first use; `Some(Err)` if initialisation failed (reported on every call).
static ENGINE: Mutex<Option<Result<Engine, String>>> = Mutex::new(None);

fn with_engine<T>(
    voice: &str,
    f: impl FnOnce(&Engine) -> Result<T, TtsError>,
) -> Result<T, TtsError> {
    // A panic while holding the lock leaves espeak's globals in an unknown state, but the next
    // call re-selects the voice, which is all the state we rely on.
    let mut guard = ENGINE.lock().unwrap_or_else(|p| p.into_inner());
    let engine = guard.get_or_insert_with(|| {
        // SAFETY: called with the engine lock held, so no other espeak call runs concurrently; a
        // null path selects the compiled-in espeak-ng-data directory.
        let rate = unsafe {
            espeak_Initialize(
                AUDIO_OUTPUT_SYNCHRONOUS,
                0,
                std::ptr::null(),
                ESPEAK_INITIALIZE_DONT_EXIT,
            )
        };
        if rate <= 0 {
            return Err(format!(
                "espeak_Initialize failed (returned {rate}); is espeak-ng-data installed?"
            ));
        }
        // SAFETY: `collect_samples` matches `t_espeak_callback`; set under the engine lock.
        unsafe { espeak_SetSynthCallback(collect_samples) };
        Ok(Engine {
            rate: SampleRate(rate as u32),
            voice: None,
        })
    });
    let engine = match engine {
        Ok(e) => e,
        Err(msg) => return Err(TtsError::Espeak(msg.clone())),
    };
    if engine.voice.as_deref().and_then(|v| v.to_str().ok()) != Some(voice) {
        let name = CString::new(voice)
            .map_err(|_| TtsError::Espeak(format!("bad voice name {voice:?}")))?;
        // SAFETY: `name` is a valid NUL-terminated string that outlives the call; lock held.
        let rc = unsafe { espeak_SetVoiceByName(name.as_ptr()) };
        if rc != EE_OK {
            return Err(TtsError::Espeak(format!(
                "espeak-ng has no voice {voice:?} (error {rc})"
            )));
        }
        engine.voice = Some(name);
    }
    let _rand = crate::LIBC_RAND.lock().unwrap_or_else(|p| p.into_inner());
    f(engine)
}

/// IPA phonemes of `text`, one string per clause as espeak-ng splits it (at sentence ends, commas,
/// colons, semicolons). Punctuation itself is not returned: callers that need it split first.
pub fn phonemize_ipa(text: &str, voice: &str) -> Result<Vec<String>, TtsError> {
    let ctext = CString::new(text.replace('\0', " "))
        .map_err(|_| TtsError::Espeak("text contains NUL".into()))?;
    with_engine(voice, |_| {
        let mut out = Vec::new();
        let mut ptr: *const c_void = ctext.as_ptr().cast();
        while !ptr.is_null() {
            // SAFETY: `ptr` points into `ctext` (NUL-terminated, alive for the whole loop) or was
            // advanced by espeak within it; espeak sets it to NULL at the end. The returned string
            // is espeak's static buffer, copied before the next call; the engine lock is held.
            let ph = unsafe {
                let r = espeak_TextToPhonemes(&mut ptr, ESPEAK_CHARS_UTF8, ESPEAK_PHONEMES_IPA);
                if r.is_null() {
                    break;
                }
                CStr::from_ptr(r).to_string_lossy().into_owned()
            };
            out.push(ph);
        }
        Ok(out)
    })
}

/// espeak-ng's own synthesis of `text` at its native rate (22.05 kHz). `rate_wpm` is words per minute.
pub fn synthesize(
    text: &str,
    voice: &str,
    rate_wpm: u32,
) -> Result<(Vec<f32>, SampleRate), TtsError> {
    let ctext = CString::new(text.replace('\0', " "))
        .map_err(|_| TtsError::Espeak("text contains NUL".into()))?;
    with_engine(voice, |engine| {
        let mut buf: Vec<i16> = Vec::new();
        let rate = rate_wpm.clamp(80, 450) as c_int;
        // SAFETY: engine lock held; plain integer parameter.
        unsafe { espeak_SetParameter(ESPEAK_RATE, rate, 0) };
        // SAFETY: `ctext` is NUL-terminated and alive for the call; in synchronous mode espeak_Synth
        // returns only after every callback has run, so `buf` (passed as user_data and written by
        // `collect_samples`) outlives all uses of the pointer. Engine lock held.
        let rc = unsafe {
            espeak_Synth(
                ctext.as_ptr().cast(),
                ctext.as_bytes_with_nul().len(),
                0,
                POS_CHARACTER,
                0,
                ESPEAK_CHARS_UTF8 as c_uint,
                std::ptr::null_mut(),
                (&mut buf as *mut Vec<i16>).cast(),
            )
        };
        if rc != EE_OK {
            return Err(TtsError::Espeak(format!(
                "espeak_Synth failed (error {rc})"
            )));
        }
        Ok((
            buf.iter().map(|&s| f32::from(s) / 32768.0).collect(),
            engine.rate,
        ))
    })
}

/// Appends each block of samples to the `Vec<i16>` passed as user data.
unsafe extern "C" fn collect_samples(
    wav: *mut c_short,
    n: c_int,
    events: *mut EspeakEvent,
) -> c_int {
    if wav.is_null() || n <= 0 || events.is_null() {
        return 0;
    }
    // SAFETY: espeak passes an event list whose first entry carries the user_data given to
    // espeak_Synth, which is `&mut Vec<i16>` alive for the whole synchronous call, and `wav`
    // holds `n` samples valid for the duration of this callback.
    unsafe {
        let buf = (*events).user_data.cast::<Vec<i16>>();
        if buf.is_null() {
            return 0;
        }
        (*buf).extend_from_slice(std::slice::from_raw_parts(wav, n as usize));
    }
    0
}
