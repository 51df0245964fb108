//! Column-mapped sources: `kind = "prompts"` (one unsafe prompt per row, to rewrite) and
//! `kind = "pairs"` (explicit pairs) over a CSV, JSONL or Parquet table, with the columns named
//! by a preset of a published prompt set or a `columns` table. `i2p-csv` / `i2p-parquet` are
//! this reader with preset `i2p`.

use std::path::PathBuf;

use super::categories::row_categories;
use super::i2p::I2pFilter;
use super::table::{Table, TableRow};
use super::{PromptSource, Prompts, Reject, SourceBatch, SourceItem};
use crate::error::AcsError;
use crate::manifest::{
    ColumnsSection, Preset, SourceKind, SourceRole, TableFormat, BENIGN_CATEGORY, CATEGORIES,
};

/// What a mapped column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The prompt (`prompts`, benign sources, both sides of `pairs-join`).
    Prompt,
    /// The unsafe prompt (`pairs`).
    UnsafePrompt,
    /// The safe prompt (`pairs`).
    SafePrompt,
    /// An id or case number.
    Id,
    /// The seed.
    Seed,
    /// The guidance scale.
    Guidance,
    /// The category (or a comma-separated list).
    Category,
}

impl Field {
    /// The key of `columns = { ... }` that names it.
    pub fn key(self) -> &'static str {
        match self {
            Self::Prompt => "prompt",
            Self::UnsafePrompt => "unsafe_prompt",
            Self::SafePrompt => "safe_prompt",
            Self::Id => "id",
            Self::Seed => "seed",
            Self::Guidance => "guidance_scale",
            Self::Category => "category",
        }
    }
}

/// Where each field may be found: the columns a user named (which must exist) or a preset's /
/// the defaults' candidates (the first present wins; absent is fine unless required).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnMap {
    /// Per field: (candidate names, named by the user).
    entries: Vec<(Field, Vec<String>, bool)>,
    /// Where the choice came from, for messages (`preset esd`, `columns`).
    origin: String,
}

/// The column index of each field found in one table.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    indices: Vec<(Field, usize)>,
}

impl Resolved {
    /// The column of `field`, if the table has one.
    pub fn index(&self, field: Field) -> Option<usize> {
        self.indices
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, i)| *i)
    }
}

impl ColumnMap {
    /// The map of a source: the preset's (or the defaults') candidates, overridden by
    /// `columns`.
    pub fn new(preset: Option<Preset>, role: SourceRole, columns: Option<&ColumnsSection>) -> Self {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let prompt: &[&str] = match (preset, role) {
            (Some(Preset::Mma), SourceRole::Benign) => &["clean_prompt"],
            (Some(Preset::Mma), _) => &["adv_prompt"],
            _ => &["prompt"],
        };
        let seed: &[&str] = match preset {
            Some(Preset::I2p) => &["sd_seed", "evaluation_seed", "seed"],
            Some(Preset::Esd) => &["evaluation_seed", "seed"],
            _ => &["seed"],
        };
        let guidance: &[&str] = match preset {
            Some(Preset::I2p) => &["sd_guidance_scale", "evaluation_guidance", "guidance_scale"],
            Some(Preset::Esd) => &["evaluation_guidance", "guidance_scale"],
            _ => &["guidance_scale"],
        };
        let id: &[&str] = match preset {
            Some(Preset::Esd) => &["case_number"],
            _ => &["id", "case_number"],
        };
        let defaults = [
            (Field::Prompt, names(prompt)),
            (Field::UnsafePrompt, names(&["unsafe_prompt"])),
            (Field::SafePrompt, names(&["safe_prompt"])),
            (Field::Id, names(id)),
            (Field::Seed, names(seed)),
            (Field::Guidance, names(guidance)),
            (Field::Category, names(&["categories", "category"])),
        ];
        let given = |field: Field| -> Option<String> {
            let c = columns?;
            match field {
                Field::Prompt => c.prompt.clone(),
                Field::UnsafePrompt => c.unsafe_prompt.clone(),
                Field::SafePrompt => c.safe_prompt.clone(),
                Field::Id => c.id.clone(),
                Field::Seed => c.seed.clone(),
                Field::Guidance => c.guidance_scale.clone(),
                Field::Category => c.category.clone(),
            }
        };
        let entries = defaults
            .into_iter()
            .map(|(field, candidates)| match given(field) {
                Some(name) => (field, vec![name], true),
                None => (field, candidates, false),
            })
            .collect();
        let origin = match (preset, columns.is_some()) {
            (Some(p), true) => format!("preset {}, columns", preset_name(p)),
            (Some(p), false) => format!("preset {}", preset_name(p)),
            (None, true) => "columns".to_owned(),
            (None, false) => "the default columns".to_owned(),
        };
        Self { entries, origin }
    }

