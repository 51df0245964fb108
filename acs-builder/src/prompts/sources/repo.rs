//! Hugging Face dataset repositories as sources (`repo = "org/name"`): which of the
//! repository's files a source reads (`files` patterns, else the `split`'s files, else every
//! table), fetched into the HF cache unless HF_HUB_OFFLINE is set.

use glob::{MatchOptions, Pattern};

use crate::manifest::{SourceSection, TableFormat};
use crate::runtime::hub::{dataset_files, DatasetSnapshot, HubSettings};
use crate::runtime::RuntimeError;

/// The files of a dataset repository that `section` reads.
pub fn source_files(section: &SourceSection, repo: &str) -> Result<DatasetSnapshot, RuntimeError> {
    let settings = HubSettings::from_env()?;
    let revision = section.revision.as_deref().unwrap_or("main");
    let select = |all: &[String]| select_files(all, &section.files, section.split.as_deref());
    dataset_files(&settings, repo, revision, &select)
}

/// Whether a repository file is a table acs reads (by extension).
fn is_table(file: &str) -> bool {
    TableFormat::of_path(std::path::Path::new(file)).is_some()
}

/// Whether `file` belongs to `split`: a folder of that name, or a file name that starts with
/// it (`train.csv`, `train-00000-of-00002.parquet`, `test_prompts.jsonl`).
fn in_split(file: &str, split: &str) -> bool {
    let mut parts = file.split('/').collect::<Vec<_>>();
    let name = parts.pop().unwrap_or_default();
    parts.contains(&split)
        || name
            .strip_prefix(split)
            .is_some_and(|rest| rest.starts_with(['.', '-', '_']))
}

/// The selected files, in repository order: those matching `patterns` (each must match one),
/// else the tables of `split`, else every table.
pub fn select_files(
    all: &[String],
    patterns: &[String],
    split: Option<&str>,
) -> Result<Vec<String>, String> {
    let listing = || {
        let tables: Vec<&str> = all
            .iter()
            .map(String::as_str)
            .filter(|f| is_table(f))
            .collect();
        let shown = tables
            .iter()
            .take(12)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        match tables.len() {
            0 => "the repository holds no CSV, JSONL or Parquet file".to_owned(),
            n if n > 12 => format!("its tables: {shown}, ... ({n} in all)"),
            _ => format!("its tables: {shown}"),
        }
    };
    if !patterns.is_empty() {
        let options = MatchOptions {
            require_literal_separator: true,
            ..MatchOptions::new()
        };
        let mut selected: Vec<String> = Vec::new();
        for text in patterns {
            let pattern =
                Pattern::new(text).map_err(|e| format!("`{text}` is not a file pattern: {e}"))?;
            let matched: Vec<&String> = all
                .iter()
                .filter(|f| pattern.matches_with(f, options))
                .collect();
            if matched.is_empty() {
                return Err(format!("no file matches `{text}` ({})", listing()));
            }
            for file in matched {
                if !selected.contains(file) {
                    selected.push(file.clone());
                }
            }
        }
        return Ok(selected);
    }
    let selected: Vec<String> = all
        .iter()
        .filter(|f| is_table(f) && split.is_none_or(|s| in_split(f, s)))
        .cloned()
        .collect();
    if selected.is_empty() {
        return Err(match split {
            Some(split) => format!("no table of split `{split}` ({})", listing()),
            None => listing(),
        });
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn patterns_splits_and_every_table() {
        let all = files(&[
            ".gitattributes",
            "README.md",
            "data/test-00000-of-00001.parquet",
            "data/train-00000-of-00002.parquet",
            "data/train-00001-of-00002.parquet",
            "i2p_benchmark.csv",
            "validation/prompts.jsonl",
        ]);
        assert_eq!(
            select_files(&all, &[], Some("train")).unwrap(),
            files(&[
                "data/train-00000-of-00002.parquet",
                "data/train-00001-of-00002.parquet"
            ])
        );
        assert_eq!(
            select_files(&all, &[], Some("validation")).unwrap(),
            files(&["validation/prompts.jsonl"])
        );
        assert_eq!(select_files(&all, &[], None).unwrap().len(), 5);
        assert_eq!(
            select_files(&all, &files(&["*.csv"]), None).unwrap(),
            files(&["i2p_benchmark.csv"])
        );
        assert_eq!(
            select_files(&all, &files(&["data/*.parquet"]), None)
                .unwrap()
                .len(),
            3
        );
        let err = select_files(&all, &files(&["*.parquet"]), None).unwrap_err();
        assert!(err.contains("no file matches `*.parquet`"), "{err}");
        let err = select_files(&all, &[], Some("dev")).unwrap_err();
        assert!(err.contains("no table of split `dev`") && err.contains("i2p_benchmark.csv"));
        let err = select_files(&files(&["README.md"]), &[], None).unwrap_err();
        assert!(err.contains("holds no CSV, JSONL or Parquet file"));
    }
}
