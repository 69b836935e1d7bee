//! The session's media tasks: the incoming track into the 16 kHz input ring, and the pacer that
//! sends the outgoing queue as Opus.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use vr_audio::resample::StreamResampler;
use vr_audio::{AudioFormat, AudioProducer};
use vr_core::SampleRate;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::jitter::{JitterBuffer, JitterStats, Playout};
use crate::opus::{Decoded, OpusDecoder, OPUS_RATE};
use crate::output::{Pacer, FRAME_PERIOD};
use crate::TransportError;

/// Counts media-in progress into the global counters as deltas since the last call.
#[derive(Default)]
struct Published {
    jitter: JitterStats,
    overrun: u64,
}

fn publish(p: &mut Published, now: JitterStats, overrun: u64) {
    let d = |a: u64, b: u64| a.saturating_sub(b);
    metrics::counter!("transport_rtp_packets_received_total")
        .increment(d(now.received, p.jitter.received));
    metrics::counter!("transport_rtp_packets_lost_total")
        .increment(d(now.lost + now.skipped, p.jitter.lost + p.jitter.skipped));
    metrics::counter!("transport_rtp_packets_late_total").increment(d(now.late, p.jitter.late));
    metrics::counter!("transport_red_recovered_total")
        .increment(d(now.recovered, p.jitter.recovered));
    metrics::counter!("transport_rtp_packets_duplicate_total")
        .increment(d(now.duplicates, p.jitter.duplicates));
    metrics::counter!("transport_rtp_sequence_restarts_total")
        .increment(d(now.restarts, p.jitter.restarts));
    metrics::counter!("transport_input_ring_overrun_frames_total").increment(d(overrun, p.overrun));
    p.jitter = now;
    p.overrun = overrun;
}

/// Incoming audio: RTP (Opus, or RED carrying Opus when `red_pt` is negotiated) → jitter buffer
/// → Opus decode (FEC/PLC for losses) → 48 kHz mono → resample → the 16 kHz input ring. Ends when the track ends or `stop` fires. The producer is
/// borrowed: a resumed session's next connection writes into the same ring, and dropping it
/// (the session's teardown) is what ends the conversation's input.
pub(crate) async fn run_media_in(
    track: Arc<dyn TrackRemote>,
    producer: &mut AudioProducer,
    jitter_window: Duration,
    red_pt: Option<u8>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), TransportError> {
    let mut jb = JitterBuffer::new(jitter_window);
    let mut dec = OpusDecoder::new()?;
    let mut rs = StreamResampler::new(
        AudioFormat {
            rate: OPUS_RATE,
            channels: 1,
        },
        SampleRate::PIPELINE,
    )?;
    let monitor = producer.monitor();
    let mut published = Published::default();
    let mut last_publish = Instant::now();
    let mut decode_errors = 0u64;
    let mut red_errors = 0u64;
    loop {
        let deadline = jb.poll_timeout();
        tokio::select! {
            ev = track.poll() => match ev {
                Some(TrackRemoteEvent::OnRtpPacket(p)) => {
                    let now = Instant::now();
                    let seq = p.header.sequence_number;
                    match (red_pt == Some(p.header.payload_type))
                        .then(|| crate::red::parse(&p.payload))
                    {
                        None => jb.push(seq, p.payload.clone(), now),
                        Some(Ok(red)) => {
                            metrics::counter!("transport_red_packets_received_total").increment(1);
                            jb.push(seq, p.payload.slice_ref(red.primary), now);
                            for block in &red.redundant {
                                if let Some(k) = crate::red::packets_back(block) {
                                    let at = seq.wrapping_sub(k as u16);
                                    jb.push_redundant(at, p.payload.slice_ref(block.payload), now);
                                }
                            }
                        }
                        Some(Err(e)) => {
                            // A malformed packet is one lost frame, not the end of the session.
                            red_errors += 1;
                            if red_errors == 1 {
                                tracing::warn!(error = %e, "malformed RED packet");
                            }
                            metrics::counter!("transport_red_errors_total").increment(1);
                        }
                    }
                }
                Some(TrackRemoteEvent::OnEnded) | None => break,
                Some(_) => {}
            },
            _ = sleep_until_opt(deadline) => {}
            _ = stop.changed() => break,
        }
        while let Some(play) = jb.pop(Instant::now()) {
            let decoded = match &play {
                Playout::Packet(p) => dec.decode(p).map(|s| (s, Decoded::Packet)),
                Playout::Lost { next } => dec.conceal(next.as_deref()),
            };
            let (samples, kind) = match decoded {
                Ok(x) => x,
                Err(e) => {
                    // A corrupt packet is one lost frame, not the end of the session.
                    decode_errors += 1;
                    if decode_errors == 1 {
                        tracing::warn!(error = %e, "undecodable Opus packet");
                    }
                    metrics::counter!("transport_opus_decode_errors_total").increment(1);
                    continue;
                }
            };
            match kind {
                Decoded::Fec => {
                    metrics::counter!("transport_opus_fec_recovered_total").increment(1)
                }
                Decoded::Plc => metrics::counter!("transport_opus_plc_frames_total").increment(1),
                Decoded::Packet => {}
            }
            rs.push(samples, |m| {
                producer.push(m);
            })?;
        }
        if last_publish.elapsed() >= Duration::from_millis(500) {
            publish(&mut published, jb.stats(), monitor.stats().overrun_frames);
            last_publish = Instant::now();
        }
    }
    rs.finish(|m| {
        producer.push(m);
    })?;
    publish(&mut published, jb.stats(), monitor.stats().overrun_frames);
    Ok(())
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Where the outgoing audio goes: the current connection's track.
#[derive(Clone)]
pub(crate) struct OutTrack {
    pub track: Arc<TrackLocalStaticSample>,
    pub ssrc: u32,
    pub payload_type: u8,
}

/// Outgoing audio: one 20 ms Opus frame per real-time tick while `out` names a connected
/// track, until `stop` fires. With no connection (before the first one is up, or while a session
/// waits to be resumed) it sends nothing and takes nothing from the queue: the answer in progress
/// waits there, and so does the conversation, whose clock is the audio sent.
pub(crate) async fn run_pacer(
    mut pacer: Pacer,
    mut out: watch::Receiver<Option<OutTrack>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), TransportError> {
    let mut write_errors = 0u64;
    loop {
        let current = tokio::select! {
            r = out.wait_for(Option::is_some) => match r {
                Ok(o) => o.clone(),
                Err(_) => return Ok(()),
            },
            _ = stop.changed() => return Ok(()),
        };
        let Some(t) = current else { continue };
        loop {
            tokio::select! {
                _ = pacer.tick() => {}
                _ = stop.changed() => return Ok(()),
                r = out.changed() => {
                    if r.is_err() {
                        return Ok(());
                    }
                    break;
                }
            }
            let (packet, _speech) = pacer.next_packet()?;
            let sample = rtc::media::Sample {
                data: bytes::Bytes::copy_from_slice(packet),
                duration: FRAME_PERIOD,
                ..rtc::media::Sample::new(Instant::now())
            };
            match t
                .track
                .sample_writer(t.ssrc, t.payload_type)
                .write_sample(&sample)
                .await
            {
                Ok(()) => metrics::counter!("transport_rtp_packets_sent_total").increment(1),
                Err(e) => {
                    write_errors += 1;
                    if write_errors == 1 {
                        tracing::debug!(error = %e, "outgoing audio write failed");
                    }
                }
            }
        }
    }
}
