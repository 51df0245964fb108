//! Value checks of the `[[sources]]` entries: which keys each kind takes, and the rules that
//! tie them together (a file or a repository, the I2P filters, benign sources).

use super::checks::{fail, Check};
use super::sections::{Preset, SourceKind, SourceRole, SourceSection};
use super::{is_pair_category, pair_categories};

/// Checks every source entry.
pub fn check_sources(sources: &[SourceSection]) -> Check {
    if sources.is_empty() {
        return fail("[[sources]]", "at least one source is required");
    }
    for (i, source) in sources.iter().enumerate() {
        let field = format!("[[sources]] #{}", i + 1);
        check_location(source, &field)?;
        check_mapping(source, &field)?;
        check_role(source, &field)?;
        for category in source.category.iter().chain(&source.categories) {
            if !is_pair_category(category) {
                return fail(
                    &format!("{field}.category"),
                    format!("`{category}` is not one of {}", pair_categories()),
                );
            }
        }
        check_i2p_filters(source, &field)?;
    }
    Ok(())
}

/// Where the rows come from: `path`, a `repo`, or (pairs-join) `unsafe_path` and `safe_path`.
fn check_location(source: &SourceSection, field: &str) -> Check {
    let key = |name: &str| format!("{field}.{name}");
    let kind = source.kind;
    if kind == SourceKind::PairsJoin {
        for (name, set) in [
            ("path", source.path.is_some()),
            ("repo", source.repo.is_some()),
        ] {
            if set {
                return fail(
                    &key(name),
                    "a pairs-join source reads `unsafe_path` and `safe_path` instead",
                );
            }
        }
        if source.unsafe_path.is_none() || source.safe_path.is_none() {
            let missing = if source.unsafe_path.is_none() {
                "unsafe_path"
            } else {
                "safe_path"
            };
            return fail(
                &key(missing),
                "a pairs-join source needs both `unsafe_path` and `safe_path`",
            );
        }
    } else {
        for (name, set) in [
            ("unsafe_path", source.unsafe_path.is_some()),
            ("safe_path", source.safe_path.is_some()),
            ("on", source.on.is_some()),
        ] {
            if set {
                return fail(
                    &key(name),
                    format!("only applies to pairs-join, not {kind}"),
                );
            }
        }
        match (&source.path, &source.repo) {
            (Some(_), Some(_)) => {
                return fail(
                    &key("repo"),
                    "`path` and `repo` are both set; a source reads one of them",
                )
            }
            (None, None) => return fail(&key("path"), "missing (or give `repo`)"),
            (None, Some(_)) if !kind.is_mapped() => {
                return fail(
                    &key("repo"),
                    format!(
                        "a {kind} source reads a local file; read a dataset repository with \
                         kind = \"prompts\" or \"pairs\" (and a preset or columns)"
                    ),
                )
            }
            _ => {}
        }
    }
    if source.repo.is_none() {
        let repo_only = [
            ("revision", source.revision.is_some()),
            ("split", source.split.is_some()),
            ("files", !source.files.is_empty()),
        ];
        if let Some((name, _)) = repo_only.iter().find(|(_, set)| *set) {
            return fail(
                &key(name),
                "only applies with `repo` (a Hugging Face dataset)",
            );
        }
    }
    Ok(())
}

