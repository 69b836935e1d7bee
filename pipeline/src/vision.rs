//! The camera into the conversation: a `vision` thread samples the newest picture of a
//! session's latest-frame ring every `vision.interval_ms`, labels it ([`vr_vision::Labeler`],
//! EfficientNet-Lite0) and tells the conversation what it shows
//! ([`ConversationHandle::set_scene`]); answers started while that is recent carry it in their
//! prompt.
//!
//! CPU budget: one classification (about 30–60 ms on one core at 224×224, see README "Vision")
//! per interval, and only while new pictures arrive; the thread runs `vision.nice` steps below
//! the recogniser, like the LLM threads, so a busy machine delays a label, never a transcript.
//! Nothing here touches a real-time thread: the ring read is one atomic swap.

use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vr_abr::{FrameRateController, Micros};
use vr_audio::video::VideoConsumer;
use vr_core::{check_range, ConfigError};
use vr_vision::{Classification, Labeler};

use crate::motion::Thumbnail;
use crate::ConversationHandle;

/// `[vision]`: labelling the client's camera for the dialog.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionConfig {
    /// Label the camera's pictures (when a session sends video). Off: video is still received
    /// and its bitrate controlled, but the assistant is not told what it shows.
    pub enabled: bool,
    /// How often the newest picture is labelled, ms (250..=10000).
    pub interval_ms: u64,
    /// Labels less probable than this are left out (0.0..=1.0).
    pub min_prob: f32,
    /// At most this many labels describe a picture (1..=5).
    pub max_labels: usize,
    /// Steps of OS priority below the process for the labelling thread (0..=19).
    pub nice: i32,
    /// Ask the camera for fewer frames while its picture stands still and for all of them as
    /// soon as it moves ([`vr_abr::FrameRateController`] over [`crate::motion`]'s measure; the
    /// request reaches the client as a `video_rate` event).
    pub adaptive_frame_rate: bool,
    /// How often the picture is compared with the one before, ms (50..=1000).
    pub motion_interval_ms: u64,
    /// Levels, thresholds (grey levels of the measure) and hold time of the frame-rate rule.
    #[serde(default)]
    pub frame_rate: vr_abr::FrameRateConfig,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: 2_000,
            min_prob: 0.1,
            max_labels: 2,
            nice: 5,
            adaptive_frame_rate: true,
            motion_interval_ms: 200,
            frame_rate: vr_abr::FrameRateConfig::default(),
        }
    }
}

impl VisionConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("vision.interval_ms", self.interval_ms, 250..=10_000)?;
        check_range("vision.min_prob", self.min_prob, 0.0..=1.0)?;
        check_range("vision.max_labels", self.max_labels, 1..=vr_vision::TOP_K)?;
        check_range("vision.nice", self.nice, 0..=19)?;
        check_range(
            "vision.motion_interval_ms",
            self.motion_interval_ms,
            50..=1_000,
        )?;
        self.frame_rate
            .validate()
            .map_err(|e| ConfigError::Invalid {
                key: "vision.frame_rate".into(),
                value: format!("{:?}", self.frame_rate),
                reason: e.to_string(),
            })?;
        Ok(())
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

/// The words a picture's labels become in the prompt: "a tabby cat, or a tiger cat".
pub fn scene_phrase(c: &Classification, min_prob: f32, max: usize) -> Option<String> {
    let names: Vec<String> = c
        .top
        .iter()
        .filter(|l| l.prob >= min_prob)
        .take(max)
        .map(vr_vision::Label::with_article)
        .collect();
    (!names.is_empty()).then(|| names.join(", or "))
}

/// A running sampler; [`SceneSampler::stop`] (or drop) ends its thread.
pub struct SceneSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<SamplerStats>>,
}

/// What a sampler did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SamplerStats {
    pub labelled: u64,
    pub failed: u64,
    /// Mean wall time of one classification.
    pub mean_ms: f64,
}

/// What the camera is asked for: the highest frame rate worth sending, and the frame-difference
/// measure that decided it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameRateRequest {
    pub max_fps: u32,
    /// Mean absolute luma difference of the last comparison ([`crate::motion`]), grey levels.
    pub motion: f32,
}

/// Where frame-rate requests go (the session's events channel in `serve`).
pub type FrameRateSink = Box<dyn FnMut(FrameRateRequest) + Send>;

