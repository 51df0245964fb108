//! `acs init`: an annotated build manifest to start from, every key with its default and one
//! line of help, and a `[[sources]]` table for a published prompt set's layout.
//!
//! The text is hand-written (assets/init/manifest.toml) because it carries the help; the tests
//! hold it to the code: every key a section accepts is listed, every default shown is the
//! default the manifest reader fills in, and each preset's manifest parses.

use std::path::Path;

use clap::ValueEnum;

use crate::error::AcsError;

const TEMPLATE: &str = include_str!("../../assets/init/manifest.toml");

/// The keys of a `[[sources]]` table that a preset's table does not set, as comments.
const OTHER_SOURCE_KEYS: &str = r#"# Other keys of a [[sources]] table (docs/user-guide.md, "Sources"):
# role = "pairs"                # "pairs", or "benign": prompts rendered once, safe side = unsafe side
# format = "csv"                # column-mapped kinds: csv | jsonl | parquet (unset: from the extension)
# preset = "esd"                # column-mapped kinds: i2p | esd | mma | coprov2 (a published set's columns)
# columns = { prompt = "text" } # which column holds what, over the preset's choice; its keys: prompt,
#                               # unsafe_prompt, safe_prompt, id, seed, guidance_scale, category
# path = "prompts.csv"          # the file, relative to this manifest (not with repo or pairs-join)
# repo = "org/dataset"          # instead of path: a Hugging Face dataset repository
# revision = "main"             # its branch, tag or commit
# split = "train"               # its split
# files = ["data/*.parquet"]    # its files to read
# unsafe_path = "malicious.csv" # pairs-join: the table of unsafe prompts
# safe_path = "clean.csv"       # pairs-join: the table of safe prompts
# on = "case_number"            # pairs-join: the key column both tables share
# category = "sexual"           # the category of rows that name none
# use_seed = true               # I2P / ESD layouts: keep the row's seed
# use_guidance = true           # I2P / ESD layouts: keep the row's guidance scale
# categories = ["sexual"]       # I2P: keep only rows with one of these categories
# hard = true                   # I2P: keep only rows whose hard flag equals this
# min_inappropriate_percentage = 50.0   # I2P: keep only rows at or above these figures
# min_nudity_percentage = 50.0
# min_q16_percentage = 50.0
# min_sd_safety_percentage = 50.0
# min_prompt_toxicity = 0.5
"#;

/// The prompt sources `acs init` writes a `[[sources]]` table for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitPreset {
    /// Explicit (unsafe, safe) pairs, one JSON object per line.
    Pairs,
    /// The I2P benchmark (CSV or Parquet), rewritten by the lexicons.
    I2p,
    /// The ESD layout (ESD, P4D, UnlearnDiff, Ring-A-Bell): case_number, prompt, evaluation_seed.
    Esd,
    /// MMA-Diffusion's adversarial prompts (and their clean prompts as benign rows).
    Mma,
    /// CoProV2: prompt, image, category.
    Coprov2,
    /// Six-CD: malicious and clean prompt tables joined on case_number.
    SixCd,
}

