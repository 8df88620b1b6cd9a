//! A single self-contained HTML report (no network, no script), the full width of the window:
//! the verdict, when and with what it was made (tool version, time, the thresholds used), the
//! per-step table with the reason each step warns or fails, and inline SVG plots on fixed,
//! labelled scales with their threshold lines drawn — mean KL per step on a log axis (small bars
//! stay visible), P(end-of-turn) per step on 0..1 (a healthy 0.986 → 0.984 looks like nothing),
//! the per-layer error on a log axis with its legend beside the plot; then the reference's and
//! the candidate's generated text side by side for the worst prompts, a per-prompt table, and
//! per-token KL heat strips with their colour legend.
//!
//! The scales are fixed on purpose: a plot that autoscales makes any two numbers look far apart.
//! Values off a log axis are drawn at its edge and labelled with their value.

use super::escape;
use crate::compare::metrics::fmt_num;
use crate::compare::run::{CompareResult, PromptResult};
use crate::compare::thresholds::Metric;
use crate::pipeline::run::{PipelineReport, StepReport};
use crate::verdict::Verdict;

pub struct Html;

/// Plot canvas (viewBox units; the SVG scales to its box): the two step plots sit side by side,
/// the per-layer plot takes the page width, so text comes out near the same size in both.
const W_STEP: f64 = 600.0;
const W_LAYERS: f64 = 1200.0;
const H: f64 = 280.0;
/// Plot area margins: room for the y tick labels, the title, the x labels.
const LEFT: f64 = 64.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = H - 52.0;
/// The right margin; the per-layer plot keeps `LEGEND_W` more for its legend.
const RIGHT_PAD: f64 = 12.0;
const LEGEND_W: f64 = 190.0;

/// Mean KL axis: 1e-6 nats (far below a Q8_0 quant's ~1e-3) to 10 nats (a broken model).
const KL_DECADES: (i32, i32) = (-6, 1);
/// Relative L2 error per layer: 1e-6 (f32 rounding) to 10 (a layer computing something else).
const LAYER_DECADES: (i32, i32) = (-6, 1);
/// Prompts shown side by side and as heat strips: the worst ones of the worst step.
const WORST_PROMPTS: usize = 3;
/// Per-token KL that the heat strip's colour saturates at (nats).
const HEAT_MAX: f64 = 2.0;

const PALETTE: [&str; 7] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"];

fn status_class(s: Verdict, error: bool) -> &'static str {
    match (error, s) {
        (true, _) => "error",
        (_, Verdict::Pass) => "pass",
        (_, Verdict::Warn) => "warn",
        (_, Verdict::Fail) => "fail",
    }
}

/// A vertical axis: how a value maps to a y coordinate, and its tick labels.
#[derive(Clone, Copy)]
enum Axis {
    /// log10 from 10^lo to 10^hi.
    Log(i32, i32),
    /// Linear from 0 to 1.
    Unit,
}

impl Axis {
    /// The y coordinate of `v`, clamped to the plot area; `None` for NaN.
    fn y(self, v: f64) -> Option<f64> {
        if v.is_nan() {
            return None;
        }
        let t = match self {
            Axis::Log(lo, hi) => {
                let l = if v <= 0.0 { lo as f64 } else { v.log10() };
                (l - lo as f64) / (hi - lo) as f64
            }
            Axis::Unit => v,
        };
        Some(BOTTOM - t.clamp(0.0, 1.0) * (BOTTOM - TOP))
    }

    fn ticks(self) -> Vec<(f64, String)> {
        match self {
            Axis::Log(lo, hi) => (lo..=hi).map(|k| (10f64.powi(k), decade(k))).collect(),
            Axis::Unit => [0.0, 0.25, 0.5, 0.75, 1.0].iter().map(|&v| (v, format!("{v:.2}"))).collect(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Axis::Log(..) => "log",
            Axis::Unit => "linear",
        }
    }

    fn range(self) -> (f64, f64) {
        match self {
            Axis::Log(lo, hi) => (10f64.powi(lo), 10f64.powi(hi)),
            Axis::Unit => (0.0, 1.0),
        }
    }
}

/// `10^k` as a tick label: `1e-6` … `1`, `10`.
fn decade(k: i32) -> String {
    if k >= 0 {
        format!("{}", 10u64.pow(k as u32))
    } else {
        format!("1e{k}")
    }
}

/// The frame every plot shares: the SVG element (its axis recorded in `data-` attributes for
/// tests and readers), title, y axis with gridlines and tick labels, and the y-axis label.
fn frame(id: &str, title: &str, ylabel: &str, axis: Axis, width: f64, right: f64) -> String {
    let (lo, hi) = axis.range();
    let mut o = format!(
        "<svg id=\"{id}\" class=\"plot\" viewBox=\"0 0 {width} {H}\" preserveAspectRatio=\"xMinYMin meet\" role=\"img\" \
         data-axis=\"{}\" data-min=\"{lo:e}\" data-max=\"{hi:e}\" data-plot-right=\"{right}\"><title>{}</title>",
        axis.name(),
        escape(title)
    );
    o.push_str(&format!("<text x=\"{LEFT}\" y=\"20\" class=\"t\">{}</text>", escape(title)));
    for (v, label) in axis.ticks() {
        let y = axis.y(v).unwrap_or(BOTTOM);
        o.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{right:.1}\" y2=\"{y:.1}\" class=\"grid\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\">{label}</text>",
            LEFT - 6.0,
            y + 3.5
        ));
    }
    o.push_str(&format!(
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{BOTTOM}\" class=\"axis\"/><line x1=\"{LEFT}\" y1=\"{BOTTOM}\" x2=\"{right:.1}\" y2=\"{BOTTOM}\" class=\"axis\"/>"
    ));
    let mid = (TOP + BOTTOM) / 2.0;
    o.push_str(&format!("<text x=\"14\" y=\"{mid:.1}\" class=\"ylabel\" transform=\"rotate(-90 14 {mid:.1})\">{}</text>", escape(ylabel)));
    o
}

