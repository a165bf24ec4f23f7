//! Run-time CPU feature detection, done once and cached.

use std::sync::atomic::{AtomicU8, Ordering};

const UNKNOWN: u8 = 0;
const PORTABLE: u8 = 1;
const AVX2: u8 = 2;

static LEVEL: AtomicU8 = AtomicU8::new(UNKNOWN);

/// True when the CPU has AVX2, FMA and F16C (every x86-64 since Haswell and
/// Zen 1): the tier the crate's x86 kernels are compiled for.
#[inline]
pub(crate) fn has_avx2_fma_f16c() -> bool {
    let level = match LEVEL.load(Ordering::Relaxed) {
        UNKNOWN => {
            let level = detect();
            LEVEL.store(level, Ordering::Relaxed);
            level
        }
        known => known,
    };
    level == AVX2
}

#[cfg(target_arch = "x86_64")]
fn detect() -> u8 {
    if std::env::var_os("MIXPREC_FORCE_PORTABLE").is_some() {
        return PORTABLE;
    }
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        AVX2
    } else {
        PORTABLE
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> u8 {
    PORTABLE
}

/// The kernel family the crate selected at run time: "avx2+fma+f16c" or
/// "portable" (for reports).
pub fn active_isa() -> &'static str {
    if has_avx2_fma_f16c() {
        "avx2+fma+f16c"
    } else {
        "portable"
    }
}
