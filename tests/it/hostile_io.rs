//! Hostile inputs, round two (issue 12), through the real binary.
//!
//! Outputs never destroy inputs: `--report` / `--junit` naming the manifest, the prompts or
//! thresholds file, a checkpoint file, anything inside a checkpoint directory (directly or
//! through a symlink), a FIFO, a device, a directory or a socket, or the same file twice, is
//! refused with exit 2 before anything runs, and the input is left as it was. Reports are
//! written 0644 less the umask.
//!
//! Reads are bounded: a FIFO, `/dev/zero` or an oversized file as the prompts file, the manifest,
//! the thresholds or a checkpoint's side file ends the run quickly with a finding or an error
//! naming the file. Each of these runs is killed after `TIMEOUT` (a hang fails the test, it never
//! hangs the suite) and runs with its address space capped at `MEMORY_CAP_KB`, so reading
//! `/dev/zero` (or anything up to the side-file cap) aborts the process and fails the test.
//!
//! No test writes under `/dev`: device outputs are symlinks in a temporary directory.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Longer than any refusal takes (milliseconds), far shorter than a blocked read (forever).
const TIMEOUT: Duration = Duration::from_secs(20);

/// A run that allocates nothing large stays near 100 MB of address space (measured: `lint` of a
/// zoo model passes under `ulimit -v 100000` with two rayon threads). 512 MiB is far above that
/// and below what reading up to the 512 MiB side-file cap needs, so a read of `/dev/zero` that
/// only stops at a cap fails too (an allocation failure: "out of memory", or an abort).
const MEMORY_CAP_KB: u64 = 512 * 1024;

/// Runs the binary under `sh -c "<setup>; exec ckptcheck ARGS"`, killed after `limit`.
fn run_sh(setup: &str, args: &[&str], limit: Duration) -> Run {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("{setup}\nexec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_ckptcheck"))
        .args(args)
        // Bounded thread and malloc-arena counts keep the address space independent of the
        // machine's core count, so the cap measures allocations, not threads.
        .env("RAYON_NUM_THREADS", "2")
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh runs");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ckptcheck {args:?} still running after {limit:?}: it blocked (a FIFO read?)\nstderr: {}", err.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    let code = status.code().unwrap_or_else(|| {
        panic!("ckptcheck {args:?} was killed by a signal ({status:?}): out of memory under the cap?\nstderr: {stderr}")
    });
    Run { code, stdout, stderr }
}

