//! Frame → network input: centre crop, antialiased bilinear resize to 224×224, normalisation.
//!
//! The crop is the standard ImageNet evaluation crop: the centred square whose side is 0.875 of
//! the frame's shorter side (what "resize the shorter side to 256, crop 224" does), resized with
//! a triangle (bilinear) filter whose support widens with the downscale factor, as PIL's
//! `BILINEAR` (torchvision's default on PIL images) does, so a 1280×720 camera frame is averaged
//! rather than point-sampled. A webcam usually has its subject in the middle; the edges lost to
//! the crop are the part ImageNet models were never shown in evaluation either.

/// Side of the square the network sees.
pub const INPUT_SIZE: usize = 224;
/// Fraction of the shorter side kept by the centre crop (224 / 256).
pub const CROP_FRACTION: f32 = 0.875;

/// How 8-bit RGB becomes the network's input values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalisation {
    /// `(x/255 - mean) / std` with ImageNet's per-channel mean [0.485, 0.456, 0.406] and std
    /// [0.229, 0.224, 0.225] (torchvision's convention).
    ImageNet,
    /// `(x/255 - 0.5) / 0.5`, i.e. [-1, 1] (TF-Lite's `(x - 127.5) / 127.5`).
    Symmetric,
}

impl Normalisation {
    fn mean_std(self) -> ([f32; 3], [f32; 3]) {
        match self {
            Normalisation::ImageNet => ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            Normalisation::Symmetric => ([0.5; 3], [0.5; 3]),
        }
    }
}

/// For each output sample, the first source index and the normalised filter weights.
fn filter(in_len: usize, start: f32, span: f32, out_len: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = span / out_len as f32;
    let width = scale.max(1.0);
    (0..out_len)
        .map(|i| {
            let centre = start + (i as f32 + 0.5) * scale;
            let lo = ((centre - width).floor().max(0.0) as usize).min(in_len - 1);
            let hi = ((centre + width).ceil().max(0.0) as usize).clamp(lo + 1, in_len);
            let mut w: Vec<f32> = (lo..hi)
                .map(|j| (1.0 - ((j as f32 + 0.5 - centre) / width).abs()).max(0.0))
                .collect();
            let sum: f32 = w.iter().sum();
            if sum > 0.0 {
                w.iter_mut().for_each(|x| *x /= sum);
            } else {
                // Cannot happen for in-range centres; fall back to the nearest pixel.
                w.iter_mut().for_each(|x| *x = 0.0);
                w[0] = 1.0;
            }
            (lo, w)
        })
        .collect()
}

/// RGBx (`width`·`height`·4 bytes, checked by the caller, both sides ≥ 1) → planar CHW f32 of
/// 3×224×224, normalised.
pub(crate) fn to_input(rgbx: &[u8], width: usize, height: usize, norm: Normalisation) -> Vec<f32> {
    let side = width.min(height) as f32 * CROP_FRACTION;
    let x0 = (width as f32 - side) / 2.0;
    let y0 = (height as f32 - side) / 2.0;
    let fx = filter(width, x0, side, INPUT_SIZE);
    let fy = filter(height, y0, side, INPUT_SIZE);
    let (row_lo, row_hi) = (
        fy.first().map_or(0, |f| f.0),
        fy.last().map_or(0, |f| f.0 + f.1.len()),
    );

    // Horizontal pass over the rows the vertical pass reads: (rows, 224, 3).
    let rows = row_hi - row_lo;
    let mut tmp = vec![0f32; rows * INPUT_SIZE * 3];
    for r in 0..rows {
        let src = &rgbx[(row_lo + r) * width * 4..(row_lo + r + 1) * width * 4];
        let dst = &mut tmp[r * INPUT_SIZE * 3..(r + 1) * INPUT_SIZE * 3];
        for (o, (lo, w)) in fx.iter().enumerate() {
            let mut acc = [0f32; 3];
            for (k, &wk) in w.iter().enumerate() {
                let p = &src[(lo + k) * 4..(lo + k) * 4 + 3];
                for c in 0..3 {
                    acc[c] += wk * p[c] as f32;
                }
            }
            dst[o * 3..o * 3 + 3].copy_from_slice(&acc);
        }
    }

    // Vertical pass into planar, normalised output.
    let (mean, std) = norm.mean_std();
    let plane = INPUT_SIZE * INPUT_SIZE;
    let mut out = vec![0f32; 3 * plane];
    for (o, (lo, w)) in fy.iter().enumerate() {
        for x in 0..INPUT_SIZE {
            let mut acc = [0f32; 3];
            for (k, &wk) in w.iter().enumerate() {
                let p = &tmp[((lo - row_lo + k) * INPUT_SIZE + x) * 3..][..3];
                for c in 0..3 {
                    acc[c] += wk * p[c];
                }
            }
            for c in 0..3 {
                out[c * plane + o * INPUT_SIZE + x] = (acc[c] / 255.0 - mean[c]) / std[c];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_frame_stays_flat_at_any_size() {
        for (w, h) in [(1, 1), (3, 500), (224, 224), (1280, 720), (97, 61)] {
            let rgbx: Vec<u8> = (0..w * h).flat_map(|_| [255u8, 0, 128, 7]).collect();
            let x = to_input(&rgbx, w, h, Normalisation::Symmetric);
            assert_eq!(x.len(), 3 * INPUT_SIZE * INPUT_SIZE);
            let plane = INPUT_SIZE * INPUT_SIZE;
            for (c, want) in [1.0, -1.0, 128.0 / 127.5 - 1.0].into_iter().enumerate() {
                let got = &x[c * plane..(c + 1) * plane];
                assert!(
                    got.iter().all(|v| (v - want).abs() < 1e-4),
                    "{w}x{h} channel {c}"
                );
            }
        }
    }

    #[test]
    fn downscaling_averages_instead_of_point_sampling() {
        // A 1-pixel checkerboard at 8x the output size must come out mid-grey, not aliased.
        let n = INPUT_SIZE * 8;
        let rgbx: Vec<u8> = (0..n * n)
            .flat_map(|i| {
                let v = if (i % n + i / n).is_multiple_of(2) {
                    255
                } else {
                    0
                };
                [v, v, v, 0]
            })
            .collect();
        let x = to_input(&rgbx, n, n, Normalisation::Symmetric);
        assert!(
            x.iter().all(|v| v.abs() < 0.05),
            "max {:?}",
            x.iter().map(|v| v.abs()).fold(0f32, f32::max)
        );
    }
}
