//! Hugging Face Hub ids (`org/name[@revision]`) resolved through the local Hugging Face cache, as
//! `huggingface_hub` resolves them offline (`snapshot_download(local_files_only=True)`):
//!
//! - the cache is `HF_HUB_CACHE`, else the legacy `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`,
//!   where `HF_HOME` defaults to `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`
//!   (`huggingface_hub/constants.py`; `~` and `$VAR` expanded as `expanduser`/`expandvars` do);
//! - `org/name` lives in `models--org--name` (`repo_folder_name`);
//! - a revision (default `main`) that is a 40-hex commit hash names `snapshots/<hash>` directly;
//!   any other revision is a branch or tag whose commit is the text of `refs/<revision>`;
//! - the model is the directory `snapshots/<commit>` (its files are symlinks into `blobs/`).
//!
//! A `models--org--name` directory given as a path resolves the same way (revision `main`, else
//! its only snapshot). Nothing here downloads: an id that is not cached is an error that says so
//! and prints the `hf download` command. Reading only; no candle.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The default revision (`huggingface_hub.constants.DEFAULT_REVISION`).
pub const DEFAULT_REVISION: &str = "main";

/// A ref file holds a 40-character commit hash; anything much longer is not one.
const MAX_REF_BYTES: u64 = 256;

/// A Hub model id and the revision asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    pub repo: String,
    /// `None`: the default branch (`main`).
    pub revision: Option<String>,
}

impl HubId {
    /// Parses `org/name` or `org/name@revision`. Only the two-part form is taken for an id (a
    /// bare `name` that is not on disk is far more often a mistyped path); each part is
    /// `[A-Za-z0-9._-]`, not starting or ending with `.` or `-`, without `--` or `..`, as the
    /// Hub's repo-id validation (`validate_repo_id`) requires.
    pub fn parse(s: &str) -> Option<HubId> {
        let (repo, revision) = match s.split_once('@') {
            Some((r, rev)) if !rev.is_empty() && !rev.contains("..") && !rev.starts_with('/') => (r, Some(rev.to_string())),
            Some(_) => return None,
            None => (s, None),
        };
        let (org, name) = repo.split_once('/')?;
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 96
                && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                && !p.starts_with(['.', '-'])
                && !p.ends_with(['.', '-'])
                && !p.contains("--")
                && !p.contains("..")
        };
        (part_ok(org) && part_ok(name)).then(|| HubId { repo: repo.to_string(), revision })
    }

    /// `models--org--name` (`huggingface_hub.file_download.repo_folder_name`).
    pub fn folder_name(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }

    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or(DEFAULT_REVISION)
    }

    /// The command that puts this id into the cache.
    pub fn download_command(&self) -> String {
        match &self.revision {
            Some(r) => format!("hf download {} --revision {r}", self.repo),
            None => format!("hf download {}", self.repo),
        }
    }
}

/// The environment variables the cache location depends on, read once (tests pass their own).
#[derive(Debug, Clone, Default)]
pub struct CacheEnv {
    pub hf_hub_cache: Option<String>,
    pub huggingface_hub_cache: Option<String>,
    pub hf_home: Option<String>,
    pub xdg_cache_home: Option<String>,
    pub home: Option<String>,
}