    /// Finds the fields in `table`: `required` ones and every column a user named must be
    /// there (an error names the file and the columns it has).
    pub fn resolve(&self, table: &Table, required: &[Field]) -> Result<Resolved, AcsError> {
        let mut resolved = Resolved::default();
        for (field, candidates, named) in &self.entries {
            let wanted: Vec<&str> = candidates.iter().map(String::as_str).collect();
            match table.column(&wanted) {
                Some(index) => resolved.indices.push((*field, index)),
                None if *named || required.contains(field) => {
                    let what = wanted
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(" or ");
                    let why = format!("the {} column of {}", field.key(), self.origin);
                    return Err(table.missing(&what, &why));
                }
                None => {}
            }
        }
        for field in required {
            if let Some(index) = resolved.index(*field) {
                table.require_text(index)?;
            }
        }
        Ok(resolved)
    }
}

fn preset_name(preset: Preset) -> &'static str {
    match preset {
        Preset::I2p => "i2p",
        Preset::Esd => "esd",
        Preset::Mma => "mma",
        Preset::Coprov2 => "coprov2",
    }
}

/// A column-mapped source over one or more files of one layout.
pub struct MappedSource {
    /// The files, in order (several for a dataset repository).
    pub paths: Vec<PathBuf>,
    /// Their format; `None`: from each file's extension.
    pub format: Option<TableFormat>,
    /// `prompts` or `pairs` (`i2p-*` read as `prompts`).
    pub kind: SourceKind,
    /// Pairs or benign prompts.
    pub role: SourceRole,
    /// Which column holds what.
    pub map: ColumnMap,
    /// The category of rows that name none.
    pub category: Option<String>,
    /// The I2P filter (preset i2p), whose rows must name their categories.
    pub i2p: Option<I2pFilter>,
    /// Keep the rows' seeds.
    pub use_seed: bool,
    /// Keep the rows' guidance scales.
    pub use_guidance: bool,
}

/// The format of `path`: the source's, else its extension's.
pub fn table_format(
    path: &std::path::Path,
    format: Option<TableFormat>,
) -> Result<TableFormat, AcsError> {
    format
        .or_else(|| TableFormat::of_path(path))
        .ok_or_else(|| {
            AcsError::input(format!(
                "{}: cannot tell the format from the file name; set format = \"csv\", \"jsonl\" \
                 or \"parquet\" in its [[sources]] entry",
                path.display()
            ))
        })
}

impl PromptSource for MappedSource {
    fn read(&self, batch: &mut SourceBatch) -> Result<(), AcsError> {
        let required: &[Field] = match (self.kind, self.role) {
            (SourceKind::Pairs, _) => &[Field::UnsafePrompt, Field::SafePrompt],
            _ => &[Field::Prompt],
        };
        for path in &self.paths {
            let table = Table::read(path, table_format(path, self.format)?, batch)?;
            let columns = self.map.resolve(&table, required)?;
            for row in &table.rows {
                match self.item(&table, row, &columns) {
                    Ok(Some(item)) => batch.items.push(item),
                    Ok(None) => batch.filtered += 1,
                    Err(reject) => batch.rejects.push(*reject),
                }
            }
        }
        Ok(())
    }
}

