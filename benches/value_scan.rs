//! Benchmark: the lint value scan (NaN/Inf/zero/max over every float), alone and with the weight
//! fingerprint digest lint computes in the same pass, against a baseline measured
//! in the same run — `memcpy` of the same bytes on one core, i.e. how fast this machine streams
//! memory. Prints throughputs and the ratio (1.0 = memory speed); no pass/fail.
//!
//! Run: `cargo bench --bench value_scan` (256 MiB of f32 and of bf16 by default;
//! `CKPT_BENCH_MIB=1024` for more).

use std::time::Instant;

use ckptcheck::checks::values::{scan, scan_digest};
use ckptcheck::format::dtype::Dtype;

fn best_of<T>(n: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..n {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    (best, out.unwrap())
}

fn main() {
    let mib: usize = std::env::var("CKPT_BENCH_MIB").ok().and_then(|s| s.parse().ok()).unwrap_or(256);
    let n = mib << 20;
    let bytes: Vec<u8> = (0..n).map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] & 0x3f).collect();
    println!("value scan over {mib} MiB, {} threads available", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let mut dst = vec![0u8; n];
    let (tb, sum) = best_of(3, || {
        dst.copy_from_slice(std::hint::black_box(&bytes));
        std::hint::black_box(&dst)[n / 2] as u64
    });
    let gbps = |t: f64| n as f64 / t / 1e9;
    println!("baseline memcpy, one core: {:.2} GB/s (byte {sum})", gbps(tb));
    for dt in [Dtype::F32, Dtype::BF16, Dtype::F16] {
        let (t, s) = best_of(3, || scan(dt, std::hint::black_box(&bytes)).unwrap());
        println!("scan {:<5} {:.2} GB/s  = {:.2}× baseline  ({} values, {} NaN)", dt.name(), gbps(t), tb / t, s.count, s.nan);
        // The same scan with the fingerprint digest lint computes, timed in alternation with the
        // plain scan (the median of 11 pairs' ratios: robust to other load on a shared machine).
        let mut ratios = Vec::new();
        let mut last = None;
        for _ in 0..11 {
            let (t0, _) = best_of(1, || scan(dt, std::hint::black_box(&bytes)).unwrap());
            let (t1, r) = best_of(1, || scan_digest(dt, std::hint::black_box(&bytes)).unwrap());
            ratios.push(t1 / t0);
            last = Some(r);
        }
        ratios.sort_by(f64::total_cmp);
        let (sd, d) = last.unwrap();
        assert_eq!(sd, s);
        println!(
            "  + fingerprint digest: {:+.1} % scan time (median of 11 alternating pairs; hash {:016x})",
            100.0 * (ratios[5] - 1.0),
            d.hash
        );
    }
}
