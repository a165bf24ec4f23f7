//! Run-time CPU feature detection, done once and cached.

use std::sync::atomic::{AtomicU8, Ordering};

const UNKNOWN: u8 = 0;
const PORTABLE: u8 = 1;
const AVX2: u8 = 2;
const AVX512_VNNI: u8 = 3;

static LEVEL: AtomicU8 = AtomicU8::new(UNKNOWN);

fn level() -> u8 {
    match LEVEL.load(Ordering::Relaxed) {
        UNKNOWN => {
            let level = detect();
            LEVEL.store(level, Ordering::Relaxed);
            level
        }
        known => known,
    }
}

/// True when the CPU has AVX2, FMA and F16C (every x86-64 since Haswell and
/// Zen 1): the tier the crate's x86 kernels are compiled for.
#[inline]
pub(crate) fn has_avx2_fma_f16c() -> bool {
    level() >= AVX2
}

/// True when the CPU also has AVX-512 F, BW, VL and VNNI (Ice Lake and
/// later, Zen 4 and later): the float GEMM's tiles then run on zmm
/// registers and the integer GEMM on `vpdpbusd` (u8 × i8 quads summed into
/// i32 without an i16 step).
#[inline]
pub(crate) fn has_avx512() -> bool {
    level() == AVX512_VNNI
}