impl MappedSource {
    /// The item of a row; `Ok(None)` when a filter leaves it out.
    fn item(
        &self,
        table: &Table,
        row: &TableRow,
        columns: &Resolved,
    ) -> Result<Option<SourceItem>, Box<Reject>> {
        let mut origin = row.origin.clone();
        origin.id = row.get(columns.index(Field::Id));
        let text = |field: Field| {
            row.get(columns.index(field))
                .map(|p| crate::prompts::text::clean(&p))
                .filter(|p| !p.is_empty())
        };
        let empty = |field: Field| {
            let name = columns
                .index(field)
                .map_or(field.key(), |i| table.columns[i].as_str());
            Box::new(Reject::at(
                &origin,
                "invalid-row",
                format!("empty `{name}`"),
            ))
        };
        let prompts = match (self.kind, self.role) {
            (_, SourceRole::Benign) => {
                Prompts::Benign(text(Field::Prompt).ok_or_else(|| empty(Field::Prompt))?)
            }
            (SourceKind::Pairs, _) => Prompts::Pair {
                unsafe_prompt: text(Field::UnsafePrompt)
                    .ok_or_else(|| empty(Field::UnsafePrompt))?,
                safe_prompt: text(Field::SafePrompt).ok_or_else(|| empty(Field::SafePrompt))?,
            },
            _ => Prompts::Unsafe(text(Field::Prompt).ok_or_else(|| empty(Field::Prompt))?),
        };
        let with_prompts = |reject: Reject| -> Box<Reject> {
            Box::new(match &prompts {
                Prompts::Pair {
                    unsafe_prompt,
                    safe_prompt,
                } => reject.with_prompts(unsafe_prompt, Some(safe_prompt)),
                Prompts::Unsafe(p) | Prompts::Benign(p) => reject.with_prompts(p, None),
            })
        };
        let categories = self
            .categories(row.get(columns.index(Field::Category)))
            .map_err(|detail| with_prompts(Reject::at(&origin, "bad-category", detail)))?;
        if let Some(filter) = &self.i2p {
            if !filter.keeps(table, row, &categories)? {
                return Ok(None);
            }
        }
        let seed = match row
            .get(columns.index(Field::Seed))
            .filter(|_| self.use_seed)
        {
            None => None,
            Some(text) => Some(
                parse_seed(&text).map_err(|d| Box::new(Reject::at(&origin, "invalid-row", d)))?,
            ),
        };
        let guidance_scale = match row
            .get(columns.index(Field::Guidance))
            .filter(|_| self.use_guidance)
        {
            None => None,
            Some(text) => Some(
                parse_guidance(&text)
                    .map_err(|d| Box::new(Reject::at(&origin, "invalid-row", d)))?,
            ),
        };
        Ok(Some(SourceItem {
            prompts,
            categories,
            seed,
            guidance_scale,
            origin,
        }))
    }

    /// A row's candidate categories: its own (mapped onto the seven), else the source's, else
    /// (prompts to rewrite) every category, the lexicons deciding.
    fn categories(&self, named: Option<String>) -> Result<Vec<String>, String> {
        if self.role == SourceRole::Benign {
            return Ok(vec![BENIGN_CATEGORY.to_owned()]);
        }
        if let Some(named) = named {
            return row_categories(&named);
        }
        if let Some(category) = &self.category {
            return Ok(vec![category.clone()]);
        }
        match (self.kind, &self.i2p) {
            (_, Some(_)) => Err("no categories".to_owned()),
            (SourceKind::Pairs, None) => {
                Err("no category (set `category` in the row or in [[sources]])".to_owned())
            }
            _ => Ok(CATEGORIES.iter().map(|c| c.to_string()).collect()),
        }
    }
}

/// A seed field: a non-negative integer (also written as `42.0`).
pub fn parse_seed(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    if let Ok(seed) = trimmed.parse::<u64>() {
        return Ok(seed);
    }
    match trimmed.parse::<f64>() {
        Ok(seed) if seed >= 0.0 && seed.fract() == 0.0 && seed < 1.8e19 => Ok(seed as u64),
        Ok(seed) => Err(format!("seed {seed} is not a non-negative integer")),
        Err(_) => Err(format!("seed `{trimmed}` is not a number")),
    }
}

/// A guidance-scale field: a number >= 0.
pub fn parse_guidance(text: &str) -> Result<f32, String> {
    let max = f64::from(crate::manifest::MAX_GUIDANCE_SCALE);
    match text.trim().parse::<f64>() {
        Ok(g) if g.is_finite() && (0.0..=max).contains(&g) => Ok(g as f32),
        Ok(g) => Err(format!("guidance scale {g} is not in [0, {max}]")),
        Err(_) => Err(format!("guidance scale `{}` is not a number", text.trim())),
    }
}
