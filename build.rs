//! Names the git commit a binary was built from, for `ckptcheck --version` and the man page.
//!
//! Sets `CKPTCHECK_VERSION` ("0.1.0 (1a2b3c4d5 2026-05-01)", the short hash and commit date) and
//! `CKPTCHECK_COMMIT_DATE` ("2026-05-01", or empty). The commit comes from, in order: the
//! `CKPTCHECK_COMMIT` environment variable (packagers building from a tarball: "HASH DATE" or
//! "HASH"), then `git` run in this crate's directory when that directory is itself the top of a git
//! checkout. A tarball or an sdist (no `.git`, no git, or unpacked inside some other repository)
//! builds too and says "commit unknown"; nothing here fails the build.
//!
//! Reruns when HEAD moves (the HEAD file, the branch it names, packed-refs), not on every edit: a
//! dirty tree is not marked.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CKPTCHECK_COMMIT");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());

    let commit = match std::env::var("CKPTCHECK_COMMIT") {
        Ok(c) if !c.trim().is_empty() => Some(c.trim().to_string()),
        _ => from_git(&dir),
    };
    let (long, date) = match &commit {
        Some(c) => {
            let date = c.split_whitespace().nth(1).unwrap_or("").to_string();
            (format!("{version} ({c})"), date)
        }
        None => (format!("{version} (commit unknown)"), String::new()),
    };
    println!("cargo:rustc-env=CKPTCHECK_VERSION={long}");
    println!("cargo:rustc-env=CKPTCHECK_COMMIT_DATE={date}");
}

/// `git` with `args` in `dir`; its trimmed stdout when it ran and succeeded.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}

/// "HASH DATE" of HEAD when `dir` is the top of its own git checkout, registering the files whose
/// change means a new HEAD.
fn from_git(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    // A tarball unpacked inside another repository would otherwise get that repository's commit.
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(Path::new(&top), dir) {
        return None;
    }
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watch.push(branch);
    }
    for name in &watch {
        // `--git-path` resolves worktrees and a separate common dir; the path may be relative.
        if let Some(p) = git(dir, &["rev-parse", "--git-path", name]) {
            let p = dir.join(p);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    let info = git(dir, &["log", "-1", "--date=short", "--abbrev=9", "--format=%h %cd"])?;
    (!info.is_empty()).then_some(info)
}
