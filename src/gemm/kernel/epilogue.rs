//! The epilogue's shared bodies (`c = act(alpha·acc + beta·c + bias)` over
//! accumulator rows), which each kernel module instantiates under its own
//! target features ([`super::Kernel::epilogue_rows`]).

use crate::gemm::{Activation, Epilogue};

/// Shared body of [`super::Kernel::epilogue_rows`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn epilogue_rows_body(
    epilogue: &Epilogue<'_>,
    acc: &[f32],
    ld_acc: usize,
    out: &mut [f32],
    ld_out: usize,
    rows: usize,
    cols: usize,
    col0: usize,
) {
    if epilogue.bias.is_none() && ld_acc == cols && ld_out == cols {
        // Both blocks contiguous and nothing depends on the column: one pass.
        let n = rows * cols;
        return epilogue_row_body(epilogue, &acc[..n], &mut out[..n], col0);
    }
    for i in 0..rows {
        epilogue_row_body(
            epilogue,
            &acc[i * ld_acc..i * ld_acc + cols],
            &mut out[i * ld_out..i * ld_out + cols],
            col0,
        );
    }
}

/// Shared body of the row epilogue; each kernel module instantiates it under
/// its own target features so `mul_add` becomes one instruction. The steps of
/// [`Epilogue::apply`] are done as separate passes over the row (each element
/// sees the same operations in the same order), so that each pass vectorises.
#[inline(always)]
fn epilogue_row_body(epilogue: &Epilogue<'_>, acc: &[f32], out: &mut [f32], col0: usize) {
    // NaN canonicalisation rides on whichever pass writes last, so that each
    // pass stores computed values (a separate in-place pass would compile
    // to slow masked stores).
    #[inline(always)]
    fn canon(v: f32, last: bool) -> f32 {
        if last && v.is_nan() {
            f32::NAN
        } else {
            v
        }
    }
    let out = &mut out[..acc.len()];
    let alpha = epilogue.alpha;
    let has_act = epilogue.activation != Activation::Identity;
    let last = epilogue.bias.is_none() && !has_act;
    if epilogue.beta != 0.0 {
        let beta = epilogue.beta;
        for (o, &s) in out.iter_mut().zip(acc) {
            *o = canon(beta.mul_add(*o, alpha * s), last);
        }
    } else {
        for (o, &s) in out.iter_mut().zip(acc) {
            *o = canon(alpha * s, last);
        }
    }
    if let Some(bias) = epilogue.bias {
        for (o, &b) in out.iter_mut().zip(&bias[col0..col0 + acc.len()]) {
            *o = canon(*o + b, !has_act);
        }
    }
    if has_act {
        let act = epilogue.activation;
        for o in out.iter_mut() {
            *o = canon(act.apply(*o), true);
        }
    }
}
