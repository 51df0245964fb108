//! The dataset-level check of `keep_best`: the rows of each prompt pair, gathered from every
//! shard, selected again from their (recomputed) rank scores; each row's `keep_best` reason
//! must be the one the selection gives it.

use std::collections::BTreeMap;

use acs_schema::PairRecord;

use crate::judge::selection::{group_key, selection, Candidate, KEEP_BEST_REASON};

/// One row as the selection check holds it.
struct Row {
    candidate: Candidate,
    stored: Option<String>,
    at: String,
}

/// The rows of every prompt pair of a `keep_best` build.
pub struct SelectionCheck {
    keep: usize,
    groups: BTreeMap<(String, String, String), Vec<Row>>,
}

impl SelectionCheck {
    /// A check keeping the `keep` best renders of each prompt pair.
    pub fn new(keep: usize) -> Self {
        Self {
            keep,
            groups: BTreeMap::new(),
        }
    }

    /// Adds a row with its recomputed rank score; `at` names it.
    pub fn add(&mut self, record: &PairRecord, rank: f32, at: &str) {
        let stored = record
            .reject_reasons
            .iter()
            .find(|r| r.starts_with(KEEP_BEST_REASON))
            .cloned();
        let (category, unsafe_prompt, safe_prompt) = group_key(record);
        let key = (
            category.to_owned(),
            unsafe_prompt.to_owned(),
            safe_prompt.to_owned(),
        );
        self.groups.entry(key).or_default().push(Row {
            candidate: Candidate::of(record, rank),
            stored,
            at: at.to_owned(),
        });
    }

    /// One error per row whose stored `keep_best` reason is not the selection's.
    pub fn errors(self) -> Vec<String> {
        let mut errors = Vec::new();
        for rows in self.groups.values() {
            let candidates: Vec<Candidate> = rows.iter().map(|r| r.candidate.clone()).collect();
            for (row, expected) in rows.iter().zip(selection(&candidates, self.keep)) {
                if row.stored != expected {
                    errors.push(format!(
                        "{}: keep_best: stored {:?}, the selection of its prompt pair's {} \
                         renders gives {:?}",
                        row.at,
                        row.stored,
                        rows.len(),
                        expected
                    ));
                }
            }
        }
        errors
    }
}
