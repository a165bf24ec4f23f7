//! Train, save to safetensors, load back, infer: the same bits.
//!
//! ```text
//! cargo run --release --example save_load
//! cargo run --release --example save_load -- --out model.safetensors
//! ```
//!
//! Trains a 64-64-10 MLP in bf16 (f32 masters) on the bundled digits,
//! quantizes each layer to int8 (`DynamicQuantLinear`: symmetric per output
//! channel), and writes one safetensors file holding the bf16 weights, the
//! f32 biases and the int8 weights with their quantization parameters
//! (`Safetensors::insert_quantized`). It then reads the file back, rebuilds
//! both models and checks that their outputs on the test set are
//! bit-identical to the originals (exit status 1 otherwise).

#[macro_use]
mod common;
use common::{correct_predictions, holdout_split, parse_digits, unknown, Args, DIGITS_CSV};

use mixprec::amp::{train_step, Linear, Loss, Mlp, Precision, Sgd};
use mixprec::convert::StochasticRng;
use mixprec::gemm::{Activation, Parallelism};
use mixprec::quant::DynamicQuantLinear;
use mixprec::safetensors::Safetensors;
use mixprec::{bf16, Error, Tensor};

fn parse() -> Result<std::path::PathBuf, String> {
    let mut out = std::env::temp_dir().join("mixprec_save_load.safetensors");
    let mut args = Args::from_env();
    while let Some(flag) = args.next_flag()? {
        match flag.as_str() {
            "--out" => out = args.value(&flag)?.into(),
            "-h" | "--help" => {
                outln!("save_load [--out FILE]   (default: a file in the temp directory)");
                std::process::exit(0)
            }
            other => return Err(unknown(other)),
        }
    }
    Ok(out)
}

/// The int8 model: each layer's integer GEMM, ReLU between layers.
fn int8_infer(layers: &[DynamicQuantLinear], x: &Tensor<f32>) -> Result<Tensor<f32>, Error> {
    let mut h = x.clone();
    for (i, layer) in layers.iter().enumerate() {
        h = layer.forward(&h, Parallelism::Serial)?;
        if i + 1 < layers.len() {
            h.as_mut_slice().iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
    Ok(h)
}

fn accuracy(logits: &[f32], labels: &[u8]) -> f64 {
    correct_predictions(logits, labels) as f64 / labels.len() as f64
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn run(path: &std::path::Path) -> Result<bool, Error> {
    let data = parse_digits(DIGITS_CSV).map_err(|e| Error::InvalidParameter {
        name: "bundled digits",
        value: e,
        requirement: "a valid digits CSV",
    })?;
    let (train, test) = holdout_split(&data, 5);
    let f = train.features;

    // Train in bf16 with f32 masters.
    let mut mlp = Mlp::<bf16>::new(
        &[f, 64, 10],
        Activation::Relu,
        1.0,
        &mut StochasticRng::new(3),
    )?;
    let mut opt = Sgd::new(0.02, 0.9, 0.0)?;
    let mut scaler = Precision::Bf16.scaler();
    for _ in 0..15 {
        for (xb, yb) in train.x.chunks(32 * f).zip(train.y.chunks(32)) {
            let x: Vec<bf16> = xb.iter().map(|&v| bf16::from_f32(v)).collect();
            let labels: Vec<u32> = yb.iter().map(|&y| u32::from(y)).collect();
            let loss = Loss::CrossEntropy { labels: &labels };
            train_step(
                &mut mlp,
                &mut opt,
                &mut scaler,
                &x,
                loss,
                1.0,
                Parallelism::Serial,
            )?;
        }
    }
    // Quantize each layer from its f32 masters.
    let int8: Vec<DynamicQuantLinear> = mlp
        .layers()
        .iter()
        .map(|l| {
            let (w, b) = l.masters();
            DynamicQuantLinear::new(
                &Tensor::from_vec(&[l.out_features(), l.in_features()], w.to_vec())?,
                Some(b),
            )
        })
        .collect::<Result<_, _>>()?;

    // Save: bf16 working weights, f32 biases, int8 weights with parameters.
    let mut file = Safetensors::new();
    for (i, (l, q)) in mlp.layers().iter().zip(&int8).enumerate() {
        let shape = [l.out_features(), l.in_features()];
        file.insert(
            format!("layers.{i}.weight"),
            Tensor::from_vec(&shape, l.working_weights().to_vec())?,
        )?;
        file.insert(
            format!("layers.{i}.bias"),
            Tensor::from_vec(&[l.out_features()], l.masters().1.to_vec())?,
        )?;
        file.insert_quantized(
            format!("int8.{i}.weight"),
            Tensor::from_vec(&shape, q.weight_q())?,
            &q.weight_params(),
        )?;
    }
    file.set_metadata("mixprec.mlp.layers", mlp.layers().len().to_string());
    file.set_metadata("mixprec.mlp.hidden_activation", "relu");
    file.write(path)?;
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);

    // Load into fresh models.
    let loaded = Safetensors::read(path)?;
    let n_layers: usize = loaded
        .metadata()
        .get("mixprec.mlp.layers")
        .and_then(|v| v.parse().ok())
        .ok_or(Error::InvalidFile {
            format: "safetensors",
            detail: "missing mixprec.mlp.layers".into(),
        })?;
    let mut layers = Vec::new();
    let mut int8_loaded = Vec::new();
    for i in 0..n_layers {
        let w = loaded
            .tensor::<bf16>(&format!("layers.{i}.weight"))?
            .to_dtype::<f32>();
        let b = loaded
            .tensor::<f32>(&format!("layers.{i}.bias"))?
            .into_vec();
        let act = if i + 1 < n_layers {
            Activation::Relu
        } else {
            Activation::Identity
        };
        layers.push(Linear::<bf16>::from_weights(&w, b.clone(), act)?);
        let (q, params) = loaded.quantized::<i8>(&format!("int8.{i}.weight"))?;
        int8_loaded.push(DynamicQuantLinear::from_quantized(&q, &params, Some(&b))?);
    }
    let mlp_loaded = Mlp::from_layers(layers)?;

    // Inference on the test set, before and after.
    let x16: Vec<bf16> = test.x.iter().map(|&v| bf16::from_f32(v)).collect();
    let widen = |v: Vec<bf16>| v.into_iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
    let before = widen(mlp.infer(&x16, Parallelism::Serial)?);
    let after = widen(mlp_loaded.infer(&x16, Parallelism::Serial)?);
    let xt = Tensor::from_vec(&[test.y.len(), f], test.x.clone())?;
    let q_before = int8_infer(&int8, &xt)?;
    let q_after = int8_infer(&int8_loaded, &xt)?;
    let same = bits(&before) == bits(&after);
    let q_same = bits(q_before.as_slice()) == bits(q_after.as_slice());
    outln!(
        "wrote {} ({size} bytes): {} tensors",
        path.display(),
        loaded.names().count()
    );
    outln!("| model | test accuracy | outputs after reload |");
    outln!("|---|---|---|");
    outln!(
        "| bf16 ({} parameters) | {:.2}% | {} |",
        mlp.num_params(),
        accuracy(&before, &test.y) * 100.0,
        if same { "bit-identical" } else { "DIFFERENT" }
    );
    outln!(
        "| int8 weights, dynamic u8 activations | {:.2}% | {} |",
        accuracy(q_before.as_slice(), &test.y) * 100.0,
        if q_same { "bit-identical" } else { "DIFFERENT" }
    );
    Ok(same && q_same)
}

fn main() {
    let path = match parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2)
        }
    };
    match run(&path) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1)
        }
    }
}