impl SceneSampler {
    /// Starts the `vision` thread for one session. `on_rate` gets every change of the requested
    /// frame rate (with `vision.adaptive_frame_rate`).
    pub fn spawn(
        labeler: Arc<Labeler>,
        frames: VideoConsumer,
        conversation: ConversationHandle,
        cfg: VisionConfig,
        mut on_rate: FrameRateSink,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name("vision".into()).spawn({
            let stop = stop.clone();
            move || run(&labeler, frames, &conversation, &cfg, &mut on_rate, &stop)
        })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Ends the thread (within one poll tick) and returns what it did.
    pub fn stop(mut self) -> SamplerStats {
        self.finish()
    }

    fn finish(&mut self) -> SamplerStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for SceneSampler {
    fn drop(&mut self) {
        self.finish();
    }
}

/// How often the thread looks at its stop flag while waiting for the next sample.
const POLL: Duration = Duration::from_millis(50);

/// The frame-rate half of the thread: compares each new picture it is shown with the previous
/// one and says when the requested rate changes.
struct Motion {
    controller: FrameRateController,
    previous: Option<Thumbnail>,
    epoch: Instant,
}

impl Motion {
    fn new(cfg: &VisionConfig) -> Option<Motion> {
        if !cfg.adaptive_frame_rate {
            return None;
        }
        match FrameRateController::new(cfg.frame_rate.clone()) {
            Ok(controller) => Some(Motion {
                controller,
                previous: None,
                epoch: Instant::now(),
            }),
            Err(e) => {
                // validate() checked it; say so rather than adapt on a rule nobody configured.
                tracing::warn!(error = %e, "vision.frame_rate is invalid; the frame rate is not adapted");
                None
            }
        }
    }

    fn see(
        &mut self,
        frame: &vr_audio::video::VideoFrame,
        now: Instant,
    ) -> Option<FrameRateRequest> {
        let thumb = Thumbnail::of(frame)?;
        let request = self.previous.as_ref().and_then(|prev| {
            let motion = thumb.difference(prev);
            metrics::histogram!("pipeline_vision_motion").record(f64::from(motion));
            let at = Micros(now.saturating_duration_since(self.epoch).as_micros() as u64);
            self.controller
                .on_frame(at, motion)
                .map(|max_fps| FrameRateRequest { max_fps, motion })
        });
        self.previous = Some(thumb);
        request
    }
}

fn run(
    labeler: &Labeler,
    mut frames: VideoConsumer,
    conversation: &ConversationHandle,
    cfg: &VisionConfig,
    on_rate: &mut FrameRateSink,
    stop: &AtomicBool,
) -> SamplerStats {
    vr_dialog::priority::lower_this_thread(cfg.nice, "vision");
    let mut stats = SamplerStats::default();
    let mut total_ms = 0.0;
    let mut motion = Motion::new(cfg);
    let look_every = Duration::from_millis(cfg.motion_interval_ms);
    // The first picture is labelled as soon as it arrives; then one per interval, and only
    // while new pictures keep arriving.
    let mut next_label = Instant::now();
    let mut next_look = Instant::now();
    let mut unlabelled = false;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_look {
            next_look = now + look_every;
            if let Some(frame) = frames.latest() {
                unlabelled = true;
                if let Some(request) = motion.as_mut().and_then(|m| m.see(frame, now)) {
                    tracing::debug!(
                        max_fps = request.max_fps,
                        motion = request.motion,
                        "vision: frame rate"
                    );
                    metrics::counter!("pipeline_vision_frame_rate_changes_total").increment(1);
                    on_rate(request);
                }
            }
        }
        if unlabelled && now >= next_label {
            if let Some(frame) = frames.current() {
                unlabelled = false;
                next_label = now + cfg.interval();
                let t0 = Instant::now();
                match labeler.classify_frame(frame) {
                    Ok(c) => {
                        let ms = t0.elapsed().as_secs_f64() * 1e3;
                        total_ms += ms;
                        stats.labelled += 1;
                        stats.mean_ms = total_ms / stats.labelled as f64;
                        metrics::histogram!("pipeline_vision_classify_ms").record(ms);
                        let phrase = scene_phrase(&c, cfg.min_prob, cfg.max_labels);
                        tracing::debug!(ms, scene = ?phrase, top = ?c.top.first(), "vision");
                        // Nothing recognisable still clears an older scene: the camera moved on.
                        if !conversation.set_scene(phrase) {
                            break;
                        }
                    }
                    Err(e) => {
                        stats.failed += 1;
                        metrics::counter!("pipeline_vision_failures_total").increment(1);
                        if stats.failed == 1 {
                            tracing::warn!(error = %e, "cannot label the camera's picture");
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        let due = if unlabelled {
            next_look.min(next_label)
        } else {
            next_look
        };
        std::thread::sleep(
            due.saturating_duration_since(now)
                .clamp(Duration::from_millis(1), POLL),
        );
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use vr_vision::Label;

    fn c(labels: &[(&str, f32)]) -> Classification {
        Classification {
            top: labels
                .iter()
                .enumerate()
                .map(|(class, (name, prob))| Label {
                    name: (*name).into(),
                    class,
                    prob: *prob,
                })
                .collect(),
            features: Vec::new(),
        }
    }

    #[test]
    fn the_phrase_names_the_probable_labels_with_articles() {
        let seen = c(&[("tabby", 0.6), ("Egyptian cat", 0.2), ("lynx", 0.05)]);
        assert_eq!(
            scene_phrase(&seen, 0.1, 2).as_deref(),
            Some("a tabby, or an Egyptian cat")
        );
        assert_eq!(scene_phrase(&seen, 0.1, 1).as_deref(), Some("a tabby"));
        assert_eq!(scene_phrase(&seen, 0.7, 2), None);
    }

    #[test]
    fn config_ranges_are_checked() {
        assert!(VisionConfig::default().validate().is_ok());
        for bad in [
            VisionConfig {
                interval_ms: 100,
                ..Default::default()
            },
            VisionConfig {
                min_prob: 1.5,
                ..Default::default()
            },
            VisionConfig {
                max_labels: 0,
                ..Default::default()
            },
            VisionConfig {
                motion_interval_ms: 10,
                ..Default::default()
            },
            VisionConfig {
                frame_rate: vr_abr::FrameRateConfig {
                    levels_fps: vec![5, 15],
                    ..Default::default()
                },
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