impl CacheEnv {
    pub fn from_env() -> CacheEnv {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From any lookup of the variables (the process environment, or a test's).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> CacheEnv {
        CacheEnv {
            hf_hub_cache: get("HF_HUB_CACHE"),
            huggingface_hub_cache: get("HUGGINGFACE_HUB_CACHE"),
            hf_home: get("HF_HOME"),
            xdg_cache_home: get("XDG_CACHE_HOME"),
            home: get("HOME"),
        }
    }

    /// `os.path.expanduser` of a leading `~` or `~/`, then `os.path.expandvars` of `$VAR` and
    /// `${VAR}` (an unset variable is left as written, as Python does).
    fn expand(&self, s: &str) -> String {
        let s = match (s.strip_prefix('~'), &self.home) {
            (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => format!("{home}{rest}"),
            _ => s.to_string(),
        };
        let mut out = String::new();
        let mut rest = s.as_str();
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let (name, len) = match after.strip_prefix('{') {
                Some(b) => match b.find('}') {
                    Some(j) => (&b[..j], j + 2),
                    None => ("", 0),
                },
                None => {
                    let n = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
                    (&after[..n], n)
                }
            };
            match (!name.is_empty()).then(|| self.var(name)).flatten() {
                Some(v) => out.push_str(&v),
                None => out.push_str(&rest[i..i + 1 + len]),
            }
            rest = &rest[i + 1 + len..];
        }
        out.push_str(rest);
        out
    }

    /// A variable `expandvars` may substitute: the ones read here, else the process's.
    fn var(&self, name: &str) -> Option<String> {
        match name {
            "HOME" => self.home.clone(),
            "HF_HOME" => self.hf_home.clone(),
            "XDG_CACHE_HOME" => self.xdg_cache_home.clone(),
            _ => std::env::var(name).ok(),
        }
    }

    /// The hub cache directory, by `huggingface_hub.constants`' precedence.
    pub fn hub_cache(&self) -> PathBuf {
        if let Some(c) = self.hf_hub_cache.as_ref().or(self.huggingface_hub_cache.as_ref()) {
            return PathBuf::from(self.expand(c));
        }
        let home = match &self.hf_home {
            Some(h) => self.expand(h),
            None => {
                let cache = match &self.xdg_cache_home {
                    Some(x) => x.clone(),
                    None => format!("{}/.cache", self.home.as_deref().unwrap_or("~")),
                };
                self.expand(&format!("{cache}/huggingface"))
            }
        };
        Path::new(&home).join("hub")
    }
}

/// Whether `revision` is a full commit hash (`REGEX_COMMIT_HASH`: 40 lowercase hex digits).
pub fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The snapshot directory `id` names in the cache at `cache`.
pub fn resolve(id: &HubId, cache: &Path) -> Result<PathBuf> {
    let repo_dir = cache.join(id.folder_name());
    let not_cached = |what: String| Error::NotCached {
        id: match &id.revision {
            Some(r) => format!("{}@{r}", id.repo),
            None => id.repo.clone(),
        },
        cache: cache.to_path_buf(),
        what,
        command: id.download_command(),
    };
    if !repo_dir.is_dir() {
        return Err(not_cached(format!("there is no `{}` in it", id.folder_name())));
    }
    let commit = commit_of(&repo_dir, id.revision())?
        .ok_or_else(|| not_cached(format!("`{}` has no `refs/{}`: that revision was never downloaded", id.folder_name(), id.revision())))?;
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Err(not_cached(format!("`{}` has no `snapshots/{commit}`", id.folder_name())));
    }
    Ok(snapshot)
}

/// The commit `revision` names in a repo's cache folder: itself when it is a commit hash, else
/// the text of `refs/<revision>` (`None` when there is no such ref).
fn commit_of(repo_dir: &Path, revision: &str) -> Result<Option<String>> {
    if is_commit_hash(revision) {
        return Ok(Some(revision.to_string()));
    }
    let ref_path = repo_dir.join("refs").join(revision);
    if !ref_path.is_file() {
        return Ok(None);
    }
    // huggingface_hub writes the hash without a newline; one added by hand is tolerated.
    let text = super::read_capped_text(&ref_path, MAX_REF_BYTES, "a Hugging Face cache ref")?;
    let commit = text.trim();
    if commit.is_empty() || commit.contains(['/', '\\']) || commit.contains("..") {
        return Err(Error::Field {
            path: ref_path,
            field: "commit hash".into(),
            detail: format!("{commit:?} is not a commit; delete the ref and run `hf download` again"),
        });
    }
    Ok(Some(commit.to_string()))
}

