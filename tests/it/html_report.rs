//! The HTML report rendered by a real browser: headless Chromium (Debian's `chromium`, installed
//! by .ci/run) loads the file, and the rendered DOM must hold every plot with drawn marks, and the
//! browser must log no console error. Locally the test is skipped when Chromium is absent; in CI
//! (`CI` set) its absence is a failure.

use std::path::Path;
use std::process::Command;

use crate::common::*;

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].into_iter().find(|p| Path::new(p).exists())
}

/// The browser, or `None` (the test is skipped) on a machine without one; in CI a failure.
fn chromium_or_skip() -> Option<&'static str> {
    let b = chromium();
    if b.is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI must install Debian's chromium (see .ci/run)");
        eprintln!("skipped: no chromium on this machine");
    }
    b
}

/// The rendered `<svg id=ID …>…</svg>` element.
fn svg<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("{id} not in the rendered DOM"));
    &dom[at..at + dom[at..].find("</svg>").unwrap()]
}

/// The DOM Chromium renders for `html`, and its log.
fn render(browser: &str, html: &Path, profile: &Path) -> (String, String) {
    let out = Command::new(browser)
        .args(chromium_args(profile))
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Issue 13 on a shipped lineage whose SFT step never stops: the P(EOS) plot is on 0..1 with the
/// reference line and the warn/fail lines drawn; KL on a log axis with its threshold lines; the
/// per-layer legend outside the lines with the layer threshold; the reference's and the
/// candidate's generated text side by side; the per-prompt table; the heat-strip legend; tool
/// version, time, every threshold, clean paths.
#[test]
fn html_report_explains_itself_in_chromium() {
    let Some(browser) = chromium_or_skip() else { return };
    let d = tmp();
    let html = d.path().join("report.html");
    let m = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pipelines/sft-collapse.toml");
    let r = ckptcheck(&["bisect", m.to_str().unwrap(), "--report", html.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let (dom, _) = render(browser, &html, &d.path().join("profile"));

    let eos = svg(&dom, "plot-eos");
    assert!(eos.contains("data-axis=\"linear\" data-min=\"0e0\" data-max=\"1e0\""), "P(EOS) axis fixed at 0..1: {eos}");
    for tick in [">0.00<", ">0.50<", ">1.00<"] {
        assert!(eos.contains(tick), "P(EOS) tick {tick}");
    }
    assert!(eos.contains("class=\"reference-line\""), "the reference's P(EOS) drawn");
    assert!(eos.contains("class=\"threshold warn\"") && eos.contains("class=\"threshold fail\""), "P(EOS) warn and fail lines");
    let kl = svg(&dom, "plot-kl");
    assert!(kl.contains("data-axis=\"log\" data-min=\"1e-6\" data-max=\"1e1\""), "KL on a fixed log axis: {kl}");
    assert!(kl.contains("kl_mean_warn 0.050") && kl.contains("kl_mean_fail 0.500"), "KL threshold lines labelled");
    assert!(kl.contains(">1e-6<") && kl.contains(">10<"), "decade ticks");
    let layers = svg(&dom, "plot-layers");
    assert!(layers.contains("layer_rel_err"), "the layer threshold");
    let num = |after: &str| -> f64 { layers.split(after).nth(1).unwrap().split('"').next().unwrap().parse().unwrap() };
    let (legend_x, plot_right) = (num("class=\"legend\" data-x=\""), num("data-plot-right=\""));
    assert!(legend_x > plot_right, "legend at x {legend_x} is outside the plot area ending at {plot_right}");

    let at = dom.find("id=\"generations\"").expect("generated text table");
    let gens = &dom[at..at + dom[at..].find("</table>").unwrap()];
    assert!(gens.contains("class=\"gen ref\"") && gens.contains("class=\"gen cand\""), "side by side");
    let cand_text: Vec<&str> = gens.split("class=\"gen cand\">").skip(1).map(|t| t.split("</pre>").next().unwrap()).collect();
    assert_eq!(cand_text.len(), 3, "the three worst prompts");
    assert!(cand_text.iter().all(|t| !t.trim().is_empty()), "the candidate's own text is shown: {cand_text:?}");
    assert!(gens.contains("did not stop in"), "a model that never stops says so");
    assert!(dom.contains("id=\"prompts-2\""), "per-prompt table of the failing step");
    assert!(dom.contains("id=\"heat-legend\""), "heat-strip colour legend");
    assert!(dom.contains(&format!("ckptcheck {}", env!("CARGO_PKG_VERSION"))) && dom.contains(" UTC</span>"), "tool version and time");
    let at = dom.find("id=\"thresholds\"").expect("thresholds table");
    let table = &dom[at..at + dom[at..].find("</table>").unwrap()];
    for key in ["kl_mean_warn", "kl_mean_fail", "p_eos_ratio_fail", "layer_rel_err", "p_eos_ref_min"] {
        assert!(table.contains(key), "threshold {key} listed");
    }
    assert!(!dom.contains("/../"), "paths normalised");
    assert!(dom.contains("p_eos_ratio 8.91e-5 &lt; p_eos_ratio_fail 0.5"), "the reason column names the threshold");
}

fn chromium_args(profile: &Path) -> Vec<String> {
    // Flags the workplace notes give for a closed network: no background connections.
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

#[test]
fn html_report_renders_in_chromium_with_plots_and_no_console_error() {
    let Some(browser) = chromium_or_skip() else { return };
    let d = tmp();
    let prompts = d.path().join("prompts.jsonl");
    std::fs::write(&prompts, "{\"messages\": [{\"role\": \"user\", \"content\": \"What is 6 times 7 ?\"}]}\n").unwrap();
    Fixture::healthy().write(&d.path().join("a"));
    let mut f = Fixture::healthy();
    let t = f.tensor_mut("model.layers.1.mlp.down_proj.weight");
    for c in t.data.chunks_mut(4) {
        let x = f32::from_le_bytes(c.try_into().unwrap()) * -20.0;
        c.copy_from_slice(&x.to_le_bytes());
    }
    f.write(&d.path().join("b"));
    let m = d.path().join("l.toml");
    std::fs::write(
        &m,
        "prompts = \"prompts.jsonl\"\nmax_new_tokens = 4\n[thresholds]\nkl_mean_fail = 0.0\n[[step]]\nlabel = \"base\"\npath = \"a\"\n[[step]]\nlabel = \"broken\"\npath = \"b\"\n",
    )
    .unwrap();
    let html = d.path().join("report.html");
    let r = ckptcheck(&["gate", m.to_str().unwrap(), "--report", html.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);

    let profile = d.path().join("profile");
    let out = Command::new(browser)
        .args(chromium_args(&profile))
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {log}");
    for id in ["plot-kl", "plot-eos", "plot-layers"] {
        let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("{id} not in the rendered DOM"));
        let svg = &dom[at..at + dom[at..].find("</svg>").unwrap()];
        assert!(svg.contains("<rect") || svg.contains("<polyline"), "{id} has no marks");
    }
    assert!(dom.contains("class=\"tok\""), "heat strip tokens rendered");
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || (l.contains(":ERROR:") && l.contains("report.html")))
        .collect();
    assert!(console_errors.is_empty(), "console errors: {console_errors:#?}");

    for (id, axis) in [("plot-kl", "log"), ("plot-eos", "linear"), ("plot-layers", "log")] {
        assert!(svg(&dom, id).contains(&format!("data-axis=\"{axis}\"")), "{id} on a fixed {axis} axis");
    }
    assert!(svg(&dom, "plot-kl").contains("class=\"threshold fail\""), "the kl_mean_fail line is drawn");
    // A screenshot for people reviewing the change (kept only when asked).
    if let Some(dir) = std::env::var_os("CKPTCHECK_SCREENSHOT_DIR") {
        let png = Path::new(&dir).join("report.png");
        let _ = Command::new(browser)
            .args(chromium_args(&d.path().join("profile2")))
            .arg(format!("--screenshot={}", png.display()))
            .arg("--window-size=1000,1800")
            .arg(format!("file://{}", html.display()))
            .output();
    }
}

/// The screenshots docs/bisect.md shows are the ones docs/img/screenshots.sh makes: one per
/// lineage it names, each a shipped lineage, a PNG under 300 KB, referenced from the docs.
#[test]
fn report_screenshots_are_remade_by_the_script_and_referenced() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = std::fs::read_to_string(root.join("docs/img/screenshots.sh")).unwrap();
    let line = script.lines().find(|l| l.starts_with("for lineage in ")).expect("the script's lineage list");
    let lineages: Vec<&str> = line["for lineage in ".len()..].trim_end_matches("; do").split_whitespace().collect();
    assert_eq!(lineages.len(), 3, "{line}");
    let docs = std::fs::read_to_string(root.join("docs/bisect.md")).unwrap();
    for l in lineages {
        assert!(root.join(format!("testdata/pipelines/{l}.toml")).is_file(), "{l} is a shipped lineage");
        let png = root.join(format!("docs/img/report-{l}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is a PNG", png.display());
        assert!(bytes.len() < 300 * 1024, "{} is {} bytes", png.display(), bytes.len());
        assert!(docs.contains(&format!("img/report-{l}.png")), "docs/bisect.md shows report-{l}.png");
    }
}

/// Issue 16 in the browser: a blamed step (quant-mixed-layer.toml: layer 1 in Q2_K) shows each
/// layer's share of the KL on a fixed 0..1 axis with the culprit line, the modules of the guilty
/// layer in a second plot, and the culprit in words.
#[test]
fn html_report_shows_the_blame_plots_in_chromium() {
    let Some(browser) = chromium_or_skip() else { return };
    let d = tmp();
    let html = d.path().join("report.html");
    let m = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pipelines/quant-mixed-layer.toml");
    let r = ckptcheck(&["bisect", m.to_str().unwrap(), "--report", html.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let (dom, _) = render(browser, &html, &d.path().join("profile"));
    let layers = svg(&dom, "plot-blame-2");
    assert!(layers.contains("data-axis=\"linear\" data-min=\"0e0\" data-max=\"1e0\""), "{layers}");
    assert!(layers.contains("data-value=\"0.8\""), "culprit line: {layers}");
    for label in [">layer 0<", ">layer 1<", ">layer 2<", ">embeddings<", ">head<"] {
        assert!(layers.contains(label), "{label} in {layers}");
    }
    assert!(layers.matches("class=\"bar\"").count() >= 6, "{layers}");
    let modules = svg(&dom, "plot-blame-modules-2");
    assert!(modules.contains(">k_proj<") && modules.contains(">q_proj<") && modules.contains(">inside layer 1<"), "{modules}");
    assert!(dom.contains("id=\"blame-headline-2\"") && dom.contains("model.layers.1.self_attn.k_proj"), "headline");
}