/// A dashed horizontal threshold line across the plot area, labelled above its left end (the
/// reference's slot, where no bar stands).
fn threshold_line(axis: Axis, v: f64, label: &str, level: &str, right: f64) -> String {
    let Some(y) = axis.y(v) else { return String::new() };
    format!(
        "<g class=\"threshold {level}\" data-value=\"{v}\"><line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{right:.1}\" y2=\"{y:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text></g>",
        LEFT + 4.0,
        y - 4.0,
        escape(label)
    )
}

/// One bar per step on `axis`, value-labelled; a NaN is a hatched full bar labelled NaN, the
/// reference a labelled gap.
fn bars(axis: Axis, labels: &[String], values: &[Option<f64>], right: f64) -> String {
    let n = labels.len().max(1) as f64;
    let bw = (right - LEFT) / n;
    let mut o = String::new();
    for (i, (l, v)) in labels.iter().zip(values).enumerate() {
        let x = LEFT + i as f64 * bw + bw * 0.2;
        let cx = x + bw * 0.3;
        match v {
            Some(v) if v.is_nan() => o.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" class=\"bar nan\"/><text x=\"{cx:.1}\" y=\"{:.1}\" class=\"v\">NaN</text>",
                bw * 0.6,
                BOTTOM - TOP,
                TOP - 4.0
            )),
            Some(v) => {
                let y = axis.y(*v).unwrap_or(BOTTOM);
                // Off the bottom of a log axis (or 0): a stub, so the bar is seen to exist.
                let y = y.min(BOTTOM - 2.0);
                o.push_str(&format!(
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" class=\"bar\"/><text x=\"{cx:.1}\" y=\"{:.1}\" class=\"v\">{}</text>",
                    bw * 0.6,
                    BOTTOM - y,
                    (y - 4.0).max(TOP - 4.0),
                    fmt_num(*v)
                ));
            }
            None => o.push_str(&format!("<text x=\"{cx:.1}\" y=\"{:.1}\" class=\"v muted\">reference</text>", BOTTOM - 6.0)),
        }
        o.push_str(&format!("<text x=\"{cx:.1}\" y=\"{:.1}\" class=\"l\">{}</text>", BOTTOM + 16.0, escape(l)));
    }
    o
}

/// Mean KL vs the reference per step, on the fixed log axis, with the kl_mean thresholds.
fn kl_plot(r: &PipelineReport, labels: &[String]) -> String {
    let axis = Axis::Log(KL_DECADES.0, KL_DECADES.1);
    let right = W_STEP - RIGHT_PAD;
    let mut o = frame("plot-kl", "mean KL vs reference per step", "nats (log scale)", axis, W_STEP, right);
    let values: Vec<Option<f64>> = r.steps.iter().map(|s| s.vs_reference.as_ref().map(kl_mean)).collect();
    let (warn, fail) = r.thresholds.bounds(Metric::KlMean);
    o.push_str(&bars(axis, labels, &values, right));
    o.push_str(&threshold_line(axis, warn, &format!("kl_mean_warn {}", fmt_num(warn)), "warn", right));
    o.push_str(&threshold_line(axis, fail, &format!("kl_mean_fail {}", fmt_num(fail)), "fail", right));
    o.push_str("</svg>");
    o
}

/// The mean KL, NaN when any position's KL was NaN (the mean of the finite rest reads healthy).
fn kl_mean(c: &CompareResult) -> f64 {
    if c.summary.kl.nan > 0 {
        f64::NAN
    } else {
        c.summary.kl.mean
    }
}

/// P(end-of-turn) at the reference's turn ends per step on 0..1: the reference's own as a line,
/// each step's as a bar, and the P(EOS) a step warns and fails below (reference × p_eos_ratio
/// thresholds) when the reference ends its turns.
fn eos_plot(r: &PipelineReport, labels: &[String]) -> String {
    let axis = Axis::Unit;
    let right = W_STEP - RIGHT_PAD;
    let mut o = frame("plot-eos", "P(end-of-turn) at turn end, per step", "probability", axis, W_STEP, right);
    let ref_eos = r.steps.iter().find_map(|s| s.vs_reference.as_ref().map(|c| c.summary.p_eos_ref_mean));
    let values: Vec<Option<f64>> = r.steps.iter().map(|s| s.vs_reference.as_ref().map(|c| c.summary.p_eos_cand_mean)).collect();
    o.push_str(&bars(axis, labels, &values, right));
    if let Some(p) = ref_eos.filter(|p| p.is_finite()) {
        if let Some(y) = axis.y(p) {
            o.push_str(&format!(
                "<g class=\"reference-line\"><line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{right:.1}\" y2=\"{y:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\">── reference {p:.3}</text></g>",
                right - 4.0,
                20.0
            ));
        }
        let t = &r.thresholds;
        if p >= t.p_eos_ref_min {
            let (warn, fail) = t.bounds(Metric::PEosRatio);
            o.push_str(&threshold_line(axis, p * warn, &format!("warn < {:.3} (×{warn})", p * warn), "warn", right));
            o.push_str(&threshold_line(axis, p * fail, &format!("fail < {:.3} (×{fail})", p * fail), "fail", right));
        } else {
            o.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" class=\"note\">not judged: the reference's P(EOS) {p:.3} is below p_eos_ref_min {}</text>",
                right - 4.0,
                TOP + 12.0,
                t.p_eos_ref_min
            ));
        }
    }
    o.push_str("</svg>");
    o
}