/// `format`, `preset` and `columns` belong to the column-mapped kinds.
fn check_mapping(source: &SourceSection, field: &str) -> Check {
    let kind = source.kind;
    let mapped = [
        ("format", source.format.is_some()),
        ("preset", source.preset.is_some()),
        ("columns", source.columns.is_some()),
    ];
    if !kind.is_mapped() {
        if let Some((name, _)) = mapped.iter().find(|(_, set)| *set) {
            return fail(
                &format!("{field}.{name}"),
                format!(
                    "only applies to the column-mapped kinds (prompts, pairs, pairs-join, \
                     i2p-csv, i2p-parquet), not {kind}"
                ),
            );
        }
    }
    // The presets describe one prompt per row; i2p-csv / i2p-parquet are preset i2p.
    let preset_fits = match (kind, source.preset) {
        (SourceKind::I2pCsv | SourceKind::I2pParquet, Some(p)) => p == Preset::I2p,
        (SourceKind::Pairs, Some(_)) => false,
        _ => true,
    };
    if !preset_fits {
        return fail(
            &format!("{field}.preset"),
            format!(
                "the presets describe prompt sets with one prompt per row; use kind = \
                 \"prompts\" (or pairs-join for two files), not {kind}"
            ),
        );
    }
    if let Some(columns) = &source.columns {
        let pair_columns = columns.unsafe_prompt.is_some() || columns.safe_prompt.is_some();
        if pair_columns && kind != SourceKind::Pairs {
            return fail(
                &format!("{field}.columns"),
                format!("`unsafe_prompt` / `safe_prompt` columns belong to kind = \"pairs\"; a {kind} source names `prompt`"),
            );
        }
        if columns.prompt.is_some() && kind == SourceKind::Pairs {
            return fail(
                &format!("{field}.columns.prompt"),
                "a pairs source names `unsafe_prompt` and `safe_prompt`",
            );
        }
        let empty = [
            &columns.prompt,
            &columns.unsafe_prompt,
            &columns.safe_prompt,
            &columns.id,
            &columns.seed,
            &columns.guidance_scale,
            &columns.category,
        ]
        .into_iter()
        .flatten()
        .any(|name| name.trim().is_empty());
        if empty {
            return fail(&format!("{field}.columns"), "a column name is empty");
        }
    }
    Ok(())
}

/// Benign sources: one prompt per row, no category.
fn check_role(source: &SourceSection, field: &str) -> Check {
    if source.role != SourceRole::Benign {
        return Ok(());
    }
    if source.category.is_some() || !source.categories.is_empty() {
        let key = if source.category.is_some() {
            "category"
        } else {
            "categories"
        };
        return fail(
            &format!("{field}.{key}"),
            "a benign source has no category (its rows are category `benign`); remove the key",
        );
    }
    let kind = source.kind;
    let fits = matches!(
        kind,
        SourceKind::PromptsTxt
            | SourceKind::PairsJsonl
            | SourceKind::PairsCsv
            | SourceKind::Prompts
    );
    if !fits || source.preset == Some(Preset::I2p) {
        return fail(
            &format!("{field}.role"),
            format!(
                "benign prompts come from prompts-txt, pairs-jsonl, pairs-csv or prompts \
                 sources (a `prompt` field), not from {}",
                if kind.is_i2p() || source.preset == Some(Preset::I2p) {
                    "I2P".to_owned()
                } else {
                    kind.to_string()
                }
            ),
        );
    }
    Ok(())
}

/// The I2P filters need the I2P layout.
fn check_i2p_filters(source: &SourceSection, field: &str) -> Check {
    let i2p = source.kind.is_i2p() || source.preset == Some(Preset::I2p);
    let i2p_only = [
        ("categories", !source.categories.is_empty()),
        ("hard", source.hard.is_some()),
        (
            "min_inappropriate_percentage",
            source.min_inappropriate_percentage.is_some(),
        ),
        (
            "min_nudity_percentage",
            source.min_nudity_percentage.is_some(),
        ),
        ("min_q16_percentage", source.min_q16_percentage.is_some()),
        (
            "min_sd_safety_percentage",
            source.min_sd_safety_percentage.is_some(),
        ),
        ("min_prompt_toxicity", source.min_prompt_toxicity.is_some()),
    ];
    if let Some((key, _)) = i2p_only.iter().find(|(_, set)| *set && !i2p) {
        return fail(
            &format!("{field}.{key}"),
            format!(
                "only applies to i2p-csv and i2p-parquet sources (or preset = \"i2p\"), not {}",
                source.kind
            ),
        );
    }
    Ok(())
}
