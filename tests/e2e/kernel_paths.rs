//! CPU kernel paths (`runtime::kernel_path`): every row, shard entry, manifest and card names
//! the path that rendered it; replay is bit for bit on a row's own path and within tolerance
//! on another; a build resumed, or sliced, across paths keeps working; bad choices are one
//! line and exit 2.

use std::path::{Path, PathBuf};

use acs_builder::runtime::KernelPath;
use acs_schema::{DatasetManifest, PairRecord};

use crate::util::{
    acs_command, assert_exit_2, kernel_paths_here, run, s, sample_manifest, stderr, stdout,
};

const SMALL: &str = "[sampling]\nsteps = 3\nheight = 64\nwidth = 64\nbatch_pairs = 4\n";

/// `acs ARGS` with `ACS_KERNEL_PATH=path` (unset for `None`) and `extra` variables.
fn acs_on(
    home: &Path,
    path: Option<KernelPath>,
    args: &[&str],
    extra: &[(&str, &str)],
) -> std::process::Output {
    let mut command = acs_command(home, args);
    match path {
        Some(path) => command.env("ACS_KERNEL_PATH", path.name()),
        None => command.env_remove("ACS_KERNEL_PATH"),
    };
    command.envs(extra.iter().copied());
    run(command)
}

fn build_on(
    home: &Path,
    path: KernelPath,
    manifest: &Path,
    out: &Path,
    extra: &[(&str, &str)],
) -> std::process::Output {
    acs_on(
        home,
        Some(path),
        &["build", "--manifest", &s(manifest), "--out", &s(out)],
        extra,
    )
}

fn rows(dir: &Path) -> Vec<PairRecord> {
    acs_schema::Dataset::open(dir).unwrap().records().unwrap()
}

/// Two paths this machine may use (the lowest and the highest), or `None` where it has one.
fn two_paths() -> Option<(KernelPath, KernelPath)> {
    let paths = kernel_paths_here();
    (paths.len() >= 2).then(|| (paths[0], paths[paths.len() - 1]))
}

fn small_manifest(dir: &Path) -> PathBuf {
    sample_manifest(dir, "m", SMALL)
}

#[test]
fn a_build_records_its_kernel_path_in_rows_shards_manifest_card_and_report() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let path = KernelPath::CpuGeneric;
    let done = build_on(home.path(), path, &small_manifest(work.path()), &out, &[]);
    assert!(done.status.success(), "{}", stderr(&done));
    assert!(
        stdout(&done).contains("kernel path: cpu-generic"),
        "{}",
        stdout(&done)
    );
    let records = rows(&out);
    assert_eq!(records.len(), 18);
    assert!(records
        .iter()
        .all(|r| r.kernel_path.as_deref() == Some("cpu-generic")));
    let manifest = DatasetManifest::load(&out).unwrap();
    assert_eq!(manifest.kernel_paths, vec!["cpu-generic".to_owned()]);
    assert!(manifest
        .shards
        .iter()
        .all(|shard| shard.kernel_paths == vec!["cpu-generic".to_owned()]));
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.contains("- kernel path: `cpu-generic`"), "{card}");
    assert!(
        card.contains("  - name: kernel_path\n    dtype: string"),
        "{card}"
    );
}

#[test]
fn replay_is_bit_exact_on_a_rows_own_path_and_within_tolerance_on_another() {
    let Some((low, high)) = two_paths() else {
        eprintln!("one kernel path on this CPU: nothing to replay across");
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let done = build_on(home.path(), low, &small_manifest(work.path()), &out, &[]);
    assert!(done.status.success(), "{}", stderr(&done));
    let validate = ["validate", &s(&out), "--replay", "1.0"];

    // Unforced: every row is re-rendered on the path it records, which this CPU runs.
    let own = acs_on(home.path(), None, &validate, &[]);
    assert!(own.status.success(), "{}", stderr(&own));
    let text = stdout(&own);
    assert!(
        text.contains("replay: 18 of 18 re-rendered rows identical"),
        "{text}"
    );
    assert!(!text.contains("kernel paths differ"), "{text}");

    // Forced onto another path: not bit for bit, but within the tolerance, and said so.
    let other = acs_on(home.path(), Some(high), &validate, &[]);
    assert!(other.status.success(), "{}", stderr(&other));
    let text = stdout(&other);
    assert!(
        text.contains("replay: 0 of 18 re-rendered rows identical"),
        "{text}"
    );
    assert!(
        text.contains("replay: 18 rows re-rendered on another kernel path agree within 1e-3"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "kernel paths differ: 18 rows recorded on {low}, replayed on {high}"
        )),
        "{text}"
    );
}

