//! Public sub-views of `MatRef` and `MatMut`: every element lands where the
//! parent view says, out-of-range requests are typed errors.

use mixprec::testing::{finite, strided_matrix, StridedMatrix};
use mixprec::{Error, MatMut, MatRef};
use proptest::prelude::*;

fn matrix() -> impl Strategy<Value = StridedMatrix<f32>> {
    (0usize..7, 0usize..7).prop_flat_map(|(r, c)| strided_matrix(r, c, finite::<f32>()).unwrap())
}

/// Two cut points in `0..=len` (start <= end), and an index that may be past it.
fn cut(len: usize) -> impl Strategy<Value = (usize, usize)> {
    (0..=len).prop_flat_map(move |a| (Just(a), a..=len))
}

fn same(x: Option<f32>, y: Option<f32>) -> bool {
    x.map(f32::to_bits) == y.map(f32::to_bits)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn slices_rows_cols_and_splits_of_matref((m, (r0, r1), (c0, c1), (i, j)) in matrix().prop_flat_map(|m| {
        let (r, c) = (m.rows(), m.cols());
        (Just(m), cut(r), cut(c), (0..=r, 0..=c))
    })) {
        let v = m.view();
        let s = v.slice(r0..r1, c0..c1)?;
        prop_assert_eq!((s.rows(), s.cols()), (r1 - r0, c1 - c0));
        for a in 0..s.rows() {
            for b in 0..s.cols() {
                prop_assert!(same(s.get(a, b), v.get(r0 + a, c0 + b)));
            }
        }
        prop_assert!(same(v.submatrix(r0, c0, r1 - r0, c1 - c0)?.get(0, 0), s.get(0, 0)));
        // row/col: in range, a 1×N or M×1 view; past the end, an error.
        match v.row(i) {
            Ok(row) => {
                prop_assert!(i < v.rows());
                prop_assert_eq!((row.rows(), row.cols()), (1, v.cols()));
                for b in 0..v.cols() {
                    prop_assert!(same(row.get(0, b), v.get(i, b)));
                }
            }
            Err(e) => prop_assert_eq!(e, Error::IndexOutOfRange {
                what: "MatRef::slice rows", start: i, end: i + 1, len: v.rows()
            }),
        }
        match v.col(j) {
            Ok(col) => {
                prop_assert!(j < v.cols());
                for a in 0..v.rows() {
                    prop_assert!(same(col.get(a, 0), v.get(a, j)));
                }
            }
            Err(_) => prop_assert_eq!(j, v.cols()),
        }
        let (top, bottom) = v.split_at_row(r0)?;
        prop_assert_eq!(top.rows() + bottom.rows(), v.rows());
        for b in 0..v.cols() {
            if r0 < v.rows() {
                prop_assert!(same(bottom.get(0, b), v.get(r0, b)));
            }
        }
        let (left, right) = v.split_at_col(c1)?;
        prop_assert_eq!(left.cols() + right.cols(), v.cols());
        if c1 < v.cols() && v.rows() > 0 {
            prop_assert!(same(right.get(0, 0), v.get(0, c1)));
        }
        // A view's slice spans only its own elements.
        prop_assert!(s.as_slice().len() <= v.as_slice().len());
    }

    /// Writes through a MatMut sub-view or split land at the parent's
    /// element, and nowhere else in the storage.
    #[test]
    fn writes_through_matmut_subviews((mut m, (r0, r1), (c0, c1)) in matrix().prop_flat_map(|m| {
        let (r, c) = (m.rows(), m.cols());
        (Just(m), cut(r), cut(c))
    })) {
        let before = m.storage().to_vec();
        let (rows, cols) = (m.rows(), m.cols());
        let transposed = m.is_transposed();
        {
            let mut s = m.view_mut().slice(r0..r1, c0..c1)?;
            for a in 0..s.rows() {
                for b in 0..s.cols() {
                    prop_assert!(s.set(a, b, 1e30));
                }
            }
            prop_assert!(!s.set(s.rows(), 0, 1.0));
        }
        let v = m.view();
        for a in 0..rows {
            for b in 0..cols {
                let inside = (r0..r1).contains(&a) && (c0..c1).contains(&b);
                prop_assert_eq!(v.get(a, b) == Some(1e30), inside, "({}, {})", a, b);
            }
        }
        let changed = m.storage().iter().zip(&before).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
        prop_assert_eq!(changed, (r1 - r0) * (c1 - c0));

        // Split along the outer dimension in memory: always possible.
        let outer_is_rows = !transposed;
        let at = if outer_is_rows { r0 } else { c0 };
        let view = m.view_mut();
        let (mut first, mut second) = if outer_is_rows {
            view.split_at_row(at)?
        } else {
            view.split_at_col(at)?
        };
        if first.rows() > 0 && first.cols() > 0 {
            first.set(0, 0, -7.0);
        }
        if second.rows() > 0 && second.cols() > 0 {
            second.set(0, 0, -8.0);
        }
        let v = m.view();
        if outer_is_rows {
            if at > 0 && cols > 0 { prop_assert_eq!(v.get(0, 0), Some(-7.0)); }
            if at < rows && cols > 0 { prop_assert_eq!(v.get(at, 0), Some(-8.0)); }
        } else {
            if at > 0 && rows > 0 { prop_assert_eq!(v.get(0, 0), Some(-7.0)); }
            if at < cols && rows > 0 { prop_assert_eq!(v.get(0, at), Some(-8.0)); }
        }
    }
}

