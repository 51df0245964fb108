//! `pairs-join`: the unsafe prompts in one table, the safe prompts in another, joined on a key
//! column (Six-CD's dual version pairs `malicious.csv` with `clean.csv` by `case_number`, both
//! with `evaluation_seed`). A row without a partner, a key that repeats, or partners whose seeds
//! disagree become rejects.

use std::collections::HashMap;
use std::path::PathBuf;

use super::categories::row_categories;
use super::mapped::{parse_guidance, parse_seed, table_format, ColumnMap, Field, Resolved};
use super::table::{Table, TableRow};
use super::{PromptSource, Prompts, Reject, SourceBatch, SourceItem};
use crate::error::AcsError;
use crate::manifest::TableFormat;

/// The `pairs-join` reader.
pub struct PairsJoin {
    /// The table of unsafe prompts.
    pub unsafe_path: PathBuf,
    /// The table of safe prompts.
    pub safe_path: PathBuf,
    /// Their format; `None`: from each file's extension.
    pub format: Option<TableFormat>,
    /// The key column both tables share.
    pub on: String,
    /// Which column holds the prompt, seed, guidance, category (the same in both tables).
    pub map: ColumnMap,
    /// The category of rows that name none.
    pub category: Option<String>,
    /// Keep the rows' seeds.
    pub use_seed: bool,
    /// Keep the rows' guidance scales.
    pub use_guidance: bool,
}

/// One side's rows by key, with the rejects of rows without one or with a repeated one.
fn keyed<'t>(
    table: &'t Table,
    key: usize,
    batch: &mut SourceBatch,
) -> (Vec<(String, &'t TableRow)>, HashMap<String, usize>) {
    let mut order = Vec::new();
    let mut index = HashMap::new();
    for row in &table.rows {
        let Some(value) = row.get(Some(key)).map(|k| k.trim().to_owned()) else {
            let name = &table.columns[key];
            batch.rejects.push(Reject::at(
                &row.origin,
                "invalid-row",
                format!("empty key `{name}`"),
            ));
            continue;
        };
        if index.contains_key(&value) {
            let mut origin = row.origin.clone();
            origin.id = Some(value.clone());
            batch.rejects.push(Reject::at(
                &origin,
                "duplicate-key",
                format!("key `{value}` came earlier in {}", table.path.display()),
            ));
            continue;
        }
        index.insert(value.clone(), order.len());
        order.push((value, row));
    }
    (order, index)
}

impl PairsJoin {
    fn side(
        &self,
        path: &std::path::Path,
        batch: &mut SourceBatch,
    ) -> Result<(Table, Resolved, usize), AcsError> {
        let table = Table::read(path, table_format(path, self.format)?, batch)?;
        let columns = self.map.resolve(&table, &[Field::Prompt])?;
        let key = table.column(&[self.on.as_str()]).ok_or_else(|| {
            table.missing(
                &format!("`{}`", self.on),
                "the key column of pairs-join (`on`)",
            )
        })?;
        Ok((table, columns, key))
    }
}

impl PromptSource for PairsJoin {
    fn read(&self, batch: &mut SourceBatch) -> Result<(), AcsError> {
        let (unsafe_table, unsafe_columns, unsafe_key) = self.side(&self.unsafe_path, batch)?;
        let (safe_table, safe_columns, safe_key) = self.side(&self.safe_path, batch)?;
        let (unsafe_rows, _) = keyed(&unsafe_table, unsafe_key, batch);
        let (safe_rows, safe_index) = keyed(&safe_table, safe_key, batch);
        let mut partnered = vec![false; safe_rows.len()];
        for (key, row) in &unsafe_rows {
            let mut origin = row.origin.clone();
            origin.id = Some(key.clone());
            let Some(&at) = safe_index.get(key) else {
                batch.rejects.push(Reject::at(
                    &origin,
                    "no-partner",
                    format!(
                        "no row of {} has {} `{key}`",
                        self.safe_path.display(),
                        self.on
                    ),
                ));
                continue;
            };
            partnered[at] = true;
            let safe_row = safe_rows[at].1;
            match self.item(origin, (row, &unsafe_columns), (safe_row, &safe_columns)) {
                Ok(item) => batch.items.push(item),
                Err(reject) => batch.rejects.push(*reject),
            }
        }
        for ((key, row), _) in safe_rows.iter().zip(&partnered).filter(|(_, p)| !**p) {
            let mut origin = row.origin.clone();
            origin.id = Some(key.clone());
            batch.rejects.push(Reject::at(
                &origin,
                "no-partner",
                format!(
                    "no row of {} has {} `{key}`",
                    self.unsafe_path.display(),
                    self.on
                ),
            ));
        }
        Ok(())
    }
}

impl PairsJoin {
    /// The pair of two partner rows.
    fn item(
        &self,
        origin: super::Origin,
        (unsafe_row, unsafe_columns): (&TableRow, &Resolved),
        (safe_row, safe_columns): (&TableRow, &Resolved),
    ) -> Result<SourceItem, Box<Reject>> {
        let reject = |reason: &str, detail: String| Box::new(Reject::at(&origin, reason, detail));
        let prompt = |row: &TableRow, columns: &Resolved, side: &str| {
            row.get(columns.index(Field::Prompt))
                .map(|p| crate::prompts::text::clean(&p))
                .filter(|p| !p.is_empty())
                .ok_or_else(|| reject("invalid-row", format!("empty {side} prompt")))
        };
        let unsafe_prompt = prompt(unsafe_row, unsafe_columns, "unsafe")?;
        let safe_prompt = prompt(safe_row, safe_columns, "safe")?;
        let attach = |r: Box<Reject>| Box::new(r.with_prompts(&unsafe_prompt, Some(&safe_prompt)));
        let seed_of = |row: &TableRow, columns: &Resolved| {
            row.get(columns.index(Field::Seed))
                .filter(|_| self.use_seed)
                .map(|t| parse_seed(&t))
                .transpose()
                .map_err(|d| attach(reject("invalid-row", d)))
        };
        let (unsafe_seed, safe_seed) = (
            seed_of(unsafe_row, unsafe_columns)?,
            seed_of(safe_row, safe_columns)?,
        );
        if let (Some(u), Some(s)) = (unsafe_seed, safe_seed) {
            if u != s {
                return Err(attach(reject(
                    "seed-mismatch",
                    format!("the unsafe row's seed {u} differs from the safe row's {s}"),
                )));
            }
        }
        let guidance_scale = unsafe_row
            .get(unsafe_columns.index(Field::Guidance))
            .filter(|_| self.use_guidance)
            .map(|t| parse_guidance(&t))
            .transpose()
            .map_err(|d| attach(reject("invalid-row", d)))?;
        let categories = match unsafe_row.get(unsafe_columns.index(Field::Category)) {
            Some(named) => row_categories(&named),
            None => self.category.clone().map(|c| vec![c]).ok_or_else(|| {
                "no category (set `category` in the row or in [[sources]])".to_owned()
            }),
        }
        .map_err(|d| attach(reject("bad-category", d)))?;
        Ok(SourceItem {
            prompts: Prompts::Pair {
                unsafe_prompt,
                safe_prompt,
            },
            categories,
            seed: unsafe_seed.or(safe_seed),
            guidance_scale,
            origin,
        })
    }
}
