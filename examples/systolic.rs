//! What a systolic array does with a GEMM: cycles, utilization, mapping
//! efficiency, traffic; or utilization against batch size for one layer.
//!
//! ```text
//! cargo run --release --example systolic -- --m 8 --k 1024 --n 1024
//! cargo run --release --example systolic -- --m 1,8,128 --k 1024 --n 1024 --dataflow ws --array 128x128 --mode tpu --csv
//! cargo run --release --example systolic -- --sweep-batch --k 1024 --n 1024 --svg utilization.svg
//! ```

#[macro_use]
mod common;

use mixprec::systolic::{analyze, ArrayConfig, Dataflow, Mode, Report, MAX_SIMULATED_PES};
use std::fmt::Write as _;

struct Args {
    m: Vec<usize>,
    k: usize,
    n: usize,
    dataflow: Dataflow,
    rows: usize,
    cols: usize,
    mode: Mode,
    csv: bool,
    sweep: bool,
    svg: Option<String>,
    buffers: [u64; 3],
    /// Flags given on the command line (to refuse ones the mode ignores).
    given: Vec<String>,
}

fn usage(code: i32) -> ! {
    let text =
        "usage: systolic [--m M[,M..]] [--k K] [--n N] [--dataflow ws|os|is] [--array RxC]\n\
         \x20               [--mode scalesim|tpu] [--csv] [--buffers A,B,C (elements)]\n\
         \x20               [--sweep-batch [--svg FILE] [--csv]]\n\
         --sweep-batch analyzes M = 1..4096 in both modes (so --m and --mode do not apply);\n\
         with --csv it prints every point as CSV, with --svg it also writes a chart.";
    if code == 0 {
        outln!("{text}");
    } else {
        eprintln!("{text}");
    }
    std::process::exit(code)
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        m: vec![8],
        k: 1024,
        n: 1024,
        dataflow: Dataflow::WeightStationary,
        rows: 128,
        cols: 128,
        mode: Mode::ScaleSim,
        csv: false,
        sweep: false,
        svg: None,
        buffers: [u64::MAX; 3],
        given: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    let num = |s: Option<String>, what: &str| -> Result<usize, String> {
        s.ok_or(format!("{what} needs a value"))?
            .parse::<usize>()
            .map_err(|e| format!("{what}: {e}"))
    };
    while let Some(flag) = it.next() {
        if a.given.contains(&flag) {
            return Err(format!("{flag} given twice"));
        }
        a.given.push(flag.clone());
        match flag.as_str() {
            "--m" => {
                let v = it.next().ok_or("--m needs a value")?;
                a.m = v
                    .split(',')
                    .map(|x| x.parse::<usize>().map_err(|e| format!("--m: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            "--k" => a.k = num(it.next(), "--k")?,
            "--n" => a.n = num(it.next(), "--n")?,
            "--dataflow" => {
                a.dataflow = it
                    .next()
                    .ok_or("--dataflow needs a value")?
                    .parse()
                    .map_err(|e| format!("{e}"))?
            }
            "--mode" => {
                a.mode = it
                    .next()
                    .ok_or("--mode needs a value")?
                    .parse()
                    .map_err(|e| format!("{e}"))?
            }
            "--array" => {
                let v = it.next().ok_or("--array needs RxC")?;
                let (r, c) = v.split_once('x').ok_or("--array needs RxC")?;
                a.rows = r.parse().map_err(|e| format!("--array {v}: {e}"))?;
                a.cols = c.parse().map_err(|e| format!("--array {v}: {e}"))?;
                if a.rows == 0 || a.cols == 0 || a.rows.saturating_mul(a.cols) > MAX_SIMULATED_PES {
                    return Err(format!(
                        "--array {v}: needs 1 to 2^24 PEs (mixprec::systolic::MAX_SIMULATED_PES), \
                         at least one row and one column"
                    ));
                }
            }
            "--buffers" => {
                let v = it.next().ok_or("--buffers needs A,B,C")?;
                let parts: Vec<u64> = v
                    .split(',')
                    .map(|x| x.parse::<u64>().map_err(|e| format!("--buffers: {e}")))
                    .collect::<Result<_, _>>()?;
                if parts.contains(&0) {
                    return Err(format!(
                        "--buffers {v}: each buffer must hold at least one element"
                    ));
                }
                a.buffers = parts
                    .try_into()
                    .map_err(|_| format!("--buffers {v}: needs three sizes, A,B,C"))?;
            }
            "--csv" => a.csv = true,
            "--sweep-batch" => a.sweep = true,
            "--svg" => a.svg = Some(it.next().ok_or("--svg needs a file name")?),
            "-h" | "--help" => usage(0),
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    let given = |f: &str| a.given.iter().any(|g| g == f);
    if a.sweep {
        for ignored in ["--m", "--mode"] {
            if given(ignored) {
                return Err(format!(
                    "{ignored} does not apply to --sweep-batch (it sweeps M = 1..4096 in both modes)"
                ));
            }
        }
    } else if given("--svg") {
        return Err("--svg writes the --sweep-batch chart; add --sweep-batch".into());
    }
    Ok(a)
}

fn print_report(r: &Report) {
    outln!(
        "{} {}x{} array, {} mode: M={} K={} N={}",
        r.config.dataflow().name(),
        r.config.rows(),
        r.config.cols(),
        if r.mode == Mode::Tpu {
            "tpu"
        } else {
            "scalesim"
        },
        r.m,
        r.k,
        r.n
    );
    outln!("  folds                 {}", r.folds);
    outln!("  cycles                {}", r.cycles);
    outln!(
        "  utilization           {:.2} %  (read this one: MACs / (PEs x cycles), the whole run)",
        r.utilization_pct
    );
    outln!(
        "  mapping efficiency    {:.2} %  (PEs holding a useful stationary operand, per fold)",
        r.mapping_efficiency_pct
    );
    outln!(
        "  compute utilization   {:.2} %  (SCALE-Sim's per-fold figure, to compare with its reports)",
        r.compute_utilization_pct
    );
    outln!(
        "  buffer traffic        A reads {}, B reads {}, C writes {}, C reads {}",
        r.buffer.a_reads,
        r.buffer.b_reads,
        r.buffer.c_writes,
        r.buffer.c_reads
    );
    outln!(
        "  off-chip traffic      A reads {}, B reads {}, C writes {}, C reads {}",
        r.offchip.a_reads,
        r.offchip.b_reads,
        r.offchip.c_writes,
        r.offchip.c_reads
    );
}

fn svg_chart(points: &[(usize, f64, f64)], title: &str) -> String {
    let (w, h, left, bottom, top) = (760.0, 420.0, 70.0, 50.0, 40.0);
    let plot_w = w - left - 30.0;
    let plot_h = h - bottom - top;
    let max_m = points.iter().map(|p| p.0).max().unwrap_or(1) as f64;
    let x = |m: usize| left + (m as f64).log2() / max_m.log2().max(1.0) * plot_w;
    let y = |pct: f64| top + plot_h * (1.0 - pct / 100.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="22" font-size="15" text-anchor="middle">{title}</text>"#,
        w / 2.0
    );
    for pct in [0.0, 25.0, 50.0, 75.0, 100.0] {
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{yy}" y2="{yy}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{pct}%</text>"##,
            left + plot_w,
            left - 6.0,
            y(pct) + 4.0,
            yy = y(pct)
        );
    }
    let mut m = 1usize;
    while m as f64 <= max_m {
        let _ = writeln!(
            s,
            r##"<line x1="{xx}" x2="{xx}" y1="{top}" y2="{}" stroke="#eee"/><text x="{xx}" y="{}" text-anchor="middle">{m}</text>"##,
            top + plot_h,
            top + plot_h + 16.0,
            xx = x(m)
        );
        m *= 4;
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">batch size M (log scale)</text>"#,
        left + plot_w / 2.0,
        h - 10.0
    );
    for (idx, colour, label) in [
        (1, "#1f77b4", "SCALE-Sim accounting"),
        (2, "#d62728", "TPU-like (double-buffered weights)"),
    ] {
        let path: Vec<String> = points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "{}{:.1},{:.1}",
                    if i == 0 { "M" } else { "L" },
                    x(p.0),
                    y(if idx == 1 { p.1 } else { p.2 })
                )
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="1.5"/>"#,
            path.join(" ")
        );
        let ly = top + 14.0 + 16.0 * (idx as f64 - 1.0);
        let _ = writeln!(
            s,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">{label}</text>"#,
            left + 10.0,
            left + 30.0,
            left + 36.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            usage(2)
        }
    };
    let cfg = match ArrayConfig::new(args.rows, args.cols, args.dataflow) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2)
        }
    };
    let run = |m: usize, mode: Mode| analyze(&cfg, m, args.k, args.n, mode, args.buffers);
    if args.sweep {
        let batches: Vec<usize> = (1..=4096).collect();
        let shown = |m: usize| {
            m.is_power_of_two() || (m % cfg.cols() == 1 && m > 1 && m <= 4 * cfg.cols() + 1)
        };
        let mut points = Vec::new();
        if args.csv {
            outln!("dataflow,M,K,N,cycles,util_pct,tpu_cycles,tpu_util_pct");
        } else {
            outln!(
                "batch sweep: {} {}x{} array, layer K={} N={}",
                cfg.dataflow().name(),
                cfg.rows(),
                cfg.cols(),
                args.k,
                args.n
            );
            outln!(
                "{:>6} {:>12} {:>10} {:>12} {:>10}",
                "M",
                "cycles",
                "util %",
                "tpu cycles",
                "tpu util %"
            );
        }
        for &m in &batches {
            let (a, b) = match (run(m, Mode::ScaleSim), run(m, Mode::Tpu)) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("error: M = {m}: {e}");
                    std::process::exit(2)
                }
            };
            if args.csv {
                outln!(
                    "{},{m},{},{},{},{:.4},{},{:.4}",
                    cfg.dataflow().name(),
                    args.k,
                    args.n,
                    a.cycles,
                    a.utilization_pct,
                    b.cycles,
                    b.utilization_pct
                );
            } else if shown(m) {
                outln!(
                    "{m:>6} {:>12} {:>10.2} {:>12} {:>10.2}",
                    a.cycles,
                    a.utilization_pct,
                    b.cycles,
                    b.utilization_pct
                );
            }
            points.push((m, a.utilization_pct, b.utilization_pct));
        }
        if let Some(path) = &args.svg {
            let title = format!(
                "{}x{} {} array, {}x{} layer: utilization vs batch",
                cfg.rows(),
                cfg.cols(),
                cfg.dataflow().name(),
                args.k,
                args.n
            );
            if let Err(e) = std::fs::write(path, svg_chart(&points, &title)) {
                eprintln!("error: writing {path}: {e}");
                std::process::exit(1)
            }
            eprintln!("wrote {path}");
        }
        return;
    }
    if args.csv {
        outln!("dataflow,M,K,N,cycles,util_pct,mapping_eff_pct");
    }
    for &m in &args.m {
        match run(m, args.mode) {
            Ok(r) if args.csv => outln!(
                "{},{},{},{},{},{:.4},{:.4}",
                cfg.dataflow().name(),
                m,
                args.k,
                args.n,
                r.cycles,
                r.utilization_pct,
                r.mapping_efficiency_pct
            ),
            Ok(r) => print_report(&r),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2)
            }
        }
    }
}
