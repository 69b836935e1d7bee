//! Reading a GGUF header defensively. candle's reader trusts the file: a tensor whose dimensions
//! multiply past `usize` panics inside it (debug) or wraps (release), and a tensor placed past
//! the end of the file is only found when its bytes are read, and an empty tensor aborts the
//! process when read. Found by `dialog/tests/fuzz.rs`.

use std::io::{Read, Seek};

use candle_core::quantized::gguf_file;

/// Reads the header of a `len`-byte GGUF file and checks that every tensor it lists is a whole
/// number of blocks and lies inside the file.
///
/// # Errors
/// A human-readable reason: the header does not parse (or made the reader panic), or a tensor's
/// size or place is impossible.
pub fn read_header<R: Read + Seek>(r: &mut R, len: u64) -> Result<gguf_file::Content, String> {
    let content =
        vr_core::catch_parser_panic(|| gguf_file::Content::read(r))?.map_err(|e| e.to_string())?;
    for (name, info) in &content.tensor_infos {
        let dtype = info.ggml_dtype;
        let elems = info
            .shape
            .dims()
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("tensor {name:?}: dimensions {:?} overflow", info.shape))?;
        // An empty tensor's buffer is a dangling pointer that candle casts to the block type:
        // misaligned, a debug build aborts the process (and no model has one).
        if elems == 0 {
            return Err(format!(
                "tensor {name:?} has no elements ({:?})",
                info.shape
            ));
        }
        if elems % dtype.block_size() != 0 {
            return Err(format!(
                "tensor {name:?}: {elems} elements are not whole {dtype:?} blocks of {}",
                dtype.block_size()
            ));
        }
        let end = (elems / dtype.block_size())
            .checked_mul(dtype.type_size())
            .and_then(|b| u64::try_from(b).ok())
            .and_then(|b| b.checked_add(info.offset))
            .and_then(|b| b.checked_add(content.tensor_data_offset));
        if end.is_none_or(|e| e > len) {
            return Err(format!(
                "tensor {name:?} ({:?} {dtype:?} at offset {}) runs past the end of the \
                 {len}-byte file",
                info.shape, info.offset
            ));
        }
    }
    Ok(content)
}