/// Hidden-state relative L2 error per layer (log axis), one line per step, the legend in its
/// own column right of the plot area, and the layer_rel_err threshold.
fn layer_plot(r: &PipelineReport) -> Option<String> {
    let series: Vec<(&str, Vec<f64>)> = r
        .steps
        .iter()
        .filter_map(|s| Some((s.label.as_str(), s.vs_reference.as_ref()?.layers.as_ref()?.iter().map(|l| l.rel_l2).collect())))
        .collect();
    let points = series.iter().map(|(_, v)| v.len()).max()?;
    let axis = Axis::Log(LAYER_DECADES.0, LAYER_DECADES.1);
    let right = W_LAYERS - RIGHT_PAD - LEGEND_W;
    let mut o =
        frame("plot-layers", "hidden-state relative L2 error per layer, vs reference", "relative L2 (log scale)", axis, W_LAYERS, right);
    let xs = |i: usize| LEFT + (i as f64 + 0.5) * (right - LEFT) / points as f64;
    // At most ~16 x labels, so 32+ layers stay readable.
    let every = points.div_ceil(16).max(1);
    for i in (0..points).step_by(every) {
        let l = if i == 0 { "emb".to_string() } else { format!("L{}", i - 1) };
        o.push_str(&format!("<text x=\"{:.1}\" y=\"{:.1}\" class=\"l\">{l}</text>", xs(i), BOTTOM + 16.0));
    }
    o.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" class=\"l\">layer output (emb = embeddings)</text>",
        (LEFT + right) / 2.0,
        BOTTOM + 36.0
    ));
    let t = r.thresholds.layer_rel_err;
    o.push_str(&threshold_line(axis, t, &format!("layer_rel_err {}", fmt_num(t)), "fail", right));
    o.push_str(&format!("<g class=\"legend\" data-x=\"{:.1}\">", right + 16.0));
    for (k, (name, v)) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let pts: Vec<(f64, f64)> = v.iter().enumerate().filter_map(|(i, &y)| Some((xs(i), axis.y(y)?))).collect();
        let line: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        o.push_str(&format!("<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>", line.join(" ")));
        for (x, y) in &pts {
            o.push_str(&format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{color}\"/>"));
        }
        let ly = TOP + 8.0 + 18.0 * k as f64;
        o.push_str(&format!(
            "<line x1=\"{:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{color}\" stroke-width=\"3\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"legend-label\">{}</text>",
            right + 16.0,
            right + 36.0,
            right + 42.0,
            ly + 4.0,
            escape(&name.chars().take(24).collect::<String>())
        ));
    }
    o.push_str("</g></svg>");
    Some(o)
}

/// A blamed step: each group's share of the step's KL (0..1, fixed), one plot for the layers and
/// one inside the guiltiest group, with the culprit set's 80 % line; then the headline.
fn blame_section(s: &StepReport, b: &crate::compare::blame::Blame) -> String {
    let plot = |id: &str, title: &str, rows: &[crate::compare::blame::BlameRow], short: &dyn Fn(&str) -> String| {
        let axis = Axis::Unit;
        let width = W_STEP.max(LEFT + RIGHT_PAD + 76.0 * rows.len() as f64);
        let right = width - RIGHT_PAD;
        let mut o = frame(id, title, "share of the step's KL", axis, width, right);
        let labels: Vec<String> = rows.iter().map(|r| short(&r.group)).collect();
        let values: Vec<Option<f64>> = rows.iter().map(|r| Some(r.share.unwrap_or(f64::NAN))).collect();
        o.push_str(&bars(axis, &labels, &values, right));
        o.push_str(&threshold_line(axis, 0.8, "culprit set: 80 % of the KL", "warn", right));
        o.push_str("</svg>");
        o
    };
    let mut o = format!(
        "<h2>Blame: which tensors of step {}</h2><p class=\"meta\">each group of the step's tensors swapped alone into its parent <b>{}</b> and scored against it; share = that hybrid's KL / the step's KL ({} over {} tokens, {} forward passes). For a quantized step this is the quantization sensitivity per layer.</p><div class=\"plots\">",
        escape(&s.label),
        escape(&b.parent),
        fmt_num(b.kl_mean),
        b.scored_tokens,
        b.forward_passes
    );
    o.push_str(&plot(&format!("plot-blame-{}", s.index), "each layer alone", &b.groups, &|g| g.to_string()));
    if let Some(g) = &b.refined {
        // `model.layers.1.self_attn.k_proj` → `k_proj`, `…post_attention_layernorm` →
        // `post_attention_ln`, under a plot titled by its layer (the table has the full names).
        let prefix = |m: &str| m.rsplit('.').next().unwrap_or(m).replace("_layernorm", "_ln");
        o.push_str(&plot(&format!("plot-blame-modules-{}", s.index), &format!("inside {g}"), &b.modules, &prefix));
    }
    o.push_str(&format!("</div><p id=\"blame-headline-{}\"><b>{}</b></p>", s.index, escape(&b.headline())));
    o
}

/// Background colour for a token's KL: white at 0, red at `HEAT_MAX` nats and above; NaN purple.
fn heat(kl: f64) -> String {
    if !kl.is_finite() {
        return "#7b2cbf".into();
    }
    // Capped so black text stays readable on the darkest cell.
    let t = (kl / HEAT_MAX).clamp(0.0, 1.0);
    let g = (255.0 - 165.0 * t) as u8;
    format!("rgb(255,{g},{g})")
}

