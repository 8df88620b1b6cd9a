//! A single self-contained HTML report (no network, no script): summary, per-step tables and
//! inline SVG plots — KL per step, P(EOS) per step, per-layer divergence, and per-token KL heat
//! strips for the worst prompts with their tokens.

use super::escape;
use crate::compare::metrics::fmt_num;
use crate::pipeline::run::PipelineReport;
use crate::verdict::Verdict;

pub struct Html;

const W: f64 = 640.0;
const H: f64 = 220.0;
const PAD: f64 = 40.0;

fn status_class(s: Verdict, error: bool) -> &'static str {
    match (error, s) {
        (true, _) => "error",
        (_, Verdict::Pass) => "pass",
        (_, Verdict::Warn) => "warn",
        (_, Verdict::Fail) => "fail",
    }
}

/// Bars with value labels; non-finite values drawn as a hatched full bar labelled "NaN".
fn bar_chart(id: &str, title: &str, labels: &[String], values: &[Option<f64>]) -> String {
    let max = values.iter().flatten().filter(|v| v.is_finite()).fold(0.0f64, |m, &v| m.max(v)).max(1e-12);
    let n = labels.len().max(1) as f64;
    let bw = (W - 2.0 * PAD) / n;
    let mut o = format!(
        "<svg id=\"{id}\" class=\"plot\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\"><title>{}</title>",
        escape(title)
    );
    o.push_str(&format!("<text x=\"{PAD}\" y=\"16\" class=\"t\">{}</text>", escape(title)));
    o.push_str(&format!("<line x1=\"{PAD}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" class=\"axis\"/>", H - PAD, W - PAD, H - PAD));
    for (i, (l, v)) in labels.iter().zip(values).enumerate() {
        let x = PAD + i as f64 * bw + bw * 0.15;
        if let Some(v) = v {
            let (h, label) = if v.is_finite() { ((v / max) * (H - 2.0 * PAD), fmt_num(*v)) } else { (H - 2.0 * PAD, "NaN".into()) };
            o.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" class=\"bar\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"v\">{label}</text>",
                H - PAD - h,
                bw * 0.7,
                x + bw * 0.35,
                H - PAD - h - 4.0
            ));
        }
        o.push_str(&format!("<text x=\"{:.1}\" y=\"{:.1}\" class=\"l\">{}</text>", x + bw * 0.35, H - PAD + 14.0, escape(l)));
    }
    o.push_str("</svg>");
    o
}

/// Lines over a shared x axis; `log` plots log10 of the values.
fn line_chart(id: &str, title: &str, xlabels: &[String], series: &[(String, Vec<f64>)], log: bool) -> String {
    let tf = |v: f64| if log { v.max(1e-9).log10() } else { v };
    let vals: Vec<f64> = series.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| v.is_finite()).map(tf).collect();
    let (lo, hi) = vals.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (lo.min(0.0), lo.max(0.0) + 1.0) };
    let n = xlabels.len().max(2) as f64;
    let xs = |i: usize| PAD + i as f64 * (W - 2.0 * PAD) / (n - 1.0);
    let ys = |v: f64| H - PAD - (tf(v) - lo) / (hi - lo) * (H - 2.0 * PAD);
    let mut o = format!(
        "<svg id=\"{id}\" class=\"plot\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\"><title>{}</title>",
        escape(title)
    );
    o.push_str(&format!("<text x=\"{PAD}\" y=\"16\" class=\"t\">{}{}</text>", escape(title), if log { " (log scale)" } else { "" }));
    o.push_str(&format!("<line x1=\"{PAD}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" class=\"axis\"/>", H - PAD, W - PAD, H - PAD));
    // y-axis range, in the plotted units.
    let untf = |v: f64| if log { 10f64.powf(v) } else { v };
    for (y, v) in [(PAD, hi), (H - PAD, lo)] {
        o.push_str(&format!("<text x=\"{:.1}\" y=\"{:.1}\" class=\"y\">{}</text>", PAD - 4.0, y + 3.0, fmt_num(untf(v))));
    }
    for (i, l) in xlabels.iter().enumerate() {
        o.push_str(&format!("<text x=\"{:.1}\" y=\"{:.1}\" class=\"l\">{}</text>", xs(i), H - PAD + 14.0, escape(l)));
    }
    let palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"];
    for (k, (name, v)) in series.iter().enumerate() {
        let color = palette[k % palette.len()];
        let pts: Vec<String> =
            v.iter().enumerate().filter(|(_, y)| y.is_finite()).map(|(i, &y)| format!("{:.1},{:.1}", xs(i), ys(y))).collect();
        o.push_str(&format!("<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>", pts.join(" ")));
        for p in &pts {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            o.push_str(&format!("<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{color}\"/>"));
        }
        o.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\" class=\"legend\">{}</text>",
            W - PAD - 150.0,
            16.0 + 14.0 * (k as f64 + 1.0),
            escape(name)
        ));
    }
    o.push_str("</svg>");
    o
}