/// True when the AVX-512 tier is on and the CPU also has AVX-512 VBMI
/// (byte permutes across a whole register: Ice Lake and later, Zen 4 and
/// later; not Skylake-X or Cascade Lake).
#[inline]
pub(crate) fn has_avx512_vbmi() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx512() && is_x86_feature_detected!("avx512vbmi") && !no_vbmi()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True when the AVX-512 tier is on and the CPU also has AVX-512 VBMI and
/// GFNI (Ice Lake and later, Zen 4 and later): the block-scaled `[out, in]`
/// kernel then decodes codes through f16
/// (`gemm::kernel::x86_avx512_blocks_staged`).
#[inline]
pub(crate) fn has_avx512_vbmi_gfni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx512_vbmi() && is_x86_feature_detected!("gfni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The associativity of the L1 data cache (from CPUID's cache
/// parameters: leaf 4 on Intel, leaf 0x8000_001D on AMD), or 8 where the
/// CPU does not report it. Read once.
///
/// The block-scaled `[out, in]` kernel reads 16 lines `K` codes apart,
/// which share an L1 set where `K` is a multiple of 4 KiB; it sizes what it
/// keeps in flight by this (`gemm::kernel::x86_avx512_blocks_staged`).
#[cfg(target_arch = "x86_64")]
pub(crate) fn l1d_ways() -> usize {
    static WAYS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *WAYS.get_or_init(|| {
        use std::arch::x86_64::__cpuid_count;
        let vendor = __cpuid_count(0, 0);
        let leaf = if vendor.ebx == u32::from_le_bytes(*b"Auth") {
            // AMD: leaf 0x8000_001D, where the CPU has it.
            let top = __cpuid_count(0x8000_0000, 0).eax;
            if top < 0x8000_001D {
                return 8;
            }
            0x8000_001D
        } else {
            if vendor.eax < 4 {
                return 8;
            }
            4
        };
        // Sub-leaves list the caches until type 0; the L1 data cache is
        // type 1 (data) at level 1. Ways − 1 in EBX bits 22..32.
        for sub in 0..16 {
            let r = __cpuid_count(leaf, sub);
            let (kind, level) = (r.eax & 0x1F, (r.eax >> 5) & 0x7);
            if kind == 0 {
                break;
            }
            if kind == 1 && level == 1 {
                return ((r.ebx >> 22) & 0x3FF) as usize + 1;
            }
        }
        8
    })
}

/// True where an L1 set holds fewer than 12 lines (AMD Zen 4: 8 ways;
/// Intel Golden Cove: 12). The kernels that read 16 lines of W a multiple
/// of 4 KiB apart then read each line of cache by one load, from where the
/// lines start a 64-byte boundary, and keep fewer lines in flight.
#[cfg(target_arch = "x86_64")]
pub(crate) fn narrow_l1() -> bool {
    l1d_ways() < 12
}

/// True on the Intel cores with AVX-512 from before Golden Cove (Skylake-SP,
/// Cascade Lake, Ice Lake, Tiger Lake, Rocket Lake), told apart from
/// Sapphire Rapids and later by the lack of AVX512-FP16 (CPUID leaf 7,
/// EDX bit 23): two load ports, so that a kernel that reads one broadcast
/// of A per FMA runs at about one FMA a cycle of the two the core has
/// (Ice Lake-SP, measured: a tile of 12 rows × 16 columns, 13 loads per
/// 12 FMAs, 77 GFLOP/s; 8 rows × 32 columns 139; FMA peak 176). Read once.
#[cfg(target_arch = "x86_64")]
pub(crate) fn two_load_ports() -> bool {
    static TWO: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TWO.get_or_init(|| {
        use std::arch::x86_64::__cpuid_count;
        let vendor = __cpuid_count(0, 0);
        let intel = vendor.ebx == u32::from_le_bytes(*b"Genu")
            && vendor.edx == u32::from_le_bytes(*b"ineI")
            && vendor.ecx == u32::from_le_bytes(*b"ntel");
        if !intel || vendor.eax < 7 || !has_avx512() {
            return false;
        }
        let fp16 = (__cpuid_count(7, 0).edx >> 23) & 1 == 1;
        !fp16
    })
}

/// `MIXPREC_FORCE_NO_VBMI`: the AVX-512 tier without VBMI and GFNI, as on
/// Cascade Lake (to test those kernels on any AVX-512 CPU). Read once.
#[cfg(target_arch = "x86_64")]
fn no_vbmi() -> bool {
    static NO_VBMI: AtomicU8 = AtomicU8::new(UNKNOWN);
    match NO_VBMI.load(Ordering::Relaxed) {
        UNKNOWN => {
            let off = env_flag("MIXPREC_FORCE_NO_VBMI");
            NO_VBMI.store(if off { 2 } else { 1 }, Ordering::Relaxed);
            off
        }
        known => known == 2,
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> u8 {
    if env_flag("MIXPREC_FORCE_PORTABLE") {
        return PORTABLE;
    }
    if !(is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c"))
    {
        return PORTABLE;
    }
    let vnni = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni");
    if vnni && !env_flag("MIXPREC_FORCE_AVX2") {
        AVX512_VNNI
    } else {
        AVX2
    }
}

/// Whether the environment variable `name` is set to a true value.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn env_flag(name: &str) -> bool {
    flag_value(std::env::var_os(name).as_deref())
}

/// Whether a flag's value asks for it (`MIXPREC_FORCE_PORTABLE`,
/// `MIXPREC_FORCE_AVX2`): any value except unset, empty, `0` and `false`
/// (any case) does.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn flag_value(value: Option<&std::ffi::OsStr>) -> bool {
    match value.map(|v| v.to_string_lossy().trim().to_ascii_lowercase()) {
        None => false,
        Some(v) => !(v.is_empty() || v == "0" || v == "false"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> u8 {
    PORTABLE
}

/// The kernel family the crate selected at run time (for reports):
/// "avx512+avx2+fma+f16c" (AVX-512 F/BW/VL/VNNI: the GEMM tiles on zmm
/// registers and `vpdpbusd`, the rest on AVX2), "avx2+fma+f16c" or
/// "portable". `MIXPREC_FORCE_AVX2=1` leaves out the AVX-512 tier,
/// `MIXPREC_FORCE_PORTABLE=1` every SIMD tier.
pub fn active_isa() -> &'static str {
    match level() {
        AVX512_VNNI => "avx512+avx2+fma+f16c",
        AVX2 => "avx2+fma+f16c",
        _ => "portable",
    }
}

/// A public entry point that runs on the CPU's best kernel tier, and its
/// `#[doc(hidden)]` twin `…_portable` forced onto the portable kernels (for
/// testing the fallback on any machine): both call `$on(args…, simd)`.
macro_rules! entry_and_portable_twin {
    (
        $(#[$doc:meta])*
        pub fn $name:ident / $portable:ident
            <$($g:ident: $bound:path),*>($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty => $on:ident
    ) => {
        $(#[$doc])*
        pub fn $name<$($g: $bound),*>($($arg: $ty),*) -> $ret {
            $on($($arg,)* $crate::cpu::has_avx2_fma_f16c())
        }

        #[doc = concat!("[`", stringify!($name), "`] forced onto the portable kernels.")]
        ///
        /// # Errors
        #[doc = concat!("As [`", stringify!($name), "`].")]
        #[doc(hidden)]
        pub fn $portable<$($g: $bound),*>($($arg: $ty),*) -> $ret {
            $on($($arg,)* false)
        }
    };
}
pub(crate) use entry_and_portable_twin;

#[cfg(test)]
mod tests {
    use super::flag_value;
    use std::ffi::OsStr;

    #[test]
    fn flag_values() {
        for off in [
            None,
            Some(""),
            Some("0"),
            Some("false"),
            Some("FALSE"),
            Some(" 0 "),
        ] {
            assert!(!flag_value(off.map(OsStr::new)), "{off:?}");
        }
        for on in ["1", "true", "yes", "portable"] {
            assert!(flag_value(Some(OsStr::new(on))), "{on}");
        }
    }
}
