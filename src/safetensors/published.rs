//! The quantized weight layouts that published checkpoints ship, loaded
//! into [`BlockScaled`] operands and written back in the same layout:
//!
//! | layout | tensors | value of element (line, k) |
//! |---|---|---|
//! | gpt-oss MXFP4 ([`Safetensors::gpt_oss_mxfp4`]) | `<name>.blocks` U8 `[.., rows, K/32, 16]`, `<name>.scales` U8 `[.., rows, K/32]` | `FP4[code] · 2^(scale − 127)` |
//! | NVIDIA ModelOpt NVFP4 ([`Safetensors::modelopt_nvfp4`]) | `<p>.weight` U8 `[out, in/2]`, `<p>.weight_scale` F8_E4M3 `[out, in/16]`, `<p>.weight_scale_2` F32 `[]`, optional `<p>.input_scale` F32 `[]` | `FP4[code] · e4m3 · weight_scale_2` |
//! | DeepSeek-V3 block FP8 ([`Safetensors::deepseek_fp8`]) | `<p>.weight` F8_E4M3 `[out, in]`, `<p>.weight_scale_inv` F32 `[⌈out/128⌉, ⌈in/128⌉]` | `e4m3 · scale of its 128 × 128 block` |
//!
//! In the two FP4 layouts a byte holds two E2M1 codes, the even element in
//! the low nibble (gpt-oss's `weights.py` unpacks `blocks & 0x0F` to the
//! even columns and `blocks >> 4` to the odd ones; ModelOpt packs the same
//! way, as torchao does). The sources: gpt-oss `gpt_oss/torch/weights.py`
//! (`FP4_VALUES`, the low/high nibble split, `scales - 127` through
//! `torch.ldexp`); ModelOpt's NVFP4 export as vLLM's and TensorRT-LLM's
//! loaders read it (`weight`, `weight_scale` in E4M3, the per-tensor
//! `weight_scale_2`); DeepSeek-V3 `inference/kernel.py` (`weight_dequant`:
//! `y = x * s` per 128 × 128 block; the name `scale_inv` notwithstanding,
//! it multiplies). `scripts/make_published_fixtures.py` writes one weight
//! of each with the publishers' dequantization rules, and
//! `tests/published_layouts.rs` checks the loaders against it.
//!
//! In this crate's value rules (the block-scaled contract), a gpt-oss or
//! DeepSeek element is exactly the publisher's value; an NVFP4 element is
//! `FP4 · fl(weight_scale_2 · e4m3)` ([`BlockScaled::from_nvfp4_parts`]),
//! which may differ from ModelOpt's `(FP4 · e4m3) · weight_scale_2` in the
//! last bit. An E8M0 code of 0xFF is NaN here (OCP MX), where gpt-oss's
//! `ldexp` would give ±∞ or 0.

use super::Safetensors;
use crate::block_scaled::BlockScaled;
use crate::dtype::{F4E2M1, F8E4M3, F8E8M0};
use crate::tensor::Tensor;
use crate::Error;

/// A tensor's bytes, checked to be `dtype` with `expected` elements.
fn raw_of<'a>(
    file: &'a Safetensors,
    name: &str,
    dtype: &str,
) -> Result<(&'a [usize], &'a [u8]), Error> {
    let raw = file.raw(name).ok_or_else(|| Error::InvalidParameter {
        name: "tensor name",
        value: name.to_string(),
        requirement: "present in the file",
    })?;
    if raw.dtype_name() != dtype {
        return Err(Error::InvalidParameter {
            name: "tensor dtype",
            value: format!("{name}: {}", raw.dtype_name()),
            requirement: dtype_requirement(dtype),
        });
    }
    Ok((raw.shape(), raw.bytes()))
}

fn dtype_requirement(dtype: &str) -> &'static str {
    match dtype {
        "U8" => "U8, as the layout stores it",
        "F32" => "F32, as the layout stores it",
        _ => "F8_E4M3, as the layout stores it",
    }
}

/// A shape that is not what the layout says, named with the one it wants.
fn bad_shape(name: &str, got: &[usize], want: String) -> Error {
    Error::InvalidParameter {
        name: "tensor shape",
        value: format!("{name}: {got:?}, where the layout has {want}"),
        requirement: "the layout's shape",
    }
}

/// FP4 codes from bytes holding two each, the even element in the low nibble.
fn unpack_low_first(bytes: &[u8]) -> Vec<F4E2M1> {
    bytes
        .iter()
        .flat_map(|&b| [F4E2M1::from_bits(b & 0x0F), F4E2M1::from_bits(b >> 4)])
        .collect()
}

/// Bytes holding two FP4 codes each, the even element in the low nibble.
fn pack_low_first(data: &[F4E2M1]) -> Vec<u8> {
    data.chunks(2)
        .map(|p| p[0].to_bits() | p.get(1).map_or(0, |v| v.to_bits() << 4))
        .collect()
}