/// A `models--org--name` cache folder given as a path: the snapshot of `refs/main`, else its only
/// snapshot. `None` when `dir` is not such a folder.
pub fn resolve_repo_folder(dir: &Path) -> Option<Result<PathBuf>> {
    let name = dir.file_name()?.to_str()?;
    if !name.starts_with("models--") || !dir.join("snapshots").is_dir() {
        return None;
    }
    let snapshots = dir.join("snapshots");
    Some((|| {
        if let Some(commit) = commit_of(dir, DEFAULT_REVISION)? {
            let s = snapshots.join(&commit);
            if s.is_dir() {
                return Ok(s);
            }
        }
        let mut all: Vec<PathBuf> = std::fs::read_dir(&snapshots)
            .map_err(|e| Error::io(&snapshots, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        all.sort();
        match all.len() {
            1 => Ok(all.remove(0)),
            n => Err(Error::NotACheckpoint {
                path: dir.to_path_buf(),
                reason: format!(
                    "a Hugging Face cache folder with {n} snapshots and no `refs/main` to choose one: give `{}/snapshots/<commit>` instead",
                    dir.display()
                ),
            }),
        }
    })())
}

/// The directory or file a checkpoint argument names: an existing path as it is (a
/// `models--org--name` cache folder: its snapshot), else a Hub id through the cache, else the
/// path unchanged (opening it reports that it does not exist). An existing path always wins over
/// a Hub id that reads the same.
pub fn locate(path: &Path) -> Result<PathBuf> {
    if path.exists() {
        return match path.is_dir().then(|| resolve_repo_folder(path)).flatten() {
            Some(snapshot) => snapshot,
            None => Ok(path.to_path_buf()),
        };
    }
    match path.to_str().and_then(HubId::parse) {
        Some(id) => resolve(&id, &CacheEnv::from_env().hub_cache()),
        None => Ok(path.to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> CacheEnv {
        CacheEnv::from_vars(|k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn cache_location_follows_huggingface_hub_precedence() {
        let home = [("HOME", "/home/u")];
        assert_eq!(env(&home).hub_cache(), Path::new("/home/u/.cache/huggingface/hub"));
        assert_eq!(env(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/x")]).hub_cache(), Path::new("/x/huggingface/hub"));
        assert_eq!(env(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/x"), ("HF_HOME", "~/hf")]).hub_cache(), Path::new("/home/u/hf/hub"));
        assert_eq!(env(&[("HOME", "/home/u"), ("HF_HOME", "/h"), ("HUGGINGFACE_HUB_CACHE", "/legacy")]).hub_cache(), Path::new("/legacy"));
        let all = [("HOME", "/home/u"), ("HF_HOME", "/h"), ("HUGGINGFACE_HUB_CACHE", "/legacy"), ("HF_HUB_CACHE", "$HF_HOME/c")];
        assert_eq!(env(&all).hub_cache(), Path::new("/h/c"));
        // expandvars leaves an unset variable as written.
        assert_eq!(env(&[("HF_HUB_CACHE", "/a/${CKPTCHECK_UNSET_VAR}/b")]).hub_cache(), Path::new("/a/${CKPTCHECK_UNSET_VAR}/b"));
    }

    #[test]
    fn ids_parse_like_the_hub_validates_them() {
        assert_eq!(HubId::parse("Qwen/Qwen2.5-0.5B-Instruct"), Some(HubId { repo: "Qwen/Qwen2.5-0.5B-Instruct".into(), revision: None }));
        let id = HubId::parse("org/name@v1.0").unwrap();
        assert_eq!((id.revision(), id.folder_name().as_str()), ("v1.0", "models--org--name"));
        assert_eq!(id.download_command(), "hf download org/name --revision v1.0");
        for bad in ["name", "./a/b", "a/b/c", "a--b/c", "a/.b", "/abs", "a/b@", "a/b@../x", "a/b c", "../x"] {
            assert_eq!(HubId::parse(bad), None, "{bad}");
        }
        assert!(is_commit_hash(&"a".repeat(40)));
        assert!(!is_commit_hash(&"A".repeat(40)) && !is_commit_hash("main"));
    }
}
