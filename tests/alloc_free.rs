//! `BlockScaled::mx_into` and `BlockScaled::nvfp4_into` allocate nothing
//! once `out`'s buffers are large enough (rows contiguous, SIMD tiers), as
//! their docs say: a counting global allocator, counting only the test's
//! own thread, sees zero allocations in the second call. Small shapes and
//! ones large enough to stream their outputs (non-temporal stores, NVFP4's
//! block amaxes among them), NVFP4 with and without the tensor scale.

use mixprec::block_scaled::{BlockScaled, MxScaleMode};
use mixprec::{MatRef, F4E2M1, F8E4M3, F8E5M2};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call goes to `System` unchanged; the counting beside it
// neither allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations (and reallocations) made by `f` on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i.wrapping_mul(2_654_435_761) % 20_001) as f32 - 10_000.0) * 1e-3)
        .collect()
}

#[test]
fn into_quantizers_allocate_nothing_once_grown() {
    if mixprec::active_isa() == "portable" {
        eprintln!("portable tier: per-line scratch is allowed there; skipped");
        return;
    }
    // The counter itself must count: a Vec made while counting is seen.
    assert_eq!(
        allocations_in(|| drop(std::hint::black_box(vec![1u8; 7]))),
        1
    );
    // 2048 × 4096 streams its outputs (8 MiB of codes), 16 × 256 does not.
    for (lines, k) in [(16, 256), (2048, 4096)] {
        let x = values(lines * k);
        let m = MatRef::from_row_major(&x, lines, k).unwrap();
        for tensor_scale in [false, true] {
            let mut q = BlockScaled::nvfp4(m, tensor_scale).unwrap();
            let n = allocations_in(|| BlockScaled::nvfp4_into(m, tensor_scale, &mut q).unwrap());
            assert_eq!(n, 0, "nvfp4_into {lines}x{k}, tensor scale {tensor_scale}");
            assert_eq!(q, BlockScaled::nvfp4(m, tensor_scale).unwrap());
        }
        for mode in [MxScaleMode::Floor, MxScaleMode::Ceil] {
            let mut q8 = BlockScaled::<F8E4M3>::mx(m, mode).unwrap();
            let n = allocations_in(|| BlockScaled::mx_into(m, mode, &mut q8).unwrap());
            assert_eq!(n, 0, "mx_into E4M3 {lines}x{k}");
            let mut q5 = BlockScaled::<F8E5M2>::mx(m, mode).unwrap();
            let n = allocations_in(|| BlockScaled::mx_into(m, mode, &mut q5).unwrap());
            assert_eq!(n, 0, "mx_into E5M2 {lines}x{k}");
            let mut q4 = BlockScaled::<F4E2M1>::mx(m, mode).unwrap();
            let n = allocations_in(|| BlockScaled::mx_into(m, mode, &mut q4).unwrap());
            assert_eq!(n, 0, "mx_into E2M1 {lines}x{k}");
        }
    }
}