/// A per-tensor f32 scalar (`[]` or `[1]`).
fn scalar(file: &Safetensors, name: &str) -> Result<f32, Error> {
    let t = file.tensor::<f32>(name)?;
    match (t.shape(), t.as_slice()) {
        ([] | [1], [v]) => Ok(*v),
        (shape, _) => Err(bad_shape(name, shape, "[] or [1], one per tensor".into())),
    }
}

impl Safetensors {
    /// A gpt-oss MXFP4 weight: `<name>.blocks` (U8 `[.., rows, K/32, 16]`)
    /// and `<name>.scales` (U8 `[.., rows, K/32]`, E8M0). Leading
    /// dimensions (experts) are flattened into lines; the second value is
    /// the shape of the lines (`[.., rows]`), for
    /// [`Self::insert_gpt_oss_mxfp4`].
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a missing tensor, a dtype or shape
    /// that is not the layout's; the errors of [`BlockScaled::from_mx_parts`].
    pub fn gpt_oss_mxfp4(&self, name: &str) -> Result<(BlockScaled<F4E2M1>, Vec<usize>), Error> {
        let (blocks_name, scales_name) = (format!("{name}.blocks"), format!("{name}.scales"));
        let (bshape, bytes) = raw_of(self, &blocks_name, "U8")?;
        let (sshape, scales) = raw_of(self, &scales_name, "U8")?;
        let Some((&[groups, 16], lead)) = bshape.split_last_chunk::<2>().map(|(l, g)| (g, l))
        else {
            return Err(bad_shape(
                &blocks_name,
                bshape,
                "[.., rows, K/32, 16]".into(),
            ));
        };
        if lead.is_empty() || sshape.split_last() != Some((&groups, lead)) {
            return Err(bad_shape(
                &scales_name,
                sshape,
                format!("[.., rows, K/32] matching {blocks_name} {bshape:?}"),
            ));
        }
        let lines = crate::error::checked_numel(lead)?;
        let codes = scales.iter().map(|&c| F8E8M0::from_bits(c)).collect();
        // K = 32 per group, checked: an empty tensor may claim any shape.
        let k = crate::error::checked_numel(&[groups, 32])?;
        let w = BlockScaled::from_mx_parts(lines, k, unpack_low_first(bytes), codes)?;
        Ok((w, lead.to_vec()))
    }

    /// Writes `w` (MX, blocks of 32) in gpt-oss's layout under `<name>.blocks`
    /// and `<name>.scales`; `lines_shape` (`[.., rows]`, product = lines)
    /// restores leading dimensions such as experts.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when `w` has no E8M0 scales (not MX) or
    /// `lines_shape` does not multiply to its lines; the errors of
    /// [`Self::insert`].
    pub fn insert_gpt_oss_mxfp4(
        &mut self,
        name: &str,
        w: &BlockScaled<F4E2M1>,
        lines_shape: &[usize],
    ) -> Result<(), Error> {
        let codes = w.e8m0_scales().ok_or(Error::InvalidParameter {
            name: "gpt-oss MXFP4 weight",
            value: "scales without an E8M0 encoding".into(),
            requirement: "an MX matrix (BlockScaled::mx or from_mx_parts)",
        })?;
        if crate::error::checked_numel(lines_shape).ok() != Some(w.lines())
            || lines_shape.is_empty()
        {
            return Err(Error::InvalidParameter {
                name: "gpt-oss MXFP4 lines shape",
                value: format!("{lines_shape:?} for {} lines", w.lines()),
                requirement: "[.., rows] whose product is the lines",
            });
        }
        let groups = w.k() / 32;
        let mut bshape = lines_shape.to_vec();
        bshape.extend([groups, 16]);
        let mut sshape = lines_shape.to_vec();
        sshape.push(groups);
        self.insert(
            format!("{name}.blocks"),
            Tensor::from_vec(&bshape, pack_low_first(w.data()))?,
        )?;
        let scale_bytes = codes.iter().map(|c| c.to_bits()).collect();
        self.insert(
            format!("{name}.scales"),
            Tensor::from_vec(&sshape, scale_bytes)?,
        )
    }

    /// A ModelOpt NVFP4 weight under `prefix`: `.weight` (U8 `[out, in/2]`),
    /// `.weight_scale` (F8_E4M3 `[out, in/16]`) and `.weight_scale_2` (F32,
    /// per tensor). The second value is `.input_scale` where the file has
    /// one (the activations' per-tensor scale, for W4A4 use).
    ///
    /// # Errors
    /// As [`Self::gpt_oss_mxfp4`]; the errors of
    /// [`BlockScaled::from_nvfp4_parts`].
    pub fn modelopt_nvfp4(
        &self,
        prefix: &str,
    ) -> Result<(BlockScaled<F4E2M1>, Option<f32>), Error> {
        let (wname, sname) = (format!("{prefix}.weight"), format!("{prefix}.weight_scale"));
        let (wshape, bytes) = raw_of(self, &wname, "U8")?;
        let &[out, half] = wshape else {
            return Err(bad_shape(&wname, wshape, "[out, in/2]".into()));
        };
        let block_scales = self.tensor::<F8E4M3>(&sname)?;
        let k = crate::error::checked_numel(&[half, 2])?;
        if block_scales.shape() != [out, k / 16] || !k.is_multiple_of(16) {
            return Err(bad_shape(
                &sname,
                block_scales.shape(),
                format!("[{out}, {}] (one E4M3 scale per 16 of in = {k})", k / 16),
            ));
        }
        let tensor_scale = scalar(self, &format!("{prefix}.weight_scale_2"))?;
        let input_name = format!("{prefix}.input_scale");
        let input_scale = match self.raw(&input_name) {
            Some(_) => Some(scalar(self, &input_name)?),
            None => None,
        };
        let w = BlockScaled::from_nvfp4_parts(
            out,
            k,
            unpack_low_first(bytes),
            block_scales.as_slice().to_vec(),
            Some(tensor_scale),
        )?;
        Ok((w, input_scale))
    }

