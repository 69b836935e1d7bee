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
use vr_audio::video::VideoConsumer;
use vr_core::{check_range, ConfigError};
use vr_vision::{Classification, Labeler};

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
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: 2_000,
            min_prob: 0.1,
            max_labels: 2,
            nice: 5,
        }
    }
}

impl VisionConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("vision.interval_ms", self.interval_ms, 250..=10_000)?;
        check_range("vision.min_prob", self.min_prob, 0.0..=1.0)?;
        check_range("vision.max_labels", self.max_labels, 1..=vr_vision::TOP_K)?;
        check_range("vision.nice", self.nice, 0..=19)?;
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

impl SceneSampler {
    /// Starts the `vision` thread for one session.
    pub fn spawn(
        labeler: Arc<Labeler>,
        frames: VideoConsumer,
        conversation: ConversationHandle,
        cfg: VisionConfig,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name("vision".into()).spawn({
            let stop = stop.clone();
            move || run(&labeler, frames, &conversation, &cfg, &stop)
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

fn run(
    labeler: &Labeler,
    mut frames: VideoConsumer,
    conversation: &ConversationHandle,
    cfg: &VisionConfig,
    stop: &AtomicBool,
) -> SamplerStats {
    vr_dialog::priority::lower_this_thread(cfg.nice, "vision");
    let mut stats = SamplerStats::default();
    let mut total_ms = 0.0;
    // The first picture is labelled as soon as it arrives; then one per interval.
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(POLL.min(next - now));
            continue;
        }
        let Some(frame) = frames.latest() else {
            std::thread::sleep(POLL);
            continue;
        };
        next = now + cfg.interval();
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
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
