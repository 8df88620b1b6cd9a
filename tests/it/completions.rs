//! `ckptcheck --version` (version, git commit and date from build.rs) and `ckptcheck completions`
//! through the real binary: each shell's script names every visible subcommand, the bash one
//! really completes when sourced, and the man pages render without groff warnings.

use std::path::Path;
use std::process::Command;

use crate::common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every subcommand a user can see (`bench-forward` is hidden).
const VISIBLE: &[&str] = &["inspect", "lint", "compare", "merge-check", "bisect", "gate", "completions"];

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(ROOT).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn version_names_the_version_and_the_commit_it_was_built_from() {
    let version = env!("CARGO_PKG_VERSION");
    let in_own_checkout = git(&["rev-parse", "--show-toplevel"])
        .is_some_and(|top| Path::new(&top).canonicalize().ok() == Path::new(ROOT).canonicalize().ok());
    let expected = match (std::env::var("CKPTCHECK_COMMIT"), in_own_checkout) {
        (Ok(c), _) if !c.trim().is_empty() => format!("ckptcheck {version} ({})\n", c.trim()),
        (_, true) => {
            let info = git(&["log", "-1", "--date=short", "--abbrev=9", "--format=%h %cd"]).unwrap();
            let hash = git(&["rev-parse", "HEAD"]).unwrap();
            assert!(hash.starts_with(info.split(' ').next().unwrap()), "{info} is not HEAD {hash}");
            format!("ckptcheck {version} ({info})\n")
        }
        (_, false) => format!("ckptcheck {version} (commit unknown)\n"),
    };
    for flag in ["--version", "-V"] {
        let r = ckptcheck(&[flag]);
        assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, expected.as_str(), ""), "{flag}");
    }
}

#[test]
fn every_shell_gets_a_script_naming_every_visible_subcommand() {
    let markers = [
        ("bash", "complete -F _ckptcheck"),
        ("zsh", "#compdef ckptcheck"),
        ("fish", "complete -c ckptcheck"),
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "edit:completion:arg-completer[ckptcheck]"),
    ];
    for (shell, marker) in markers {
        let r = ckptcheck(&["completions", shell]);
        assert_eq!(r.code, 0, "{shell}: {}", r.stderr);
        assert!(r.stdout.contains(marker), "{shell}: no {marker:?}");
        for sub in VISIBLE {
            assert!(r.stdout.contains(sub), "{shell}: no `{sub}`");
        }
        // fish spells options `-l junit`, the others `--junit`.
        assert!(r.stdout.contains("junit") && r.stdout.contains("gguf-matmul"), "{shell}: options missing");
        assert!(!r.stdout.contains("bench-forward"), "{shell}: the hidden subcommand leaked");
    }
}

/// COMPREPLY after completing the words `line` (the last one being completed) with the sourced
/// bash script.
fn bash_complete(script: &Path, line: &[&str]) -> Vec<String> {
    let words: Vec<String> = line.iter().map(|w| format!("'{w}'")).collect();
    let cword = line.len() - 1;
    let prog = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={cword}\n_ckptcheck ckptcheck '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        words.join(" "),
        line[cword],
        line[cword - 1],
    );
    let out = Command::new("bash").arg("-c").arg(prog).output().expect("bash runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn bash_script_completes_subcommands_options_and_values() {
    let tmp = tmp();
    let script = tmp.path().join("ckptcheck.bash");
    let r = ckptcheck(&["completions", "bash"]);
    assert_eq!(r.code, 0);
    std::fs::write(&script, &r.stdout).unwrap();
    assert_eq!(bash_complete(&script, &["ckptcheck", "bi"]), ["bisect"]);
    assert_eq!(bash_complete(&script, &["ckptcheck", "merge"]), ["merge-check"]);
    assert_eq!(bash_complete(&script, &["ckptcheck", "gate", "--ju"]), ["--junit"]);
    // A typed value's spellings come from the clap definition (ValueEnum).
    let shells = bash_complete(&script, &["ckptcheck", "completions", ""]);
    for s in ["bash", "zsh", "fish", "powershell", "elvish", "man"] {
        assert!(shells.contains(&s.to_string()), "{shells:?}");
    }
}

#[test]
fn man_pages_cover_the_tool_and_each_subcommand() {
    let r = ckptcheck(&["completions", "man"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(".TH ckptcheck 1 "), "{}", &r.stdout[..200.min(r.stdout.len())]);
    assert!(r.stdout.contains(&format!("\"ckptcheck {}", env!("CARGO_PKG_VERSION"))), "the footer names the version");
    for sub in VISIBLE {
        assert!(r.stdout.contains(&format!("ckptcheck\\-{}(1)", sub.replace('-', "\\-"))), "ckptcheck.1 points to ckptcheck-{sub}(1)");
        let page = ckptcheck(&["completions", "man", sub]);
        assert_eq!(page.code, 0, "{sub}: {}", page.stderr);
        assert!(page.stdout.contains(&format!(".TH ckptcheck-{sub} 1 ")), "{sub}");
        assert!(page.stdout.contains(".SH OPTIONS"), "{sub}");
        assert!(page.stdout.contains("\\-\\-threads"), "{sub}: the global --threads is on every page");
    }
    assert!(ckptcheck(&["completions", "man", "bisect"]).stdout.contains("\\-\\-junit"));
    assert!(!r.stdout.contains("bench"), "the hidden subcommand has no page");
}

#[test]
fn man_pages_render_without_groff_warnings() {
    // groff is what `man` renders with (`-k`: through preconv, as man-db does, for the UTF-8 in
    // the help texts); a machine without it can only skip this check.
    if Command::new("groff").arg("--version").output().is_err() {
        eprintln!("groff not installed: man page rendering not checked");
        return;
    }
    for page in [None, Some("bisect"), Some("compare")] {
        let mut args = vec!["completions", "man"];
        args.extend(page);
        let roff = ckptcheck(&args).stdout;
        let tmp = tmp();
        let file = tmp.path().join("page.1");
        std::fs::write(&file, roff).unwrap();
        let out = Command::new("groff").args(["-k", "-man", "-Tutf8", "-ww", "-z"]).arg(&file).output().unwrap();
        assert!(out.status.success() && out.stderr.is_empty(), "{page:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn completions_refuses_what_it_cannot_generate() {
    let r = ckptcheck(&["completions", "man", "bench-forward"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no subcommand `bench-forward` to print a man page for: one of inspect, lint,"), "{}", r.stderr);
    let r = ckptcheck(&["completions", "fish", "bisect"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("`completions fish` takes no SUBCOMMAND (got `bisect`)"), "{}", r.stderr);
    let r = ckptcheck(&["completions", "tcsh"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("invalid value 'tcsh'"), "{}", r.stderr);
    assert!(r.stdout.is_empty());
}
