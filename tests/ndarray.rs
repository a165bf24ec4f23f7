//! ndarray interop (feature `ndarray`): zero-copy views both ways (the
//! same memory, checked by pointer), element by element agreement for any
//! layout, typed errors for views that cannot be borrowed, tensors both ways.

use mixprec::gemm::{gemm, Epilogue, Parallelism};
use mixprec::testing::{finite, strided_matrix, tensor};
use mixprec::{bf16, Error, MatMut, MatRef, Tensor};
use ndarray::{array, s, Array2, Array3, ArrayView2, ShapeBuilder};
use proptest::prelude::*;

fn same_elements<T: Copy + PartialEq + std::fmt::Debug>(m: &MatRef<'_, T>, a: &ArrayView2<'_, T>) {
    assert_eq!((m.rows(), m.cols()), a.dim());
    for i in 0..m.rows() {
        for j in 0..m.cols() {
            assert_eq!(m.get(i, j), Some(a[[i, j]]), "({i}, {j})");
        }
    }
}

#[test]
fn contiguous_views_in_any_order_borrow_without_a_copy() {
    let row_major = Array2::from_shape_fn((3, 4), |(i, j)| (i * 10 + j) as f32);
    let col_major = Array2::from_shape_fn((3, 4).f(), |(i, j)| (i * 10 + j) as f32);
    for a in [
        row_major.view(),
        row_major.t(),
        col_major.view(),
        col_major.t(),
    ] {
        let m = MatRef::from_ndarray(a).unwrap();
        same_elements(&m, &a);
        // The same memory: the first element is the array's.
        let first = a.as_ptr();
        assert_eq!(m.as_slice().as_ptr(), first);
        let back = m.to_ndarray().unwrap();
        assert_eq!(back, a);
        assert_eq!(back.as_ptr(), first);
    }
}

#[test]
fn views_with_gaps_or_negative_strides_are_errors() {
    let a = Array2::from_shape_fn((4, 6), |(i, j)| (i * 10 + j) as f32);
    for v in [
        a.slice(s![.., 1..3]),
        a.slice(s![.., ..;2]),
        a.slice(s![..;-1, ..]),
    ] {
        let e = MatRef::from_ndarray(v).unwrap_err();
        assert!(matches!(e, Error::InvalidParameter { .. }), "{e}");
        // The documented way out: a copy in standard layout.
        let copy = v.as_standard_layout();
        same_elements(&MatRef::from_ndarray(copy.view()).unwrap(), &v);
    }
    // A row of a row-major array is contiguous: fine.
    let row = a.slice(s![1..2, ..]);
    same_elements(&MatRef::from_ndarray(row).unwrap(), &row);
    // Stride 0 (a broadcast) stays a broadcast as a shared view, and is
    // refused as a mutable one (two indices would share an element).
    let mut one = [5.0f32];
    let bcast = MatRef::new(&one, 3, 2, 0, 0).unwrap();
    assert_eq!(bcast.to_ndarray().unwrap(), Array2::from_elem((3, 2), 5.0));
    let bcast_mut = MatMut::new(&mut one, 3, 2, 0, 0).unwrap();
    assert!(matches!(
        bcast_mut.into_ndarray(),
        Err(Error::InvalidParameter { .. })
    ));
}

#[test]
fn gemm_writes_into_an_ndarray_output() {
    let a = array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
    let b = Array2::from_shape_fn((3, 2).f(), |(i, j)| {
        bf16::from_f32((i + 2 * j) as f32).to_f32()
    });
    let mut c = Array2::<f32>::zeros((2, 2).f()); // column-major output
    gemm(
        MatRef::from_ndarray(a.view()).unwrap(),
        MatRef::from_ndarray(b.view()).unwrap(),
        MatMut::from_ndarray(c.view_mut()).unwrap(),
        &Epilogue::new(),
        Parallelism::Serial,
    )
    .unwrap();
    assert_eq!(c, a.dot(&b));
    // And back: a MatMut as an ndarray view writes the same memory.
    let mut data = vec![0.0f32; 6];
    let m = MatMut::from_row_major(&mut data, 2, 3).unwrap().t();
    let mut v = m.into_ndarray().unwrap();
    v[[2, 1]] = 7.0;
    assert_eq!(data[5], 7.0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any mixprec view (padded, offset, transposed) reads the same as its
    /// ndarray view, and a contiguous one comes back unchanged.
    #[test]
    fn any_matref_as_ndarray((m, _) in (0usize..6, 0usize..6).prop_flat_map(|(r, c)| {
        (strided_matrix(r, c, finite::<f32>()).unwrap(), Just(()))
    })) {
        let v = m.view();
        let a = v.to_ndarray()?;
        same_elements(&v, &a);
    }

    /// Tensors of any rank to ndarray and back, bit for bit; a permuted
    /// (non-standard) array copies in logical order.
    #[test]
    fn tensors_round_trip(t in tensor(4, 60, finite::<f32>())) {
        let a = t.clone().into_ndarray();
        prop_assert_eq!(a.shape(), t.shape());
        let back = Tensor::from_ndarray(&a)?;
        prop_assert_eq!(back, t);
    }
}

#[test]
fn permuted_arrays_copy_in_logical_order() {
    let a = Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 100 + j * 10 + k) as i32);
    let p = a.view().permuted_axes([2, 0, 1]); // 4 × 2 × 3, not standard layout
    let t = Tensor::from_ndarray(&p).unwrap();
    assert_eq!(t.shape(), &[4, 2, 3]);
    assert_eq!(t.as_slice()[..4], [0, 10, 20, 100]);
}
