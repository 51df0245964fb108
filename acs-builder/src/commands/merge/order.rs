//! The rows of worker outputs in the order a one-process build writes them. One split at a
//! time, each worker's shards of the split are read as one stream, and the streams are
//! interleaved by the plan positions their manifests record, so the merged shards are cut
//! where a one-process build cuts them. Worker outputs written before acs recorded positions
//! are taken worker after worker. Each shard is read once, one row group at a time, and
//! checked against its manifest's row count and sha256 when it ends.

use std::collections::VecDeque;

use acs_schema::{DatasetLocation, PairRecord, ShardEntry, ShardReader};

use crate::error::AcsError;

/// One worker's shards of one split.
pub(super) struct ShardRun<'w> {
    /// The worker's place in the merge's list of workers.
    pub worker: usize,
    /// The worker's output folder.
    pub location: &'w DatasetLocation,
    /// Its shards of the split, in order.
    pub shards: Vec<&'w ShardEntry>,
}

/// Whether every shard records a plan position for each of its rows (else none may).
pub(super) fn has_plan_positions<'w>(
    runs: impl IntoIterator<Item = &'w ShardRun<'w>>,
) -> Result<bool, AcsError> {
    let mut with = 0usize;
    let mut without = 0usize;
    for run in runs {
        for shard in &run.shards {
            match shard.plan_positions.len() as u64 {
                0 if shard.rows > 0 => without += 1,
                n if n == shard.rows => with += 1,
                n => {
                    return Err(AcsError::integrity(format!(
                        "{}: the manifest records {n} plan positions for {} rows",
                        run.location.name_of(&shard.path).display(),
                        shard.rows
                    )))
                }
            }
        }
    }
    Ok(with > 0 && without == 0)
}

/// A [`ShardRun`] being read.
struct Stream<'w> {
    run: &'w ShardRun<'w>,
    /// Index in `run.shards` of the shard being read (or next to open).
    shard: usize,
    reader: Option<ShardReader>,
    /// Rows read from the open shard and not yet taken.
    rows: VecDeque<PairRecord>,
    /// Rows taken from the open shard.
    taken: u64,
    /// Position of the next row among all rows of the run.
    next_row: usize,
}

impl<'w> Stream<'w> {
    /// The plan position of the next row (`None` when the run is exhausted); without
    /// positions every row of a run sorts alike, so the runs follow each other.
    fn next_key(&self, positions: bool) -> Option<u64> {
        let mut row = self.next_row;
        for shard in &self.run.shards {
            if (row as u64) < shard.rows {
                return Some(if positions {
                    shard.plan_positions[row]
                } else {
                    0
                });
            }
            row -= shard.rows as usize;
        }
        None
    }

    /// Takes the next row and the shard it is in, opening and finishing shards as needed.
    fn take(&mut self) -> Result<(PairRecord, &'w ShardEntry), AcsError> {
        loop {
            let entry = self.run.shards[self.shard];
            if self.taken == entry.rows {
                self.finish_shard()?;
                continue;
            }
            if let Some(record) = self.rows.pop_front() {
                self.taken += 1;
                self.next_row += 1;
                return Ok((record, entry));
            }
            let location = self.run.location;
            if self.reader.is_none() {
                self.reader = Some(
                    location
                        .open_shard(&entry.path)
                        .map_err(|err| explain(location, entry, err.into()))?,
                );
            }
            let reader = self.reader.as_mut().expect("opened above");
            match reader.next_row_group() {
                Ok(Some(rows)) => self.rows.extend(rows),
                Ok(None) => {
                    return Err(AcsError::integrity(format!(
                        "{}: holds {} rows, its manifest says {}",
                        location.name_of(&entry.path).display(),
                        self.taken,
                        entry.rows
                    )))
                }
                Err(err) => return Err(explain(location, entry, err.into())),
            }
        }
    }

    /// Checks the shard whose rows were all taken (no rows left over, its sha256) and moves
    /// to the next.
    fn finish_shard(&mut self) -> Result<(), AcsError> {
        let location = self.run.location;
        let entry = self.run.shards[self.shard];
        let name = location.name_of(&entry.path);
        let reader = match self.reader.take() {
            Some(reader) => reader,
            None => location.open_shard(&entry.path)?, // a shard of no rows
        };
        let mut reader = reader;
        let extra: usize = self.rows.len()
            + std::iter::from_fn(|| reader.next_row_group().ok().flatten())
                .map(|rows| rows.len())
                .sum::<usize>();
        let facts = reader.finish()?;
        if facts.sha256 != entry.sha256 {
            return Err(mismatch(location, entry, &facts.sha256));
        }
        if extra > 0 {
            return Err(AcsError::integrity(format!(
                "{}: holds {} rows, its manifest says {}",
                name.display(),
                entry.rows + extra as u64,
                entry.rows
            )));
        }
        self.rows.clear();
        self.taken = 0;
        self.shard += 1;
        Ok(())
    }
}

fn mismatch(location: &DatasetLocation, entry: &ShardEntry, sha: &str) -> AcsError {
    AcsError::integrity(format!(
        "{}: sha256 mismatch (manifest {}, file {sha})",
        location.name_of(&entry.path).display(),
        entry.sha256
    ))
}

/// A shard that cannot be read is reported as damaged when its bytes differ from the
/// manifest's sha256 (which explains the error), else with the error itself.
fn explain(location: &DatasetLocation, entry: &ShardEntry, err: AcsError) -> AcsError {
    match location.sha256(&entry.path) {
        Ok(sha) if sha != entry.sha256 => mismatch(location, entry, &sha),
        _ => err,
    }
}

/// Hands every row of `runs` (one split) to `each` in plan order (or run after run when
/// `positions` is false), checking that each run's positions increase and that no position
/// is claimed twice.
pub(super) fn in_plan_order(
    runs: &[ShardRun<'_>],
    positions: bool,
    mut each: impl FnMut(PairRecord, &ShardRun<'_>, &ShardEntry) -> Result<(), AcsError>,
) -> Result<(), AcsError> {
    let mut streams: Vec<Stream> = runs
        .iter()
        .map(|run| Stream {
            run,
            shard: 0,
            reader: None,
            rows: VecDeque::new(),
            taken: 0,
            next_row: 0,
        })
        .collect();
    let mut last: Option<u64> = None;
    loop {
        // The stream whose next row comes first (the first run on a tie).
        let next = streams
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.next_key(positions).map(|key| (key, i)))
            .min();
        let Some((key, i)) = next else { break };
        let stream = &mut streams[i];
        if positions && last.is_some_and(|last| key <= last) {
            return Err(AcsError::integrity(format!(
                "{}: plan position {key} is out of order or also claimed by another worker",
                stream
                    .run
                    .location
                    .name_of(acs_schema::MANIFEST_FILE)
                    .display()
            )));
        }
        last = Some(key);
        let (record, entry) = stream.take()?;
        each(record, stream.run, entry)?;
    }
    // Shards whose rows were all taken but were not closed yet (the last of each run), and
    // empty shards.
    for stream in &mut streams {
        while stream.shard < stream.run.shards.len() {
            stream.finish_shard()?;
        }
    }
    Ok(())
}
