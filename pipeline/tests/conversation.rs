//! The conversation loop on the real components (Silero VAD + Whisper tiny.en, Qwen2.5-0.5B,
//! Piper), driven in real time through a capture ring with a WAV output on a simulated real-time
//! clock. A scripted "user" (audio synthesised by the same TTS) speaks at moments that depend on
//! what the assistant does: 1 s into an answer, 0.8 s after an answer ended.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use voicerelay_pipeline::{
    Assistant, AssistantParts, PipelineError, SynthesizerFactory, VadFactory, WavOutput,
};
use vr_core::SampleRate;
use vr_dialog::llm::openai::{OpenAiEngine, OpenAiOptions};
use vr_dialog::turn::TurnEventKind;
use vr_dialog::{
    ConversationEvent, ConversationSummary, DialogConfig, LlmConfig, LoopState, SharedCounter,
    UNREACHABLE_SENTENCE,
};
use vr_tts::Synthesizer;

/// The real-time tests share two CPU cores; running them one at a time keeps latencies honest.
static SERIAL: Mutex<()> = Mutex::new(());

const RATE: SampleRate = SampleRate::PIPELINE;
const OUT_RATE: SampleRate = SampleRate(16_000);

struct Cfg {
    dialog: DialogConfig,
    llm: LlmConfig,
    asr: vr_asr::config::AsrConfig,
    vad: vr_asr::vad::VadConfig,
    tts: vr_tts::TtsConfig,
}

fn configs() -> Cfg {
    let t: toml::Table = include_str!("../../configs/default.toml").parse().unwrap();
    Cfg {
        dialog: t["dialog"].clone().try_into().unwrap(),
        llm: t["llm"].clone().try_into().unwrap(),
        asr: t["asr"].clone().try_into().unwrap(),
        vad: t["vad"].clone().try_into().unwrap(),
        tts: t["tts"].clone().try_into().unwrap(),
    }
}

fn store() -> Option<vr_core::ModelStore> {
    vr_core::prereq::models(&["qwen2.5-0.5b", "whisper-tiny.en", "silero-vad", "piper-joe"])
}

/// `text` spoken by the configured voice, at 16 kHz.
fn speak(tts: &vr_tts::StreamingSynthesizer, text: &str) -> Vec<f32> {
    let samples = tts.speak_all(text, Duration::from_secs(30)).unwrap();
    let format = vr_audio::AudioFormat {
        rate: tts.sample_rate(),
        channels: 1,
    };
    vr_audio::resample::resample_to_mono(&samples, format, RATE).unwrap()
}

/// The voiced part of `x` (first to last sample above 2% of the peak), cut to at most `max`.
fn voiced(x: &[f32], max: Duration) -> Vec<f32> {
    let peak = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let first = x.iter().position(|v| v.abs() > 0.02 * peak).unwrap_or(0);
    let last = x
        .iter()
        .rposition(|v| v.abs() > 0.02 * peak)
        .unwrap_or(x.len());
    let n = (last - first).min(RATE.samples_in(max) as usize);
    x[first..first + n].to_vec()
}

/// When the scripted user speaks.
#[derive(Clone, Copy, Debug)]
enum When {
    /// At this input time.
    At(Duration),
    /// This long after answer `n` (0-based) started playing.
    IntoAnswer(usize, Duration),
    /// This long after answer `n` ended.
    AfterAnswer(usize, Duration),
}

/// What the main thread learns from the events, for the feeder's cues (input-clock ms).
#[derive(Default)]
struct Progress {
    answer_starts: Vec<u64>,
    answer_ends: Vec<u64>,
}

struct Run {
    events: Vec<ConversationEvent>,
    summary: ConversationSummary,
    wav: Vec<f32>,
}

