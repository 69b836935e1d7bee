//! Reader for CTranslate2 `model.bin` checkpoints (the format faster-whisper ships).
//!
//! Layout (little-endian, binary version 6 as written by `ctranslate2.specs.ModelSpec.save`):
//! `u32 version`, then (version ≥ 2) the spec name as a string, (version ≥ 4) `u32 spec revision`,
//! `u32 variable count`, and per variable: name string, `u8 rank`, `u32` × rank dims, (version ≥ 4)
//! `u8 dtype` (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16), `u32 byte count`, raw data. Then
//! (version ≥ 3) `u32 alias count` and pairs of strings (alias, target). A string is a `u16` byte
//! length followed by that many bytes, the last of which is a NUL.
//!
//! Every length is checked against the bytes that remain, so a truncated or corrupted file fails
//! with an [`AsrError::Checkpoint`] naming the file and the offset, never with a panic or a
//! multi-gigabyte allocation.

use crate::AsrError;
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

/// The element types CTranslate2 writes, by their on-disk id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl Ct2DType {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::BF16,
            _ => return None,
        })
    }

    fn id(self) -> u8 {
        match self {
            Self::F32 => 0,
            Self::I8 => 1,
            Self::I16 => 2,
            Self::I32 => 3,
            Self::F16 => 4,
            Self::BF16 => 5,
        }
    }

    pub fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

/// One named array as stored in the file.
#[derive(Debug, Clone)]
pub struct Ct2Variable {
    pub shape: Vec<usize>,
    pub dtype: Ct2DType,
    pub data: Vec<u8>,
}

impl Ct2Variable {
    /// The array as an f32 tensor (floating types only).
    pub fn to_f32_tensor(&self, device: &Device) -> Result<Tensor, candle_core::Error> {
        let dt = match self.dtype {
            Ct2DType::F32 => DType::F32,
            Ct2DType::F16 => DType::F16,
            Ct2DType::BF16 => DType::BF16,
            other => candle_core::bail!("variable of type {other:?} is not floating point"),
        };
        Tensor::from_raw_buffer(&self.data, dt, &self.shape, device)?.to_dtype(DType::F32)
    }

    /// The value of an integer scalar (CT2 stores e.g. `num_heads` as an i16 scalar).
    pub fn scalar_i64(&self) -> Option<i64> {
        if !self.shape.is_empty() {
            return None;
        }
        let d = &self.data;
        Some(match self.dtype {
            Ct2DType::I8 => *d.first()? as i8 as i64,
            Ct2DType::I16 => i16::from_le_bytes([*d.first()?, *d.get(1)?]) as i64,
            Ct2DType::I32 => i32::from_le_bytes(d.get(..4)?.try_into().ok()?) as i64,
            _ => return None,
        })
    }
}

/// A parsed checkpoint: spec name, revision, variables by name (aliases resolved to copies of
/// their targets' names in [`Ct2Model::aliases`]).
#[derive(Debug, Clone)]
pub struct Ct2Model {
    pub version: u32,
    pub spec: String,
    pub revision: u32,
    pub variables: BTreeMap<String, Ct2Variable>,
    pub aliases: BTreeMap<String, String>,
}