/// The heat strips' colour scale: a gradient from 0 to `HEAT_MAX`, and the NaN colour.
fn heat_legend() -> String {
    let stops: Vec<String> = (0..=4).map(|i| format!("{} {}%", heat(HEAT_MAX * i as f64 / 4.0), i * 25)).collect();
    format!(
        "<div id=\"heat-legend\" class=\"heat-legend\"><span>per-token KL:</span><span>0</span><span class=\"ramp\" style=\"background:linear-gradient(to right,{})\"></span><span>≥ {HEAT_MAX} nats</span><span class=\"tok\" style=\"background:{}\">&nbsp;NaN&nbsp;</span></div>",
        stops.join(","),
        heat(f64::NAN)
    )
}

/// The UTC time the report is made at (`SOURCE_DATE_EPOCH` when set, as reproducible builds do).
fn made_at() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0));
    utc(secs)
}

/// Seconds since 1970 as `YYYY-MM-DD HH:MM UTC` (the proleptic Gregorian calendar, from the
/// days-from-civil inverse in Howard Hinnant's "chrono-compatible low-level date algorithms").
fn utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// The step whose prompts are shown: the first that broke the lineage, else the one furthest
/// from the reference (a NaN is furthest).
fn worst_step(r: &PipelineReport) -> Option<(&StepReport, &CompareResult)> {
    let compared = || r.steps.iter().filter_map(|s| Some((s, s.vs_reference.as_ref()?)));
    compared()
        .find(|(s, _)| r.first_bad_step.as_deref() == Some(s.label.as_str()))
        .or_else(|| compared().max_by(|a, b| kl_mean(a.1).total_cmp(&kl_mean(b.1))))
}

/// A step's prompts, worst first (a NaN KL first).
fn worst_prompts(c: &CompareResult) -> Vec<&PromptResult> {
    let mut ps: Vec<&PromptResult> = c.prompts.iter().collect();
    ps.sort_by(|a, b| b.kl_mean.total_cmp(&a.kl_mean));
    ps
}

fn stopped(yes: bool, tokens: usize) -> String {
    if yes {
        format!("stopped after {tokens} tokens")
    } else {
        format!("did not stop in {tokens} tokens")
    }
}

/// The per-step table's numbers against one variant (the reference or the parent).
fn number_cells(c: &CompareResult) -> String {
    let s = &c.summary;
    let nan = |v: f64| if s.kl.nan > 0 { "NaN".to_string() } else { fmt_num(v) };
    // A corpus (`compare --text`) has no turn ends and generates nothing.
    let (p_eos, stops) = if s.corpus {
        ("–".to_string(), "–".to_string())
    } else {
        (format!("{:.3} → {:.3}", s.p_eos_ref_mean, s.p_eos_cand_mean), format!("{:.0}%", 100.0 * s.cand_stop_rate))
    };
    let flips = if s.flips.prompts > 0 { format!("{}/{}", s.flips.changed, s.flips.prompts) } else { "–".into() };
    let kl = match s.estimates.kl_mean.se.filter(|se| se.is_finite() && s.kl.nan == 0) {
        Some(se) => format!("{} ± {}", fmt_num(s.kl.mean), fmt_num(se)),
        None => nan(s.kl.mean),
    };
    format!(
        "<td>{kl}</td><td>{}</td><td>{:.1}%</td><td>{}</td><td>{p_eos}</td><td>{stops}</td><td title=\"greedy answers that changed / prompts\">{flips}</td>",
        nan(s.kl.p99),
        100.0 * s.top1,
        if s.ppl_ratio.is_finite() { format!("{:.3}", s.ppl_ratio) } else { "NaN".into() },
    )
}