/// Background colour for a KL value: white at 0, red at ≥ 2 nats.
fn heat(kl: f64) -> String {
    if !kl.is_finite() {
        return "#7b2cbf".into();
    }
    // Capped so black text stays readable on the darkest cell.
    let t = (kl / 2.0).clamp(0.0, 1.0);
    let g = (255.0 - 165.0 * t) as u8;
    format!("rgb(255,{g},{g})")
}

impl Html {
    pub fn render(&self, r: &PipelineReport) -> String {
        let labels: Vec<String> = r.steps.iter().map(|s| s.label.clone()).collect();
        let mut body = String::new();
        let verdict = match (&r.first_bad_step, &r.cause) {
            (Some(s), Some(c)) => format!("step <b>{}</b> breaks it: {}", escape(s), escape(c)),
            (Some(s), None) => format!("step <b>{}</b> breaks it", escape(s)),
            (None, _) => "no step crossed a threshold".to_string(),
        };
        body.push_str(&format!(
            "<h1>ckptcheck: {}</h1><p class=\"verdict {}\" id=\"verdict\">{verdict}</p><p>reference: {}</p>",
            escape(&r.name),
            status_class(r.verdict, r.incomplete),
            escape(&r.reference)
        ));
        if let Some(c) = r.causes.first() {
            body.push_str(&format!(
                "<p id=\"fix\">cause <code>{}</code> ({} confidence). Fix: {}</p>",
                escape(&c.cause_id),
                c.confidence.name(),
                escape(&c.fix)
            ));
        }

        body.push_str("<h2>Steps</h2><table id=\"steps\"><tr><th>#</th><th>step</th><th>source</th><th>status</th><th>lint errors</th><th>KL mean</th><th>KL p99</th><th>top-1</th><th>P(EOS) ref → cand</th><th>stops</th><th>cause</th></tr>");
        for s in &r.steps {
            let errs: u64 = s
                .findings
                .iter()
                .chain(s.merge.iter().flat_map(|m| m.findings.iter()))
                .filter(|f| f.severity == crate::checks::Severity::Error)
                .map(|f| f.weight())
                .sum();
            let c = s.vs_reference.as_ref();
            let num = |f: &dyn Fn(&crate::compare::run::CompareResult) -> String| c.map(f).unwrap_or_else(|| "–".into());
            body.push_str(&format!(
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td class=\"src\">{}</td><td>{}</td><td>{errs}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                status_class(s.status, s.error.is_some()),
                s.index,
                escape(&s.label),
                escape(&s.source),
                if s.error.is_some() { "error".to_string() } else { format!("{:?}", s.status).to_lowercase() },
                num(&|c| fmt_num(c.summary.kl.mean)),
                num(&|c| format!("{:.3}", c.summary.kl.p99)),
                num(&|c| format!("{:.1}%", 100.0 * c.summary.top1)),
                num(&|c| format!("{:.3} → {:.3}", c.summary.p_eos_ref_mean, c.summary.p_eos_cand_mean)),
                num(&|c| format!("{:.0}%", 100.0 * c.summary.cand_stop_rate)),
                escape(s.cause.as_deref().or(s.error.as_deref()).unwrap_or(""))
            ));
        }
        body.push_str("</table>");

        body.push_str("<h2>Plots</h2>");
        let kl: Vec<Option<f64>> =
            r.steps.iter().map(|s| s.vs_reference.as_ref().map(|c| c.summary.kl.mean).or(s.is_reference.then_some(0.0))).collect();
        body.push_str(&bar_chart("plot-kl", "mean KL vs reference per step (nats)", &labels, &kl));
        // The reference's own P(EOS) is what every comparison measured for it.
        let ref_eos = r.steps.iter().find_map(|s| s.vs_reference.as_ref().map(|c| c.summary.p_eos_ref_mean)).unwrap_or(f64::NAN);
        let eos_c: Vec<f64> = r
            .steps
            .iter()
            .map(|s| s.vs_reference.as_ref().map(|c| c.summary.p_eos_cand_mean).unwrap_or(if s.is_reference { ref_eos } else { f64::NAN }))
            .collect();
        let eos_r: Vec<f64> = vec![ref_eos; r.steps.len()];
        body.push_str(&line_chart(
            "plot-eos",
            "P(end-of-turn) at turn end per step",
            &labels,
            &[("step".into(), eos_c), ("reference".into(), eos_r)],
            false,
        ));
        let layer_series: Vec<(String, Vec<f64>)> = r
            .steps
            .iter()
            .filter_map(|s| Some((s.label.clone(), s.vs_reference.as_ref()?.layers.as_ref()?.iter().map(|l| l.rel_l2).collect())))
            .collect();
        if let Some((_, first)) = layer_series.first() {
            let xl: Vec<String> = (0..first.len()).map(|i| if i == 0 { "emb".into() } else { format!("L{}", i - 1) }).collect();
            body.push_str(&line_chart("plot-layers", "hidden-state relative L2 error per layer, vs reference", &xl, &layer_series, true));
        }

        // Heat strips: the worst prompts of the worst step.
        let worst = r
            .steps
            .iter()
            .filter_map(|s| Some((s, s.vs_reference.as_ref()?)))
            .max_by(|a, b| a.1.summary.kl.mean.total_cmp(&b.1.summary.kl.mean));
        if let Some((s, c)) = worst {
            body.push_str(&format!("<h2>Per-token KL, worst prompts of step {}</h2><div id=\"heat\">", escape(&s.label)));
            let mut ps: Vec<_> = c.prompts.iter().collect();
            ps.sort_by(|a, b| b.kl_mean.total_cmp(&a.kl_mean));
            for p in ps.iter().take(3) {
                body.push_str(&format!("<div class=\"strip\"><div class=\"pl\">{} (KL mean {:.3})</div>", escape(&p.label), p.kl_mean));
                for (t, k) in p.tokens.iter().zip(&p.token_kl) {
                    body.push_str(&format!(
                        "<span class=\"tok\" style=\"background:{}\" title=\"KL {k:.4}\">{}</span>",
                        heat(*k),
                        escape(&t.replace('Ġ', " ").replace('Ċ', "\u{21b5}"))
                    ));
                }
                body.push_str("</div>");
            }
            body.push_str("</div>");
        }

        body.push_str("<h2>Findings</h2>");
        if r.steps.iter().all(|s| s.findings.is_empty() && s.merge.as_ref().is_none_or(|m| m.findings.is_empty())) {
            body.push_str("<p>No static findings in any step.</p>");
        }
        for s in &r.steps {
            let all: Vec<_> = s.findings.iter().chain(s.merge.iter().flat_map(|m| m.findings.iter())).collect();
            if all.is_empty() {
                continue;
            }
            body.push_str(&format!("<h3>{}</h3><ul>", escape(&s.label)));
            for f in all {
                body.push_str(&format!(
                    "<li class=\"{}\"><code>{}</code> {} <i>{}</i>: {}</li>",
                    f.severity.name(),
                    f.id,
                    escape(&f.file),
                    escape(f.field.as_deref().unwrap_or("")),
                    escape(&f.message)
                ));
            }
            body.push_str("</ul>");
        }

        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ckptcheck report: {}</title><style>{CSS}</style></head><body>{body}</body></html>\n",
            escape(&r.name)
        )
    }
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}\
tr.fail td{background:#fde2e2}tr.warn td{background:#fff4d6}tr.error td{background:#eadcf5}.src{font-family:monospace;font-size:11px}\
.verdict{font-size:18px;padding:8px;border-radius:4px}.verdict.fail{background:#fde2e2}.verdict.pass{background:#dff5df}.verdict.warn{background:#fff4d6}.verdict.error{background:#eadcf5}\
.plot{display:block;margin:12px 0;border:1px solid #eee}.t{font-size:13px;font-weight:bold}.l,.v{font-size:10px;text-anchor:middle}.legend{font-size:11px}\
.y{font-size:10px;text-anchor:end}.axis{stroke:#999}.bar{fill:#4c78a8}.strip{margin:8px 0;font-family:monospace;font-size:12px}.pl{font-family:system-ui;font-size:12px;color:#555}\
.tok{padding:1px 0;border-right:1px solid #eee;white-space:pre}li.error{color:#a00}li.warning{color:#a60}";