    /// Writes `w` (NVFP4 with a tensor scale) in ModelOpt's layout under
    /// `prefix`, with `.input_scale` when given.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when `w` is not NVFP4 with a tensor
    /// scale; the errors of [`Self::insert`].
    pub fn insert_modelopt_nvfp4(
        &mut self,
        prefix: &str,
        w: &BlockScaled<F4E2M1>,
        input_scale: Option<f32>,
    ) -> Result<(), Error> {
        let Some((block_scales, Some(tensor_scale))) = w.nvfp4_scales() else {
            return Err(Error::InvalidParameter {
                name: "ModelOpt NVFP4 weight",
                value: "no E4M3 block scales with an f32 tensor scale".into(),
                requirement: "BlockScaled::nvfp4(x, true) or from_nvfp4_parts with a tensor scale",
            });
        };
        let (out, k) = (w.lines(), w.k());
        let bytes = pack_low_first(w.data());
        self.insert(
            format!("{prefix}.weight"),
            Tensor::from_vec(&[out, k / 2], bytes)?,
        )?;
        self.insert(
            format!("{prefix}.weight_scale"),
            Tensor::from_vec(&[out, k / 16], block_scales.to_vec())?,
        )?;
        self.insert(
            format!("{prefix}.weight_scale_2"),
            Tensor::from_vec(&[], vec![tensor_scale])?,
        )?;
        if let Some(s) = input_scale {
            self.insert(
                format!("{prefix}.input_scale"),
                Tensor::from_vec(&[], vec![s])?,
            )?;
        }
        Ok(())
    }

    /// A DeepSeek-V3 block-FP8 weight under `prefix`: `.weight` (F8_E4M3
    /// `[out, in]`, `in` a multiple of 128) and `.weight_scale_inv` (F32
    /// `[⌈out/128⌉, in/128]`, one multiplier per 128 × 128 block), as a
    /// [`BlockScaled`] with blocks of 128 along K and line groups of 128.
    ///
    /// # Errors
    /// As [`Self::gpt_oss_mxfp4`]; [`Error::InvalidParameter`] for an `in`
    /// that is not a multiple of 128, or a scale that is not finite and > 0.
    pub fn deepseek_fp8(&self, prefix: &str) -> Result<BlockScaled<F8E4M3>, Error> {
        let (wname, sname) = (
            format!("{prefix}.weight"),
            format!("{prefix}.weight_scale_inv"),
        );
        let w = self.tensor::<F8E4M3>(&wname)?;
        let &[out, k] = w.shape() else {
            return Err(bad_shape(&wname, w.shape(), "[out, in]".into()));
        };
        let s = self.tensor::<f32>(&sname)?;
        if s.shape() != [out.div_ceil(128), k.div_ceil(128)] {
            return Err(bad_shape(
                &sname,
                s.shape(),
                format!(
                    "[{}, {}] (one per 128 × 128 block of [{out}, {k}])",
                    out.div_ceil(128),
                    k.div_ceil(128)
                ),
            ));
        }
        BlockScaled::from_parts(
            out,
            k,
            128,
            128,
            w.as_slice().to_vec(),
            s.as_slice().to_vec(),
        )
    }

    /// Writes `w` (blocks of 128 along K, line groups of 128) in
    /// DeepSeek-V3's layout under `prefix`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for other block shapes; the errors of
    /// [`Self::insert`].
    pub fn insert_deepseek_fp8(
        &mut self,
        prefix: &str,
        w: &BlockScaled<F8E4M3>,
    ) -> Result<(), Error> {
        if w.block() != 128 || w.line_group() != 128 {
            return Err(Error::InvalidParameter {
                name: "DeepSeek FP8 weight blocks",
                value: format!("block {}, line group {}", w.block(), w.line_group()),
                requirement: "128 × 128 (Fp8Granularity::Blocks128x128)",
            });
        }
        let (out, k) = (w.lines(), w.k());
        self.insert(
            format!("{prefix}.weight"),
            Tensor::from_vec(&[out, k], w.data().to_vec())?,
        )?;
        let shape = [out.div_ceil(128), k / 128];
        self.insert(
            format!("{prefix}.weight_scale_inv"),
            Tensor::from_vec(&shape, w.scales().to_vec())?,
        )
    }
}
