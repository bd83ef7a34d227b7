//! Each fused kernel against the composed candle ops it replaces: values and the gradients of
//! `Σ y ⊙ r` (r random) with respect to every input, within 1e-5.

use candle_core::{D, Device, Tensor, Var};
use instill_core::SplitMix;

use super::*;

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = SplitMix::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| (rng.unit() * 2.0 - 1.0) as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The gradients of `Σ f(inputs) ⊙ r` with respect to each input, and `f`'s value.
fn grads(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Tensor) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts);
    let r = random(y.dims(), 99);
    let store = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g = ts.iter().map(|t| store.get(t).unwrap().clone()).collect();
    (y, g)
}

/// `fused` and `composed` agree on values and on every gradient within `tol`.
fn check(
    inputs: &[Tensor],
    fused: impl Fn(&[Tensor]) -> Tensor,
    composed: impl Fn(&[Tensor]) -> Tensor,
    tol: f32,
) {
    let (a, ga) = grads(inputs, fused);
    let (b, gb) = grads(inputs, composed);
    assert_eq!(a.dims(), b.dims());
    assert!(
        max_diff(&a, &b) < tol,
        "values differ by {}",
        max_diff(&a, &b)
    );
    for (i, (x, y)) in ga.iter().zip(&gb).enumerate() {
        assert!(
            max_diff(x, y) < tol,
            "gradient {i} differs by {}",
            max_diff(x, y)
        );
    }
}

#[test]
fn linear_matches_matmul_and_skips_a_frozen_weight() {
    let (x, w) = (random(&[7, 5], 1), random(&[3, 5], 2));
    check(
        &[x.clone(), w.clone()],
        |t| linear(&t[0], &t[1]).unwrap(),
        |t| t[0].matmul(&t[1].t().unwrap()).unwrap(),
        1e-5,
    );
    let xv = Var::from_tensor(&x).unwrap();
    let y = linear(xv.as_tensor(), &w).unwrap();
    let store = y.sum_all().unwrap().backward().unwrap();
    assert!(store.get(&w).is_none());
    assert!(store.get(xv.as_tensor()).is_some());
}

#[test]
fn rms_norm_matches_the_composed_form() {
    check(
        &[random(&[6, 16], 3), random(&[16], 4)],
        |t| rms_norm(&t[0], &t[1], 1e-6).unwrap(),
        |t| candle_nn::ops::rms_norm_slow(&t[0], &t[1], 1e-6).unwrap(),
        1e-5,
    );
}

