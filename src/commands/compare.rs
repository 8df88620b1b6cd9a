//! `ckptcheck compare REF CANDIDATE`: run reference prompts through both and report how far the
//! candidate drifted, whether it still ends turns, and (with `--layers`) where it diverged.

use serde::Serialize;

use std::path::Path;

use crate::checkpoint::{Checkpoint, Facts};
use crate::cli::CompareArgs;
use crate::commands::Outcome;
use crate::compare::blame::{self, Blame, BlameInputs, Side};
use crate::compare::compat;
use crate::compare::corpus;
use crate::compare::prompts::{self, Prompt};
use crate::compare::run::{compare_with, reference_answers, CompareOptions, CompareResult, Progress};
use crate::compare::thresholds::{Thresholds, Verdict};
use crate::compare::token_map::TokenMap;
use crate::compare::variant::Variant;
use crate::error::Error;
use crate::model;
use crate::output::{Bar, Printer};
use crate::pipeline::run::PipelineReport;
use crate::report::{self, FileFormat, Outputs, Report};

/// Version of the `compare --json` layout.
pub const COMPARE_SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct CompareReport {
    schema_version: u32,
    #[serde(flatten)]
    result: CompareResult,
    /// `--blame`: the candidate's tensors that make the difference.
    #[serde(skip_serializing_if = "Option::is_none")]
    blame: Option<Blame>,
    /// What judged it (shown on the HTML page; the JSON has each judgement's bounds).
    #[serde(skip)]
    thresholds: Thresholds,
}

impl Report for CompareReport {
    const KIND: &'static str = "compare";
    fn text(&self, _color: bool) -> String {
        let mut o = render_text(&self.result);
        if let Some(b) = &self.blame {
            o.push_str(&report::blame::render(b));
        }
        o
    }
    /// The lineage page with two steps: the reference and the candidate.
    fn html(&self) -> Option<String> {
        PipelineReport::of_compare(&self.result, &self.thresholds).html()
    }
}

pub fn run(args: &CompareArgs, printer: &Printer) -> anyhow::Result<Outcome> {
    let mut outputs = Outputs::new();
    outputs.checkpoint(&args.reference);
    outputs.checkpoint(&args.candidate);
    if let Some(p) = &args.prompts {
        outputs.read("the prompts file", p);
    }
    if let Some(p) = &args.text {
        outputs.read("the --text corpus", p);
    }
    if let Some(p) = &args.thresholds {
        outputs.read("the thresholds file", p);
    }
    outputs.plan("--report", args.report.as_deref(), FileFormat::Html)?;
    let thresholds = match &args.thresholds {
        Some(p) => Thresholds::load(p)?,
        None => Thresholds::default(),
    };
    let prompts: Vec<Prompt> = match &args.prompts {
        Some(p) => prompts::load_jsonl(p)?,
        None => prompts::builtin(),
    };
    let prompts: Vec<Prompt> = match args.max_prompts {
        Some(n) => prompts.into_iter().take(n).collect(),
        None => prompts,
    };
    let settings = args.engine.settings();
    // Both opened (files mapped, nothing loaded) and checked against each other before either is
    // loaded: a wrong second path or an incomparable pair is refused before any work.
    let (rc, cc) = (Checkpoint::open(&args.reference)?, Checkpoint::open(&args.candidate)?);
    let (rf, cf) = (rc.facts(), cc.facts());
    let token_map = match &args.token_map {
        Some(m) => Some(token_map(m, (&args.reference, &rf), (&args.candidate, &cf))?),
        None => None,
    };
    compat::check((&args.reference, &rf), (&args.candidate, &cf), args.layers, token_map.is_some())?;
    let device = model::device(settings.device)?;
    let bar = Bar::new(printer);
    bar.stage("loading weights", 2);
    bar.note(printer, &format!("loading {}", args.reference.display()));
    let r = Variant::load_with(&args.reference, &rc, rf, &device, &settings)?;
    bar.tick();
    bar.note(printer, &format!("loading {}", args.candidate.display()));
    let mut c = Variant::load_with(&args.candidate, &cc, cf, &device, &settings)?;
    c.token_map = token_map.map(std::sync::Arc::new);
    bar.tick();
    let opts = CompareOptions {
        prompts_from: crate::compare::prompts::source_name(args.prompts.as_deref().or(args.text.as_deref())),
        max_new_tokens: args.max_new_tokens,
        layers: args.layers,
        thresholds,
    };
    let (prompts, answers) = match &args.text {
        Some(text) => corpus::load(text, &r, args.ctx_size, args.chunks)?,
        None => {
            let answers = reference_answers(&r, &prompts, &opts, &bar)?;
            (prompts, answers)
        }
    };
    let result = compare_with(&r, &c, &prompts, &answers, &opts, &bar)?;
    let blame = if args.blame {
        let inputs = BlameInputs {
            answered_by: &r,
            answers: &answers,
            parent: Side { checkpoint: &rc, variant: &r },
            step: Side { checkpoint: &cc, variant: &c },
            prompts: &prompts,
            opts: &opts,
            settings: &settings,
            device: &device,
            budget: args.blame_budget,
        };
        Some(blame::blame(&inputs, &bar)?)
    } else {
        None
    };
    bar.0.finish_and_clear();
    let report = CompareReport { schema_version: COMPARE_SCHEMA_VERSION, result, blame, thresholds: opts.thresholds };
    outputs.write(printer, &report)?;
    report::print(printer, &report, args.json)?;
    Ok(Outcome::of(report.result.verdict, args.strict))
}

