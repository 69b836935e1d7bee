//! The `[aec]` config section.

use serde::{Deserialize, Serialize};
use vr_core::{check_range, ConfigError, SampleRate};

use crate::delay::DelaySettings;
use crate::speex::SpeexSettings;

/// Delay tracking, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DelayConfig {
    /// Largest far→near delay searched: acoustic path plus whatever latency the playback
    /// timestamps do not account for.
    pub max_delay_ms: u32,
    /// GCC-PHAT correlation window.
    pub window_ms: u32,
    /// Time between estimates.
    pub interval_ms: u32,
    /// Minimum peak-to-sidelobe ratio of a usable estimate.
    pub min_psr: f32,
    /// Far-end RMS (full scale 1.0) under which a window is not used (nothing played).
    pub min_far_rms: f32,
    /// Estimates within this of the current delay are the same delay.
    pub tolerance_ms: f32,
    /// Consecutive agreeing estimates needed to move the delay.
    pub confirmations: u32,
}

impl Default for DelayConfig {
    fn default() -> Self {
        Self {
            max_delay_ms: 400,
            window_ms: 1000,
            interval_ms: 250,
            min_psr: 6.0,
            min_far_rms: 1e-3,
            tolerance_ms: 2.0,
            confirmations: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AecConfig {
    /// Cancel the speaker's echo from the microphone in `listen` (only when playing to a real
    /// speaker; file and WAV outputs have no echo).
    pub enabled: bool,
    /// SpeexDSP frame length.
    pub frame_ms: u32,
    /// Adaptive filter length: the echo tail modelled after the aligned delay.
    pub filter_ms: u32,
    /// Reference fed this much ahead of the estimated delay (the filter is causal).
    pub preroll_ms: u32,
    /// Delay assumed before the first estimate.
    pub initial_delay_ms: u32,
    /// Residual echo suppression (SpeexDSP preprocessor), dB; 0 = off (linear filter only).
    pub residual_suppress_db: i32,
    /// Residual echo suppression while only the far end is active, dB.
    pub residual_suppress_active_db: i32,
    /// Largest attenuation of stationary noise by the same preprocessor, dB (it only applies
    /// its residual-echo gains with noise suppression on; kept mild so the user's voice is left
    /// alone).
    pub noise_suppress_db: i32,
    /// Extra attenuation while the filter has not converged yet (from the start and after each
    /// delay jump) and the far end is active, dB (0 = off). Without it the first second of the
    /// first answer leaks through well enough to be transcribed; a user talking over exactly
    /// that second is attenuated too.
    pub startup_gate_db: i32,
    /// The filter counts as converged once the ERLE over the last 0.5 s of far-active frames
    /// reaches this, dB.
    pub converged_erle_db: f32,
    /// The startup gate ends after at most this much far-active audio, ms, converged or not (a
    /// weak echo near the noise floor may never show the ERLE above).
    pub startup_gate_max_ms: u32,
    /// The gate stays closed for at least this much far-active audio, ms: right after a reset
    /// the residual suppressor alone makes the ERLE look converged for a few hundred ms.
    pub startup_gate_min_ms: u32,
    /// Residual echo gate once converged: a frame the filter took more than
    /// `nlp_threshold_db` out of while the far end plays is attenuated by `nlp_db` more
    /// (0 = off); frames where the near end talks keep their energy and pass.
    pub nlp_db: i32,
    pub nlp_threshold_db: f32,
    pub delay: DelayConfig,
}

impl Default for AecConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            frame_ms: 10,
            filter_ms: 128,
            preroll_ms: 8,
            initial_delay_ms: 0,
            residual_suppress_db: -40,
            residual_suppress_active_db: -25,
            noise_suppress_db: -3,
            startup_gate_db: -30,
            converged_erle_db: 18.0,
            startup_gate_max_ms: 2000,
            startup_gate_min_ms: 1500,
            nlp_db: -20,
            nlp_threshold_db: 12.0,
            delay: DelayConfig::default(),
        }
    }
}

fn ms(rate: SampleRate, v: f32) -> usize {
    (f64::from(rate.hz()) * f64::from(v) / 1000.0).round() as usize
}

impl AecConfig {
    /// # Errors
    /// The first out-of-range key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("aec.frame_ms", self.frame_ms, 5..=40)?;
        check_range("aec.filter_ms", self.filter_ms, self.frame_ms..=1000)?;
        check_range("aec.preroll_ms", self.preroll_ms, 0..=100)?;
        check_range(
            "aec.initial_delay_ms",
            self.initial_delay_ms,
            0..=self.delay.max_delay_ms,
        )?;
        check_range(
            "aec.residual_suppress_db",
            self.residual_suppress_db,
            -90..=0,
        )?;
        check_range(
            "aec.residual_suppress_active_db",
            self.residual_suppress_active_db,
            -90..=0,
        )?;
        check_range("aec.noise_suppress_db", self.noise_suppress_db, -90..=0)?;
        check_range("aec.startup_gate_db", self.startup_gate_db, -90..=0)?;
        check_range("aec.nlp_db", self.nlp_db, -90..=0)?;
        check_range("aec.nlp_threshold_db", self.nlp_threshold_db, 0.0..=60.0)?;
        check_range("aec.converged_erle_db", self.converged_erle_db, 0.0..=60.0)?;
        check_range(
            "aec.startup_gate_max_ms",
            self.startup_gate_max_ms,
            0..=30_000,
        )?;
        let d = &self.delay;
        check_range("aec.delay.max_delay_ms", d.max_delay_ms, 10..=2000)?;
        check_range("aec.delay.window_ms", d.window_ms, 100..=5000)?;
        check_range("aec.delay.interval_ms", d.interval_ms, 10..=5000)?;
        check_range("aec.delay.min_psr", d.min_psr, 1.0..=1000.0)?;
        check_range("aec.delay.min_far_rms", d.min_far_rms, 0.0..=0.5)?;
        check_range("aec.delay.tolerance_ms", d.tolerance_ms, 0.0..=100.0)?;
        check_range("aec.delay.confirmations", d.confirmations, 1..=100)?;
        Ok(())
    }

    pub fn speex_settings(&self, rate: SampleRate) -> SpeexSettings {
        SpeexSettings {
            frame_size: ms(rate, self.frame_ms as f32),
            filter_length: ms(rate, self.filter_ms as f32),
            rate,
            residual_suppress_db: (self.residual_suppress_db < 0)
                .then_some(self.residual_suppress_db),
            residual_suppress_active_db: self.residual_suppress_active_db,
            noise_suppress_db: self.noise_suppress_db,
        }
    }

    pub fn delay_settings(&self, rate: SampleRate) -> DelaySettings {
        let d = &self.delay;
        DelaySettings {
            max_delay: ms(rate, d.max_delay_ms as f32),
            window: ms(rate, d.window_ms as f32),
            interval: ms(rate, d.interval_ms as f32),
            min_psr: d.min_psr,
            min_far_rms: d.min_far_rms,
            tolerance: ms(rate, d.tolerance_ms),
            confirmations: d.confirmations as usize,
        }
    }
}
