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
    if force_portable(std::env::var_os("MIXPREC_FORCE_PORTABLE").as_deref()) {
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

/// Whether `MIXPREC_FORCE_PORTABLE` asks for the portable kernels: any
/// value except unset, empty, `0` and `false` (any case) does.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn force_portable(value: Option<&std::ffi::OsStr>) -> bool {
    match value.map(|v| v.to_string_lossy().trim().to_ascii_lowercase()) {
        None => false,
        Some(v) => !(v.is_empty() || v == "0" || v == "false"),
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

#[cfg(test)]
mod tests {
    use super::force_portable;
    use std::ffi::OsStr;

    #[test]
    fn force_portable_values() {
        for off in [
            None,
            Some(""),
            Some("0"),
            Some("false"),
            Some("FALSE"),
            Some(" 0 "),
        ] {
            assert!(!force_portable(off.map(OsStr::new)), "{off:?}");
        }
        for on in ["1", "true", "yes", "portable"] {
            assert!(force_portable(Some(OsStr::new(on))), "{on}");
        }
    }
}