impl InitPreset {
    /// The preset's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pairs => "pairs",
            Self::I2p => "i2p",
            Self::Esd => "esd",
            Self::Mma => "mma",
            Self::Coprov2 => "coprov2",
            Self::SixCd => "six-cd",
        }
    }

    /// The preset's `[[sources]]` tables.
    fn sources(self) -> &'static str {
        match self {
            Self::Pairs => {
                r#"# Where the prompts come from (any number of [[sources]] tables).
[[sources]]
kind = "pairs-jsonl"            # pairs-jsonl | pairs-csv | prompts-txt | i2p-csv | i2p-parquet | prompts | pairs | pairs-join
path = "pairs.jsonl"            # {"unsafe_prompt": ..., "safe_prompt": ..., "category": ..., "seed": ...} per line
category = "sexual"             # the category of rows that name none
"#
            }
            Self::I2p => {
                r#"# Where the prompts come from: the I2P benchmark; each unsafe prompt gets its safe
# counterpart from the category lexicons ([rewrite]).
[[sources]]
kind = "i2p-csv"                # or i2p-parquet
path = "i2p_benchmark.csv"
use_seed = true                 # keep the row's sd_seed
use_guidance = true             # keep the row's sd_guidance_scale
# categories = ["sexual", "violence"]
# min_inappropriate_percentage = 50.0
"#
            }
            Self::Esd => {
                r#"# Where the prompts come from: a table in the ESD layout (case_number, prompt,
# evaluation_seed, evaluation_guidance); the lexicons ([rewrite]) write the safe prompts.
[[sources]]
kind = "prompts"
path = "prompts.csv"
preset = "esd"
category = "sexual"             # the category of rows that name none
"#
            }
            Self::Mma => {
                r#"# Where the prompts come from: MMA-Diffusion's adversarial prompts (adv_prompt), and
# its clean prompts as benign rows (rendered once: what a safety patch must leave alone).
[[sources]]
kind = "prompts"
path = "mma-diffusion-nsfw-adv-prompts.csv"
preset = "mma"
category = "sexual"

[[sources]]
kind = "prompts"
path = "mma-diffusion-nsfw-adv-prompts.csv"
preset = "mma"
role = "benign"                 # reads the clean_prompt column
"#
            }
            Self::Coprov2 => {
                r#"# Where the prompts come from: CoProV2 (prompt, image, category); its category names
# are mapped onto acs's seven.
[[sources]]
kind = "prompts"
path = "CoProv2.csv"
preset = "coprov2"
"#
            }
            Self::SixCd => {
                r#"# Where the prompts come from: Six-CD's malicious and clean prompt tables, joined on
# case_number: each malicious prompt is paired with the clean prompt of its case.
[[sources]]
kind = "pairs-join"
unsafe_path = "malicious.csv"
safe_path = "clean.csv"
on = "case_number"
category = "sexual"
"#
            }
        }
    }
}

/// The annotated manifest of `preset`.
pub fn annotated_manifest(preset: InitPreset) -> String {
    let sources = format!("{}{OTHER_SOURCE_KEYS}", preset.sources());
    TEMPLATE
        .replace("{preset}", &format!("preset {}", preset.name()))
        .replace("{sources}", &sources)
}

