//! Tensors and strided views.

use mixprec::{bf16, f16, Error, MatMut, MatRef, Tensor, F8E4M3};

#[test]
fn constructors_check_shapes() {
    assert_eq!(
        Tensor::from_vec(&[2, 3], vec![0.0f32; 7]).unwrap_err(),
        Error::LengthMismatch {
            what: "Tensor::from_vec",
            expected: 6,
            actual: 7
        }
    );
    let big = [usize::MAX / 2, 3];
    assert_eq!(
        Tensor::<f32>::zeros(&big).unwrap_err(),
        Error::ShapeOverflow {
            shape: big.to_vec()
        }
    );
    assert!(
        Tensor::<f32>::zeros(&[1 << 62]).is_err(),
        "byte count overflow"
    );
    let t = Tensor::<f16>::zeros(&[2, 0, 3]).unwrap();
    assert!(t.is_empty());
    assert_eq!(t.rank(), 3);
    let s = Tensor::<i32>::zeros(&[]).unwrap();
    assert_eq!(s.len(), 1, "rank 0 is a scalar");
}

#[test]
fn from_fn_is_row_major() {
    let t = Tensor::from_fn(&[2, 2, 2], |ix| (ix[0] * 4 + ix[1] * 2 + ix[2]) as i8).unwrap();
    assert_eq!(t.as_slice(), &[0, 1, 2, 3, 4, 5, 6, 7]);
    let r = t.reshape(&[4, 2]).unwrap();
    assert_eq!(r.shape(), &[4, 2]);
    assert!(matches!(
        r.reshape(&[3, 3]),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn byte_views_round_trip() {
    let t = Tensor::from_vec(&[3], vec![1.0f32, -2.0, 0.5]).unwrap();
    assert_eq!(t.as_bytes().len(), 12);
    assert_eq!(&t.as_bytes()[..4], &1.0f32.to_ne_bytes());
    let u = Tensor::<f32>::from_bytes(&[3], t.as_bytes()).unwrap();
    assert_eq!(t, u);
    // Unaligned source bytes are fine.
    let mut buf = [0u8; 13];
    buf[1..].copy_from_slice(t.as_bytes());
    assert_eq!(Tensor::<f32>::from_bytes(&[3], &buf[1..]).unwrap(), t);
    assert!(Tensor::<f32>::from_bytes(&[4], t.as_bytes()).is_err());
}

#[test]
fn to_dtype_rounds_once() {
    let x = Tensor::from_vec(&[4], vec![1.0f32, 1.0 + 2f32.powi(-8), 1e6, -0.0]).unwrap();
    let b = x.to_dtype::<bf16>();
    assert_eq!(b.as_slice()[1].to_f32(), 1.0, "tie to even");
    let e = b.to_dtype::<F8E4M3>();
    assert!(e.as_slice()[2].is_nan(), "E4M3 overflow is NaN");
    let back = e.to_dtype::<f32>();
    assert_eq!(back.as_slice()[0], 1.0);
    assert!(back.as_slice()[3].is_sign_negative());
    // Large enough to cross the internal chunking.
    let big = Tensor::from_fn(&[10_000], |ix| ix[0] as f32 * 0.001).unwrap();
    let h = big.to_dtype::<f16>();
    for (a, b) in big.as_slice().iter().zip(h.as_slice()) {
        assert_eq!(f16::from_f32(*a), *b);
    }
}

#[test]
fn views_and_transpose() {
    let data: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let a = MatRef::from_row_major(&data, 3, 4).unwrap();
    assert_eq!(a.get(2, 3), Some(11.0));
    assert_eq!(a.get(3, 0), None);
    let at = a.t();
    assert_eq!(
        (at.rows(), at.cols(), at.row_stride(), at.col_stride()),
        (4, 3, 1, 4)
    );
    assert_eq!(at.get(3, 2), Some(11.0));
    assert_eq!(at.to_tensor().as_slice()[..3], [0.0, 4.0, 8.0]);
    // A strided sub-view: every other column.
    let s = MatRef::new(&data, 3, 2, 4, 2).unwrap();
    assert_eq!(s.to_tensor().as_slice(), &[0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
    // Contiguous rows of a padded view, and views with no columns or rows.
    let p = MatRef::new(&data, 2, 3, 4, 1).unwrap();
    assert_eq!(p.to_tensor().as_slice(), &[0.0, 1.0, 2.0, 4.0, 5.0, 6.0]);
    let empty = MatRef::new(&data, 3, 0, 4, 1).unwrap();
    assert_eq!(
        (empty.to_tensor().shape(), empty.to_tensor().len()),
        (&[3, 0][..], 0)
    );
    let none = MatRef::new(&data[..0], 0, 5, 5, 1).unwrap();
    assert_eq!(none.to_tensor().len(), 0);
    assert_eq!(
        MatRef::new(&data, 3, 3, 4, 2).unwrap_err(),
        Error::ViewOutOfBounds {
            rows: 3,
            cols: 3,
            row_stride: 4,
            col_stride: 2,
            len: 12
        }
    );
    assert!(MatRef::new(&data, usize::MAX, 2, usize::MAX, 1).is_err());
    // Empty views need no data.
    assert!(MatRef::<f32>::new(&[], 0, 5, 5, 1).is_ok());
}

#[test]
fn mutable_views() {
    let mut t = Tensor::<f32>::zeros(&[2, 3]).unwrap();
    {
        let mut m = t.as_mat_mut().unwrap();
        assert!(m.set(1, 2, 5.0));
        assert!(!m.set(2, 0, 1.0));
        let mut mt = m.reborrow().t();
        assert!(mt.set(0, 1, 7.0));
    }
    assert_eq!(t.as_slice(), &[0.0, 0.0, 0.0, 7.0, 0.0, 5.0]);
    let mut buf = [0i8; 4];
    assert!(MatMut::from_row_major(&mut buf, 2, 3).is_err());
    assert!(matches!(
        Tensor::<f32>::zeros(&[2, 2, 2]).unwrap().as_mat(),
        Err(Error::RankMismatch {
            expected: 2,
            actual: 3
        })
    ));
}

#[test]
fn error_messages_name_values() {
    let e = Error::ViewOutOfBounds {
        rows: 3,
        cols: 3,
        row_stride: 4,
        col_stride: 2,
        len: 12,
    };
    assert_eq!(
        e.to_string(),
        "a 3x3 view with strides (4, 2) reaches past a buffer of 12 elements"
    );
    assert_eq!(
        Error::ShapeOverflow { shape: vec![1, 2] }.to_string(),
        "shape [1, 2]: element count overflows usize"
    );
    assert_eq!("f8_e5m2".parse::<mixprec::DType>().unwrap().size_bytes(), 1);
    assert!("f64"
        .parse::<mixprec::DType>()
        .unwrap_err()
        .to_string()
        .contains("\"f64\""));
}