impl Html {
    pub fn render(&self, r: &PipelineReport) -> String {
        let labels: Vec<String> = r.steps.iter().map(|s| s.label.clone()).collect();
        let mut body = String::new();
        let verdict = match (&r.first_bad_step, &r.cause) {
            (Some(s), Some(c)) => format!("step <b>{}</b> breaks it: {}", escape(s), escape(c)),
            (Some(s), None) => format!("step <b>{}</b> breaks it", escape(s)),
            (None, _) if r.verdict == Verdict::Warn => "no step crossed a failure threshold; some warn (see the reasons below)".to_string(),
            (None, _) => "no step crossed a threshold".to_string(),
        };
        body.push_str(&format!(
            "<h1>ckptcheck: {}</h1><p class=\"verdict {}\" id=\"verdict\">{verdict}</p>",
            escape(&r.name),
            status_class(r.verdict, r.incomplete),
        ));
        if let Some(c) = r.causes.first() {
            body.push_str(&format!(
                "<p id=\"fix\">cause <code>{}</code> ({} confidence). Fix: {}</p>",
                escape(&c.cause_id),
                c.confidence.name(),
                escape(&c.fix)
            ));
        }
        let (prompts, tokens) =
            r.steps.iter().find_map(|s| s.vs_reference.as_ref()).map(|c| (c.prompts.len(), c.summary.scored_tokens)).unwrap_or((0, 0));
        let corpus = r.steps.iter().find_map(|s| s.vs_reference.as_ref()?.corpus.as_ref());
        let scored = match corpus {
            Some(c) => format!(
                "{} chunks of {} tokens from <b>{}</b>, {tokens} text tokens scored per step (the second half of each chunk, as llama-perplexity)",
                c.chunks,
                c.ctx,
                escape(&c.source.display().to_string())
            ),
            None => format!("{prompts} prompts, {tokens} answer tokens scored per step"),
        };
        let mapped = r.steps.iter().filter_map(|s| s.vs_reference.as_ref()?.summary.token_map.as_ref()).next();
        let scored = match mapped {
            Some(m) => format!(
                "{scored} · <span id=\"token-map\">through token map {}: {} shared ids, scores on the shared vocabulary, the reference's mass outside it {:.3}% (max {:.3}%)</span>",
                escape(&m.source),
                m.shared,
                100.0 * m.ref_mass_outside_mean,
                100.0 * m.ref_mass_outside_max
            ),
            None => scored,
        };
        body.push_str(&format!(
            "<p id=\"meta\" class=\"meta\">reference <b>{}</b> · {scored} · made by <span id=\"tool\">ckptcheck {}</span> at <span id=\"made-at\">{}</span></p>",
            escape(&r.reference),
            env!("CARGO_PKG_VERSION"),
            made_at()
        ));

        body.push_str("<h2>Steps</h2><table id=\"steps\"><tr><th>#</th><th>step</th><th>source</th><th>kind</th><th>status</th><th>lint E</th><th>lint W</th><th>KL mean ± SE</th><th>KL p99</th><th>top-1</th><th>PPL ratio</th><th>P(EOS) ref → cand</th><th>stops</th><th>flips</th><th>reason</th></tr>");
        for s in &r.steps {
            let numbers = match &s.vs_reference {
                Some(c) => number_cells(c),
                None if s.is_reference => "<td colspan=\"7\" class=\"muted\">(reference)</td>".into(),
                None => "<td colspan=\"7\">–</td>".into(),
            };
            let reason = match &s.error {
                Some(e) => format!("could not run: {e}"),
                None => s.reasons.iter().map(|r| r.text.as_str()).collect::<Vec<_>>().join("; "),
            };
            body.push_str(&format!(
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td class=\"src\">{}</td><td class=\"kind\">{}</td><td>{}</td><td>{}</td><td>{}</td>{numbers}<td class=\"reason\">{}</td></tr>",
                status_class(s.status, s.error.is_some()),
                s.index,
                escape(&s.label),
                escape(&s.source),
                if s.is_reference { "reference" } else { s.kind.name() },
                if s.error.is_some() { "error".to_string() } else { s.status.name().to_string() },
                super::step_findings(s, crate::checks::Severity::Error),
                super::step_findings(s, crate::checks::Severity::Warning),
                escape(&reason)
            ));
            if let (Some(c), Some(p)) = (&s.vs_parent, s.index.checked_sub(1).and_then(|p| r.steps.get(p))) {
                let why: Vec<String> = crate::pipeline::run::threshold_reasons(c).into_iter().map(|r| r.text).collect();
                body.push_str(&format!(
                    "<tr class=\"vs-parent\"><td></td><td colspan=\"6\">↳ vs its parent <b>{}</b></td>{}<td class=\"reason\">{}</td></tr>",
                    escape(&p.label),
                    number_cells(c),
                    escape(&why.join("; "))
                ));
            }
        }
        body.push_str("</table>");

        body.push_str("<h2>Plots</h2><div class=\"plots\">");
        body.push_str(&kl_plot(r, &labels));
        if corpus.is_none() {
            body.push_str(&eos_plot(r, &labels));
        }
        body.push_str("</div>");
        if let Some(p) = layer_plot(r) {
            body.push_str(&p);
        }
        for s in &r.steps {
            if let Some(b) = &s.blame {
                body.push_str(&blame_section(s, b));
            }
        }
        if let Some(t) = &r.training {
            body.push_str(&training_section(t));
        }

        if let Some((s, c)) = worst_step(r) {
            let worst = worst_prompts(c);
            // Nothing is generated on a corpus.
            let generated = corpus.is_none();
            body.push_str(&if generated { format!(
                "<h2>Generated text, worst prompts of step {}</h2><table id=\"generations\"><tr><th>prompt</th><th>KL mean</th><th>reference: {}</th><th>candidate: {}</th></tr>",
                escape(&s.label),
                escape(&r.reference),
                escape(&s.label)
            ) } else { String::new() });
            for p in worst.iter().take(WORST_PROMPTS).filter(|_| generated) {
                body.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td><pre class=\"gen ref\">{}</pre><div class=\"muted\">{}</div></td><td><pre class=\"gen cand\">{}</pre><div class=\"muted\">{}</div></td></tr>",
                    escape(&p.label),
                    if p.kl_mean.is_nan() { "NaN".into() } else { fmt_num(p.kl_mean) },
                    escape(&p.answer),
                    stopped(p.ref_stopped, p.answer_tokens),
                    escape(&p.cand_answer),
                    stopped(p.cand_stopped, p.cand_generated_tokens)
                ));
            }
            if generated {
                body.push_str("</table>");
            }