#[test]
fn out_of_range_and_interleaved_splits_are_errors() {
    let data: Vec<f32> = (0..12).map(|x| x as f32).collect();
    let a = MatRef::from_row_major(&data, 3, 4).unwrap();
    assert_eq!(
        a.slice(1..5, ..).unwrap_err(),
        Error::IndexOutOfRange {
            what: "MatRef::slice rows",
            start: 1,
            end: 5,
            len: 3
        }
    );
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = a.slice(.., 3..1);
    assert!(matches!(
        backwards,
        Err(Error::IndexOutOfRange {
            start: 3,
            end: 1,
            ..
        })
    ));
    assert!(a.slice(..=usize::MAX, ..).is_err());
    assert!(a.submatrix(usize::MAX, 0, 2, 1).is_err());
    assert!(a.row(3).is_err() && a.col(4).is_err());
    assert!(a.split_at_row(4).is_err() && a.split_at_col(5).is_err());
    let msg = a.col(9).unwrap_err().to_string();
    assert!(msg.contains("9..10") && msg.contains("0..4"), "{msg}");
    // Inclusive ranges and the full range.
    let s = a.slice(1..=2, ..).unwrap();
    assert_eq!((s.rows(), s.cols(), s.get(1, 3)), (2, 4, Some(11.0)));

    let mut buf = data.clone();
    let c = MatMut::from_row_major(&mut buf, 3, 4).unwrap();
    // Row-major: columns interleave in memory, so a mutable column split
    // is refused (the shared view splits either way).
    let err = c.split_at_col(2).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidParameter {
                name: "MatMut::split_at_col",
                ..
            }
        ),
        "{err}"
    );
    let c = MatMut::from_row_major(&mut buf, 3, 4).unwrap().t(); // column-major 4×3
    assert!(c.split_at_row(1).is_err());
    let c = MatMut::from_row_major(&mut buf, 3, 4).unwrap().t();
    let (left, right) = c.split_at_col(1).unwrap();
    assert_eq!(
        (left.cols(), right.cols(), right.get(0, 0)),
        (1, 2, Some(4.0))
    );
    // Single rows or columns split both ways.
    let mut one = [1.0f32, 2.0, 3.0];
    let r = MatMut::from_row_major(&mut one, 1, 3).unwrap();
    let (x, y) = r.split_at_col(1).unwrap();
    assert_eq!((x.get(0, 0), y.get(0, 1)), (Some(1.0), Some(3.0)));
}

#[test]
fn vector_conversions() {
    use mixprec::convert::{cast_vec, narrow_vec, widen_vec};
    use mixprec::{bf16, f16, F8E4M3, F8E5M2};
    let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.37).collect();
    let b: Vec<bf16> = narrow_vec(&x);
    assert!(b
        .iter()
        .zip(&x)
        .all(|(y, &v)| y.to_bits() == bf16::from_f32(v).to_bits()));
    let w = widen_vec(&b);
    assert!(w.iter().zip(&b).all(|(&v, y)| v == y.to_f32()));
    let e: Vec<F8E4M3> = narrow_vec(&x);
    assert!(e
        .iter()
        .zip(&x)
        .all(|(y, &v)| y.to_bits() == F8E4M3::from_f32(v).to_bits()));
    // f16 → E5M2 rounds once, like the direct conversion of the f16's value.
    let h: Vec<f16> = narrow_vec(&x);
    let e5: Vec<F8E5M2> = cast_vec(&h);
    assert!(e5
        .iter()
        .zip(&h)
        .all(|(y, v)| y.to_bits() == F8E5M2::from_f32(v.to_f32()).to_bits()));
    assert!(narrow_vec::<f16>(&[]).is_empty());
}
