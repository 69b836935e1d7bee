//! What the camera shows, in words (issue #14, "What the assistant sees").
//!
//! Owns: the [`Labeler`], which runs EfficientNet-Lite0 (ImageNet-1k, 4.7M parameters) in candle
//! on one RGBx frame and returns the most likely ImageNet classes with their probabilities plus
//! the 1280-d pooled feature vector; [`Classification::describe`] turns the labels into a phrase
//! for the dialog ("a tabby (62 %), an Egyptian cat (20 %)"), and [`Classification::cosine`]
//! compares two frames' features (the proxy the bitrate controller can use for "does the
//! degraded picture still show the same thing").
//!
//! Must not touch: cameras, WebRTC, threads, clocks or async runtimes. [`Labeler::classify`] is a
//! plain synchronous call (tens of milliseconds on one core, see README "Vision"); whoever owns
//! the video frames decides how often to call it and on which thread. Weights and class names
//! come only from the sha256-checked model store (`efficientnet-lite0`).
//!
//! ```no_run
//! # fn main() -> Result<(), voicerelay_vision::VisionError> {
//! let store = vr_core::ModelStore::from_env()?;
//! let labeler = voicerelay_vision::Labeler::load(&store)?;
//! let (w, h) = (640, 480);
//! let frame = vec![0u8; w * h * 4]; // RGBx from the video ring
//! let seen = labeler.classify(&frame, w as u32, h as u32)?;
//! println!("I can see {}", seen.describe(0.15, 2));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(clippy::disallowed_methods)]

mod classes;
mod efficientnet;
mod preprocess;

pub use efficientnet::{Padding, FEATURES};
pub use preprocess::{Normalisation, INPUT_SIZE};

use std::path::PathBuf;
use vr_audio::video::{PixelFormat, VideoFrame};
use vr_core::{ModelError, ModelStore};

/// The model store entry holding the weights and class names.
pub const MODEL: &str = "efficientnet-lite0";
/// How many labels [`Classification::top`] holds.
pub const TOP_K: usize = 5;

/// Errors of this crate. Frame errors are the caller's; the others mean the model is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VisionError {
    #[error("frame of {width}x{height} RGBx needs {expected} bytes, got {actual}")]
    FrameSize {
        width: u32,
        height: u32,
        expected: usize,
        actual: usize,
    },
    #[error("empty frame ({width}x{height})")]
    EmptyFrame { width: u32, height: u32 },
    #[error("frame is {format:?}; the labeler takes RGBx")]
    PixelFormat { format: PixelFormat },
    #[error(transparent)]
    Store(#[from] ModelError),
    #[error("model file {}: {reason}", path.display())]
    BadModel { path: PathBuf, reason: String },
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// One ImageNet class and its probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// The class's first synonym, e.g. "tabby" for "tabby, tabby cat".
    pub name: String,
    /// ImageNet-1k class index (0..1000).
    pub class: usize,
    /// Softmax probability.
    pub prob: f32,
}

impl Label {
    /// The name with its indefinite article: "a tabby", "an Egyptian cat".
    pub fn with_article(&self) -> String {
        let article = match self.name.chars().next().map(|c| c.to_ascii_lowercase()) {
            Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
            _ => "a",
        };
        format!("{article} {}", self.name)
    }
}

/// What one frame shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// The [`TOP_K`] most probable classes, most probable first.
    pub top: Vec<Label>,
    /// The pooled 1280-d feature vector (after the head's ReLU6, before the classifier).
    pub features: Vec<f32>,
}

impl Classification {
    /// The labels with probability ≥ `min_prob` (at most `max`) as a phrase for the dialog:
    /// "a tabby (62 %), an Egyptian cat (20 %)", or "nothing I can recognise".
    pub fn describe(&self, min_prob: f32, max: usize) -> String {
        let parts: Vec<String> = self
            .top
            .iter()
            .filter(|l| l.prob >= min_prob)
            .take(max)
            .map(|l| format!("{} ({:.0} %)", l.with_article(), l.prob * 100.0))
            .collect();
        if parts.is_empty() {
            "nothing I can recognise".to_string()
        } else {
            parts.join(", ")
        }
    }

    /// Cosine similarity of the two feature vectors (0 when either is all zeros).
    pub fn cosine(&self, other: &Classification) -> f32 {
        let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
        for (a, b) in self.features.iter().zip(&other.features) {
            let (a, b) = (*a as f64, *b as f64);
            dot += a * b;
            na += a * a;
            nb += b * b;
        }
        if na == 0.0 || nb == 0.0 || self.features.len() != other.features.len() {
            return 0.0;
        }
        (dot / (na.sqrt() * nb.sqrt())) as f32
    }
}

/// EfficientNet-Lite0 with its class names; immutable once loaded, so one instance may serve
/// several callers (`&self`).
pub struct Labeler {
    net: efficientnet::EfficientNet,
    classes: Vec<String>,
    norm: Normalisation,
}