            body.push_str(if generated { "<h2>Per prompt</h2>" } else { "<h2>Per chunk</h2>" });
            for (t, c2) in r.steps.iter().filter_map(|t| Some((t, t.vs_reference.as_ref()?))) {
                body.push_str(&format!(
                    "<details{}><summary>step {} vs {}</summary><table class=\"prompts\" id=\"prompts-{}\"><tr>{}</tr>",
                    if t.index == s.index { " open" } else { "" },
                    escape(&t.label),
                    escape(&r.reference),
                    t.index,
                    if generated {
                        "<th>prompt</th><th>prompt tokens</th><th>answer tokens</th><th>KL mean</th><th>KL max</th><th>top-1</th><th>P(EOS) ref → cand</th><th>reference</th><th>candidate</th>"
                    } else {
                        "<th>chunk</th><th>context tokens</th><th>scored tokens</th><th>KL mean</th><th>KL max</th><th>top-1</th>"
                    }
                ));
                for p in &c2.prompts {
                    // A chunk of a corpus has no turn end and generated nothing: its row stops at top-1.
                    let turn = if generated {
                        format!(
                            "<td>{:.3} → {:.3}</td><td>{}</td><td>{}</td>",
                            p.p_eos_ref,
                            p.p_eos_cand,
                            if p.ref_stopped { "stops" } else { "no stop" },
                            stopped(p.cand_stopped, p.cand_generated_tokens)
                        )
                    } else {
                        String::new()
                    };
                    body.push_str(&format!(
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}%</td>{turn}</tr>",
                        escape(&p.label),
                        p.prompt_tokens,
                        p.answer_tokens,
                        if p.kl_mean.is_nan() { "NaN".into() } else { fmt_num(p.kl_mean) },
                        if p.kl_max.is_nan() { "NaN".into() } else { fmt_num(p.kl_max) },
                        100.0 * p.top1,
                    ));
                }
                body.push_str("</table></details>");
            }

            body.push_str(&format!(
                "<h2>Per-token KL, worst {} of step {}</h2>",
                if generated { "prompts" } else { "chunks" },
                escape(&s.label)
            ));
            body.push_str(&heat_legend());
            body.push_str("<div id=\"heat\">");
            for p in worst.iter().take(WORST_PROMPTS) {
                body.push_str(&format!(
                    "<div class=\"strip\"><div class=\"pl\">{} (KL mean {})</div>",
                    escape(&p.label),
                    if p.kl_mean.is_nan() { "NaN".into() } else { fmt_num(p.kl_mean) }
                ));
                for (t, k) in p.tokens.iter().zip(&p.token_kl) {
                    body.push_str(&format!(
                        "<span class=\"tok\" style=\"background:{}\" title=\"KL {k:.4}\">{}</span>",
                        heat(*k),
                        escape(&t.replace('Ġ', " ").replace('Ċ', "\u{21b5}").replace('▁', " "))
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
            body.push_str(&format!("<h3>{}</h3>", escape(&s.label)));
            body.push_str(&findings_list(&all));
        }

        body.push_str(&thresholds_table(r));

        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>ckptcheck report: {}</title><style>{CSS}</style></head><body>{body}</body></html>\n",
            escape(&r.name)
        )
    }
}

/// One training plot: id, title, y label, axis, and its series (name, colour, the value read).
type TrainPlot<'a> =
    (&'a str, &'a str, &'a str, Axis, Vec<(&'a str, &'a str, &'a dyn Fn(&crate::pipeline::train_log::LogEntry) -> Option<f64>)>);

/// Fixed axes of the training plots: loss (cross-entropy, nats), learning rate, gradient norm.
const LOSS_DECADES: (i32, i32) = (-2, 1);
const LR_DECADES: (i32, i32) = (-7, -1);
const GRAD_DECADES: (i32, i32) = (-2, 3);

