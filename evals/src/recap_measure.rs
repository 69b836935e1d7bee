//! Measures the ReCapABR confidence-vs-bitrate table (issue #14): how well the model still sees
//! what a picture shows after the sender's encoder squeezed it into each bitrate tier.
//!
//! A DeViBench-style proxy, not answer accuracy: each clip is encoded at each tier with the same
//! encoder the senders use (GStreamer `vp8enc`, real-time CBR, [`vr_capture::video_codec::Encoder`]),
//! decoded with `vp8dec`, and every `sample_every`-th picture the receiver would hold at that
//! moment (the newest decoded one — a frame the encoder dropped leaves the previous picture in
//! place, as in the real ring) is labelled by EfficientNet-Lite0 and compared with the label of
//! the pristine source picture. Confidence = the mean overlap of the two label distributions
//! (the histogram intersection `Σ min(p, q)` over the classes in either top 5): 1 when the
//! degraded picture is labelled exactly as the pristine one, lower as probability moves to other
//! classes. Top-1 agreement alone was measured first and is too coarse: for a salient object it
//! is 1.00 from the lowest tier up (chelsea and coffee at 200 kbit/s), while the distributions
//! still move. Top-1 agreement and the mean cosine of the 1280-d features are reported beside it.
//!
//! Clips are made from real photos: a 5 s pan over the photo (a crop of `crop` of its size
//! moving corner to corner), scaled to the clip size, with a webcam's sensor noise added (a
//! deterministic per-pixel generator, σ ≈ [`NOISE_STD`] levels) — without noise a still photo
//! compresses too well to say anything about a camera.

use std::time::Duration;
use vr_abr::recap::ARTIC_TIERS_KBPS;
use vr_audio::video::{video_ring, PixelFormat, VideoConsumer};
use vr_capture::video_codec::{Codec, Decoder, Encoder, Pushed};
use vr_core::rng::SplitMix64;
use vr_vision::{Classification, Labeler};

/// A clip whose pristine pictures' top-1 probability averages less than this shows nothing the
/// model has a class for: its confidence says nothing about bitrate, so `default` leaves it out.
pub const RECOGNISED: f64 = 0.3;

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
    /// Pan across the photo (a moving camera); false: the crop stays at the photo's centre
    /// (a camera on a desk), only the sensor noise changes between pictures.
    pub pan: bool,
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
            pan: true,
            tiers_kbps: ARTIC_TIERS_KBPS.to_vec(),
        }
    }
}

/// One tier's result for one clip.
#[derive(Debug, Clone, PartialEq)]
pub struct TierResult {
    pub kbps: u32,
    /// Mean overlap of the label distributions with the pristine picture's: the confidence.
    pub overlap: f64,
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
    /// Mean top-1 probability of the pristine pictures: below [`RECOGNISED`] the model has no
    /// class for what the clip shows, and the clip stays out of the `default` class.
    pub pristine_top1: f64,
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
    let t = if !o.pan {
        0.5
    } else if o.frames > 1 {
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
    let label = most_common(
        pristine
            .iter()
            .filter_map(|c| c.top.first())
            .map(|l| &l.name),
    );
    let mut tiers = Vec::new();
    for &kbps in &o.tiers_kbps {
        let mut enc = Encoder::start(Codec::Vp8, o.width, o.height, o.fps, kbps * 1000)?;
        let (tx, mut rx) = video_ring(PixelFormat::Rgbx.frame_bytes(o.width, o.height));
        let mut dec = Decoder::start(Codec::Vp8, tx)?;
        let mut last = Vec::new();
        let (mut pushed, mut bytes, mut dropped) = (0u64, 0usize, 0u32);
        let (mut agree, mut cosine, mut overlap, mut k) = (0u32, 0f64, 0f64, 0usize);
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
                    overlap += label_overlap(&seen, &pristine[k]);
                }
                k += 1;
            }
        }
        let secs = f64::from(o.frames) / f64::from(o.fps);
        let r = TierResult {
            kbps,
            overlap: overlap / samples.len() as f64,
            agreement: f64::from(agree) / samples.len() as f64,
            cosine: cosine / samples.len() as f64,
            encoded_kbps: bytes as f64 * 8.0 / 1000.0 / secs,
            dropped,
        };
        progress(&r);
        tiers.push(r);
    }
    let pristine_top1 = pristine
        .iter()
        .filter_map(|c| c.top.first())
        .map(|l| f64::from(l.prob))
        .sum::<f64>()
        / pristine.len() as f64;
    Ok(ClipResult {
        name: photo.name.clone(),
        tiers,
        pristine_top1,
        label,
    })
}