/// The scripted user: plays each cue when it is due (10 ms chunks on an absolute real-time
/// schedule, silence between cues) and ends `tail` after the last one.
fn feed_script(
    producer: vr_audio::AudioProducer,
    cues: Vec<(When, Vec<f32>)>,
    tail: Duration,
    progress: Arc<Mutex<Progress>>,
    fed: Arc<AtomicU64>,
) {
    let mut producer = producer;
    let chunk = RATE.samples_in(Duration::from_millis(10)) as usize;
    let silence = vec![0f32; chunk];
    let t0 = Instant::now();
    let mut pos = 0u64;
    let mut cues = cues.into_iter();
    let mut current: Option<(When, Vec<f32>)> = cues.next();
    let mut playing: Option<(Vec<f32>, usize)> = None;
    let mut end_at: Option<u64> = None;
    loop {
        let now_ms = pos * 1000 / u64::from(RATE.hz());
        if playing.is_none() {
            if let Some((when, _)) = &current {
                let p = progress.lock().unwrap();
                let due = match *when {
                    When::At(d) => Some(d.as_millis() as u64),
                    When::IntoAnswer(n, d) => {
                        p.answer_starts.get(n).map(|s| s + d.as_millis() as u64)
                    }
                    When::AfterAnswer(n, d) => {
                        p.answer_ends.get(n).map(|s| s + d.as_millis() as u64)
                    }
                };
                drop(p);
                if due.is_some_and(|d| now_ms >= d) {
                    let (_, audio) = current.take().unwrap();
                    playing = Some((audio, 0));
                    current = cues.next();
                }
            } else if end_at.is_none() {
                end_at = Some(pos + RATE.samples_in(tail));
            }
        }
        if end_at.is_some_and(|e| pos >= e) {
            break;
        }
        let block: Vec<f32> = match playing.as_mut() {
            Some((audio, at)) => {
                let n = chunk.min(audio.len() - *at);
                let mut b = audio[*at..*at + n].to_vec();
                b.resize(chunk, 0.0);
                *at += n;
                if *at >= audio.len() {
                    playing = None;
                }
                b
            }
            None => silence.clone(),
        };
        let due = t0 + RATE.duration_of(pos + chunk as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        producer.push(&block);
        pos += chunk as u64;
        fed.store(pos, Ordering::SeqCst);
        if pos > RATE.samples_in(Duration::from_secs(280)) {
            break; // The script never finished: the test's assertions will say why.
        }
    }
}

/// Plays `cues` into a real-time ring feeding a conversation, then `tail` of silence after the
/// last one; collects every event and the output WAV.
fn converse(assistant: &Assistant, cues: Vec<(When, Vec<f32>)>, tail: Duration) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let wav_path = dir.path().join("out.wav");
    let conv = assistant.conversation().unwrap();
    let handle = conv.handle();
    let (producer, consumer) =
        vr_audio::audio_ring("test-input", vr_audio::AudioFormat::PIPELINE, 60 * 16_000).unwrap();
    let progress = Arc::new(Mutex::new(Progress::default()));
    let fed = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::sync_channel(1024);
    let output = WavOutput::create(&wav_path, OUT_RATE).unwrap();
    let runner = std::thread::spawn(move || conv.run(consumer, Box::new(output), tx));

    // The scripted user ([`feed_script`]).
    let feeder = {
        let progress = progress.clone();
        let fed = fed.clone();
        std::thread::spawn(move || feed_script(producer, cues, tail, progress, fed))
    };

    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(ev) => {
                let mut p = progress.lock().unwrap();
                match &ev {
                    ConversationEvent::State {
                        to: LoopState::Speaking,
                        at_ms,
                        ..
                    } => p.answer_starts.push(*at_ms),
                    ev @ ConversationEvent::AnswerEnd { .. } if !withdrawn(ev) => p
                        .answer_ends
                        .push(fed.load(Ordering::SeqCst) * 1000 / u64::from(RATE.hz())),
                    _ => {}
                }
                drop(p);
                println!("{}", serde_json::to_string(&ev).unwrap());
                events.push(ev);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() > deadline {
                    handle.stop();
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    feeder.join().unwrap();
    let summary = runner.join().unwrap().unwrap();
    let mut r = hound::WavReader::open(&wav_path).unwrap();
    assert_eq!(r.spec().sample_rate, OUT_RATE.hz());
    let wav: Vec<f32> = r.samples::<f32>().map(|s| s.unwrap()).collect();
    Run {
        events,
        summary,
        wav,
    }
}

fn out_index(ms: u64) -> usize {
    (ms * u64::from(OUT_RATE.hz()) / 1000) as usize
}

fn peak(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// An answer cancelled before a word of it was generated or played: the user resumed within the
/// end-of-turn grace (a pause inside "Wait, stop. What is two plus two?"), so the turn went on and
/// its real answer comes later. It is reported, but it is not one of the answers the tests count.
fn withdrawn(e: &ConversationEvent) -> bool {
    matches!(e, ConversationEvent::AnswerEnd { text, spoken, interrupted: true, .. }
        if text.is_empty() && spoken.is_empty())
}

/// The answers that were generated or played, in order; withdrawn ones are left out.
fn answer_ends(events: &[ConversationEvent]) -> Vec<(String, String, bool)> {
    events
        .iter()
        .filter(|e| !withdrawn(e))
        .filter_map(|e| match e {
            ConversationEvent::AnswerEnd {
                text,
                spoken,
                interrupted,
                ..
            } => Some((text.clone(), spoken.clone(), *interrupted)),
            _ => None,
        })
        .collect()
}

fn speaking_starts(events: &[ConversationEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            ConversationEvent::State {
                to: LoopState::Speaking,
                at_ms,
                ..
            } => Some(*at_ms),
            _ => None,
        })
        .collect()
}

fn turn_kinds(events: &[ConversationEvent], kind: TurnEventKind) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, ConversationEvent::Turn { kind: k, .. } if *k == kind))
        .count()
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// A 300 ms "yeah" one second into the first answer does not interrupt it; speech one second
/// into the second answer stops its audio within 100 ms of the VAD's speech start (on the output
/// clock) and nothing of that answer plays afterwards.
#[test]
fn backchannel_does_not_interrupt_and_barge_in_stops_audio_within_100ms() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(store) = store() else { return };
    let c = configs();
    let assistant =
        Assistant::from_configs(&store, &c.dialog, &c.llm, &c.asr, &c.vad, &c.tts).unwrap();
    let voice = vr_tts::StreamingSynthesizer::from_config(&c.tts, &store).unwrap();
    let q1 = speak(&voice, "Can you tell me something about Paris?");
    // Piper's durations vary from run to run; the first 300 ms of a "yeah yeah" are always voiced.
    let yeah = voiced(
        &speak(&voice, "Yeah yeah yeah."),
        Duration::from_millis(300),
    );
    assert_eq!(yeah.len(), 4800, "the backchannel must be 300 ms of speech");
    let q2 = speak(&voice, "What can you tell me about the moon?");
    let stop = speak(&voice, "Wait, stop. What is two plus two?");
    let run = converse(
        &assistant,
        vec![
            (When::At(Duration::from_millis(300)), q1),
            (When::IntoAnswer(0, Duration::from_secs(1)), yeah),
            (When::AfterAnswer(0, Duration::from_millis(800)), q2),
            (When::IntoAnswer(1, Duration::from_secs(1)), stop),
            // Nothing more to say, but the input stays open until the interruption's answer is
            // being spoken: under load its final can come later than any fixed tail.
            (When::IntoAnswer(2, Duration::ZERO), Vec::new()),
        ],
        Duration::from_secs(1),
    );
    let ends = answer_ends(&run.events);
    let starts = speaking_starts(&run.events);
    println!("summary: {:?}", run.summary);
    assert!(ends.len() >= 3, "three answers expected: {ends:?}");
    assert!(
        starts.len() >= 3,
        "three answer onsets expected: {starts:?}"
    );

    // 1. The backchannel: the first answer plays to its end, every clause spoken.
    let (text0, spoken0, interrupted0) = &ends[0];
    assert!(!interrupted0, "the 300 ms 'yeah' interrupted the answer");
    assert!(!text0.is_empty());
    assert_eq!(words(spoken0), words(text0), "not every clause was played");
    let overlaps = turn_kinds(&run.events, TurnEventKind::Overlap);
    let backchannels = turn_kinds(&run.events, TurnEventKind::Backchannel);
    println!("overlaps {overlaps}, backchannels {backchannels}");
    assert!(
        backchannels >= 1,
        "the VAD never heard the 'yeah' as an overlap, so the test proved nothing"
    );

    // 2. The barge-in on the second answer.
    let barge: Vec<(u64, u64, u64)> = run
        .events
        .iter()
        .filter_map(|e| match e {
            ConversationEvent::BargeIn {
                at_ms,
                detected_ms,
                stop_latency_ms,
                ..
            } => Some((*at_ms, *detected_ms, *stop_latency_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(barge.len(), 1, "exactly one barge-in expected: {barge:?}");
    let (at_ms, detected_ms, stop_latency_ms) = barge[0];
    println!(
        "barge-in: speech start {at_ms} ms, VAD detection {detected_ms} ms, stop latency {stop_latency_ms} ms (output clock)"
    );
    assert!(stop_latency_ms <= 100, "stop latency {stop_latency_ms} ms");
    assert!(ends[1].2, "the second answer was not marked interrupted");
    assert!(
        at_ms >= starts[1] + 900,
        "the barge-in speech started at {at_ms} ms, the answer at {}",
        starts[1]
    );

    // On the output WAV itself: the answer was audible just before, silent from 100 ms after the
    // detection until the third answer starts. The output clock is aligned with the input clock
    // through the first answer's first audible sample.
    let first_audible = run.wav.iter().position(|v| v.abs() > 1e-4).unwrap();
    let offset_ms = (first_audible as i64 * 1000 / i64::from(OUT_RATE.hz())) - starts[0] as i64;
    println!("output clock − input clock ≈ {offset_ms} ms");
    assert!(offset_ms.abs() <= 40, "clock offset {offset_ms} ms");
    let at = |ms: u64| out_index((ms as i64 + offset_ms).max(0) as u64);
    let before = &run.wav[at(detected_ms.saturating_sub(600))..at(detected_ms)];
    assert!(
        peak(before) > 0.05,
        "the answer was not playing before the barge-in"
    );
    // Both ends keep a margin the size of the clock alignment's tolerance (40 ms above): the
    // third answer's first samples must not be counted as stale audio of the second.
    let quiet = &run.wav[at(detected_ms + 100 + 10)..at(starts[2].saturating_sub(50))];
    assert!(!quiet.is_empty());
    assert_eq!(
        peak(quiet),
        0.0,
        "stale answer audio played after the barge-in"
    );
    // The interruption became the next turn and got its own answer.
    assert!(!ends[2].1.is_empty());
    for l in &run.summary.latencies {
        println!(
            "turn {}: onset {} ms (endpointing {:?}, asr final {:?}, llm first token {:?}, first clause {:?}, tts first chunk {:?})",
            l.turn, l.onset_ms, l.endpointing_ms, l.asr_final_ms, l.llm_first_token_ms, l.first_clause_ms, l.tts_first_chunk_ms
        );
    }
}

/// The configured assistant, except that its language model is an OpenAI-compatible endpoint
/// with nothing listening: every answer is the spoken fallback sentence (no LLM to load).
fn dead_llm_assistant(c: &Cfg, store: &vr_core::ModelStore) -> Assistant {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // released at once: nothing listens there
    let engine = OpenAiEngine::new(OpenAiOptions {
        connect_timeout: Duration::from_millis(300),
        connect_retries: 1,
        retry_backoff: Duration::from_millis(20),
        ..OpenAiOptions::new(format!("http://127.0.0.1:{port}"))
    })
    .unwrap();
    let models = vr_asr::RecognizerModels::load(&c.asr, &c.vad, store).unwrap();
    let bank = Arc::new(vr_tts::VoiceBank::load(&c.tts, store).unwrap());
    let synthesizer: SynthesizerFactory =
        Arc::new(move |kind| Ok(Box::new(bank.synthesizer(kind)?) as Box<dyn Synthesizer>));
    Assistant::new(AssistantParts {
        dialog: c.dialog.clone(),
        llm: Arc::new(engine),
        sampling: c.llm.sampling(),
        token_counter: Arc::new(vr_dialog::memory::ByteEstimate) as SharedCounter,
        recognizer: Arc::new(move || models.recognizer().map_err(PipelineError::from)),
        synthesizer,
        min_clause_chars: c.tts.min_chunk_chars,
        max_clause_chars: c.tts.max_chunk_chars,
        vad: {
            let (vad, vad_store) = (c.vad.clone(), store.clone());
            Some(Arc::new(move || {
                vr_asr::vad::SileroVad::from_store(&vad_store, vad.clone())
                    .map_err(PipelineError::from)
            }) as VadFactory)
        },
        vad_end_lag: Duration::from_millis(u64::from(c.vad.min_silence_ms + c.vad.speech_pad_ms)),
        turn_model: None,
        dual: None,
    })
    .unwrap()
}

/// An OpenAI-compatible backend with nothing listening: each turn gets the spoken fallback
/// sentence (an error event, the sentence as assistant text, its audio in the output) and the
/// next turn is still heard and handled.
#[test]
fn dead_llm_endpoint_speaks_the_fallback_and_keeps_listening() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(store) = store() else { return };
    let c = configs();
    let assistant = dead_llm_assistant(&c, &store);
    let voice = vr_tts::StreamingSynthesizer::from_config(&c.tts, &store).unwrap();
    let q1 = speak(&voice, "What is the weather like today?");
    let q2 = speak(&voice, "Are you still there?");
    let run = converse(
        &assistant,
        vec![
            (When::At(Duration::from_millis(300)), q1),
            (When::AfterAnswer(0, Duration::from_millis(800)), q2),
        ],
        Duration::from_secs(1),
    );
    let errors: Vec<&String> = run
        .events
        .iter()
        .filter_map(|e| match e {
            ConversationEvent::Error { message } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors.iter().all(|m| m.contains("cannot connect")),
        "{errors:?}"
    );
    let finals: Vec<&String> = run
        .events
        .iter()
        .filter_map(|e| match e {
            ConversationEvent::Final { text, .. } => Some(text),
            _ => None,
        })
        .collect();
    assert!(
        finals.iter().any(|t| t.to_lowercase().contains("weather"))
            && finals
                .iter()
                .any(|t| t.to_lowercase().contains("still there")),
        "both questions must be recognised: {finals:?}"
    );
    assert_eq!(turn_kinds(&run.events, TurnEventKind::TurnEnded), 2);
    let ends = answer_ends(&run.events);
    assert_eq!(ends.len(), 2, "{ends:?}");
    for (text, spoken, interrupted) in &ends {
        assert!(text.is_empty() && !interrupted);
        assert_eq!(spoken, UNREACHABLE_SENTENCE);
    }
    let texts: Vec<&String> = run
        .events
        .iter()
        .filter_map(|e| match e {
            ConversationEvent::AssistantText { text, .. } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(texts, [UNREACHABLE_SENTENCE, UNREACHABLE_SENTENCE]);
    // Both fallbacks are audible in the output, each at least a second of speech.
    let starts = speaking_starts(&run.events);
    assert_eq!(starts.len(), 2);
    for s in starts {
        let i = out_index(s);
        let seg = &run.wav[i..(i + out_index(1000)).min(run.wav.len())];
        assert!(peak(seg) > 0.05, "fallback at {s} ms is silent");
    }
}

/// Median fundamental frequency (Hz) of the voiced 40 ms frames of `x` (at `rate`): per frame,
/// the normalised autocorrelation over lags of 60–400 Hz; frames loud enough and periodic
/// enough (best ≥ 0.5) count, at the shortest-lag local peak within 85% of the best (so a
/// period's multiple is not taken for the period).
fn median_f0(x: &[f32], rate: u32) -> Option<f64> {
    let n = rate as usize / 25;
    let (min_lag, max_lag) = (rate as usize / 400, rate as usize / 60);
    let mut f0s = Vec::new();
    for frame in x.chunks_exact(n) {
        let energy: f64 = frame.iter().map(|v| f64::from(*v).powi(2)).sum();
        if (energy / n as f64).sqrt() < 0.02 {
            continue;
        }
        let r: Vec<f64> = (min_lag..=max_lag)
            .map(|lag| {
                let (mut c, mut e1, mut e2) = (0f64, 0f64, 0f64);
                for i in 0..n - lag {
                    let (a, b) = (f64::from(frame[i]), f64::from(frame[i + lag]));
                    c += a * b;
                    e1 += a * a;
                    e2 += b * b;
                }
                c / (e1 * e2).sqrt().max(1e-12)
            })
            .collect();
        let best = r.iter().copied().fold(0f64, f64::max);
        if best < 0.5 {
            continue;
        }
        let peak =
            (1..r.len() - 1).find(|&i| r[i] >= 0.85 * best && r[i] >= r[i - 1] && r[i] >= r[i + 1]);
        if let Some(i) = peak {
            f0s.push(f64::from(rate) / (min_lag + i) as f64);
        }
    }
    f0s.sort_by(f64::total_cmp);
    f0s.get(f0s.len() / 2).copied()
}

/// The first and the second answer in 48 kHz output audio: the first run of sound, and what
/// follows the first silence longer than 500 ms (within an answer words are never that far apart).
fn first_and_second_answer(wav: &[f32]) -> (&[f32], &[f32]) {
    let frame = 480;
    let loud: Vec<bool> = wav
        .chunks(frame)
        .map(|f| f.iter().fold(0f32, |m, v| m.max(v.abs())) > 0.01)
        .collect();
    let first_on = loud.iter().position(|l| *l).unwrap();
    let first_off = first_on + loud[first_on..].iter().position(|l| !*l).unwrap_or(0);
    let mut end = first_on;
    let mut quiet = 0;
    for (i, l) in loud.iter().enumerate().skip(first_off) {
        if *l {
            end = i;
            quiet = 0;
        } else {
            quiet += 1;
            if quiet > 50 {
                break;
            }
        }
    }
    let second_on = end + 1 + loud[end + 1..].iter().position(|l| *l).unwrap();
    let last_on = loud.iter().rposition(|l| *l).unwrap();
    let piper = &wav[first_on * frame..(end + 1) * frame];
    let flite = &wav[second_on * frame..(last_on + 1) * frame];
    (piper, flite)
}

/// Typed turns get the same latency breakdown as spoken ones, with the speech stages absent;
/// `set_voice` switches the voice between answers (a `Voice` event with the new rate, and the
/// answer's audio really is the new voice: Piper's joe is a low male voice, flite's slt a higher
/// female one); an unknown voice is refused and changes nothing.
#[test]
fn typed_turns_report_latency_and_the_voice_changes_between_answers() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(store) = store() else { return };
    let c = configs();
    let assistant = dead_llm_assistant(&c, &store);
    let out_rate = SampleRate(48_000);
    let dir = tempfile::tempdir().unwrap();
    let wav_path = dir.path().join("out.wav");
    let conv = assistant.conversation().unwrap();
    let handle = conv.handle();
    let (producer, consumer) =
        vr_audio::audio_ring("test-input", vr_audio::AudioFormat::PIPELINE, 16_000).unwrap();
    let (tx, rx) = mpsc::sync_channel(1024);
    let output = WavOutput::create(&wav_path, out_rate).unwrap();
    let runner = std::thread::spawn(move || conv.run(consumer, Box::new(output), tx));
    let mut events = Vec::new();
    let mut wait_for = |what: &str, done: &dyn Fn(&[ConversationEvent]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(&events) {
            assert!(Instant::now() < deadline, "no {what}: {events:#?}");
            if let Ok(ev) = rx.recv_timeout(Duration::from_millis(50)) {
                events.push(ev);
            }
        }
    };
    let answer_ends = |evs: &[ConversationEvent]| {
        evs.iter()
            .filter(|e| matches!(e, ConversationEvent::AnswerEnd { .. }))
            .count()
    };
    wait_for("voice at the start", &|evs| {
        evs.iter()
            .any(|e| matches!(e, ConversationEvent::Voice { .. }))
    });
    handle.send_text("Hello there.");
    wait_for("first answer", &|evs| answer_ends(evs) == 1);
    assert_eq!(
        handle.set_voice("festival").unwrap_err(),
        "unknown voice \"festival\"; available: piper, flite, espeak"
    );
    handle.set_voice("flite").unwrap();
    handle.send_text("Are you there?");
    wait_for("second answer", &|evs| answer_ends(evs) == 2);
    drop(producer);
    let summary = runner.join().unwrap().unwrap();
    for ev in rx.try_iter() {
        events.push(ev);
    }

    let voices: Vec<(vr_tts::VoiceKind, u32)> = events
        .iter()
        .filter_map(|e| match e {
            ConversationEvent::Voice { voice, sample_rate } => Some((*voice, *sample_rate)),
            _ => None,
        })
        .collect();
    assert_eq!(
        voices,
        [
            (vr_tts::VoiceKind::Piper, 22_050),
            (vr_tts::VoiceKind::Flite, 16_000)
        ]
    );
    // Two typed turns, numbered like spoken ones; speech stages absent, the others measured.
    assert_eq!(summary.latencies.len(), 2, "{:?}", summary.latencies);
    for (i, l) in summary.latencies.iter().enumerate() {
        println!("typed turn latency: {l:?}");
        assert_eq!(l.turn, i as u32 + 1);
        assert_eq!(l.input, vr_dialog::TurnInput::Text);
        assert_eq!(
            (l.speech_end_ms, l.endpointing_ms, l.asr_final_ms),
            (None, None, None)
        );
        // The fallback sentence has no LLM token, but a first clause and its audio.
        assert_eq!(l.llm_first_token_ms, None);
        let first_clause = l.first_clause_ms.unwrap();
        let tts = l.tts_first_chunk_ms.unwrap();
        assert!(
            l.onset_ms + 50 >= first_clause + tts && l.onset_ms < 20_000,
            "onset {} ms must cover the first clause ({first_clause} ms) and its synthesis ({tts} ms)",
            l.onset_ms
        );
    }

    // The two answers in the output: the first and the last run of sound.
    let mut r = hound::WavReader::open(&wav_path).unwrap();
    let wav: Vec<f32> = r.samples::<f32>().map(Result::unwrap).collect();
    let (piper, flite) = first_and_second_answer(&wav);
    assert!(piper.len() > 48_000 && flite.len() > 48_000);
    let (fp, ff) = (median_f0(piper, 48_000), median_f0(flite, 48_000));
    println!(
        "median F0: first answer {fp:?} Hz ({:.2} s), second answer {ff:?} Hz ({:.2} s)",
        piper.len() as f64 / 48_000.0,
        flite.len() as f64 / 48_000.0
    );
    let (fp, ff) = (fp.unwrap(), ff.unwrap());
    // Measured on `voicerelay say`: Piper's joe ≈ 87 Hz, flite's slt ≈ 170 Hz.
    assert!(
        fp < 125.0,
        "the first answer is not Piper's male voice: F0 {fp:.0} Hz"
    );
    assert!(
        ff > 140.0,
        "the second answer is not flite's female voice: F0 {ff:.0} Hz"
    );
}

/// The dual path through the whole spoken pipeline (issue 21): with `keep_threshold = 0` every
/// draft is kept, so the user first hears the 0.5B drafter's words, then the 1.5B model's
/// continuation after them, with the seam between the two reported and no word lost or doubled.
#[test]
fn dual_path_speaks_the_kept_draft_then_the_slow_models_continuation() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(store) = vr_core::prereq::models(&[
        "qwen2.5-0.5b",
        "qwen2.5-1.5b",
        "whisper-tiny.en",
        "silero-vad",
        "piper-joe",
    ]) else {
        return;
    };
    let mut c = configs();
    c.llm.model = "qwen2.5-1.5b".into();
    c.dialog.dual = vr_dialog::config::DualSettings {
        enabled: true,
        keep_threshold: 0.0,
        ..Default::default()
    };
    let assistant =
        Assistant::from_configs(&store, &c.dialog, &c.llm, &c.asr, &c.vad, &c.tts).unwrap();
    let voice = vr_tts::StreamingSynthesizer::from_config(&c.tts, &store).unwrap();
    let q = speak(&voice, "What is the capital of France?");
    let run = converse(
        &assistant,
        vec![(When::At(Duration::from_millis(300)), q)],
        Duration::from_secs(1),
    );
    let at = |f: &dyn Fn(&ConversationEvent) -> bool| run.events.iter().position(f);
    let draft = at(&|e| matches!(e, ConversationEvent::Draft { .. }))
        .expect("the drafter's first words were judged");
    let ConversationEvent::Draft { text, kept, .. } = &run.events[draft] else {
        unreachable!()
    };
    assert!(*kept, "threshold 0 keeps every draft");
    let first_said = at(&|e| matches!(e, ConversationEvent::AssistantText { .. }))
        .expect("the answer was heard");
    assert!(first_said > draft);
    let ConversationEvent::AssistantText { text: heard, .. } = &run.events[first_said] else {
        unreachable!()
    };
    assert_eq!(
        words(heard),
        words(text),
        "the draft is the first clause heard"
    );
    let gap = run.events.iter().find_map(|e| match e {
        ConversationEvent::Seam { gap_ms } => Some(*gap_ms),
        _ => None,
    });
    println!("draft {text:?}, seam gap {gap:?} ms");
    assert!(gap.is_some(), "the continuation's seam is reported");
    let ends = answer_ends(&run.events);
    assert_eq!(ends.len(), 1, "{ends:?}");
    let (answer, spoken, interrupted) = &ends[0];
    assert!(!interrupted);
    assert!(words(answer).contains(&"paris".to_string()), "{answer:?}");
    assert!(words(answer).starts_with(&words(text)), "{answer:?}");
    assert_eq!(words(spoken), words(answer), "no word lost or doubled");
    let onset = speaking_starts(&run.events)[0];
    assert!(
        peak(&run.wav[out_index(onset)..]) > 0.05,
        "the answer's audio plays"
    );
    assert_eq!(run.summary.latencies.len(), 1);
}