impl Ct2Model {
    pub fn read(path: &Path) -> Result<Self, AsrError> {
        let bytes = std::fs::read(path).map_err(|source| AsrError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&bytes).map_err(|reason| AsrError::Checkpoint {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Parses a whole file image; the error is a human-readable reason with the byte offset.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u32("binary version")?;
        if !(1..=6).contains(&version) {
            return Err(format!(
                "unsupported CTranslate2 binary version {version} (this reader knows 1..=6); \
                 not a CTranslate2 model.bin?"
            ));
        }
        let spec = if version >= 2 {
            r.string("spec name")?
        } else {
            String::new()
        };
        let revision = if version >= 4 {
            r.u32("spec revision")?
        } else {
            1
        };
        let count = r.u32("variable count")? as usize;
        // Each variable needs at least 2 (name) + 1 (rank) + 4 (size) bytes.
        if count > r.remaining() / 7 {
            return Err(format!(
                "variable count {count} cannot fit in the {} remaining bytes",
                r.remaining()
            ));
        }
        let mut variables = BTreeMap::new();
        for i in 0..count {
            let name = r.string("variable name")?;
            let rank = r.u8("rank")? as usize;
            if rank > 8 {
                return Err(format!("variable {name:?} has implausible rank {rank}"));
            }
            let mut shape = Vec::with_capacity(rank);
            for _ in 0..rank {
                shape.push(r.u32("dimension")? as usize);
            }
            let dtype = if version >= 4 {
                let id = r.u8("dtype")?;
                Ct2DType::from_id(id)
                    .ok_or_else(|| format!("variable {name:?} has unknown dtype id {id}"))?
            } else {
                // Versions < 4 stored the item size; only f32 checkpoints were written then.
                let _item_size = r.u8("item size")?;
                Ct2DType::F32
            };
            let nbytes = r.u32("byte count")? as usize;
            // Checked: dimensions whose product wraps around (found by `asr/tests/fuzz.rs`)
            // would otherwise "fit" a small byte count.
            let need = shape
                .iter()
                .try_fold(dtype.size(), |a, &d| a.checked_mul(d));
            if need != Some(nbytes) {
                return Err(format!(
                    "variable #{i} {name:?}: shape {shape:?} of {dtype:?} needs {} bytes but the \
                     file says {nbytes}",
                    need.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
                ));
            }
            let data = r.take(nbytes, &name)?.to_vec();
            variables.insert(name, Ct2Variable { shape, dtype, data });
        }
        let mut aliases = BTreeMap::new();
        if version >= 3 {
            let n = r.u32("alias count")? as usize;
            if n > r.remaining() / 4 {
                return Err(format!("alias count {n} cannot fit in the remaining bytes"));
            }
            for _ in 0..n {
                let alias = r.string("alias")?;
                let target = r.string("alias target")?;
                if !variables.contains_key(&target) {
                    return Err(format!(
                        "alias {alias:?} points at missing variable {target:?}"
                    ));
                }
                aliases.insert(alias, target);
            }
        }
        if r.remaining() != 0 {
            return Err(format!(
                "{} unexpected trailing bytes after offset {}",
                r.remaining(),
                r.pos
            ));
        }
        Ok(Self {
            version,
            spec,
            revision,
            variables,
            aliases,
        })
    }

    /// The file image of this model in binary version 6 (what `parse` reads back byte for
    /// byte). For tests and tools that make small checkpoints; names and the spec must fit a
    /// 16-bit length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let s = write_string;
        let mut b = Vec::new();
        b.extend_from_slice(&6u32.to_le_bytes());
        s(&mut b, &self.spec);
        b.extend_from_slice(&self.revision.to_le_bytes());
        b.extend_from_slice(&(self.variables.len() as u32).to_le_bytes());
        for (name, v) in &self.variables {
            s(&mut b, name);
            b.push(v.shape.len() as u8);
            for &d in &v.shape {
                b.extend_from_slice(&(d as u32).to_le_bytes());
            }
            b.push(v.dtype.id());
            b.extend_from_slice(&(v.data.len() as u32).to_le_bytes());
            b.extend_from_slice(&v.data);
        }
        b.extend_from_slice(&(self.aliases.len() as u32).to_le_bytes());
        for (alias, target) in &self.aliases {
            s(&mut b, alias);
            s(&mut b, target);
        }
        b
    }

    /// A variable by name or alias.
    pub fn get(&self, name: &str) -> Option<&Ct2Variable> {
        self.variables
            .get(name)
            .or_else(|| self.aliases.get(name).and_then(|t| self.variables.get(t)))
    }
}

/// A CTranslate2 string: u16 length including the terminating NUL, the bytes, the NUL.
fn write_string(out: &mut Vec<u8>, v: &str) {
    out.extend_from_slice(&((v.len() + 1) as u16).to_le_bytes());
    out.extend_from_slice(v.as_bytes());
    out.push(0);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "truncated: {what} needs {n} bytes at offset {} but only {} remain",
                self.pos,
                self.remaining()
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, String> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let at = self.pos;
        let n = self.u16(what)? as usize;
        let b = self.take(n, what)?;
        let b = b.strip_suffix(&[0]).unwrap_or(b);
        String::from_utf8(b.to_vec())
            .map_err(|_| format!("{what} at offset {at} is not UTF-8 (corrupted file?)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small valid v6 file built by hand: one f16 matrix, one i16 scalar, one alias.
    fn tiny_file() -> Vec<u8> {
        let s = write_string;
        let mut b = Vec::new();
        b.extend_from_slice(&6u32.to_le_bytes());
        s(&mut b, "TestSpec");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        s(&mut b, "w");
        b.push(2);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&3u32.to_le_bytes());
        b.push(4);
        b.extend_from_slice(&12u32.to_le_bytes());
        for v in [1.0f32, -2.0, 0.5, 3.0, 0.0, -0.25] {
            b.extend_from_slice(&half_bits(v).to_le_bytes());
        }
        s(&mut b, "heads");
        b.push(0);
        b.push(2);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&6i16.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        s(&mut b, "w_alias");
        s(&mut b, "w");
        b
    }

    /// f16 bits for values exactly representable with a short mantissa (test data only).
    fn half_bits(v: f32) -> u16 {
        let bits = v.to_bits();
        let sign = ((bits >> 16) & 0x8000) as u16;
        if v == 0.0 {
            return sign;
        }
        let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
        let mant = ((bits >> 13) & 0x3ff) as u16;
        sign | ((exp as u16) << 10) | mant
    }

    #[test]
    fn parses_hand_built_file() {
        let m = Ct2Model::parse(&tiny_file()).unwrap();
        assert_eq!((m.version, m.spec.as_str(), m.revision), (6, "TestSpec", 3));
        let w = m.get("w_alias").unwrap();
        assert_eq!(w.shape, vec![2, 3]);
        let t = w.to_f32_tensor(&Device::Cpu).unwrap();
        assert_eq!(
            t.to_vec2::<f32>().unwrap(),
            vec![vec![1.0, -2.0, 0.5], vec![3.0, 0.0, -0.25]]
        );
        assert_eq!(m.get("heads").unwrap().scalar_i64(), Some(6));
    }

    #[test]
    fn to_bytes_writes_back_what_was_read() {
        let file = tiny_file();
        let m = Ct2Model::parse(&file).unwrap();
        let bytes = m.to_bytes();
        // Same size (variables written in name order, the hand-built file has them the other
        // way round), and read again it is the same model, byte for byte.
        assert_eq!(bytes.len(), file.len());
        let again = Ct2Model::parse(&bytes).unwrap();
        assert_eq!(again.to_bytes(), bytes);
        assert_eq!(again.get("w_alias").unwrap().data, m.get("w").unwrap().data);
        assert_eq!(again.get("heads").unwrap().scalar_i64(), Some(6));
    }

    /// Found by `asr/tests/fuzz.rs`: dimensions whose product overflows (2^32 · 2^32 = 2^64 wraps
    /// to 0) panicked in a debug build and "fit" an empty variable in a release one.
    #[test]
    fn regression_dimensions_whose_product_overflows_are_refused() {
        let mut m = Ct2Model::parse(&tiny_file()).unwrap();
        let v = m.variables.get_mut("heads").unwrap();
        v.shape = vec![1 << 31, 1 << 31, 4];
        v.dtype = Ct2DType::I8;
        v.data.clear();
        let e = Ct2Model::parse(&m.to_bytes()).unwrap_err();
        assert!(e.contains("needs more than 2^64 bytes"), "{e}");
    }

    #[test]
    fn every_truncation_is_a_clear_error() {
        let full = tiny_file();
        for cut in 0..full.len() {
            let e = Ct2Model::parse(&full[..cut]).unwrap_err();
            assert!(
                e.contains("truncated") || e.contains("cannot fit") || e.contains("version"),
                "cut at {cut}: {e}"
            );
        }
    }

    #[test]
    fn corruption_is_a_clear_error() {
        let mut f = tiny_file();
        // Byte count of "w" (after version, spec, revision, count, name, rank, dims, dtype).
        let off = 4 + 2 + 9 + 4 + 4 + 2 + 2 + 1 + 8 + 1;
        f[off] = 13;
        let e = Ct2Model::parse(&f).unwrap_err();
        assert!(e.contains("needs 12 bytes but the file says 13"), "{e}");
        let mut f = tiny_file();
        f[0] = 99;
        assert!(Ct2Model::parse(&f).unwrap_err().contains("version 99"));
        let mut f = tiny_file();
        f.push(0);
        assert!(Ct2Model::parse(&f).unwrap_err().contains("trailing"));
        let mut f = tiny_file();
        let dtype_off = off - 1;
        f[dtype_off] = 77;
        assert!(Ct2Model::parse(&f).unwrap_err().contains("dtype id 77"));
    }
}