/// `Σ min(p, q)` over the classes in either top list (a class missing from one list counts 0
/// there), divided by the pristine picture's own top-list mass, so a picture labelled exactly as
/// the pristine one scores 1 however diffuse its labels are. `b` is the pristine picture.
pub fn label_overlap(a: &Classification, b: &Classification) -> f64 {
    let mass: f64 = b.top.iter().map(|l| f64::from(l.prob)).sum();
    if mass <= 0.0 {
        return 0.0;
    }
    let p = |c: &Classification, class: usize| {
        c.top
            .iter()
            .find(|l| l.class == class)
            .map_or(0.0, |l| f64::from(l.prob))
    };
    let mut classes: Vec<usize> = a.top.iter().chain(&b.top).map(|l| l.class).collect();
    classes.sort_unstable();
    classes.dedup();
    classes.iter().map(|&c| p(a, c).min(p(b, c))).sum::<f64>() / mass
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

/// The ReCap table (the format of [`vr_abr::RecapTable`]): first `default`, the mean over the
/// clips (what the transport applies while it has no content classifier), then one class per
/// clip; each row the label overlap per tier, saying how it was measured.
pub fn table_toml(clips: &[ClipResult], o: &MeasureOptions, provenance: &str) -> String {
    let tiers: Vec<String> = o.tiers_kbps.iter().map(u32::to_string).collect();
    let mut s = format!(
        "# ReCapABR confidence-vs-bitrate table, measured by `voicerelay eval recap` ({provenance}).\n\
         # Confidence: the mean overlap of EfficientNet-Lite0's ImageNet label distributions with\n\
         # the pristine picture's, sum of min(p, q) over both top 5 (a DeViBench-style proxy, not\n\
         # answer accuracy). Top-1 agreement and feature cosine are in the comments.\n\
         # Clips: {}x{} at {} fps, {} frames ({} a real photo plus sensor noise sigma {NOISE_STD}),\n\
         # vp8enc real-time CBR, vp8dec; every {}th picture labelled.\n",
        o.width,
        o.height,
        o.fps,
        o.frames,
        motion(o),
        o.sample_every
    );
    let recognised: Vec<&ClipResult> = clips
        .iter()
        .filter(|c| c.pristine_top1 >= RECOGNISED)
        .collect();
    if !recognised.is_empty() {
        let mean: Vec<String> = (0..o.tiers_kbps.len())
            .map(|i| {
                let sum: f64 = recognised
                    .iter()
                    .filter_map(|c| c.tiers.get(i))
                    .map(|t| t.overlap)
                    .sum();
                format!("{:.3}", sum / recognised.len() as f64)
            })
            .collect();
        let names: Vec<&str> = recognised.iter().map(|c| c.name.as_str()).collect();
        s.push_str(&format!(
            "\n[[class]]\nname = \"default\"\ntiers_kbps = [{}]\n[[class.row]]\nconfidence = [{}]\n\
             measured_by = \"mean label overlap of the recognised clips {} (rows below; a clip whose \
             pristine top-1 probability averages under {RECOGNISED} is left out), vp8enc CBR {}x{}@{}\"\n",
            tiers.join(", "),
            mean.join(", "),
            names.join(", "),
            o.width,
            o.height,
            o.fps
        ));
    }
    for c in clips {
        let conf: Vec<String> = c
            .tiers
            .iter()
            .map(|t| format!("{:.3}", t.overlap))
            .collect();
        let top1: Vec<String> = c
            .tiers
            .iter()
            .map(|t| format!("{:.2}", t.agreement))
            .collect();
        let cos: Vec<String> = c.tiers.iter().map(|t| format!("{:.3}", t.cosine)).collect();
        let enc: Vec<String> = c
            .tiers
            .iter()
            .map(|t| format!("{:.0}", t.encoded_kbps))
            .collect();
        s.push_str(&format!(
            "\n[[class]]\nname = \"{}\"\ntiers_kbps = [{}]\n[[class.row]]\n# pristine top-1 probability: {:.2}\n# top-1 agreement: [{}]\n\
             # feature cosine: [{}]\n# encoded kbit/s: [{}]\nconfidence = [{}]\nmeasured_by = \
             \"EfficientNet-Lite0 label overlap vs pristine ({} pristine), vp8enc CBR {}x{}@{}, {} \
             {}, {} frames\"\n",
            c.name,
            tiers.join(", "),
            c.pristine_top1,
            top1.join(", "),
            cos.join(", "),
            enc.join(", "),
            conf.join(", "),
            c.label,
            o.width,
            o.height,
            o.fps,
            motion(o),
            c.name,
            o.frames
        ));
    }
    s
}

/// How the clips film their photo, for the table's provenance.
fn motion(o: &MeasureOptions) -> &'static str {
    if o.pan {
        "a pan over"
    } else {
        "a still view of"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vr_vision::Label;

    fn c(labels: &[(usize, f32)]) -> Classification {
        Classification {
            top: labels
                .iter()
                .map(|&(class, prob)| Label {
                    name: format!("c{class}"),
                    class,
                    prob,
                })
                .collect(),
            features: Vec::new(),
        }
    }

    #[test]
    fn overlap_is_one_for_the_same_labels_and_falls_as_probability_moves() {
        let pristine = c(&[(1, 0.4), (2, 0.3), (3, 0.1)]);
        assert!((label_overlap(&pristine, &pristine) - 1.0).abs() < 1e-6);
        let moved = c(&[(1, 0.2), (2, 0.3), (4, 0.3)]);
        // min: 0.2 + 0.3 + 0 (class 3) over a pristine mass of 0.8.
        assert!((label_overlap(&moved, &pristine) - 0.625).abs() < 1e-6);
        assert_eq!(label_overlap(&c(&[(9, 0.9)]), &pristine), 0.0);
    }

    #[test]
    fn a_still_clip_keeps_its_view_and_a_pan_moves_it() {
        // A horizontal gradient photo: any movement of the crop changes every pixel.
        let (w, h) = (200u32, 150u32);
        let mut rgbx = Vec::with_capacity((w * h * 4) as usize);
        for _ in 0..h {
            for x in 0..w {
                let v = (x * 255 / (w - 1)) as u8;
                rgbx.extend_from_slice(&[v, v, v, 0]);
            }
        }
        let photo = Photo {
            name: "gradient".into(),
            rgbx,
            width: w,
            height: h,
        };
        let mean_diff = |o: &MeasureOptions| -> f64 {
            let (a, b) = (clip_picture(&photo, o, 0), clip_picture(&photo, o, 20));
            a.iter()
                .zip(&b)
                .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
                .sum::<f64>()
                / a.len() as f64
        };
        let base = MeasureOptions {
            width: 64,
            height: 48,
            frames: 30,
            ..MeasureOptions::default()
        };
        let still = mean_diff(&MeasureOptions {
            pan: false,
            ..base.clone()
        });
        let pan = mean_diff(&base);
        // Still: only the sensor noise differs (σ 3 per picture, so ~3.4 levels on average
        // over RGB and the constant x channel); the pan moves the crop by 2/3 of its travel.
        assert!(still < 4.0, "still view changed by {still:.2} levels");
        assert!(
            pan > 10.0,
            "the pan changed the picture by only {pan:.2} levels"
        );
    }
}