impl Labeler {
    /// Loads weights and class names from the model store's `efficientnet-lite0` entry.
    ///
    /// # Errors
    /// [`VisionError::Store`] when a file is missing or fails its sha256, [`VisionError::BadModel`]
    /// when the weights or class list do not have the expected layout.
    pub fn load(store: &ModelStore) -> Result<Self, VisionError> {
        // Chosen by measurement (`examples/variants.rs`) on the store's photos; top-1 and the
        // probability on the right family among the top 5 (cats 281-285 / espresso, cup, mug):
        //   padding    input        chelsea (a tabby)          coffee
        //   k/2        ImageNet     tabby 0.448 (cats 0.925)   espresso 0.861 (0.955)
        //   k/2        [-1, 1]      Egyptian 0.357 (0.914)     espresso 0.911 (0.938)
        //   TF "same"  ImageNet     Egyptian 0.351 (0.864)     espresso 0.842 (0.946)
        //   TF "same"  [-1, 1]      Egyptian 0.386 (0.920)     espresso 0.953 (0.971)
        // TF "same" + [-1, 1] has the highest mean family mass (0.946 vs 0.940 for k/2 +
        // ImageNet) and the most confident espresso, and is how the checkpoint was trained (a
        // TensorFlow port: its conv weights are stored in TF's HWIO order; EfficientNet-Lite's
        // TF preprocessing is (x - 127) / 128). The margin over k/2 + ImageNet is small, and
        // that variant names chelsea "tabby" first; three ImageNet cat classes share her.
        Self::load_variant(store, Padding::TfSame, Normalisation::Symmetric)
    }

    /// [`Labeler::load`] with an explicit padding and input normalisation; for comparing the
    /// variants (`examples/variants.rs`), not for production use.
    #[doc(hidden)]
    pub fn load_variant(
        store: &ModelStore,
        padding: Padding,
        norm: Normalisation,
    ) -> Result<Self, VisionError> {
        let weights_path = store.file(MODEL, "model.safetensors")?;
        let classes_path = store.file(MODEL, "imagenet.rs")?;
        let bad = |path: &PathBuf, reason: String| VisionError::BadModel {
            path: path.clone(),
            reason,
        };
        let weights = candle_core::safetensors::load(&weights_path, &candle_core::Device::Cpu)
            .map_err(|e| bad(&weights_path, e.to_string()))?;
        let net = efficientnet::EfficientNet::from_weights(&weights, padding)
            .map_err(|r| bad(&weights_path, r))?;
        let source = std::fs::read_to_string(&classes_path)
            .map_err(|e| bad(&classes_path, e.to_string()))?;
        let classes = classes::parse(&source).map_err(|r| bad(&classes_path, r))?;
        Ok(Self { net, classes, norm })
    }

    /// Classifies one RGBx frame (4 bytes per pixel, rows tightly packed, any size ≥ 1×1).
    ///
    /// # Errors
    /// [`VisionError::EmptyFrame`] for a zero side, [`VisionError::FrameSize`] when `rgbx` is not
    /// `width·height·4` bytes, [`VisionError::Candle`] if a tensor operation fails.
    pub fn classify(
        &self,
        rgbx: &[u8],
        width: u32,
        height: u32,
    ) -> Result<Classification, VisionError> {
        if width == 0 || height == 0 {
            return Err(VisionError::EmptyFrame { width, height });
        }
        let expected = (width as usize)
            .checked_mul(height as usize)
            .and_then(|n| n.checked_mul(4));
        if expected != Some(rgbx.len()) {
            return Err(VisionError::FrameSize {
                width,
                height,
                expected: expected.unwrap_or(usize::MAX),
                actual: rgbx.len(),
            });
        }
        let input = preprocess::to_input(rgbx, width as usize, height as usize, self.norm);
        let (features, logits) = self.net.forward(input)?;
        Ok(Classification {
            top: self.top(&logits),
            features,
        })
    }

    /// [`Labeler::classify`] on a frame from the video ring; it must be [`PixelFormat::Rgbx`].
    pub fn classify_frame(&self, frame: &VideoFrame) -> Result<Classification, VisionError> {
        if frame.format != PixelFormat::Rgbx {
            return Err(VisionError::PixelFormat {
                format: frame.format,
            });
        }
        self.classify(&frame.data, frame.width, frame.height)
    }

    /// Softmax over the logits, the [`TOP_K`] most probable first.
    fn top(&self, logits: &[f32]) -> Vec<Label> {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        let mut order: Vec<usize> = (0..exp.len()).collect();
        order.sort_by(|&a, &b| exp[b].total_cmp(&exp[a]));
        order
            .into_iter()
            .take(TOP_K)
            .map(|class| Label {
                name: classes::first_synonym(&self.classes[class]).to_string(),
                class,
                prob: exp[class] / sum,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(labels: &[(&str, f32)], features: Vec<f32>) -> Classification {
        Classification {
            top: labels
                .iter()
                .enumerate()
                .map(|(i, (n, p))| Label {
                    name: n.to_string(),
                    class: i,
                    prob: *p,
                })
                .collect(),
            features,
        }
    }

    #[test]
    fn describe_keeps_confident_labels_with_articles() {
        let x = c(
            &[("tabby", 0.62), ("Egyptian cat", 0.2), ("lynx", 0.05)],
            vec![],
        );
        assert_eq!(x.describe(0.1, 3), "a tabby (62 %), an Egyptian cat (20 %)");
        assert_eq!(x.describe(0.1, 1), "a tabby (62 %)");
        assert_eq!(x.describe(0.9, 3), "nothing I can recognise");
    }

    #[test]
    fn cosine_of_features() {
        let a = c(&[], vec![1.0, 0.0, 2.0]);
        let b = c(&[], vec![2.0, 0.0, 4.0]);
        let o = c(&[], vec![0.0, 3.0, 0.0]);
        let z = c(&[], vec![0.0; 3]);
        assert!((a.cosine(&b) - 1.0).abs() < 1e-6);
        assert!(a.cosine(&o).abs() < 1e-6);
        assert_eq!(a.cosine(&z), 0.0);
    }
}
