//! How much the camera's picture changes: the frame-difference measure that
//! [`vr_abr::FrameRateController`] turns into a requested frame rate.
//!
//! A picture is reduced to a [`THUMB_W`] × [`THUMB_H`] grid of mean luma values (each cell
//! averaged over a 4 × 4 sample of its pixels), and two thumbnails differ by the mean absolute
//! difference of their cells (0..=255). Averaging over cells makes the measure blind to coding
//! noise on a still scene (a few grey levels per pixel, uncorrelated) and alert to anything that
//! moves by more than a fraction of a cell. Cost: 12 288 pixel reads per picture, whatever its
//! size — nothing next to decoding it.

use vr_audio::video::{PixelFormat, VideoFrame};

/// Thumbnail width in cells.
pub const THUMB_W: usize = 32;
/// Thumbnail height in cells.
pub const THUMB_H: usize = 24;
/// Pixels sampled per cell along each axis.
const SAMPLES: usize = 4;

/// A picture's mean luma per cell, row-major.
#[derive(Clone, PartialEq)]
pub struct Thumbnail {
    cells: [f32; THUMB_W * THUMB_H],
    size: (u32, u32),
}

impl Thumbnail {
    /// The thumbnail of `frame`, or `None` when its buffer is shorter than its size says.
    pub fn of(frame: &VideoFrame) -> Option<Thumbnail> {
        let (w, h) = (frame.width as usize, frame.height as usize);
        if w == 0
            || h == 0
            || frame.data.len() < frame.format.frame_bytes(frame.width, frame.height)
        {
            return None;
        }
        let luma = |x: usize, y: usize| -> f32 {
            match frame.format {
                PixelFormat::Rgbx => {
                    let i = 4 * (y * w + x);
                    let d = &frame.data[i..i + 3];
                    // BT.601 weights.
                    0.299 * f32::from(d[0]) + 0.587 * f32::from(d[1]) + 0.114 * f32::from(d[2])
                }
                PixelFormat::I420 => f32::from(frame.data[y * w + x]),
            }
        };
        let mut cells = [0f32; THUMB_W * THUMB_H];
        for (cy, row) in cells.chunks_exact_mut(THUMB_W).enumerate() {
            for (cx, cell) in row.iter_mut().enumerate() {
                let mut sum = 0.0;
                for sy in 0..SAMPLES {
                    // Sample points spread over the cell, on the pixel grid.
                    let y = ((cy * SAMPLES + sy) * 2 + 1) * h / (2 * THUMB_H * SAMPLES);
                    for sx in 0..SAMPLES {
                        let x = ((cx * SAMPLES + sx) * 2 + 1) * w / (2 * THUMB_W * SAMPLES);
                        sum += luma(x.min(w - 1), y.min(h - 1));
                    }
                }
                *cell = sum / (SAMPLES * SAMPLES) as f32;
            }
        }
        Some(Thumbnail {
            cells,
            size: (frame.width, frame.height),
        })
    }

    /// Mean absolute difference per cell, in grey levels. A change of picture size counts as a
    /// complete change (255): the sender switched resolution, which is not a still scene.
    pub fn difference(&self, other: &Thumbnail) -> f32 {
        if self.size != other.size {
            return 255.0;
        }
        let sum: f32 = self
            .cells
            .iter()
            .zip(&other.cells)
            .map(|(a, b)| (a - b).abs())
            .sum();
        sum / self.cells.len() as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 320×240 RGBx picture of diagonal stripes shifted by `shift` pixels, plus `noise`
    /// (± grey levels, deterministic) on every pixel.
    fn stripes(shift: usize, noise: u8) -> VideoFrame {
        let (w, h) = (320usize, 240usize);
        let mut data = Vec::with_capacity(w * h * 4);
        let mut rng = vr_core::rng::Xorshift32::new(0x2545_f491);
        for y in 0..h {
            for x in 0..w {
                let r = rng.next_u32();
                let n = if noise == 0 {
                    0
                } else {
                    (r % (2 * u32::from(noise) + 1)) as i32 - i32::from(noise)
                };
                let v = if ((x + y + shift) / 20).is_multiple_of(2) {
                    60
                } else {
                    190
                };
                let v = (v + n).clamp(0, 255) as u8;
                data.extend_from_slice(&[v, v, v, 0]);
            }
        }
        VideoFrame {
            width: w as u32,
            height: h as u32,
            format: PixelFormat::Rgbx,
            data,
            ..VideoFrame::default()
        }
    }

    #[test]
    fn coding_noise_on_a_still_picture_stays_below_the_static_threshold() {
        let a = Thumbnail::of(&stripes(0, 0)).expect("thumbnail");
        let b = Thumbnail::of(&stripes(0, 6)).expect("thumbnail");
        assert_eq!(a.difference(&a), 0.0);
        let d = a.difference(&b);
        // FrameRateConfig's default static threshold is 1.0 grey level.
        assert!(d < 1.0, "±6 levels of pixel noise measured {d}");
    }

    #[test]
    fn a_small_movement_is_above_the_motion_threshold() {
        let a = Thumbnail::of(&stripes(0, 2)).expect("thumbnail");
        let b = Thumbnail::of(&stripes(4, 2)).expect("thumbnail");
        let d = a.difference(&b);
        // FrameRateConfig's default motion threshold is 3.0 grey levels; a 4-pixel shift of a
        // 20-pixel stripe pattern is a fifth of a period.
        assert!(d > 3.0, "a 4-pixel shift measured {d}");
    }

    #[test]
    fn short_buffers_and_resolution_changes_are_handled() {
        let mut f = stripes(0, 0);
        f.data.truncate(100);
        assert!(Thumbnail::of(&f).is_none());
        let a = Thumbnail::of(&stripes(0, 0)).expect("thumbnail");
        let mut small = stripes(0, 0);
        small.width = 160;
        small.height = 120;
        small.data.truncate(160 * 120 * 4);
        let b = Thumbnail::of(&small).expect("thumbnail");
        assert_eq!(a.difference(&b), 255.0);
    }

    #[test]
    fn i420_reads_the_luma_plane() {
        let (w, h) = (64u32, 48u32);
        let mut data = vec![100u8; PixelFormat::I420.frame_bytes(w, h)];
        let t0 = Thumbnail::of(&VideoFrame {
            width: w,
            height: h,
            format: PixelFormat::I420,
            data: data.clone(),
            ..VideoFrame::default()
        })
        .expect("thumbnail");
        for y in data.iter_mut().take((w * h) as usize) {
            *y = 110;
        }
        let t1 = Thumbnail::of(&VideoFrame {
            width: w,
            height: h,
            format: PixelFormat::I420,
            data,
            ..VideoFrame::default()
        })
        .expect("thumbnail");
        assert!((t0.difference(&t1) - 10.0).abs() < 1e-3);
    }
}