/// A training run: the log's curves (loss and eval loss, learning rate, grad norm) and each
/// training step's P(end-of-turn) and stop rate, one plot each on one step axis, with every
/// evaluated checkpoint a vertical line coloured by its status and the collapse window shaded;
/// then the table of the log at each checkpoint beside its behaviour.
fn training_section(t: &crate::pipeline::train_log::TrainingReport) -> String {
    use crate::pipeline::train_log::{short, LogEntry};
    let right = W_LAYERS - RIGHT_PAD;
    let rows: Vec<_> = t.rows.iter().filter(|r| r.step.is_some()).collect();
    // Many checkpoints: the axis labels are their steps, not their names.
    let many = rows.len() > 8;
    let max_step = t.curve.iter().map(|e| e.step).chain(rows.iter().filter_map(|r| r.step)).max().unwrap_or(1).max(1) as f64;
    // 4 % of room right of the last step, for its label.
    let x = |step: u64| LEFT + step as f64 / (1.04 * max_step) * (right - LEFT);
    // The collapse window: after the last passing training step before the first failing one.
    let first_bad = rows.iter().position(|r| r.status == Verdict::Fail);
    let window = first_bad.map(|b| (b.checked_sub(1).and_then(|g| rows[g].step).unwrap_or(0), rows[b].step.unwrap_or(0)));
    let marks = || {
        let mut o = String::new();
        if let Some((g, b)) = window {
            o.push_str(&format!(
                "<rect class=\"collapse\" x=\"{:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\"/>",
                x(g),
                (x(b) - x(g)).max(2.0),
                BOTTOM - TOP
            ));
        }
        for (k, r) in rows.iter().enumerate() {
            // The final save at the last checkpoint's step: one line, the checkpoint's label.
            if k > 0 && rows[k - 1].step == r.step {
                continue;
            }
            let cx = x(r.step.unwrap_or(0));
            o.push_str(&format!(
                "<g class=\"ckpt {}\" data-step=\"{}\"><line x1=\"{cx:.1}\" y1=\"{TOP}\" x2=\"{cx:.1}\" y2=\"{BOTTOM}\"/><text x=\"{cx:.1}\" y=\"{:.1}\" class=\"l\">{}</text></g>",
                status_class(r.status, false),
                r.step.unwrap_or(0),
                BOTTOM + 16.0,
                if many { r.step.unwrap_or(0).to_string() } else { escape(&r.label) }
            ));
        }
        o
    };
    // One polyline per series; a NaN or infinite value is a mark at the top edge.
    let series = |axis: Axis, name: &str, color: &str, field: &dyn Fn(&LogEntry) -> Option<f64>| {
        let mut pts = Vec::new();
        let mut bad = String::new();
        for e in &t.curve {
            let Some(v) = field(e) else { continue };
            match axis.y(v).filter(|_| v.is_finite()) {
                Some(y) => {
                    pts.push(format!("{:.1},{y:.1}", x(e.step)));
                    // A sparse series (eval loss) shows its points, a lone one included.
                    if t.curve.len() <= 60 {
                        bad.push_str(&format!("<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{color}\"/>", x(e.step)));
                    }
                }
                None => bad.push_str(&format!(
                    "<text x=\"{:.1}\" y=\"{:.1}\" class=\"nonfinite\">{}</text>",
                    x(e.step),
                    TOP - 2.0,
                    if v.is_nan() { "NaN" } else { "inf" }
                )),
            }
        }
        format!(
            "<polyline class=\"series\" data-series=\"{name}\" points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>{bad}",
            pts.join(" ")
        )
    };
    let legend = |items: &[(&str, &str)]| {
        items
            .iter()
            .enumerate()
            .map(|(i, (name, color))| {
                format!(
                    "<text x=\"{:.1}\" y=\"20\" class=\"legend\" fill=\"{color}\">── {}</text>",
                    right - 150.0 + 75.0 * i as f64,
                    escape(name)
                )
            })
            .collect::<String>()
    };
    let mut o = format!(
        "<h2 id=\"training\">Training run {}</h2><p class=\"meta\">{} · {} of {} checkpoints evaluated{}</p><p>{}</p>",
        escape(&t.dir),
        escape(t.log_file.as_deref().unwrap_or(t.log_error.as_deref().unwrap_or("no training log"))),
        t.checkpoints_evaluated,
        t.checkpoints_found,
        t.search.as_ref().map(|s| format!(" (binary search, {} probes)", s.probes.len())).unwrap_or_default(),
        escape(&t.summary)
    );
    let plots: [TrainPlot; 3] = [
        (
            "plot-train-loss",
            "training loss and eval loss",
            "nats (log scale)",
            Axis::Log(LOSS_DECADES.0, LOSS_DECADES.1),
            vec![("loss", PALETTE[0], &|e: &LogEntry| e.loss), ("eval_loss", PALETTE[4], &|e: &LogEntry| e.eval_loss)],
        ),
        (
            "plot-train-lr",
            "learning rate",
            "log scale",
            Axis::Log(LR_DECADES.0, LR_DECADES.1),
            vec![("learning_rate", PALETTE[3], &|e: &LogEntry| e.learning_rate)],
        ),
        (
            "plot-train-grad",
            "gradient norm",
            "log scale",
            Axis::Log(GRAD_DECADES.0, GRAD_DECADES.1),
            vec![("grad_norm", PALETTE[1], &|e: &LogEntry| e.grad_norm)],
        ),
    ];
    for (id, title, ylabel, axis, lines) in plots {
        o.push_str(&frame(id, title, ylabel, axis, W_LAYERS, right));
        o.push_str(&marks());
        for (name, color, f) in &lines {
            o.push_str(&series(axis, name, color, *f));
        }
        o.push_str(&legend(&lines.iter().map(|(n, c, _)| (*n, *c)).collect::<Vec<_>>()));
        o.push_str("</svg>");
    }
    // Behaviour at each training step, on the same step axis.
    let axis = Axis::Unit;
    o.push_str(&frame(
        "plot-train-eos",
        "P(end-of-turn) at turn end and greedy stop rate, per training step",
        "probability",
        axis,
        W_LAYERS,
        right,
    ));
    o.push_str(&marks());
    for r in &rows {
        let cx = x(r.step.unwrap_or(0));
        if let Some(y) = r.p_eos.and_then(|p| axis.y(p)) {
            o.push_str(&format!(
                "<circle class=\"p-eos {}\" cx=\"{cx:.1}\" cy=\"{y:.1}\" r=\"5\"><title>P(EOS) {:.3}</title></circle>",
                status_class(r.status, false),
                r.p_eos.unwrap_or(0.0)
            ));
        }
        if let Some(y) = r.stop_rate.and_then(|p| axis.y(p)) {
            o.push_str(&format!(
                "<rect class=\"stops\" x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\"><title>stops {:.0}%</title></rect>",
                cx - 4.0,
                y - 4.0,
                100.0 * r.stop_rate.unwrap_or(0.0)
            ));
        }
    }
    o.push_str(&legend(&[("P(EOS)", "#222"), ("stops", "#777")]));
    o.push_str("</svg>");

    o.push_str("<table id=\"training-rows\"><tr><th>step</th><th>label</th><th>status</th><th>learning rate</th><th>loss</th><th>eval loss</th><th>grad norm</th><th>P(EOS)</th><th>stops</th><th>KL mean vs base</th></tr>");
    let cell = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "–".into());
    for r in &rows {
        let l = r.log.as_ref();
        o.push_str(&format!(
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            status_class(r.status, false),
            r.step.unwrap_or(0),
            escape(&r.label),
            r.status.name(),
            cell(l.and_then(|l| l.learning_rate), &short),
            cell(l.and_then(|l| l.loss), &short),
            cell(l.and_then(|l| l.eval_loss), &short),
            cell(l.and_then(|l| l.grad_norm), &short),
            cell(r.p_eos, &|v| format!("{v:.3}")),
            cell(r.stop_rate, &|v| format!("{:.0}%", 100.0 * v)),
            cell(r.kl_mean, &fmt_num),
        ));
    }
    o.push_str("</table>");
    o
}

/// Findings worst first, grouped by id and severity: the first `checks::SHOWN_PER_ID` of each
/// group listed, the rest folded under one line that opens to list them.
fn findings_list(all: &[&crate::checks::Finding]) -> String {
    let groups = crate::checks::runs_by_id(all.iter().copied());
    let item = |f: &crate::checks::Finding| {
        format!(
            "<li class=\"{}\"><code>{}</code> {} <i>{}</i>: {}</li>",
            f.severity.name(),
            f.id,
            escape(&f.file),
            escape(f.field.as_deref().unwrap_or("")),
            escape(&f.message)
        )
    };
    let mut o = String::from("<ul class=\"findings\">");
    for g in groups {
        let (listed, rest) = crate::checks::split_run(&g, crate::checks::SHOWN_PER_ID);
        let shown = listed.len();
        for f in listed {
            o.push_str(&item(f));
        }
        if rest > 0 {
            o.push_str(&format!(
                "<li class=\"{} more\"><details><summary>… and {rest} more <code>{}</code> findings</summary><ul>",
                g[0].severity.name(),
                g[0].id
            ));
            for f in g.iter().skip(shown) {
                o.push_str(&item(f));
            }
            o.push_str("</ul></details></li>");
        }
    }
    o.push_str("</ul>");
    o
}

