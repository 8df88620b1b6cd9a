//! The module layering ARCHITECTURE.md describes, held by reading the sources: each top-level
//! module of `src/` may refer (`crate::X`) only to modules in layers below its own, so the import
//! graph has no cycles; and no two files of one module import each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first. A module may use any module of a lower layer, never one of its own or a higher.
const LAYERS: &[&[&str]] = &[
    &["error", "settings", "verdict"],
    &["format"],
    &["chat"],
    &["checkpoint"],
    &["checks", "model"],
    &["compare"],
    &["pipeline"],
    &["output"],
    &["report"],
    &["cli"],
    &["commands"],
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its comment lines and its `#[cfg(test)]` module (tests may reach
/// anywhere; a doc comment may name any module).
fn code(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap();
    let s = match s.find("#[cfg(test)]") {
        Some(i) => &s[..i],
        None => &s[..],
    };
    s.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// `crate::NAME` references in `text`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + 7..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    // `use crate::{a, b::c}` groups.
    for (i, _) in text.match_indices("crate::{") {
        let group = &text[i + 8..];
        let group = &group[..group.find('}').unwrap_or(group.len())];
        for part in group.split(',') {
            let name: String = part.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

#[test]
fn top_level_modules_only_use_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut bad = Vec::new();
    let mut seen = BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if first == "lib" || first == "main" {
            continue;
        }
        seen.insert(first.clone());
        let Some(own) = layer_of(&first) else {
            bad.push(format!("src/{} is in no layer of tests/it/layers.rs: place `{first}` in LAYERS", rel.display()));
            continue;
        };
        for r in crate_refs(&code(f)) {
            if r == first || r == "Result" || r == "Error" {
                continue;
            }
            match layer_of(&r) {
                Some(l) if l < own => {}
                Some(_) => bad.push(format!("src/{} (layer {own}) uses crate::{r}, which is not below it", rel.display())),
                None => bad.push(format!("src/{} uses crate::{r}, which is in no layer", rel.display())),
            }
        }
    }
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
    for l in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(seen.contains(*l), "LAYERS names `{l}`, which src/ does not have");
    }
}

/// Within one top-level module, two sibling files never import each other (the
/// commands/gguf ↔ commands/lint kind of cycle); a `mod.rs` and its children may.
#[test]
fn no_two_sibling_files_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // module path (`commands::lint`) → modules it names with crate:: or super:: paths
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap().with_extension("");
        let parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        if parts.len() < 2 || parts.last().unwrap() == "mod" {
            continue;
        }
        let me = parts.join("::");
        let parent = parts[..parts.len() - 1].join("::");
        let text = code(f);
        let mut names = BTreeSet::new();
        for (i, _) in text.match_indices("super::") {
            let name: String = text[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            names.insert(format!("{parent}::{name}"));
        }
        for (i, _) in text.match_indices(&format!("crate::{parent}::")) {
            let name: String = text[i + 9 + parent.len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            names.insert(format!("{parent}::{name}"));
        }
        for (i, _) in text.match_indices(&format!("crate::{parent}::{{")) {
            let group = &text[i + 10 + parent.len()..];
            for part in group[..group.find('}').unwrap_or(group.len())].split(',') {
                let name: String = part.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                names.insert(format!("{parent}::{name}"));
            }
        }
        names.remove(&me);
        uses.insert(me, names);
    }
    let mut cycles = Vec::new();
    for (a, ua) in &uses {
        for b in ua {
            if a < b && uses.get(b).is_some_and(|ub| ub.contains(a)) {
                cycles.push(format!("{a} ↔ {b}"));
            }
        }
    }
    assert!(cycles.is_empty(), "sibling modules import each other: {cycles:?}");
}
