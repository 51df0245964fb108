//! Unknown keys: every table of a manifest is checked against the fields its section type
//! declares (read from serde itself, so there is no second list to keep), and an unknown key
//! is named with the nearest valid one.

use serde::Deserialize;
use serde_aux::serde_introspection::serde_introspect;

use super::attention_section::LocalBlendSection;
use super::sections::{
    AlignmentSection, ColumnsSection, LlmSection, OutputSection, RewriteSection, SamplingSection,
    SourceSection, ValidationSection,
};
use super::{BuildManifest, ModelSection};
use crate::error::AcsError;

/// The keys a section type accepts.
fn keys_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    serde_introspect::<T>()
}

/// The candidate closest to `word` by character edit distance, if any is reasonably close.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let length = word.chars().count();
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c), *c))
        .filter(|(distance, c)| *distance <= (c.len().max(length) / 2).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

fn unknown_key(origin: &str, table: &str, key: &str, valid: &[&str]) -> AcsError {
    let hint = match nearest(key, valid) {
        Some(near) => format!(" (did you mean `{near}`?)"),
        None => format!(" (valid keys: {})", valid.join(", ")),
    };
    AcsError::input(format!("{origin}: {table}: unknown key `{key}`{hint}"))
}

fn check_table(
    value: &toml::Value,
    origin: &str,
    name: &str,
    valid: &[&str],
) -> Result<(), AcsError> {
    let Some(table) = value.as_table() else {
        return Err(AcsError::input(format!("{origin}: {name} must be a table")));
    };
    for key in table.keys() {
        if !valid.contains(&key.as_str()) {
            return Err(unknown_key(origin, name, key, valid));
        }
    }
    Ok(())
}

/// Refuses any key that no section declares; `origin` names the file.
pub fn check_keys(table: &toml::Table, origin: &str) -> Result<(), AcsError> {
    for (key, value) in table {
        match key.as_str() {
            "model" => check_table(value, origin, "[model]", keys_of::<ModelSection>())?,
            "sampling" => check_table(value, origin, "[sampling]", keys_of::<SamplingSection>())?,
            "alignment" => {
                check_table(value, origin, "[alignment]", keys_of::<AlignmentSection>())?;
                if let Some(blend) = value.get("local_blend").filter(|b| b.is_table()) {
                    let name = "[alignment].local_blend";
                    check_table(blend, origin, name, keys_of::<LocalBlendSection>())?;
                }
            }
            "output" => check_table(value, origin, "[output]", keys_of::<OutputSection>())?,
            "validation" => check_table(
                value,
                origin,
                "[validation]",
                keys_of::<ValidationSection>(),
            )?,
            "rewrite" => {
                check_table(value, origin, "[rewrite]", keys_of::<RewriteSection>())?;
                if let Some(llm) = value.get("llm") {
                    check_table(llm, origin, "[rewrite.llm]", keys_of::<LlmSection>())?;
                }
            }
            "sources" => {
                let Some(entries) = value.as_array() else {
                    return Err(AcsError::input(format!(
                        "{origin}: sources must be an array of tables ([[sources]])"
                    )));
                };
                for (i, entry) in entries.iter().enumerate() {
                    let name = format!("[[sources]] #{}", i + 1);
                    check_table(entry, origin, &name, keys_of::<SourceSection>())?;
                    if let Some(columns) = entry.get("columns") {
                        let table = format!("{name}.columns");
                        check_table(columns, origin, &table, keys_of::<ColumnsSection>())?;
                    }
                }
            }
            other => {
                return Err(unknown_key(
                    origin,
                    "top level",
                    other,
                    keys_of::<BuildManifest>(),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            nearest("stpes", &["steps", "height", "width"]),
            Some("steps")
        );
        assert_eq!(nearest("zzzzzzzz", &["steps", "seed"]), None);
    }

    #[test]
    fn keys_come_from_the_section_types() {
        assert_eq!(
            keys_of::<ModelSection>(),
            [
                "path",
                "repo",
                "embedded",
                "revision",
                "dtype",
                "device",
                "kernel_path"
            ]
        );
        assert!(keys_of::<BuildManifest>().contains(&"validation"));
    }
}