#[test]
fn a_build_resumed_on_another_path_records_both_and_replays_each_row_bit_for_bit() {
    let Some((low, high)) = two_paths() else {
        eprintln!("one kernel path on this CPU: nothing to resume across");
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let manifest = small_manifest(work.path());
    // Shards of 4 rows, so that the first path's run leaves whole shards behind.
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("[output]\n", "[output]\nshard_rows = 4\n");
    std::fs::write(&manifest, text).unwrap();
    let killed = build_on(
        home.path(),
        low,
        &manifest,
        &out,
        &[("ACS_FAULT_ABORT", "manifest-saved:2")],
    );
    assert!(!killed.status.success(), "the fault did not stop the build");
    let resumed = build_on(home.path(), high, &manifest, &out, &[]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(
        stdout(&resumed).contains("resumed an unfinished run"),
        "{}",
        stdout(&resumed)
    );

    let records = rows(&out);
    assert_eq!(records.len(), 18);
    let on = |path: KernelPath| {
        records
            .iter()
            .filter(|r| r.kernel_path.as_deref() == Some(path.name()))
            .count()
    };
    assert!(
        on(low) >= 4 && on(high) >= 4,
        "{} on {low}, {} on {high}",
        on(low),
        on(high)
    );
    assert_eq!(on(low) + on(high), 18);
    let manifest = DatasetManifest::load(&out).unwrap();
    let mut both = vec![low.name().to_owned(), high.name().to_owned()];
    both.sort();
    assert_eq!(manifest.kernel_paths, both);

    // Each row replays on its own path: all bit for bit.
    let replay = acs_on(
        home.path(),
        None,
        &["validate", &s(&out), "--replay", "1.0"],
        &[],
    );
    assert!(replay.status.success(), "{}", stderr(&replay));
    assert!(
        stdout(&replay).contains("replay: 18 of 18 re-rendered rows identical"),
        "{}",
        stdout(&replay)
    );
}

#[test]
fn worker_slices_rendered_on_two_paths_merge_into_one_dataset_naming_both() {
    let Some((low, high)) = two_paths() else {
        eprintln!("one kernel path on this CPU: nothing to merge across");
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let manifest = small_manifest(work.path());
    let slice = |i: usize| work.path().join(format!("worker-{i}"));
    for (i, path) in [(0, low), (1, high)] {
        let done = acs_on(
            home.path(),
            Some(path),
            &[
                "build",
                "--manifest",
                &s(&manifest),
                "--out",
                &s(slice(i)),
                "--worker",
                &format!("{i}/2"),
            ],
            &[],
        );
        assert!(done.status.success(), "worker {i}: {}", stderr(&done));
    }
    let merged = work.path().join("merged");
    let done = acs_on(
        home.path(),
        None,
        &["merge", &s(slice(0)), &s(slice(1)), "--out", &s(&merged)],
        &[],
    );
    assert!(done.status.success(), "{}", stderr(&done));
    let manifest = DatasetManifest::load(&merged).unwrap();
    let mut both = vec![low.name().to_owned(), high.name().to_owned()];
    both.sort();
    assert_eq!(manifest.kernel_paths, both);
    let card = std::fs::read_to_string(merged.join("README.md")).unwrap();
    assert!(
        card.contains(&format!("`{}`, `{}`", both[0], both[1])),
        "{card}"
    );
}

#[test]
fn bad_kernel_path_choices_are_one_line_and_exit_2() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let manifest = small_manifest(work.path());
    let mut command = acs_command(
        home.path(),
        &["build", "--manifest", &s(&manifest), "--out", &s(&out)],
    );
    command.env("ACS_KERNEL_PATH", "avx2");
    assert_exit_2(
        &run(command),
        &["ACS_KERNEL_PATH", "`avx2` is not a kernel path", "cpu-avx2"],
    );
    assert!(!out.exists(), "nothing is written");

    let with_key = |value: &str| {
        let path = work.path().join(format!("key-{value}.toml"));
        let text = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(&path, format!("[model]\nkernel_path = \"{value}\"\n{text}")).unwrap();
        path
    };
    let typo = with_key("cpu-avx3");
    let done = acs_on(
        home.path(),
        None,
        &["build", "--manifest", &s(&typo), "--out", &s(&out)],
        &[],
    );
    assert_exit_2(
        &done,
        &[
            "key-cpu-avx3.toml",
            "kernel_path",
            "`cpu-avx3` is not a kernel path",
        ],
    );

    let generic = with_key("cpu-generic");
    let both = acs_on(
        home.path(),
        Some(KernelPath::best()),
        &["build", "--manifest", &s(&generic), "--out", &s(&out)],
        &[],
    );
    if KernelPath::best() != KernelPath::CpuGeneric {
        assert_exit_2(
            &both,
            &[
                "[model].kernel_path",
                "ACS_KERNEL_PATH",
                "unset one of them",
            ],
        );
    }
    assert!(!out.join("data").exists(), "nothing is written");
    // The key alone is obeyed.
    let keyed = acs_on(
        home.path(),
        None,
        &["build", "--manifest", &s(&generic), "--out", &s(&out)],
        &[],
    );
    assert!(keyed.status.success(), "{}", stderr(&keyed));
    assert!(rows(&out)
        .iter()
        .all(|r| r.kernel_path.as_deref() == Some("cpu-generic")));
}