/// The thresholds that judged the lineage, every key, and each step's own overrides (read from
/// its judgements' bounds).
fn thresholds_table(r: &PipelineReport) -> String {
    let mut o = String::from("<h2>Thresholds used</h2><table id=\"thresholds\"><tr><th>key</th><th>value</th></tr>");
    if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(&r.thresholds) {
        for (k, v) in m {
            o.push_str(&format!("<tr><td><code>{}</code></td><td>{v}</td></tr>", escape(&k)));
        }
    }
    o.push_str("</table>");
    let mut overrides = Vec::new();
    for s in &r.steps {
        for j in s.vs_reference.iter().flat_map(|c| &c.judgements) {
            let (w, f) = r.thresholds.bounds(j.metric);
            for (level, mine, lineage) in [("warn", j.warn, w), ("fail", j.fail, f)] {
                if mine != lineage {
                    overrides.push(format!("step {}: <code>{}_{level}</code> = {mine}", escape(&s.label), j.metric.name()));
                }
            }
        }
    }
    if !overrides.is_empty() {
        o.push_str(&format!("<p id=\"threshold-overrides\">Step overrides: {}</p>", overrides.join("; ")));
    }
    o
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:16px 24px;color:#222;max-width:none}h1{font-size:22px;margin:4px 0}h2{font-size:17px;margin:22px 0 8px}\
table{border-collapse:collapse;width:100%}table#thresholds{width:auto;min-width:320px}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left;vertical-align:top}th{background:#f4f4f4}\
tr.fail td{background:#fde2e2}tr.warn td{background:#fff4d6}tr.error td{background:#eadcf5}tr.vs-parent td{background:#fafafa;color:#444;font-size:12px}\
.src{font-family:monospace;font-size:11px;word-break:break-all}.reason{font-size:12px}.muted{color:#777;font-size:11px}.meta{color:#555;font-size:13px}\
.verdict{font-size:17px;padding:8px;border-radius:4px}.verdict.fail{background:#fde2e2}.verdict.pass{background:#dff5df}.verdict.warn{background:#fff4d6}.verdict.error{background:#eadcf5}\
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:12px}.plot{display:block;width:100%;height:auto;margin:8px 0;border:1px solid #eee;background:#fff}\
.t{font-size:14px;font-weight:bold}.l,.v{font-size:11px;text-anchor:middle}.v.muted{fill:#888}.tick{font-size:11px;text-anchor:end;fill:#444}.ylabel{font-size:11px;text-anchor:middle;fill:#444}\
.grid{stroke:#eee}.axis{stroke:#888}.bar{fill:#4c78a8}.bar.nan{fill:#7b2cbf;opacity:.35}\
.threshold line{stroke-dasharray:6 4;stroke-width:1.5}.threshold text{font-size:11px;text-anchor:start}.threshold.warn line{stroke:#d08700}.threshold.warn text{fill:#a06800}\
.collapse{fill:#c62828;opacity:.12}.ckpt line{stroke:#999;stroke-dasharray:2 3}.ckpt.fail line{stroke:#c62828}.ckpt.pass line{stroke:#2e7d32}.nonfinite{fill:#c62828;font-size:10px;text-anchor:middle}.p-eos{fill:#222}.p-eos.fail{fill:#c62828}.stops{fill:none;stroke:#777;stroke-width:1.5}.legend{font-size:11px}.threshold.fail line{stroke:#c62828}.threshold.fail text{fill:#c62828}.reference-line line{stroke:#222;stroke-width:1.5}.reference-line text{font-size:11px;fill:#222;text-anchor:end}\
.note{font-size:11px;text-anchor:end;fill:#777}.legend-label{font-size:12px}\
pre.gen{white-space:pre-wrap;margin:0;font-size:12px;max-height:14em;overflow:auto}details{margin:6px 0}summary{cursor:pointer;font-size:14px}\
.heat-legend{display:flex;align-items:center;gap:6px;font-size:12px;margin:6px 0}.heat-legend .ramp{display:inline-block;width:180px;height:12px;border:1px solid #ccc}\
.strip{margin:8px 0;font-family:monospace;font-size:12px;line-height:1.7}.pl{font-family:system-ui;font-size:12px;color:#555}\
.tok{padding:1px 0;border-right:1px solid #eee;white-space:pre}li.error{color:#a00}li.warning{color:#a60}";

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates_match_the_calendar() {
        assert_eq!(super::utc(0), "1970-01-01 00:00 UTC");
        // 2000-02-29 (a leap day of a century leap year) 12:34.
        assert_eq!(super::utc(951_827_640), "2000-02-29 12:34 UTC");
        assert_eq!(super::utc(4_102_444_799), "2099-12-31 23:59 UTC");
    }

    #[test]
    fn log_axis_keeps_small_and_zero_values_on_the_plot() {
        let a = super::Axis::Log(-6, 1);
        assert_eq!(a.y(1e-13), a.y(0.0), "below the axis: at its bottom");
        assert!(a.y(1e-3).unwrap() < a.y(1e-6).unwrap(), "1e-3 is drawn above 1e-6");
        assert_eq!(a.y(f64::NAN), None);
        assert_eq!(super::Axis::Unit.y(1.0), Some(super::TOP));
    }
}
