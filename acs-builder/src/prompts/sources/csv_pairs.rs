//! `pairs-csv`: a header row naming `unsafe_prompt`, `safe_prompt` and optionally `category`,
//! `seed`, `guidance_scale` (any order, other columns ignored), then one pair per record. With
//! `role = "benign"` the header names `prompt` instead of the two prompts and `category`.

use std::path::{Path, PathBuf};

use super::{
    benign_item, checked_category, pair_item, read_file, Origin, PromptSource, Reject, SourceBatch,
};
use crate::error::AcsError;
use crate::manifest::SourceRole;

/// The `pairs-csv` reader.
pub struct PairsCsv {
    /// The file.
    pub path: PathBuf,
    /// Category for rows that name none.
    pub category: Option<String>,
    /// Pairs, or benign prompts.
    pub role: SourceRole,
}

/// One CSV record as named text fields.
pub(super) struct CsvRecord {
    pub origin: Origin,
    pub fields: Vec<Option<String>>,
}

/// The 1-based line where a record starts, from its byte offset and the offsets of the text's
/// line feeds (CR LF, LF and a last line without a newline all count alike).
struct LineIndex<'a> {
    bytes: &'a [u8],
    newlines: Vec<u64>,
}

impl<'a> LineIndex<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let newlines = bytes
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .map(|(i, _)| i as u64)
            .collect();
        Self { bytes, newlines }
    }

    fn line_of(&self, byte: u64) -> usize {
        // After a CR LF terminator csv puts the next record's start on the LF (or the CR):
        // the record starts at its first byte that ends no line.
        let start = self.bytes[(byte as usize).min(self.bytes.len())..]
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .map_or(byte, |skip| byte + skip as u64);
        self.newlines.partition_point(|&n| n < start) + 1
    }
}

/// Reads a CSV file with a header row: the column names and every record whose fields are
/// valid UTF-8; records that are not go to the rejects.
pub(super) fn read_csv(
    path: &Path,
    batch: &mut SourceBatch,
) -> Result<(Vec<String>, Vec<CsvRecord>), AcsError> {
    let bytes = read_file(path)?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let header = reader
        .byte_headers()
        .map_err(|e| AcsError::input(format!("{}:1: unreadable header: {e}", path.display())))?
        .iter()
        .map(|name| String::from_utf8_lossy(name).trim().to_owned())
        .collect::<Vec<_>>();
    let mut records = Vec::new();
    let lines = LineIndex::new(bytes);
    for (index, record) in reader.byte_records().enumerate() {
        // The line from the byte offset: csv's own `Position::line` counts a CRLF record
        // terminator differently from LF and names the line before.
        let origin = |position: Option<&csv::Position>| Origin {
            file: path.to_path_buf(),
            line: position.map_or(index + 2, |p| lines.line_of(p.byte())),
            id: None,
        };
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                let line = e.position();
                batch.rejects.push(Reject::at(
                    &origin(line),
                    "invalid-row",
                    format!("CSV: {e}"),
                ));
                continue;
            }
        };
        let origin = origin(record.position());
        let mut fields = Vec::with_capacity(record.len());
        let mut bad = None;
        for (column, raw) in record.iter().enumerate() {
            match crate::prompts::text::decode(raw) {
                Ok(text) => fields.push(Some(text.to_owned())),
                Err(reason) => {
                    let name = header.get(column).map_or("?", String::as_str);
                    bad = Some(format!("column `{name}`: {reason}"));
                    break;
                }
            }
        }
        match bad {
            Some(reason) => batch
                .rejects
                .push(Reject::at(&origin, "invalid-utf8", reason)),
            None => records.push(CsvRecord { origin, fields }),
        }
    }
    Ok((header, records))
}

/// The index of the first column named like one of `names`.
pub(super) fn column(header: &[String], names: &[&str]) -> Option<usize> {
    names
        .iter()
        .find_map(|name| header.iter().position(|h| h.eq_ignore_ascii_case(name)))
}

impl PromptSource for PairsCsv {
    fn read(&self, batch: &mut SourceBatch) -> Result<(), AcsError> {
        let (header, records) = read_csv(&self.path, batch)?;
        let benign = self.role == SourceRole::Benign;
        let prompt_col = column(&header, &["prompt"]);
        if benign && prompt_col.is_none() {
            return Err(AcsError::input(format!(
                "{}:1: the header of a benign source must name `prompt` (found: {})",
                self.path.display(),
                super::quoted_names(&header)
            )));
        }
        let unsafe_col = column(&header, &["unsafe_prompt"]);
        let safe_col = column(&header, &["safe_prompt"]);
        if !benign && (unsafe_col.is_none() || safe_col.is_none()) {
            return Err(AcsError::input(format!(
                "{}:1: the header must name `unsafe_prompt` and `safe_prompt` (found: {})",
                self.path.display(),
                super::quoted_names(&header)
            )));
        }
        let category_col = column(&header, &["category"]);
        let seed_col = column(&header, &["seed"]);
        let guidance_col = column(&header, &["guidance_scale"]);
        for record in records {
            let get = |col: Option<usize>| {
                col.and_then(|c| record.fields.get(c).cloned().flatten())
                    .filter(|v| !v.trim().is_empty())
            };
            let seed = match get(seed_col).map(|v| v.trim().parse::<u64>()) {
                None => None,
                Some(Ok(seed)) => Some(seed),
                Some(Err(_)) => {
                    let detail = format!(
                        "seed `{}` is not an integer",
                        get(seed_col).unwrap_or_default()
                    );
                    batch
                        .rejects
                        .push(Reject::at(&record.origin, "invalid-row", detail));
                    continue;
                }
            };
            let guidance = match get(guidance_col).map(|v| v.trim().parse::<f32>()) {
                None => None,
                Some(Ok(g)) => Some(g),
                Some(Err(_)) => {
                    let detail = "guidance_scale is not a number".to_owned();
                    batch
                        .rejects
                        .push(Reject::at(&record.origin, "invalid-row", detail));
                    continue;
                }
            };
            let item = if benign {
                benign_item(
                    record.origin.clone(),
                    get(prompt_col).as_deref(),
                    seed,
                    guidance,
                )
            } else {
                pair_item(
                    record.origin.clone(),
                    get(unsafe_col).as_deref(),
                    get(safe_col).as_deref(),
                    checked_category(get(category_col), &self.category),
                    seed,
                    guidance,
                )
            };
            match item {
                Ok(item) => batch.items.push(item),
                Err(reject) => batch.rejects.push(*reject),
            }
        }
        Ok(())
    }
}
