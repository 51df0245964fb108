//! `acs model list`: the diffusers-layout snapshots in the hub cache (whoever downloaded them:
//! acs or Python), with the refs that name them and their size on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indicatif::HumanBytes;

use crate::runtime::error::RuntimeError;
use crate::runtime::model::embedded::EmbeddedModel;
use crate::runtime::model::model_files;

/// One snapshot of a diffusers model in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModel {
    /// Hub id.
    pub repo: String,
    /// Commit hash (the snapshot's folder name).
    pub commit: String,
    /// Branches and tags that name this commit.
    pub refs: Vec<String>,
    /// Size of the files the snapshot holds, following its links.
    pub bytes: u64,
    /// Every file the pipeline needs is there.
    pub complete: bool,
    /// The snapshot folder.
    pub path: PathBuf,
}

/// The diffusers snapshots (those with a `model_index.json`) in the hub cache `cache`,
/// sorted by repository and commit. A cache that does not exist holds none.
pub fn list_models(cache: &Path) -> Result<Vec<CachedModel>, RuntimeError> {
    let mut models = Vec::new();
    for repo_dir in sorted_entries(cache)? {
        let Some(name) = repo_dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(rest) = name.strip_prefix("models--") else {
            continue;
        };
        let repo = rest.split("--").collect::<Vec<_>>().join("/");
        let mut refs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        collect_refs(&repo_dir.join("refs"), "", &mut refs);
        for snapshot in sorted_entries(&repo_dir.join("snapshots"))? {
            if !snapshot.join("model_index.json").is_file() {
                continue;
            }
            let commit = snapshot
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            models.push(CachedModel {
                repo: repo.clone(),
                refs: refs.remove(&commit).unwrap_or_default(),
                bytes: folder_size(&snapshot),
                complete: model_files(&snapshot).is_ok(),
                commit,
                path: snapshot,
            });
        }
    }
    Ok(models)
}

/// The models as a table, one line each, then the embedded models (the default first), each
/// with its folder when it has been written.
pub fn format_models(cache: &Path, models: &[CachedModel], embedded: &[EmbeddedModel]) -> String {
    let mut out = String::new();
    if models.is_empty() {
        out.push_str(&format!(
            "no diffusers models in the Hugging Face cache {}\n",
            cache.display()
        ));
    } else {
        out.push_str(&format!("Hugging Face cache {}:\n", cache.display()));
        let rows: Vec<[String; 4]> = models
            .iter()
            .map(|m| {
                let refs = if m.refs.is_empty() {
                    "-".to_owned()
                } else {
                    m.refs.join(",")
                };
                let size = HumanBytes(m.bytes).to_string();
                let size = if m.complete {
                    size
                } else {
                    format!("{size} (incomplete)")
                };
                [m.repo.clone(), refs, m.commit.clone(), size]
            })
            .collect();
        let header = ["REPO", "REFS", "COMMIT", "SIZE"].map(str::to_owned);
        let widths: Vec<usize> = (0..3)
            .map(|i| {
                rows.iter()
                    .chain(std::iter::once(&header))
                    .map(|r| r[i].len())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in std::iter::once(&header).chain(&rows) {
            out.push_str(&format!(
                "  {:w0$}  {:w1$}  {:w2$}  {}\n",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            ));
        }
    }
    out.push_str("embedded models (a manifest without [model] renders with the first):\n");
    for model in embedded {
        let dir = model.dir();
        let folder = if dir.join("model_index.json").is_file() {
            format!("{} ({})", dir.display(), HumanBytes(folder_size(&dir)))
        } else {
            "written on first use".to_owned()
        };
        out.push_str(&format!(
            "  {:7} {:17} {}; {folder}\n",
            model.to_string(),
            model.id(),
            model.description()
        ));
    }
    out
}

/// The entries of a folder, sorted; none when it does not exist.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, RuntimeError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RuntimeError::io(dir, e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    paths.sort();
    Ok(paths)
}

/// commit -> names of the refs (nested ones such as `refs/pr/1` included) under `dir`.
fn collect_refs(dir: &Path, prefix: &str, refs: &mut BTreeMap<String, Vec<String>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let path = entry.path();
        if path.is_dir() {
            collect_refs(&path, &format!("{name}/"), refs);
        } else if let Ok(commit) = std::fs::read_to_string(&path) {
            refs.entry(commit.trim().to_owned()).or_default().push(name);
        }
    }
}

/// Bytes of the files under `dir`, following symlinks (snapshot files link to blobs).
pub fn folder_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| {
            let path = entry.path();
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => folder_size(&path),
                Ok(meta) => meta.len(),
                Err(_) => 0,
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_diffusers_snapshots_with_their_refs() {
        let cache = tempfile::tempdir().unwrap();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let repo = cache.path().join("models--org--sd");
        std::fs::create_dir_all(repo.join("snapshots").join(commit).join("unet")).unwrap();
        std::fs::write(
            repo.join("snapshots").join(commit).join("model_index.json"),
            b"{}",
        )
        .unwrap();
        std::fs::write(
            repo.join("snapshots").join(commit).join("unet/config.json"),
            b"{\"a\": 1}",
        )
        .unwrap();
        std::fs::create_dir_all(repo.join("refs/refs/pr")).unwrap();
        std::fs::write(repo.join("refs/main"), commit).unwrap();
        std::fs::write(repo.join("refs/refs/pr/1"), commit).unwrap();
        // Not diffusers, not a model: skipped.
        std::fs::create_dir_all(cache.path().join("models--org--bert/snapshots/abc")).unwrap();
        std::fs::create_dir_all(cache.path().join("datasets--org--data/snapshots/abc")).unwrap();

        let models = list_models(cache.path()).unwrap();
        assert_eq!(models.len(), 1);
        let model = &models[0];
        assert_eq!(model.repo, "org/sd");
        assert_eq!(model.commit, commit);
        assert_eq!(model.refs, ["main", "refs/pr/1"]);
        assert_eq!(model.bytes, 2 + 8);
        assert!(!model.complete);
        let table = format_models(cache.path(), &models, &[]);
        assert!(table.contains("org/sd"), "{table}");
        assert!(table.contains("main,refs/pr/1"), "{table}");
        assert!(table.contains("(incomplete)"), "{table}");

        let empty = tempfile::tempdir().unwrap();
        let missing = empty.path().join("nothing");
        assert!(list_models(&missing).unwrap().is_empty());
        assert!(format_models(&missing, &[], &[]).starts_with("no diffusers models"));
    }
}
