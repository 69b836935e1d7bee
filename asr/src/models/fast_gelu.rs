//! GELU (the tanh form Whisper's candle port uses) for f32 tensors on the CPU, in a loop the
//! compiler vectorises.
//!
//! candle's `Tensor::gelu` maps libm's scalar `tanhf` over the tensor on one thread. Whisper
//! tiny.en's encoder applies it to `frames × 1536` values in each of its four blocks, and perf
//! put `tanhf`/`expm1f` and the map at ~16 % of all CPU of a streaming `eval asr` run, with
//! candle's other worker spinning at its barrier meanwhile. Here `tanh` is a rational
//! approximation (odd degree-13 numerator over an even degree-6 denominator, the form Eigen and
//! XNNPACK use), within 1e-6 of `tanhf` everywhere (tested), with no branches or calls, so one
//! core does the same work in a small fraction of the time.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

/// tanh saturates to ±1 in f32 beyond this.
const TANH_CLAMP: f32 = 7.905_311;
const ALPHA: [f32; 7] = [
    4.893_524_6e-3,
    6.372_619_3e-4,
    1.485_722_4e-5,
    5.122_297e-8,
    -8.604_672e-11,
    2.000_188e-13,
    -2.760_768_5e-16,
];
const BETA: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];
/// sqrt(2 / pi).
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

#[inline(always)]
fn tanh(x: f32) -> f32 {
    let x = x.clamp(-TANH_CLAMP, TANH_CLAMP);
    let x2 = x * x;
    let mut p = ALPHA[6];
    for a in ALPHA[..6].iter().rev() {
        p = p * x2 + a;
    }
    let mut q = BETA[3];
    for b in BETA[..3].iter().rev() {
        q = q * x2 + b;
    }
    x * p / q
}

#[inline(always)]
fn gelu_one(v: f32) -> f32 {
    0.5 * v * (1.0 + tanh(SQRT_2_OVER_PI * v * (1.0 + 0.044_715 * v * v)))
}

/// GELU of every element of `xs` into `ys` (same length).
pub fn gelu_slice(xs: &[f32], ys: &mut [f32]) {
    for (y, &x) in ys.iter_mut().zip(xs) {
        *y = gelu_one(x);
    }
}

struct FastGelu;

impl CustomOp1 for FastGelu {
    fn name(&self) -> &'static str {
        "fast-gelu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = storage else {
            candle_core::bail!("fast-gelu takes f32, got {:?}", storage.dtype())
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("fast-gelu takes a contiguous tensor")
        };
        let mut out = vec![0f32; end - start];
        gelu_slice(&v[start..end], &mut out);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// GELU (tanh form), as [`Tensor::gelu`]: the fast loop for f32 on the CPU, candle's op for
/// anything else.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1_no_bwd(&FastGelu)
    } else {
        x.gelu()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn tanh_is_within_a_millionth_of_libm() {
        let mut worst = (0f32, 0f32);
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            let d = (tanh(x) - x.tanh()).abs();
            if d > worst.1 {
                worst = (x, d);
            }
        }
        assert!(worst.1 < 1e-6, "worst at {}: {}", worst.0, worst.1);
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(100.0), tanh(TANH_CLAMP));
        assert!((tanh(100.0) - 1.0).abs() < 1e-6);
        assert!((tanh(-100.0) + 1.0).abs() < 1e-6);
    }

    #[test]
    fn matches_candles_gelu_on_any_layout() -> Result<()> {
        let dev = Device::Cpu;
        let xs: Vec<f32> = (0..6 * 1000).map(|i| (i as f32 - 3000.0) * 4e-3).collect();
        let x = Tensor::from_vec(xs, (6, 1000), &dev)?;
        // A transposed view exercises the contiguous copy in front of the op.
        for t in [x.clone(), x.t()?] {
            let ours = gelu(&t)?;
            let theirs = t.gelu()?;
            assert_eq!(ours.dims(), theirs.dims());
            let d = (ours - theirs)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(d < 5e-6, "max abs difference {d}");
        }
        let nan = gelu(&Tensor::new(&[f32::NAN], &dev)?)?.to_vec1::<f32>()?;
        assert!(nan[0].is_nan(), "NaN in, NaN out: {nan:?}");
        Ok(())
    }
}
