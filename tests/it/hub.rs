//! Hub ids through the local Hugging Face cache: a fake cache laid out as huggingface_hub writes
//! it (`models--org--name/{blobs,refs,snapshots}`, snapshot files symlinked to blobs), resolved
//! from `HF_HUB_CACHE`, `HF_HOME`, a branch, a tag, a commit hash and the repo folder itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{self, Run};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const OTHER: &str = "fedcba9876543210fedcba9876543210fedcba98";

/// Puts `model` (a zoo directory) into `cache` as `models--org--name` at `commit`, with
/// `refs/<r>` for every ref in `refs`: each file a blob, linked from the snapshot.
fn cache_model(cache: &Path, model: &Path, commit: &str, refs: &[&str]) -> PathBuf {
    let repo = cache.join("models--org--name");
    let (blobs, snap) = (repo.join("blobs"), repo.join("snapshots").join(commit));
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    for (i, e) in std::fs::read_dir(model).unwrap().enumerate() {
        let e = e.unwrap();
        let blob = blobs.join(format!("{commit}-{i:04}"));
        std::fs::copy(e.path(), &blob).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(Path::new("../../blobs").join(blob.file_name().unwrap()), snap.join(e.file_name())).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&blob, snap.join(e.file_name())).unwrap();
    }
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    for r in refs {
        std::fs::write(repo.join("refs").join(r), commit).unwrap();
    }
    repo
}

/// The binary in `cwd` with only the given cache variables set.
fn run_in(cwd: &Path, env: &[(&str, &Path)], args: &[&str]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ckptcheck"));
    c.current_dir(cwd).args(args);
    for k in ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"] {
        c.env_remove(k);
    }
    c.env("HOME", cwd);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `inspect --json`'s architecture of what a spec resolved to.
fn architecture(r: &Run) -> String {
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    r.json()["model_type"].to_string()
}

#[test]
fn hub_ids_resolve_through_hf_hub_cache_refs_and_commits() {
    let d = common::tmp();
    let cache = d.path().join("cache");
    let instruct = common::zoo_path("models/llama-instruct");
    cache_model(&cache, &instruct, COMMIT, &["main", "v1"]);
    let env = [("HF_HUB_CACHE", cache.as_path())];
    let arch = architecture(&run_in(d.path(), &env, &["inspect", "--json", "org/name"]));
    assert!(arch.contains("llama"), "{arch}");
    for spec in ["org/name@main", "org/name@v1", &format!("org/name@{COMMIT}")] {
        assert_eq!(architecture(&run_in(d.path(), &env, &["inspect", "--json", spec])), arch, "{spec}");
    }
    // A commit that is not cached, and a branch never downloaded: say so, print the command.
    let r = run_in(d.path(), &env, &["inspect", &format!("org/name@{OTHER}")]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("no `snapshots/{OTHER}`")), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("`hf download org/name --revision {OTHER}`")), "{}", r.stderr);
    let r = run_in(d.path(), &env, &["inspect", "org/name@dev"]);
    assert!(r.stderr.contains("no `refs/dev`") && r.stderr.contains("hf download org/name --revision dev"), "{}", r.stderr);
    // A compare whose reference is a Hub id runs: the snapshot's symlinked files are read.
    let r = run_in(d.path(), &env, &["compare", "--max-prompts", "1", "--max-new-tokens", "4", "org/name", instruct.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("reference  org/name\n"), "{}", r.stdout);
}

#[test]
fn hf_home_and_the_default_cache_are_searched_when_hf_hub_cache_is_unset() {
    let d = common::tmp();
    let instruct = common::zoo_path("models/llama-instruct");
    cache_model(&d.path().join("hfhome/hub"), &instruct, COMMIT, &["main"]);
    let hf_home = d.path().join("hfhome");
    architecture(&run_in(d.path(), &[("HF_HOME", hf_home.as_path())], &["inspect", "--json", "org/name"]));
    // Neither set: ~/.cache/huggingface/hub (HOME is the temp dir here).
    let r = run_in(d.path(), &[], &["inspect", "org/name"]);
    assert_eq!(r.code, 2);
    let default = d.path().join(".cache/huggingface/hub");
    assert!(r.stderr.contains(&format!("Hugging Face cache at `{}`", default.display())), "{}", r.stderr);
    assert!(r.stderr.contains("there is no `models--org--name` in it") && r.stderr.contains("`hf download org/name`"), "{}", r.stderr);
    cache_model(&default, &instruct, COMMIT, &["main"]);
    architecture(&run_in(d.path(), &[], &["inspect", "--json", "org/name"]));
}

#[test]
fn a_cache_repo_folder_given_as_a_path_is_its_main_snapshot() {
    let d = common::tmp();
    let instruct = common::zoo_path("models/llama-instruct");
    let repo = cache_model(&d.path().join("c"), &instruct, COMMIT, &["main"]);
    // A second snapshot: refs/main still decides.
    cache_model(&d.path().join("c"), &common::zoo_path("models/qwen2-instruct"), OTHER, &[]);
    let r = run_in(d.path(), &[], &["inspect", "--json", repo.to_str().unwrap()]);
    assert!(architecture(&r).contains("llama"), "{}", r.stdout);
    // Without refs/main and two snapshots, the choice is the user's.
    std::fs::remove_file(repo.join("refs/main")).unwrap();
    let r = run_in(d.path(), &[], &["inspect", repo.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("2 snapshots and no `refs/main`"), "{}", r.stderr);
}

#[test]
fn an_existing_local_path_wins_over_a_hub_id() {
    let d = common::tmp();
    cache_model(&d.path().join("cache"), &common::zoo_path("models/llama-instruct"), COMMIT, &["main"]);
    // ./org/name exists locally and is a qwen2 model: it is the one opened.
    let local = d.path().join("org/name");
    std::fs::create_dir_all(&local).unwrap();
    for e in std::fs::read_dir(common::zoo_path("models/qwen2-instruct")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), local.join(e.file_name())).unwrap();
    }
    let cache = d.path().join("cache");
    let arch = architecture(&run_in(d.path(), &[("HF_HUB_CACHE", cache.as_path())], &["inspect", "--json", "org/name"]));
    assert!(arch.contains("qwen2"), "{arch}");
}
