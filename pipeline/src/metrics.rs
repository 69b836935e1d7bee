//! What the pipeline's bounded queues drop, as metrics (the `metrics` facade: whichever recorder
//! the process installs, Prometheus in `serve`, sees them; without one they cost nothing).

/// Messages or jobs a full queue dropped. `queue`: `control` (a client's interrupt, text or
/// voice change), `llm_jobs` (a generation or prefill for an LLM worker), `tts_jobs` (a clause
/// or voice change for the TTS worker).
pub(crate) const QUEUE_DROPPED: &str = "pipeline_queue_dropped_total";
/// 16 kHz samples the recogniser never heard because its input ring stayed full.
pub(crate) const ASR_DROPPED_SAMPLES: &str = "pipeline_asr_dropped_samples_total";

pub(crate) fn queue_dropped(queue: &'static str) {
    metrics::counter!(QUEUE_DROPPED, "queue" => queue).increment(1);
}

pub(crate) fn asr_dropped(samples: u64) {
    metrics::counter!(ASR_DROPPED_SAMPLES).increment(samples);
}

/// Describes the counters once so exporters show units and help text.
pub fn describe_metrics() {
    metrics::describe_counter!(
        QUEUE_DROPPED,
        metrics::Unit::Count,
        "messages or jobs a conversation's full queue dropped, by queue"
    );
    metrics::describe_counter!(
        ASR_DROPPED_SAMPLES,
        metrics::Unit::Count,
        "16 kHz samples the recogniser never heard because its input ring stayed full"
    );
    metrics::describe_histogram!(
        "pipeline_vision_motion",
        "mean absolute luma difference between the camera pictures the vision thread compared, grey levels"
    );
    metrics::describe_counter!(
        "pipeline_vision_frame_rate_changes_total",
        metrics::Unit::Count,
        "changes of the frame rate requested from the camera (video_rate events)"
    );
}