/// The composed attention of `qkv [b·t, (nh + 2·nkv)·hd]` rows: narrow, reshape, transpose,
/// RoPE, repeat the key/value heads, masked softmax of the scaled scores, times the values.
fn composed_attention(qkv: &Tensor, cos: &Tensor, sin: &Tensor, shape: Attention) -> Tensor {
    let Attention {
        batch: b,
        seq: t,
        heads: nh,
        kv_heads: nkv,
        head_dim: hd,
    } = shape;
    let group = |col: usize, n: usize, rotate: bool| {
        let h = qkv
            .narrow(1, col * hd, n * hd)
            .unwrap()
            .reshape((b, t, n, hd))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap();
        let h = if rotate {
            candle_nn::rotary_emb::rope_slow(&h, cos, sin).unwrap()
        } else {
            h
        };
        crate::model::repeat_kv(&h, nh / n).unwrap()
    };
    let (q, k, v) = (
        group(0, nh, true),
        group(nh, nkv, true),
        group(nh + nkv, nkv, false),
    );
    let mask: Vec<f32> = (0..t)
        .flat_map(|r| (0..t).map(move |c| if c > r { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
    let s = (q.matmul(&k.t().unwrap()).unwrap() / (hd as f64).sqrt())
        .unwrap()
        .broadcast_add(&mask)
        .unwrap();
    candle_nn::ops::softmax(&s, D::Minus1)
        .unwrap()
        .matmul(&v)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((b * t, nh * hd))
        .unwrap()
}

#[test]
fn attention_matches_rope_repeat_masked_softmax_and_values() {
    // Grouped queries (4 over 2), one key/value head per query head, a row of one position,
    // and rows and heads longer than the 16- and 64-wide blocks (with remainders).
    let shapes = [
        (2, 5, 4, 2, 8),
        (1, 7, 3, 3, 4),
        (3, 1, 2, 1, 6),
        (1, 19, 2, 1, 20),
        (2, 17, 2, 2, 32),
        (1, 70, 2, 1, 84),
    ];
    for (b, t, nh, nkv, hd) in shapes {
        let shape = Attention {
            batch: b,
            seq: t,
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
        };
        let theta = random(&[t, hd / 2], 5);
        let (cos, sin) = (theta.cos().unwrap(), theta.sin().unwrap());
        let angles = Tensor::cat(&[&cos, &sin], 1).unwrap();
        check(
            &[random(&[b * t, (nh + 2 * nkv) * hd], 6)],
            |x| attention(&x[0], &angles, shape).unwrap(),
            |x| composed_attention(&x[0], &cos, &sin, shape),
            1e-5,
        );
    }
}

#[test]
fn attention_refuses_shapes_that_do_not_fit() {
    let shape = Attention {
        batch: 2,
        seq: 3,
        heads: 4,
        kv_heads: 3,
        head_dim: 4,
    };
    let angles = random(&[3, 4], 1);
    let err = attention(&random(&[6, 40], 2), &angles, shape).unwrap_err();
    assert!(
        err.to_string().contains("4 heads over 3 key/value heads"),
        "{err}"
    );
    let shape = Attention {
        kv_heads: 2,
        ..shape
    };
    let err = attention(&random(&[6, 40], 2), &angles, shape).unwrap_err();
    assert!(err.to_string().contains("q/k/v rows [6, 40]"), "{err}");
}

#[test]
fn swiglu_matches_silu_times_up() {
    let i = 8;
    check(
        &[(random(&[5, 2 * i], 8) * 4.0).unwrap()],
        |x| swiglu(&x[0]).unwrap(),
        |x| {
            let gate = x[0].narrow(1, 0, i).unwrap();
            let up = x[0].narrow(1, i, i).unwrap();
            (candle_nn::ops::silu(&gate).unwrap() * up).unwrap()
        },
        1e-5,
    );
}

#[test]
fn target_logp_matches_log_softmax_and_gather() {
    let targets = vec![3u32, 0, 9, 4];
    let ids = Tensor::from_vec(targets.clone(), (4, 1), &Device::Cpu).unwrap();
    check(
        &[(random(&[4, 10], 9) * 5.0).unwrap()],
        |x| target_logp(&x[0], targets.clone()).unwrap(),
        |x| {
            candle_nn::ops::log_softmax(&x[0], D::Minus1)
                .unwrap()
                .gather(&ids, 1)
                .unwrap()
                .squeeze(1)
                .unwrap()
        },
        1e-5,
    );
    // A target outside the vocabulary is an error, not a panic.
    assert!(target_logp(&random(&[1, 10], 1), vec![10]).is_err());
}

#[test]
fn dropout_copies_match_masked_products_side_by_side() {
    let x = random(&[6, 5], 11);
    let mask = |seed| {
        let mut rng = SplitMix::new(seed);
        (0..30)
            .map(|_| if rng.unit() < 0.7 { 1.0 / 0.7 } else { 0.0 })
            .collect::<Vec<f32>>()
    };
    let masks = [Some(mask(1)), None, Some(mask(2))];
    check(
        &[x],
        |t| dropout_copies(&t[0], std::sync::Arc::new(masks.to_vec())).unwrap(),
        |t| {
            let copies: Vec<Tensor> = masks
                .iter()
                .map(|m| match m {
                    Some(m) => (&t[0] * Tensor::from_vec(m.clone(), (6, 5), &Device::Cpu).unwrap())
                        .unwrap(),
                    None => t[0].clone(),
                })
                .collect();
            Tensor::cat(&copies, 1).unwrap()
        },
        1e-6,
    );
    assert!(
        dropout_copies(
            &random(&[6, 5], 3),
            std::sync::Arc::new(vec![Some(vec![1.0; 29])])
        )
        .is_err()
    );
}