/// `--token-map auto|FILE` between the two tokenizers.
fn token_map(arg: &Path, reference: (&Path, &Facts), candidate: (&Path, &Facts)) -> crate::error::Result<TokenMap> {
    let missing = |path: &Path| Error::NotComparable {
        reference: reference.0.to_path_buf(),
        candidate: candidate.0.to_path_buf(),
        reason: format!("--token-map needs both tokenizers, and {} has none it can read", path.display()),
    };
    let r = reference.1.tokenizer.as_ref().ok_or_else(|| missing(reference.0))?;
    let c = candidate.1.tokenizer.as_ref().ok_or_else(|| missing(candidate.0))?;
    if arg == Path::new("auto") {
        Ok(TokenMap::by_token_text(r, c))
    } else {
        TokenMap::from_file(arg, r, c)
    }
}

pub fn render_text(r: &CompareResult) -> String {
    let s = &r.summary;
    let mut o = String::new();
    o.push_str(&format!("reference  {}\ncandidate  {}\n", r.reference, r.candidate));
    if let Some(c) = &r.corpus {
        o.push_str(&format!(
            "corpus     {}: {} tokens, {} chunks of {} (the second half of each scored, as llama-perplexity -c {}){}\n\n",
            c.source.display(),
            c.text_tokens,
            c.chunks,
            c.ctx,
            c.ctx,
            if c.bos.is_some() { "; BOS first" } else { "" }
        ));
        o.push_str(&format!("{:<32} {:>8} {:>8} {:>6}\n", "chunk", "KL mean", "KL max", "top1"));
        for p in &r.prompts {
            o.push_str(&format!("{:<32} {:>8.4} {:>8.3} {:>5.0}%\n", p.label, p.kl_mean, p.kl_max, 100.0 * p.top1));
        }
    } else {
        o.push('\n');
        o.push_str(&format!(
            "{:<32} {:>8} {:>8} {:>6} {:>6} {:>6} {:>5}\n",
            "prompt", "KL mean", "KL max", "top1", "P(EOS)", "ref", "stops"
        ));
    }
    for p in r.prompts.iter().filter(|_| r.corpus.is_none()) {
        o.push_str(&format!(
            "{:<32} {:>8.4} {:>8.3} {:>5.0}% {:>6.3} {:>6.3} {:>5}\n",
            p.label.chars().take(32).collect::<String>(),
            p.kl_mean,
            p.kl_max,
            100.0 * p.top1,
            p.p_eos_cand,
            p.p_eos_ref,
            if p.cand_stopped { "yes" } else { "NO" }
        ));
    }
    o.push_str(&format!(
        "\nKL per token: mean {:.4}  median {:.4}  p90 {:.4}  p99 {:.4}  p99.9 {:.4}  max {:.4}  ({} tokens)\n",
        s.kl.mean, s.kl.median, s.kl.p90, s.kl.p99, s.kl.p999, s.kl.max, s.scored_tokens
    ));
    o.push_str(&format!(
        "same top token {:.1}%  top-5 overlap {:.1}%  Δp mean {:+.4} rms {:.4} worst {:+.4}\n",
        100.0 * s.top1,
        100.0 * s.top5_overlap,
        s.delta_p_mean,
        s.delta_p_rms,
        s.delta_p_worst
    ));
    o.push_str(&format!("PPL ref {:.3}  cand {:.3}  ratio {:.3}\n", s.ppl_ref, s.ppl_cand, s.ppl_ratio));
    if r.corpus.is_none() {
        o.push_str(&format!(
            "P(end-of-turn) at turn end: ref {:.3} → cand {:.3};  greedy stops: ref {:.0}% → cand {:.0}%\n",
            s.p_eos_ref_mean,
            s.p_eos_cand_mean,
            100.0 * s.ref_stop_rate,
            100.0 * s.cand_stop_rate
        ));
    }
    o.push_str(&format!("NaN/Inf logits: ref {}  cand {}\n", s.nonfinite_ref, s.nonfinite_cand));
    if let Some(m) = &s.token_map {
        o.push_str(&format!(
            "token map {}: {} shared ids (reference {}, candidate {}); every score above is on the shared vocabulary, \
             where the reference had {:.3}% of its probability outside it (max {:.3}%)\n",
            m.source,
            m.shared,
            m.reference_ids,
            m.candidate_ids,
            100.0 * m.ref_mass_outside_mean,
            100.0 * m.ref_mass_outside_max
        ));
    }
    o.push_str(&render_numbers(r));
    if let Some(layers) = &r.layers {
        // MoE: the share of positions routed to the same top-k experts, per sparse layer.
        let moe = layers.iter().any(|l| l.router_agreement.is_some());
        o.push_str(if moe {
            "\nlayer            rel L2     cosine  NaN/Inf  same experts\n"
        } else {
            "\nlayer            rel L2     cosine  NaN/Inf\n"
        });
        for l in layers {
            o.push_str(&format!("{:<14} {:>9.2e} {:>10.6} {:>8}", l.name, l.rel_l2, l.cosine, l.nonfinite));
            match l.router_agreement {
                Some(a) => o.push_str(&format!(" {:>12.1}%\n", 100.0 * a)),
                None => o.push('\n'),
            }
        }
        o.push_str(&format!("first layer over the threshold: {}\n", r.first_bad_layer.as_deref().unwrap_or("none")));
        if let Some(line) = crate::compare::run::fp16_headroom(layers) {
            o.push_str(&line);
            o.push('\n');
        }
    }
    o.push('\n');
    for j in &r.judgements {
        if j.status != Verdict::Pass {
            o.push_str(&format!(
                "{:<5} {:<16} {:.4} (warn {}, fail {}): {}\n",
                match j.status {
                    Verdict::Fail => "FAIL",
                    _ => "warn",
                },
                j.metric,
                j.value,
                j.warn,
                j.fail,
                j.note
            ));
        }
    }
    o.push_str(&format!(
        "verdict: {}\n",
        match r.verdict {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        }
    ));
    o
}

