//! Opus at 48 kHz mono through the system libopus (`audiopus`): the decoder for the incoming
//! track (with FEC recovery and packet-loss concealment) and the encoder for the outgoing one.
//! Both own their buffers, so decoding and encoding a frame allocates nothing.

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Bitrate, Channels};
use vr_core::SampleRate;

use crate::TransportError;

/// Opus always runs at 48 kHz in WebRTC.
pub const OPUS_RATE: SampleRate = SampleRate::OPUS;
/// Outgoing frame length: 20 ms.
pub const FRAME_SAMPLES: usize = 960;
/// Longest Opus frame (120 ms at 48 kHz).
const MAX_FRAME_SAMPLES: usize = 5760;
/// Largest packet the encoder may produce; RFC 6716 caps a frame at 1275 bytes.
const MAX_PACKET_BYTES: usize = 1500;

fn opus_err(what: &'static str) -> impl Fn(audiopus::Error) -> TransportError {
    move |e| TransportError::Opus {
        what,
        reason: e.to_string(),
    }
}

/// How a decoded frame came to be (counted in metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    Packet,
    /// Rebuilt from the in-band FEC data of the packet after the lost one.
    Fec,
    /// Invented by the decoder's packet-loss concealment.
    Plc,
}

pub struct OpusDecoder {
    dec: Decoder,
    out: Vec<f32>,
    /// Length of the last decoded frame: a lost packet is assumed to be as long.
    last_frame: usize,
}

impl OpusDecoder {
    /// A mono decoder: libopus downmixes stereo streams itself.
    pub fn new() -> Result<Self, TransportError> {
        let dec = Decoder::new(audiopus::SampleRate::Hz48000, Channels::Mono)
            .map_err(opus_err("decoder init"))?;
        Ok(Self {
            dec,
            out: vec![0.0; MAX_FRAME_SAMPLES],
            last_frame: FRAME_SAMPLES,
        })
    }

    /// Decodes one packet into 48 kHz mono samples.
    pub fn decode(&mut self, payload: &[u8]) -> Result<&[f32], TransportError> {
        if payload.is_empty() {
            return self.conceal(None).map(|(s, _)| s);
        }
        let n = self
            .dec
            .decode_float(Some(payload), &mut self.out[..], false)
            .map_err(opus_err("decode"))?;
        self.last_frame = n.clamp(1, MAX_FRAME_SAMPLES);
        Ok(&self.out[..n])
    }

    /// Produces the audio of a lost packet: from `next`'s in-band FEC when the packet after the
    /// lost one is at hand and carries it, else by concealment.
    pub fn conceal(&mut self, next: Option<&[u8]>) -> Result<(&[f32], Decoded), TransportError> {
        let frame = self.last_frame;
        if let Some(next) = next.filter(|p| !p.is_empty()) {
            // libopus falls back to PLC itself when `next` has no FEC data; we cannot tell the
            // two apart from the output, so FEC is counted only when the packet announces LBRR.
            let has_fec = packet_has_fec(next);
            if let Ok(n) = self
                .dec
                .decode_float(Some(next), &mut self.out[..frame], true)
            {
                let kind = if has_fec { Decoded::Fec } else { Decoded::Plc };
                return Ok((&self.out[..n], kind));
            }
        }
        let n = self
            .dec
            .decode_float(None::<&[u8]>, &mut self.out[..frame], false)
            .map_err(opus_err("concealment"))?;
        Ok((&self.out[..n], Decoded::Plc))
    }
}

/// Whether a SILK-mode packet's first frame carries LBRR (in-band FEC) data: TOC config < 16
/// (SILK-only or hybrid), and the LBRR flag after the VAD flags of the first frame (RFC 6716
/// §4.2.3; the same shortcut as libopus's `opus_packet_has_lbrr`). CELT-only packets never do.
pub(crate) fn packet_has_fec(p: &[u8]) -> bool {
    let Some(&toc) = p.first() else {
        return false;
    };
    let config = toc >> 3;
    if config >= 16 {
        return false;
    }
    let stereo = toc & 0x4 != 0;
    let code = toc & 0x3;
    let data = match code {
        0 | 1 => p.get(1),
        2 => {
            // Frame length byte(s) follow the TOC.
            match p.get(1) {
                Some(&l) if l < 252 => p.get(2),
                Some(_) => p.get(3),
                None => None,
            }
        }
        // Code 3 (several frames with padding/lengths): not worth parsing for a metric label.
        _ => None,
    };
    let Some(&b) = data else {
        return false;
    };
    // Frames per packet for this config (10/20/40/60 ms SILK frames → 1..3 VAD flags).
    let silk_frames: u8 = match config {
        0..=11 => match config & 0x3 {
            2 => 2,
            3 => 3,
            _ => 1,
        },
        _ => 1, // hybrid: 10 or 20 ms, one SILK frame
    };
    let lbrr_bit = 7 - silk_frames;
    let mid_lbrr = b >> lbrr_bit & 1 == 1;
    if stereo {
        // Side channel flags follow the mid channel's: VAD bits then LBRR.
        let side_lbrr_bit = lbrr_bit.checked_sub(silk_frames + 1);
        mid_lbrr || side_lbrr_bit.is_some_and(|bit| b >> bit & 1 == 1)
    } else {
        mid_lbrr
    }
}

