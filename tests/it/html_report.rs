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
    let Some(browser) = chromium() else {
        assert!(std::env::var_os("CI").is_none(), "CI must install Debian's chromium (see .ci/run)");
        eprintln!("skipped: no chromium on this machine");
        return;
    };
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
