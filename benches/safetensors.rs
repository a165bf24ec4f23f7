//! Reading one tensor of a 1 GiB safetensors file: `SafetensorsFile`
//! (header, then that tensor's bytes) beside `Safetensors::read` (the
//! whole file into memory, every tensor copied), in one run. The file is
//! written once into the temp directory (16 F32 tensors of 64 MiB) and
//! stays in the page cache, so the figures are the crate's work, not the
//! disk's.

use criterion::{criterion_group, criterion_main, Criterion};
use mixprec::safetensors::{Safetensors, SafetensorsFile};
use mixprec::Tensor;
use std::hint::black_box;

fn lazy_vs_whole(c: &mut Criterion) {
    let path = std::env::temp_dir().join("mixprec-bench-1gib.safetensors");
    let elems = 16 << 20; // 64 MiB of f32 per tensor
    if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) < 16 * 4 * elems as u64 {
        let mut st = Safetensors::new();
        for t in 0..16 {
            let data: Vec<f32> = (0..elems).map(|i| (i + t) as f32).collect();
            st.insert(
                format!("layer{t:02}.weight"),
                Tensor::from_vec(&[4096, 4096], data).unwrap(),
            )
            .unwrap();
        }
        st.write(&path).unwrap();
    }
    let mut g = c.benchmark_group("safetensors_1gib");
    g.sample_size(10);
    g.bench_function("open_and_read_one_tensor", |b| {
        b.iter(|| {
            let mut f = SafetensorsFile::open(black_box(&path)).unwrap();
            f.tensor::<f32>("layer07.weight").unwrap()
        })
    });
    g.bench_function("open_only", |b| {
        b.iter(|| SafetensorsFile::open(black_box(&path)).unwrap())
    });
    g.bench_function("read_whole_then_one_tensor", |b| {
        b.iter(|| {
            let st = Safetensors::read(black_box(&path)).unwrap();
            st.tensor::<f32>("layer07.weight").unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, lazy_vs_whole);
criterion_main!(benches);