/// `x ± se` (`± n/a` where there is no standard error: 10 tokens or fewer).
fn pm(value: f64, se: Option<f64>, scale: f64, digits: usize) -> String {
    match se {
        Some(se) => format!("{:.digits$} ± {:.digits$}", scale * value, scale * se),
        None => format!("{:.digits$} ± n/a", scale * value),
    }
}

/// The numbers with their standard errors, as llama.cpp's `--kl-divergence` summary prints them
/// (same names, same formulas), then the greedy-answer flips and what the sample cannot resolve.
pub fn render_numbers(r: &CompareResult) -> String {
    let s = &r.summary;
    let e = &s.estimates;
    let mut o = format!("\n====== llama.cpp-style summary over {} tokens ======\n", e.top1.n);
    o.push_str(&format!("Mean PPL(Q)/PPL(base)     : {}\n", pm(e.ppl_ratio.value, e.ppl_ratio.se, 1.0, 6)));
    o.push_str(&format!("Mean ln(PPL(Q)/PPL(base)) : {}\n", pm(e.ln_ppl_ratio.value, e.ln_ppl_ratio.se, 1.0, 6)));
    o.push_str(&format!("Mean    KLD: {}\n", pm(e.kl_mean.value, e.kl_mean.se, 1.0, 6)));
    o.push_str(&format!(
        "Median  KLD: {:.6}\n90.0%   KLD: {:.6}\n99.0%   KLD: {:.6}\n99.9%   KLD: {:.6}\nMaximum KLD: {:.6}\n",
        s.kl.median, s.kl.p90, s.kl.p99, s.kl.p999, s.kl.max
    ));
    o.push_str(&format!("Mean    Δp: {} %\n", pm(e.delta_p_mean.value, e.delta_p_mean.se, 100.0, 3)));
    o.push_str(&format!("RMS Δp    : {} %\n", pm(e.delta_p_rms.value, e.delta_p_rms.se, 100.0, 3)));
    o.push_str(&format!("Same top p: {} %\n", pm(e.top1.value, e.top1.se, 100.0, 3)));
    let f = &s.flips;
    if f.prompts > 0 {
        o.push_str(&format!("greedy answer changed: {} of {} prompts ({:.0}%)", f.changed, f.prompts, 100.0 * f.rate));
        match r.prompts.iter().find_map(|p| p.flip.as_ref().map(|fl| (p, fl))) {
            Some((p, fl)) => o.push_str(&format!(
                "; first: {:?} at answer token {}: {:?} → {:?}\n",
                p.label.chars().take(32).collect::<String>(),
                fl.at,
                fl.reference,
                fl.candidate
            )),
            None => o.push('\n'),
        }
    }
    for n in &s.sample_notes {
        o.push_str(&format!("note: {n}\n"));
    }
    o
}