/// A run with the wall-clock limit and the address-space cap, which it must not reach.
#[track_caller]
fn bounded(args: &[&str]) -> Run {
    let r = run_sh(&format!("ulimit -v {MEMORY_CAP_KB}"), args, TIMEOUT);
    assert!(
        !r.stderr.contains("out of memory") && !r.stdout.contains("out of memory"),
        "ckptcheck {args:?} ran into the {MEMORY_CAP_KB} KB address-space cap: it read without a bound\n{}\n{}",
        r.stdout,
        r.stderr
    );
    r
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn mkfifo(p: &Path) {
    assert!(Command::new("mkfifo").arg(p).status().expect("mkfifo runs").success(), "mkfifo {}", p.display());
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// A sparse file of `len` bytes: over a cap without writing (or reading) that much.
fn sparse(p: &Path, len: u64) {
    std::fs::File::create(p).unwrap().set_len(len).unwrap();
}

/// Two healthy steps `a` and `b`, a prompts file, a thresholds file and `lineage.toml`.
struct Lineage {
    dir: tempfile::TempDir,
}

impl Lineage {
    fn new() -> Lineage {
        let dir = tmp();
        Fixture::healthy().write(&dir.path().join("a"));
        Fixture::healthy().write(&dir.path().join("b"));
        std::fs::write(dir.path().join("prompts.jsonl"), "{\"messages\": [{\"role\": \"user\", \"content\": \"What is 6 times 7 ?\"}]}\n")
            .unwrap();
        std::fs::write(dir.path().join("thresholds.toml"), "kl_mean_warn = 0.1\n").unwrap();
        let m = "name = \"hostile\"\nprompts = \"prompts.jsonl\"\nmax_new_tokens = 2\n\
                 [[step]]\nlabel = \"a\"\npath = \"a\"\n[[step]]\nlabel = \"b\"\npath = \"b\"\n";
        std::fs::write(dir.path().join("lineage.toml"), m).unwrap();
        Lineage { dir }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn manifest(&self) -> PathBuf {
        self.p("lineage.toml")
    }
    /// `gate lineage.toml` with extra arguments.
    fn gate(&self, extra: &[&str]) -> Run {
        let m = self.manifest();
        let mut args = vec!["gate", s(&m)];
        args.extend_from_slice(extra);
        ckptcheck(&args)
    }
    /// `compare a b` on the lineage's prompts and thresholds, with extra arguments.
    fn compare(&self, extra: &[&str]) -> Run {
        let (a, b, p, t) = (self.p("a"), self.p("b"), self.p("prompts.jsonl"), self.p("thresholds.toml"));
        let mut args = vec!["compare", "--max-new-tokens", "2", "--prompts", s(&p), "--thresholds", s(&t), s(&a), s(&b)];
        args.extend_from_slice(extra);
        ckptcheck(&args)
    }
}

/// Exit 2, an error naming the flag and the path and saying why, and nothing run or printed.
#[track_caller]
fn refused(r: &Run, flag: &str, path: &Path, why: &str) {
    assert_eq!(r.code, 2, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let head = format!("refusing to write {flag} `{}`", path.display());
    assert!(r.stderr.contains(&head), "expected `{head}` in:\n{}", r.stderr);
    assert!(r.stderr.contains(why), "expected `{why}` in:\n{}", r.stderr);
    assert!(r.stdout.is_empty(), "refused before the run, yet printed:\n{}", r.stdout);
    assert!(!r.stderr.contains("wrote "), "{}", r.stderr);
}

/// The file's bytes, to show it was left alone.
fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

// --- outputs never destroy inputs ------------------------------------------------------------

/// Regression: `gate --report m.toml` replaced the manifest with HTML.
#[test]
fn gate_report_over_the_manifest_is_refused() {
    let l = Lineage::new();
    let before = bytes(&l.manifest());
    let r = l.gate(&["--report", s(&l.manifest())]);
    refused(&r, "--report", &l.manifest(), "it is the manifest");
    assert_eq!(bytes(&l.manifest()), before);
}

#[test]
fn gate_junit_over_the_prompts_file_is_refused() {
    let l = Lineage::new();
    let p = l.p("prompts.jsonl");
    let before = bytes(&p);
    refused(&l.gate(&["--junit", s(&p)]), "--junit", &p, "it is the prompts file");
    assert_eq!(bytes(&p), before);
}

#[test]
fn compare_report_over_the_prompts_file_is_refused() {
    let l = Lineage::new();
    let p = l.p("prompts.jsonl");
    let before = bytes(&p);
    refused(&l.compare(&["--report", s(&p)]), "--report", &p, "it is the prompts file");
    assert_eq!(bytes(&p), before);
}

#[test]
fn compare_report_over_the_thresholds_file_is_refused() {
    let l = Lineage::new();
    let p = l.p("thresholds.toml");
    let before = bytes(&p);
    refused(&l.compare(&["--report", s(&p)]), "--report", &p, "it is the thresholds file");
    assert_eq!(bytes(&p), before);
}

/// Regression: `--report model.safetensors` replaced the weights with HTML.
#[test]
fn gate_report_over_a_weights_file_is_refused() {
    let l = Lineage::new();
    let w = l.p("b/model.safetensors");
    let before = bytes(&w);
    refused(&l.gate(&["--report", s(&w)]), "--report", &w, "inside the checkpoint directory");
    assert_eq!(bytes(&w), before);
}

/// Regression: `--junit DIR/config.json` replaced a checkpoint's config with XML.
#[test]
fn gate_junit_over_a_side_file_of_a_checkpoint_is_refused() {
    let l = Lineage::new();
    let c = l.p("a/config.json");
    let before = bytes(&c);
    refused(&l.gate(&["--junit", s(&c)]), "--junit", &c, "inside the checkpoint directory");
    assert_eq!(bytes(&c), before);
}

/// A new file in a checkpoint directory changes the checkpoint (a `*.safetensors` report would
/// become a shard), so it is refused too, and nothing is created.
#[test]
fn a_new_file_inside_a_checkpoint_directory_is_refused() {
    let l = Lineage::new();
    let n = l.p("a/report.html");
    refused(&l.gate(&["--report", s(&n)]), "--report", &n, "inside the checkpoint directory");
    assert!(!n.exists());
    assert_eq!(std::fs::read_dir(l.p("a")).unwrap().count(), 6, "no temp file left in the checkpoint");
}

/// `compare DIR/model.safetensors …` reads DIR's side files: DIR is an input.
#[test]
fn compare_with_a_weights_file_protects_its_directory() {
    let l = Lineage::new();
    let (w, b, c) = (l.p("a/model.safetensors"), l.p("b"), l.p("a/config.json"));
    let before = bytes(&c);
    let r = ckptcheck(&["compare", "--max-new-tokens", "2", s(&w), s(&b), "--report", s(&c)]);
    refused(&r, "--report", &c, "inside the checkpoint directory");
    assert_eq!(bytes(&c), before);
}

#[test]
fn bisect_on_command_line_paths_protects_each_step() {
    let l = Lineage::new();
    let c = l.p("b/tokenizer.json");
    let before = bytes(&c);
    let r = ckptcheck(&["bisect", s(&l.p("a")), s(&l.p("b")), "--junit", s(&c)]);
    refused(&r, "--junit", &c, "inside the checkpoint directory");
    assert_eq!(bytes(&c), before);
}

/// An adapter step's base and adapter directories are both inputs.
#[test]
fn an_adapter_steps_directories_are_inputs() {
    let d = tmp();
    for n in ["base", "adapter", "other"] {
        std::fs::create_dir(d.path().join(n)).unwrap();
    }
    std::fs::write(d.path().join("adapter/adapter_config.json"), "{}").unwrap();
    let m = d.path().join("m.toml");
    std::fs::write(&m, "[[step]]\npath = \"other\"\n[[step]]\nbase = \"base\"\nadapter = \"adapter\"\n").unwrap();
    let c = d.path().join("adapter/adapter_config.json");
    refused(&ckptcheck(&["gate", s(&m), "--report", s(&c)]), "--report", &c, "inside the checkpoint directory");
    assert_eq!(bytes(&c), b"{}");
}

#[test]
fn a_symlink_to_an_input_is_refused() {
    let l = Lineage::new();
    let link = l.p("report.html");
    symlink(&l.manifest(), &link);
    let before = bytes(&l.manifest());
    refused(&l.gate(&["--report", s(&link)]), "--report", &link, "it is the manifest");
    assert!(l.gate(&["--report", s(&link)]).stderr.contains("it resolves to"), "the message says where the link goes");
    assert_eq!(bytes(&l.manifest()), before);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link is left alone");
}

/// A directory symlinked to a checkpoint: the parent is resolved, so `LINK/config.json` is
/// `a/config.json`.
#[test]
fn a_path_through_a_symlinked_directory_is_resolved() {
    let l = Lineage::new();
    symlink(&l.p("a"), &l.p("alias"));
    let c = l.p("alias/config.json");
    let before = bytes(&l.p("a/config.json"));
    refused(&l.gate(&["--junit", s(&c)]), "--junit", &c, "inside the checkpoint directory");
    let n = l.p("alias/new.xml");
    refused(&l.gate(&["--junit", s(&n)]), "--junit", &n, "inside the checkpoint directory");
    assert_eq!(bytes(&l.p("a/config.json")), before);
}

/// A side file linked from outside the directory (the Hugging Face cache links snapshots to
/// blobs) is an input wherever it lives.
#[test]
fn a_side_file_linked_from_elsewhere_is_an_input() {
    let l = Lineage::new();
    let blob = l.p("blob-tokenizer.json");
    std::fs::rename(l.p("a/tokenizer.json"), &blob).unwrap();
    symlink(&blob, &l.p("a/tokenizer.json"));
    let before = bytes(&blob);
    refused(&l.gate(&["--report", s(&blob)]), "--report", &blob, "it is the checkpoint file");
    assert_eq!(bytes(&blob), before);
}

#[test]
fn a_fifo_output_is_refused_and_left_a_fifo() {
    use std::os::unix::fs::FileTypeExt;
    let l = Lineage::new();
    let f = l.p("out.fifo");
    mkfifo(&f);
    refused(&l.gate(&["--report", s(&f)]), "--report", &f, "it exists and is a FIFO");
    assert!(std::fs::symlink_metadata(&f).unwrap().file_type().is_fifo());
}

/// A device path (here a symlink to `/dev/null`, so that nothing under /dev could ever be
/// replaced even if the check regressed) is refused; root used to replace `/dev/full`.
#[test]
fn a_device_output_is_refused() {
    let l = Lineage::new();
    let dev = l.p("null");
    symlink(Path::new("/dev/null"), &dev);
    refused(&l.compare(&["--report", s(&dev)]), "--report", &dev, "it exists and is a character device");
    assert!(std::fs::symlink_metadata(&dev).unwrap().file_type().is_symlink());
}

#[test]
fn a_directory_output_is_refused() {
    let l = Lineage::new();
    let d = l.p("out");
    std::fs::create_dir(&d).unwrap();
    refused(&l.gate(&["--junit", s(&d)]), "--junit", &d, "it exists and is a directory");
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
}

#[test]
fn a_socket_output_is_refused() {
    use std::os::unix::fs::FileTypeExt;
    let l = Lineage::new();
    let sock = l.p("s.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    refused(&l.gate(&["--report", s(&sock)]), "--report", &sock, "it exists and is a socket");
    assert!(std::fs::symlink_metadata(&sock).unwrap().file_type().is_socket());
}

#[test]
fn junit_and_report_naming_one_file_are_refused() {
    let l = Lineage::new();
    let out = l.p("ci.out");
    refused(&l.gate(&["--junit", s(&out), "--report", s(&out)]), "--report", &out, "`--junit` writes the same file");
    assert!(!out.exists());
}

/// Two spellings of one file (`x` and `sub/../x`, or a symlink to it) are one file.
#[test]
fn junit_and_report_naming_one_file_through_a_symlink_are_refused() {
    let l = Lineage::new();
    let out = l.p("ci.out");
    std::fs::write(&out, "old").unwrap();
    symlink(&out, &l.p("alias.out"));
    let alias = l.p("alias.out");
    refused(&l.gate(&["--junit", s(&out), "--report", s(&alias)]), "--report", &alias, "`--junit` writes the same file");
    std::fs::create_dir(l.p("sub")).unwrap();
    let dotted = l.p("sub/../ci.out");
    refused(&ckptcheck(&["bisect", s(&l.manifest()), "--junit", s(&out), "--report", s(&dotted)]), "--report", &dotted, "same file");
    assert_eq!(bytes(&out), b"old");
}

#[test]
fn an_output_in_a_missing_directory_is_refused_before_the_run() {
    let l = Lineage::new();
    let out = l.p("no/such/dir/r.html");
    refused(&l.gate(&["--report", s(&out)]), "--report", &out, "its directory");
}

/// Regression: reports were written 0600 (tempfile's default); now 0644 less the umask.
#[test]
fn reports_are_written_0644_under_umask_022() {
    use std::os::unix::fs::PermissionsExt;
    let l = Lineage::new();
    let (junit, html) = (l.p("junit.xml"), l.p("report.html"));
    let m = l.manifest();
    let r = run_sh("umask 022", &["gate", s(&m), "--junit", s(&junit), "--report", s(&html)], Duration::from_secs(300));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for p in [&junit, &html] {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{}: {mode:o}", p.display());
    }
    // Replacing an existing 0600 file gives the new mode too, and the umask is honoured.
    std::fs::set_permissions(&html, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = run_sh(
        "umask 027",
        &["compare", "--max-new-tokens", "2", s(&l.p("a")), s(&l.p("b")), "--report", s(&html)],
        Duration::from_secs(300),
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(std::fs::metadata(&html).unwrap().permissions().mode() & 0o777, 0o640);
    assert!(r.stderr.contains(&format!("wrote {}", html.display())), "{}", r.stderr);
}

// --- reads are bounded -----------------------------------------------------------------------

/// Regression: `--prompts FIFO` blocked forever opening the pipe.
#[test]
fn prompts_fifo_is_refused_without_blocking() {
    let l = Lineage::new();
    let f = l.p("prompts.fifo");
    mkfifo(&f);
    let r = bounded(&["compare", s(&l.p("a")), s(&l.p("b")), "--prompts", s(&f)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("`{}`", f.display())) && r.stderr.contains("it is a FIFO, not a regular file"), "{}", r.stderr);
}

/// Regression: `--prompts /dev/zero` allocated until out of memory.
#[test]
fn prompts_dev_zero_is_refused_without_reading() {
    let l = Lineage::new();
    let r = bounded(&["compare", s(&l.p("a")), s(&l.p("b")), "--prompts", "/dev/zero"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("`/dev/zero`: it is a character device, not a regular file"), "{}", r.stderr);
}

/// A manifest's `prompts = "…"` goes through the same read.
#[test]
fn manifest_prompts_symlinked_to_dev_zero_is_refused() {
    let l = Lineage::new();
    std::fs::remove_file(l.p("prompts.jsonl")).unwrap();
    symlink(Path::new("/dev/zero"), &l.p("prompts.jsonl"));
    let r = bounded(&["bisect", s(&l.manifest())]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("prompts.jsonl") && r.stderr.contains("character device"), "{}\n{}", r.stdout, r.stderr);
}

#[test]
fn thresholds_fifo_is_refused_without_blocking() {
    let l = Lineage::new();
    let f = l.p("t.fifo");
    mkfifo(&f);
    let r = bounded(&["compare", s(&l.p("a")), s(&l.p("b")), "--thresholds", s(&f)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("`{}`", f.display())) && r.stderr.contains("FIFO"), "{}", r.stderr);
}

#[test]
fn manifest_fifo_is_refused_without_blocking() {
    let d = tmp();
    let f = d.path().join("m.toml");
    mkfifo(&f);
    let r = bounded(&["gate", s(&f)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("`{}`", f.display())) && r.stderr.contains("FIFO"), "{}", r.stderr);
}

#[test]
fn oversized_prompts_file_is_refused_with_its_name() {
    let l = Lineage::new();
    let p = l.p("big.jsonl");
    sparse(&p, (64 << 20) + 1);
    let r = bounded(&["compare", s(&l.p("a")), s(&l.p("b")), "--prompts", s(&p)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("big.jsonl") && r.stderr.contains("-byte limit for a prompts file"), "{}", r.stderr);
}

#[test]
fn oversized_manifest_is_refused_with_its_name() {
    let d = tmp();
    let m = d.path().join("huge.toml");
    sparse(&m, (1 << 20) + 1);
    let r = bounded(&["gate", s(&m)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("huge.toml") && r.stderr.contains("-byte limit for a manifest"), "{}", r.stderr);
}

/// Lints a healthy checkpoint whose `name` was replaced by `make(path)`, bounded; returns the
/// `files.unreadable` finding about `name`.
fn lint_with_side_file(name: &str, make: impl Fn(&Path)) -> (Run, serde_json::Value) {
    let d = tmp();
    Fixture::healthy().write(d.path());
    std::fs::write(d.path().join("chat_template.jinja"), CHATML).unwrap();
    let p = d.path().join(name);
    let _ = std::fs::remove_file(&p);
    make(&p);
    let r = bounded(&["lint", "--json", s(d.path())]);
    assert_eq!(r.code, 1, "an unreadable side file is an error finding, not a crash:\n{}\n{}", r.stdout, r.stderr);
    let f = r.json()["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "files.unreadable" && f["file"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no files.unreadable finding for {name} in:\n{}", r.stdout));
    (r, f)
}

fn to_dev_zero(p: &Path) {
    symlink(Path::new("/dev/zero"), p);
}

/// Regression: side files symlinked to `/dev/zero` were read until memory ran out (their length
/// says 0, so the cap on the metadata length never applied).
#[test]
fn config_json_symlinked_to_dev_zero_is_a_finding() {
    let (_, f) = lint_with_side_file("config.json", to_dev_zero);
    assert!(f["message"].as_str().unwrap().contains("character device, not a regular file"), "{f}");
}

#[test]
fn generation_config_symlinked_to_dev_zero_is_a_finding() {
    let (_, f) = lint_with_side_file("generation_config.json", to_dev_zero);
    assert!(f["message"].as_str().unwrap().contains("character device"), "{f}");
}

#[test]
fn chat_template_jinja_symlinked_to_dev_zero_is_a_finding() {
    let (_, f) = lint_with_side_file("chat_template.jinja", to_dev_zero);
    assert!(f["message"].as_str().unwrap().contains("character device"), "{f}");
}

#[test]
fn tokenizer_json_symlinked_to_dev_zero_is_a_finding() {
    let (_, f) = lint_with_side_file("tokenizer.json", to_dev_zero);
    assert!(f["message"].as_str().unwrap().contains("character device"), "{f}");
}

#[test]
fn config_json_fifo_is_a_finding_without_blocking() {
    let (_, f) = lint_with_side_file("config.json", mkfifo);
    assert!(f["message"].as_str().unwrap().contains("FIFO"), "{f}");
}

#[test]
fn oversized_config_json_is_a_finding_naming_the_limit() {
    let (_, f) = lint_with_side_file("config.json", |p| sparse(p, (512 << 20) + 1));
    assert!(f["message"].as_str().unwrap().contains("536870913 bytes, over the 536870912-byte limit for a side file"), "{f}");
}

#[test]
fn oversized_chat_template_jinja_is_a_finding() {
    let (_, f) = lint_with_side_file("chat_template.jinja", |p| sparse(p, (512 << 20) + 1));
    assert!(f["message"].as_str().unwrap().contains("over the 536870912-byte limit"), "{f}");
}

/// `tokenizer.json` is loaded through the capped read (`Tokenizer::from_bytes`), not
/// `from_file`: an oversized one is a `tokenizer.unreadable` finding naming the limit.
#[test]
fn oversized_tokenizer_json_is_refused_unread() {
    let d = tmp();
    Fixture::healthy().write(d.path());
    sparse(&d.path().join("tokenizer.json"), (512 << 20) + 1);
    let r = bounded(&["lint", "--json", s(d.path())]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let f = r.finding("tokenizer.unreadable");
    assert!(f["message"].as_str().unwrap().contains("tokenizer.json") && f["message"].as_str().unwrap().contains("-byte limit"), "{f}");
}

/// Weights are memory-mapped: a FIFO must be refused before the open (which would block) and a
/// device before the map.
#[test]
fn weights_fifo_is_refused_without_blocking() {
    let d = tmp();
    Fixture::healthy().write(d.path());
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    mkfifo(&d.path().join("model.safetensors"));
    let r = bounded(&["lint", "--json", s(d.path())]);
    assert_ne!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("model.safetensors") && all.contains("FIFO"), "{all}");
}

#[test]
fn gguf_symlinked_to_dev_zero_is_refused() {
    let d = tmp();
    let g = d.path().join("model.gguf");
    to_dev_zero(&g);
    let r = bounded(&["inspect", s(&g)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("model.gguf") && r.stderr.contains("character device, not a regular file"), "{}", r.stderr);
}

#[test]
fn gguf_fifo_is_refused_without_blocking() {
    let d = tmp();
    let g = d.path().join("model.gguf");
    mkfifo(&g);
    let r = bounded(&["lint", s(&g)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("model.gguf") && r.stderr.contains("FIFO"), "{}", r.stderr);
}
