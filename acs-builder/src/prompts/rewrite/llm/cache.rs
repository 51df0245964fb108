//! The persistent answer cache: one JSON file per sha256 key of (prompt, category, model,
//! instruction), written under a temporary name and renamed.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::answer::clean_answer;
use crate::error::AcsError;
use crate::prompts::rewrite::RewriteRequest;

/// Version tag hashed into every cache key and stored in every entry.
const CACHE_VERSION: &str = "acs-llm-cache-v1";

/// The cache key (sha256 hex) of a request answered by `model` under `instruction`.
pub fn cache_key(prompt: &str, category: &str, model: &str, instruction: &str) -> String {
    // A JSON array: unambiguous whatever characters the parts hold.
    let text = serde_json::json!([CACHE_VERSION, prompt, category, model, instruction]).to_string();
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// One cache file.
#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    version: String,
    model: String,
    category: String,
    prompt: String,
    answer: String,
}

/// The persistent answer cache: `DIR/<first two hex digits>/<key>.json`.
#[derive(Debug)]
pub(super) struct Cache {
    pub(super) dir: PathBuf,
}

impl Cache {
    /// Creates the folder and checks that a file can be written in it.
    pub(super) fn open(dir: &Path) -> Result<Self, AcsError> {
        let unusable = |e: std::io::Error| {
            AcsError::input(format!(
                "{}: the LLM cache folder cannot be written: {e}",
                dir.display()
            ))
        };
        std::fs::create_dir_all(dir).map_err(unusable)?;
        // Created and removed again: proves the folder is writable.
        tempfile::NamedTempFile::new_in(dir).map_err(unusable)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(format!("{key}.json"))
    }

    /// The stored answer for `key`, if a readable entry matches the request and still passes
    /// the answer checks.
    pub(super) fn get(&self, key: &str, request: &RewriteRequest, model: &str) -> Option<String> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        let entry: CacheEntry = serde_json::from_slice(&bytes).ok()?;
        let matches = entry.version == CACHE_VERSION
            && entry.model == model
            && entry.category == request.category
            && entry.prompt == request.prompt;
        if !matches {
            return None;
        }
        match clean_answer(&entry.answer, &request.prompt) {
            Ok(answer) if answer == entry.answer => Some(answer),
            _ => None,
        }
    }

    /// Stores an answer atomically (temporary file in the same folder, then rename).
    pub(super) fn put(
        &self,
        key: &str,
        request: &RewriteRequest,
        model: &str,
        answer: &str,
    ) -> Result<(), AcsError> {
        let path = self.path(key);
        let unusable = |e: std::io::Error| {
            AcsError::input(format!(
                "{}: cannot write the LLM cache entry: {e}",
                path.display()
            ))
        };
        let folder = path
            .parent()
            .ok_or_else(|| AcsError::internal("LLM cache entry without a folder"))?;
        std::fs::create_dir_all(folder).map_err(unusable)?;
        let entry = CacheEntry {
            version: CACHE_VERSION.to_owned(),
            model: model.to_owned(),
            category: request.category.clone(),
            prompt: request.prompt.clone(),
            answer: answer.to_owned(),
        };
        let bytes = serde_json::to_vec(&entry)?;
        let mut file = tempfile::NamedTempFile::new_in(folder).map_err(unusable)?;
        file.write_all(&bytes).map_err(unusable)?;
        file.as_file().sync_all().map_err(unusable)?;
        file.persist(&path).map_err(|e| unusable(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPT: &str = "a bloody knife on a table, oil painting";

    #[test]
    fn cache_keys_depend_on_every_input() {
        let key = cache_key("p", "violence", "m", "i");
        assert_eq!(key.len(), 64);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(key, cache_key("p", "violence", "m", "i"));
        let others = [
            cache_key("q", "violence", "m", "i"),
            cache_key("p", "hate", "m", "i"),
            cache_key("p", "violence", "n", "i"),
            cache_key("p", "violence", "m", "j"),
            // No ambiguity from moving text between the parts.
            cache_key("pv", "iolence", "m", "i"),
        ];
        for other in &others {
            assert_ne!(&key, other);
        }
    }

    #[test]
    fn cache_entries_round_trip_and_bad_ones_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("nested/cache")).unwrap();
        let request = RewriteRequest::new(PROMPT, "violence");
        let key = cache_key(&request.prompt, &request.category, "m", "i");
        assert_eq!(cache.get(&key, &request, "m"), None);
        cache.put(&key, &request, "m", "a clean knife").unwrap();
        assert_eq!(
            cache.get(&key, &request, "m").as_deref(),
            Some("a clean knife")
        );
        // Another model's entry under the same key (impossible unless tampered with): ignored.
        assert_eq!(cache.get(&key, &request, "other"), None);
        // A truncated entry (a crash in a non-atomic writer) is ignored, then overwritten.
        std::fs::write(cache.path(&key), b"{\"version\":\"acs-llm").unwrap();
        assert_eq!(cache.get(&key, &request, "m"), None);
        cache.put(&key, &request, "m", "a clean knife").unwrap();
        assert_eq!(
            cache.get(&key, &request, "m").as_deref(),
            Some("a clean knife")
        );
        // An entry whose answer no longer passes the checks is ignored.
        cache.put(&key, &request, "m", PROMPT).unwrap();
        assert_eq!(cache.get(&key, &request, "m"), None);
    }

    #[test]
    fn unusable_cache_folders_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = Cache::open(&file.join("cache")).unwrap_err().to_string();
        assert!(err.contains("LLM cache folder cannot be written"), "{err}");
    }
}
