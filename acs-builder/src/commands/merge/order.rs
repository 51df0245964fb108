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
    let (mut with, mut without) = (false, false);
    for run in runs {
        for shard in &run.shards {
            match shard.plan_positions.len() as u64 {
                0 if shard.rows > 0 => without = true,
                n if n == shard.rows => with = true,
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
    Ok(with && !without)
}

/// A [`ShardRun`] being read. `shard` and `taken` always point at the next row: a shard is
/// checked and left as soon as its last row is taken (or at once when it has none).
struct Stream<'w> {
    run: &'w ShardRun<'w>,
    /// Index in `run.shards` of the shard being read (`run.shards.len()` when done).
    shard: usize,
    reader: Option<ShardReader>,
    /// Rows read from the open shard and not yet taken.
    rows: VecDeque<PairRecord>,
    /// Rows taken from the open shard.
    taken: u64,
}

impl<'w> Stream<'w> {
    fn open(run: &'w ShardRun<'w>) -> Result<Self, AcsError> {
        let mut stream = Self {
            run,
            shard: 0,
            reader: None,
            rows: VecDeque::new(),
            taken: 0,
        };
        stream.finish_read_shards()?;
        Ok(stream)
    }

    /// The plan position of the next row (`None` when the run is exhausted); without
    /// positions every row of a run sorts alike, so the runs follow each other.
    fn next_key(&self, positions: bool) -> Option<u64> {
        let shard = self.run.shards.get(self.shard)?;
        Some(if positions {
            shard.plan_positions[self.taken as usize]
        } else {
            0
        })
    }

    /// Takes the next row and the shard it is in (there must be one: see `next_key`).
    fn take(&mut self) -> Result<(PairRecord, &'w ShardEntry), AcsError> {
        let entry = self.run.shards[self.shard];
        let location = self.run.location;
        while self.rows.is_empty() {
            let reader = match &mut self.reader {
                Some(reader) => reader,
                None => self.reader.insert(
                    location
                        .open_shard(&entry.path)
                        .map_err(|err| explain(location, entry, err.into()))?,
                ),
            };
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
        let record = self.rows.pop_front().expect("read above");
        self.taken += 1;
        self.finish_read_shards()?;
        Ok((record, entry))
    }

    /// Checks and leaves every shard whose rows were all taken: no rows left over, its
    /// sha256 as the manifest says.
    fn finish_read_shards(&mut self) -> Result<(), AcsError> {
        while let Some(&entry) = self.run.shards.get(self.shard) {
            if self.taken < entry.rows {
                return Ok(());
            }
            let location = self.run.location;
            let mut reader = match self.reader.take() {
                Some(reader) => reader,
                None => location.open_shard(&entry.path)?, // a shard of no rows
            };
            let extra = self.rows.len()
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
                    location.name_of(&entry.path).display(),
                    entry.rows + extra as u64,
                    entry.rows
                )));
            }
            self.rows.clear();
            self.taken = 0;
            self.shard += 1;
        }
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
pub(super) fn in_plan_order<'w>(
    runs: &'w [ShardRun<'w>],
    positions: bool,
    mut each: impl FnMut(PairRecord, &'w ShardRun<'w>, &'w ShardEntry) -> Result<(), AcsError>,
) -> Result<(), AcsError> {
    let mut streams = runs
        .iter()
        .map(Stream::open)
        .collect::<Result<Vec<_>, _>>()?;
    let mut last: Option<u64> = None;
    loop {
        // The stream whose next row comes first (the first run on a tie).
        let next = streams
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.next_key(positions).map(|key| (key, i)))
            .min();
        let Some((key, i)) = next else {
            return Ok(());
        };
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
}
