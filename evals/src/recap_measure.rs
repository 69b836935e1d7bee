//! Measures the ReCapABR confidence-vs-bitrate table (issue #14): how well the model still sees
//! what a picture shows after the sender's encoder squeezed it into each bitrate tier.
//!
//! A DeViBench-style proxy, not answer accuracy: each clip is encoded at each tier with the same
//! encoder the senders use (GStreamer `vp8enc`, real-time CBR, [`vr_capture::vp8::Vp8Encoder`]),
//! decoded with `vp8dec`, and every `sample_every`-th picture the receiver would hold at that
//! moment (the newest decoded one — a frame the encoder dropped leaves the previous picture in
//! place, as in the real ring) is labelled by EfficientNet-Lite0 and compared with the label of
//! the pristine source picture. Confidence = the share of sampled pictures whose top-1 ImageNet
//! class agrees; the mean cosine of the 1280-d features is reported beside it.
//!
//! Clips are made from real photos: a 5 s pan over the photo (a crop of `crop` of its size
//! moving corner to corner), scaled to the clip size, with a webcam's sensor noise added (a
//! deterministic per-pixel generator, σ ≈ [`NOISE_STD`] levels) — without noise a still photo
//! compresses too well to say anything about a camera.

use std::time::Duration;
use vr_abr::recap::ARTIC_TIERS_KBPS;
use vr_audio::video::{video_ring, PixelFormat, VideoConsumer};
use vr_capture::vp8::{Pushed, Vp8Decoder, Vp8Encoder};
use vr_core::rng::SplitMix64;
use vr_vision::{Classification, Labeler};

/// Sensor noise added to every clip picture, in 8-bit levels (standard deviation).
pub const NOISE_STD: f32 = 3.0;

