//! Every text source names the same line for the same row whatever its line endings: LF,
//! CR LF, a UTF-8 byte-order mark, no final newline.

use std::path::Path;

use super::table::Table;
use super::{PairsCsv, PairsJsonl, PromptSource, PromptsTxt, SourceBatch};
use crate::manifest::{SourceRole, TableFormat};

/// The four spellings of one file: LF, CR LF, BOM + LF, LF without the last newline.
fn spellings(lf_text: &str) -> Vec<(&'static str, Vec<u8>)> {
    let crlf = lf_text.replace('\n', "\r\n");
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(lf_text.as_bytes());
    vec![
        ("LF", lf_text.as_bytes().to_vec()),
        ("CRLF", crlf.into_bytes()),
        ("BOM", bom),
        (
            "no final newline",
            lf_text.trim_end_matches('\n').as_bytes().to_vec(),
        ),
    ]
}

/// (item lines, reject lines) of each spelling of `text`, read by `read`.
fn lines_of(
    text: &str,
    name: &str,
    read: impl Fn(&Path, &mut SourceBatch),
) -> Vec<(&'static str, Vec<usize>, Vec<usize>)> {
    let dir = tempfile::tempdir().unwrap();
    spellings(text)
        .into_iter()
        .map(|(label, bytes)| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let mut batch = SourceBatch::default();
            read(&path, &mut batch);
            let items = batch.items.iter().map(|i| i.origin.line).collect();
            let rejects = batch.rejects.iter().map(|r| r.line).collect();
            (label, items, rejects)
        })
        .collect()
}

fn assert_lines(
    text: &str,
    name: &str,
    read: impl Fn(&Path, &mut SourceBatch),
    items: &[usize],
    rejects: &[usize],
) {
    for (label, got_items, got_rejects) in lines_of(text, name, read) {
        assert_eq!(got_items, items, "{name}, {label}: item lines");
        assert_eq!(got_rejects, rejects, "{name}, {label}: reject lines");
    }
}

/// A `pairs-csv` source's items and rejects.
fn read_pairs_csv(path: &Path, batch: &mut SourceBatch) {
    let source = PairsCsv {
        path: path.to_path_buf(),
        category: Some("sexual".into()),
        role: SourceRole::Pairs,
    };
    source.read(batch).unwrap();
}

#[test]
fn csv_pairs_name_the_record_line() {
    // Row 2 is fine, row 3 has a bad seed, row 4's prompt spans two lines, row 6 is fine.
    let text = "unsafe_prompt,safe_prompt,seed\n\
                a nude figure,a clothed figure,1\n\
                a bloody hand,a clean hand,x\n\
                \"a nude\nstatue\",a clothed statue,2\n\
                a bloody knife,a clean knife,3\n";
    assert_lines(text, "p.csv", read_pairs_csv, &[2, 4, 6], &[3]);
}

#[test]
fn a_one_row_csv_names_line_two() {
    assert_lines(
        "unsafe_prompt,safe_prompt\na cat,a cat\n",
        "one.csv",
        read_pairs_csv,
        &[2],
        &[],
    );
}

#[test]
fn column_mapped_csv_and_jsonl_name_the_record_line() {
    /// A column-mapped table's rows, as items carrying their origins.
    fn read_table(format: TableFormat) -> impl Fn(&Path, &mut SourceBatch) {
        move |path, batch| {
            let table = Table::read(path, format, batch).unwrap();
            let rows = table.rows.into_iter().map(|row| super::SourceItem {
                prompts: super::Prompts::Benign(String::new()),
                categories: Vec::new(),
                seed: None,
                guidance_scale: None,
                origin: row.origin,
            });
            batch.items.extend(rows);
        }
    }
    let csv = "prompt,seed\nfirst,1\n\"second\nrow\",2\nthird,3\n";
    assert_lines(csv, "m.csv", read_table(TableFormat::Csv), &[2, 3, 5], &[]);
    let jsonl = "{\"prompt\": \"first\"}\n{broken\n{\"prompt\": \"third\"}\n";
    assert_lines(
        jsonl,
        "m.jsonl",
        read_table(TableFormat::Jsonl),
        &[1, 3],
        &[2],
    );
}

#[test]
fn jsonl_pairs_and_text_prompts_name_the_file_line() {
    let jsonl = "{\"unsafe_prompt\": \"a nude figure\", \"safe_prompt\": \"a clothed figure\"}\n\
                 {broken\n\
                 \n\
                 {\"unsafe_prompt\": \"a bloody hand\", \"safe_prompt\": \"a clean hand\"}\n";
    let read = |path: &Path, batch: &mut SourceBatch| {
        let source = PairsJsonl {
            path: path.to_path_buf(),
            category: Some("violence".into()),
            role: SourceRole::Pairs,
        };
        source.read(batch).unwrap();
    };
    assert_lines(jsonl, "p.jsonl", read, &[1, 4], &[2]);
    let read = |path: &Path, batch: &mut SourceBatch| {
        let source = PromptsTxt {
            path: path.to_path_buf(),
            category: None,
            role: SourceRole::Benign,
        };
        source.read(batch).unwrap();
    };
    assert_lines("a red circle\n\na blue star\n", "p.txt", read, &[1, 3], &[]);
}