/// Writes the annotated manifest of `preset` to `file` (refused when it exists), or returns it
/// for stdout when `file` is `None`.
pub fn init(preset: InitPreset, file: Option<&Path>) -> Result<String, AcsError> {
    let text = annotated_manifest(preset);
    let Some(file) = file else {
        return Ok(text);
    };
    if file.exists() {
        return Err(AcsError::input(format!(
            "{}: exists; acs init writes only a new file",
            file.display()
        )));
    }
    acs_schema::write_atomic(file, text.as_bytes())?;
    Ok(format!(
        "wrote {} (preset {}): edit the [[sources]] paths, then `acs build --manifest {} --out \
         out/NAME --dry-run`\n",
        file.display(),
        preset.name(),
        file.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifest;

    /// The commented `# key = value` lines of a section (up to the next table header).
    fn shown(text: &str, header: &str) -> Vec<(String, String)> {
        let start = text
            .find(&format!("\n{header}\n"))
            .unwrap_or_else(|| panic!("no {header}"));
        text[start + header.len() + 2..]
            .lines()
            .take_while(|l| !l.starts_with('[') && !l.starts_with("# [") && !l.starts_with("{"))
            .filter_map(|l| l.strip_prefix("# "))
            .filter_map(|l| {
                let (key, rest) = l.split_once(" = ")?;
                let key = key.trim();
                if key.contains(' ') || key.is_empty() {
                    return None;
                }
                let value = rest.split("   #").next().unwrap_or(rest);
                let value = match value.split_once(" # ") {
                    Some((v, _)) => v,
                    None => value,
                };
                Some((key.to_owned(), value.trim().to_owned()))
            })
            .collect()
    }

    fn keys<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
        serde_aux::serde_introspection::serde_introspect::<T>()
    }

    #[test]
    fn every_key_is_listed_with_the_default_the_reader_fills_in() {
        use crate::manifest::{
            AlignmentSection, LlmSection, ModelSection, OutputSection, SamplingSection,
            ValidationSection,
        };
        let text = TEMPLATE.replace("{sources}", "");
        let minimal = "[[sources]]\nkind = \"pairs-jsonl\"\npath = \"p.jsonl\"\n";
        let defaults = serde_json::to_value(parse_manifest(minimal, "m.toml").unwrap()).unwrap();
        let sections: [(&str, &str, &[&str]); 6] = [
            ("[model]", "model", keys::<ModelSection>()),
            ("[sampling]", "sampling", keys::<SamplingSection>()),
            ("[alignment]", "alignment", keys::<AlignmentSection>()),
            ("[validation]", "validation", keys::<ValidationSection>()),
            ("[output]", "output", keys::<OutputSection>()),
            ("# [rewrite.llm]", "", keys::<LlmSection>()),
        ];
        for (header, name, accepted) in sections {
            let listed = shown(&text, header);
            for key in accepted {
                assert!(
                    listed.iter().any(|(k, _)| k == key),
                    "{header}: `{key}` is not listed"
                );
            }
            for (key, value) in &listed {
                assert!(
                    accepted.contains(&key.as_str()),
                    "{header}: `{key}` is no key"
                );
                let Some(default) = defaults.get(name).and_then(|s| s.get(key)) else {
                    continue;
                };
                let shown: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                    .unwrap_or_else(|e| panic!("{header}.{key} = {value}: {e}"))["v"]
                    .clone();
                let shown = serde_json::to_value(shown).unwrap();
                let same = match (shown.as_f64(), default.as_f64()) {
                    (Some(a), Some(b)) => (a - b).abs() < 1e-6,
                    _ => shown == *default,
                };
                assert!(
                    same,
                    "{header}.{key}: shows {shown}, the default is {default}"
                );
            }
        }
        for key in ["lexicons", "replace_lexicons", "llm"] {
            assert!(
                text.contains(&format!("# {key} = ")) || key == "llm",
                "{key}"
            );
        }
        assert!(text.contains("# [rewrite.llm]"));
    }

    #[test]
    fn every_preset_parses_and_names_every_source_key() {
        use crate::manifest::{ColumnsSection, SourceSection};
        for preset in InitPreset::value_variants() {
            let text = annotated_manifest(*preset);
            let manifest = parse_manifest(&text, "init.toml")
                .unwrap_or_else(|e| panic!("{}: {e}", preset.name()));
            assert!(!manifest.sources.is_empty(), "{}", preset.name());
            for key in keys::<SourceSection>() {
                assert!(
                    text.contains(&format!("\n{key} = ")) || text.contains(&format!("# {key} = ")),
                    "{}: source key `{key}` is not listed",
                    preset.name()
                );
            }
            for key in keys::<ColumnsSection>() {
                assert!(text.contains(key), "{}: column `{key}`", preset.name());
            }
            assert!(!text.contains("{preset}") && !text.contains("{sources}"));
        }
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.toml");
        let said = init(InitPreset::Esd, Some(&file)).unwrap();
        assert!(said.contains("preset esd"), "{said}");
        let written = std::fs::read_to_string(&file).unwrap();
        assert_eq!(written, annotated_manifest(InitPreset::Esd));
        std::fs::write(&file, "mine").unwrap();
        let err = init(InitPreset::Pairs, Some(&file))
            .unwrap_err()
            .to_string();
        assert!(err.contains("exists"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    }
}