/// One photo to film.
pub struct Photo {
    pub name: String,
    pub rgbx: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// The model store's test photos (`vision-test-images`) the shipped table is measured on.
pub const PHOTOS: [&str; 3] = ["chelsea.png", "coffee.png", "astronaut.png"];

impl Photo {
    /// A photo from the model store's `vision-test-images`, as RGBx.
    pub fn from_store(store: &vr_core::ModelStore, file: &str) -> Result<Photo, MeasureError> {
        let path = store.file("vision-test-images", file)?;
        let img = image::open(&path)
            .map_err(|e| MeasureError::Options(format!("{}: {e}", path.display())))?
            .to_rgba8();
        let (width, height) = img.dimensions();
        let mut rgbx = img.into_raw();
        for px in rgbx.chunks_exact_mut(4) {
            px[3] = 0;
        }
        Ok(Photo {
            name: file.trim_end_matches(".png").to_string(),
            rgbx,
            width,
            height,
        })
    }
}

/// How to film and measure.
#[derive(Debug, Clone)]
pub struct MeasureOptions {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub frames: u32,
    /// Label every n-th picture.
    pub sample_every: u32,
    /// The crop window's share of the photo (the pan moves it across the rest).
    pub crop: f32,
    pub tiers_kbps: Vec<u32>,
}

impl Default for MeasureOptions {
    fn default() -> Self {
        Self {
            width: 640,
            height: 480,
            fps: 30,
            frames: 150,
            sample_every: 10,
            crop: 0.8,
            tiers_kbps: ARTIC_TIERS_KBPS.to_vec(),
        }
    }
}

/// One tier's result for one clip.
#[derive(Debug, Clone, PartialEq)]
pub struct TierResult {
    pub kbps: u32,
    /// Share of sampled pictures whose top-1 class agrees with the pristine picture's.
    pub agreement: f64,
    /// Mean cosine of the 1280-d features against the pristine picture's.
    pub cosine: f64,
    /// What the encoder actually produced, kbit/s.
    pub encoded_kbps: f64,
    /// Source pictures the encoder dropped (rate control).
    pub dropped: u32,
}

/// A clip's results, one per tier.
#[derive(Debug, Clone)]
pub struct ClipResult {
    pub name: String,
    pub tiers: Vec<TierResult>,
    /// The pristine pictures' most common top-1 label.
    pub label: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error("video: {0}")]
    Video(#[from] vr_capture::CaptureError),
    #[error("vision: {0}")]
    Vision(#[from] vr_vision::VisionError),
    #[error(transparent)]
    Store(#[from] vr_core::ModelError),
    #[error("bad options: {0}")]
    Options(String),
    #[error("the decoder produced no picture for frame {frame} within {timeout:?}")]
    DecoderStalled { frame: u32, timeout: Duration },
}

/// Picture `n` of the pan over `photo`: bilinear crop-and-scale plus sensor noise.
pub fn clip_picture(photo: &Photo, o: &MeasureOptions, n: u32) -> Vec<u8> {
    let (pw, ph) = (photo.width as f32, photo.height as f32);
    // Keep the clip's aspect ratio inside the crop.
    let aspect = o.width as f32 / o.height as f32;
    let (mut cw, mut ch) = (pw * o.crop, ph * o.crop);
    if cw / ch > aspect {
        cw = ch * aspect;
    } else {
        ch = cw / aspect;
    }
    let t = if o.frames > 1 {
        n as f32 / (o.frames - 1) as f32
    } else {
        0.0
    };
    let (x0, y0) = ((pw - cw) * t, (ph - ch) * t);
    let mut rng = SplitMix64::new(0x5EED ^ u64::from(n));
    let mut out = Vec::with_capacity((o.width * o.height * 4) as usize);
    let sx = cw / o.width as f32;
    let sy = ch / o.height as f32;
    let at = |x: usize, y: usize, c: usize| -> f32 {
        f32::from(photo.rgbx[(y * photo.width as usize + x) * 4 + c])
    };
    for y in 0..o.height {
        let fy = (y0 + (y as f32 + 0.5) * sy - 0.5).clamp(0.0, ph - 1.0);
        let (y_lo, wy) = (fy.floor() as usize, fy.fract());
        let y_hi = (y_lo + 1).min(photo.height as usize - 1);
        for x in 0..o.width {
            let fx = (x0 + (x as f32 + 0.5) * sx - 0.5).clamp(0.0, pw - 1.0);
            let (x_lo, wx) = (fx.floor() as usize, fx.fract());
            let x_hi = (x_lo + 1).min(photo.width as usize - 1);
            for c in 0..3 {
                let top = at(x_lo, y_lo, c) * (1.0 - wx) + at(x_hi, y_lo, c) * wx;
                let bottom = at(x_lo, y_hi, c) * (1.0 - wx) + at(x_hi, y_hi, c) * wx;
                let v = top * (1.0 - wy) + bottom * wy;
                // Sum of 4 uniforms: close enough to Gaussian for sensor noise.
                let u: f32 = (0..4).map(|_| rng.next_f64() as f32 - 0.5).sum();
                let noisy = v + u * NOISE_STD * 1.732;
                out.push(noisy.round().clamp(0.0, 255.0) as u8);
            }
            out.push(0);
        }
    }
    out
}

/// Waits until the ring has published `n` pictures, keeping a copy of the newest in `last`.
fn drain(
    rx: &mut VideoConsumer,
    want: u64,
    last: &mut Vec<u8>,
    frame: u32,
) -> Result<(), MeasureError> {
    let timeout = Duration::from_secs(10);
    let t0 = std::time::Instant::now();
    loop {
        if let Some(f) = rx.latest() {
            last.clear();
            last.extend_from_slice(&f.data);
        }
        if rx.stats().published >= want {
            if let Some(f) = rx.latest() {
                last.clear();
                last.extend_from_slice(&f.data);
            }
            return Ok(());
        }
        if t0.elapsed() > timeout {
            return Err(MeasureError::DecoderStalled { frame, timeout });
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Measures one clip at every tier. `progress` is called after each tier.
pub fn measure_clip(
    labeler: &Labeler,
    photo: &Photo,
    o: &MeasureOptions,
    mut progress: impl FnMut(&TierResult),
) -> Result<ClipResult, MeasureError> {
    if o.frames == 0 || o.sample_every == 0 || o.fps == 0 || o.tiers_kbps.is_empty() {
        return Err(MeasureError::Options(format!("{o:?}")));
    }
    let samples: Vec<u32> = (0..o.frames).step_by(o.sample_every as usize).collect();
    let mut pristine: Vec<Classification> = Vec::new();
    for &n in &samples {
        pristine.push(labeler.classify(&clip_picture(photo, o, n), o.width, o.height)?);
    }
    let label = most_common(pristine.iter().filter_map(|c| c.top.first()).map(|l| &l.name));
    let mut tiers = Vec::new();
    for &kbps in &o.tiers_kbps {
        let mut enc = Vp8Encoder::start(o.width, o.height, o.fps, kbps * 1000)?;
        let (tx, mut rx) = video_ring(PixelFormat::Rgbx.frame_bytes(o.width, o.height));
        let mut dec = Vp8Decoder::start(tx)?;
        let mut last = Vec::new();
        let (mut pushed, mut bytes, mut dropped) = (0u64, 0usize, 0u32);
        let (mut agree, mut cosine, mut k) = (0u32, 0f64, 0usize);
        for n in 0..o.frames {
            let picture = clip_picture(photo, o, n);
            match enc.encode(&picture, false)? {
                Some(e) => {
                    bytes += e.data.len();
                    // One frame at a time, so the decoder is never behind and refuses nothing.
                    if dec.push(&e.data, e.pts)? == Pushed::Queued {
                        pushed += 1;
                        drain(&mut rx, pushed, &mut last, n)?;
                    }
                }
                None => dropped += 1,
            }
            if samples.get(k) == Some(&n) {
                let seen = if last.is_empty() {
                    None
                } else {
                    Some(labeler.classify(&last, o.width, o.height)?)
                };
                if let Some(seen) = seen {
                    let (a, b) = (seen.top.first(), pristine[k].top.first());
                    if a.is_some() && a.map(|l| l.class) == b.map(|l| l.class) {
                        agree += 1;
                    }
                    cosine += f64::from(seen.cosine(&pristine[k]));
                }
                k += 1;
            }
        }
        let secs = f64::from(o.frames) / f64::from(o.fps);
        let r = TierResult {
            kbps,
            agreement: f64::from(agree) / samples.len() as f64,
            cosine: cosine / samples.len() as f64,
            encoded_kbps: bytes as f64 * 8.0 / 1000.0 / secs,
            dropped,
        };
        progress(&r);
        tiers.push(r);
    }
    Ok(ClipResult {
        name: photo.name.clone(),
        tiers,
        label,
    })
}

fn most_common<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let mut counts: Vec<(&String, u32)> = Vec::new();
    for n in names {
        match counts.iter_mut().find(|(m, _)| *m == n) {
            Some(c) => c.1 += 1,
            None => counts.push((n, 1)),
        }
    }
    counts
        .into_iter()
        .max_by_key(|c| c.1)
        .map(|c| c.0.clone())
        .unwrap_or_default()
}

/// The ReCap table (the format of [`vr_abr::RecapTable`]): one class per clip, its row the
/// top-1 agreement per tier, each saying how it was measured.
pub fn table_toml(clips: &[ClipResult], o: &MeasureOptions, provenance: &str) -> String {
    let tiers: Vec<String> = o.tiers_kbps.iter().map(u32::to_string).collect();
    let mut s = format!(
        "# ReCapABR confidence-vs-bitrate table, measured by `voicerelay eval recap` ({provenance}).\n\
         # Confidence: the share of sampled pictures whose EfficientNet-Lite0 top-1 ImageNet class\n\
         # agrees with the pristine picture's (a DeViBench-style proxy, not answer accuracy).\n\
         # Clips: {}x{} at {} fps, {} frames (a pan over a real photo plus sensor noise sigma {NOISE_STD}),\n\
         # vp8enc real-time CBR, vp8dec; every {}th picture labelled. Feature cosine in comments.\n",
        o.width, o.height, o.fps, o.frames, o.sample_every
    );
    for c in clips {
        let conf: Vec<String> = c.tiers.iter().map(|t| format!("{:.3}", t.agreement)).collect();
        let cos: Vec<String> = c.tiers.iter().map(|t| format!("{:.3}", t.cosine)).collect();
        let enc: Vec<String> = c
            .tiers
            .iter()
            .map(|t| format!("{:.0}", t.encoded_kbps))
            .collect();
        s.push_str(&format!(
            "\n[[class]]\nname = \"{}\"\ntiers_kbps = [{}]\n[[class.row]]\n# feature cosine: [{}]\n\
             # encoded kbit/s: [{}]\nconfidence = [{}]\nmeasured_by = \"EfficientNet-Lite0 top-1 \
             agreement vs pristine ({} pristine), vp8enc CBR {}x{}@{}, pan over {}, {} frames\"\n",
            c.name,
            tiers.join(", "),
            cos.join(", "),
            enc.join(", "),
            conf.join(", "),
            c.label,
            o.width,
            o.height,
            o.fps,
            c.name,
            o.frames
        ));
    }
    s
}