/// Settings of the outgoing encoder.
#[derive(Debug, Clone, Copy)]
pub struct EncoderSettings {
    pub bitrate: i32,
    pub complexity: u8,
    pub fec: bool,
    pub expected_loss_percent: u8,
}

pub struct OpusEncoder {
    enc: Encoder,
    out: Vec<u8>,
}

impl OpusEncoder {
    pub fn new(s: EncoderSettings) -> Result<Self, TransportError> {
        let mut enc = Encoder::new(
            audiopus::SampleRate::Hz48000,
            Channels::Mono,
            Application::Voip,
        )
        .map_err(opus_err("encoder init"))?;
        enc.set_bitrate(Bitrate::BitsPerSecond(s.bitrate))
            .map_err(opus_err("bitrate"))?;
        enc.set_complexity(s.complexity)
            .map_err(opus_err("complexity"))?;
        enc.set_inband_fec(s.fec).map_err(opus_err("inband fec"))?;
        enc.set_packet_loss_perc(s.expected_loss_percent)
            .map_err(opus_err("packet loss"))?;
        Ok(Self {
            enc,
            out: vec![0; MAX_PACKET_BYTES],
        })
    }

    /// Encodes one 20 ms frame ([`FRAME_SAMPLES`] samples at 48 kHz).
    pub fn encode(&mut self, frame: &[f32]) -> Result<&[u8], TransportError> {
        if frame.len() != FRAME_SAMPLES {
            return Err(TransportError::Opus {
                what: "encode",
                reason: format!(
                    "frame has {} samples, expected {FRAME_SAMPLES}",
                    frame.len()
                ),
            });
        }
        let n = self
            .enc
            .encode_float(frame, &mut self.out[..])
            .map_err(opus_err("encode"))?;
        Ok(&self.out[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, f: f32) -> Vec<f32> {
        (0..n)
            .map(|i| 0.3 * (2.0 * std::f32::consts::PI * f * i as f32 / 48_000.0).sin())
            .collect()
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
    }

    #[test]
    fn round_trip_keeps_level_and_fec_recovers_a_lost_frame() {
        let settings = EncoderSettings {
            bitrate: 32_000,
            complexity: 5,
            fec: true,
            expected_loss_percent: 20,
        };
        let mut enc = OpusEncoder::new(settings).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let signal = tone(FRAME_SAMPLES * 50, 440.0);
        let packets: Vec<Vec<u8>> = signal
            .chunks(FRAME_SAMPLES)
            .map(|f| enc.encode(f).unwrap().to_vec())
            .collect();
        let mut out = Vec::new();
        let mut fec = 0;
        for (i, p) in packets.iter().enumerate() {
            if i == 30 {
                // Packet 30 is "lost": recover it from packet 31.
                let (s, kind) = dec.conceal(Some(&packets[31])).unwrap();
                assert_eq!(s.len(), FRAME_SAMPLES);
                if kind == Decoded::Fec {
                    fec += 1;
                }
                out.extend_from_slice(s);
                continue;
            }
            let s = dec.decode(p).unwrap();
            assert_eq!(s.len(), FRAME_SAMPLES);
            out.extend_from_slice(s);
        }
        assert_eq!(out.len(), signal.len());
        // Opus has a 6.5 ms algorithmic delay; compare levels on the steady part.
        let (a, b) = (rms(&signal[4800..]), rms(&out[4800..]));
        assert!((a - b).abs() / a < 0.1, "rms in {a} out {b}");
        // The recovered frame carries the tone, not silence.
        let lost = &out[30 * FRAME_SAMPLES..31 * FRAME_SAMPLES];
        assert!(rms(lost) > 0.5 * a, "recovered frame rms {}", rms(lost));
        assert_eq!(
            fec, 1,
            "voip-mode packets at 32 kb/s with FEC announce LBRR"
        );
        // PLC alone still yields a full frame.
        let (s, kind) = dec.conceal(None).unwrap();
        assert_eq!((s.len(), kind), (FRAME_SAMPLES, Decoded::Plc));
    }

    #[test]
    fn garbage_packet_is_an_error_not_a_panic() {
        let mut dec = OpusDecoder::new().unwrap();
        // TOC code 3 with a frame count of 0 is invalid.
        assert!(dec.decode(&[0x03, 0x00]).is_err());
        let mut enc = OpusEncoder::new(EncoderSettings {
            bitrate: 32_000,
            complexity: 5,
            fec: false,
            expected_loss_percent: 0,
        })
        .unwrap();
        assert!(enc.encode(&[0.0; 100]).is_err());
    }
}
