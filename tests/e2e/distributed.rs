//! Distributed builds: 4 worker processes (`--worker i/4`, and the Slurm / Kubernetes
//! variables) render disjoint slices; `acs merge` joins them into a dataset equal byte for byte
//! (shards, manifest, card, rejects) to a single-process build; merging twice gives the same
//! bytes; worker outputs without plan positions (older acs) merge worker after worker, row for
//! row equal; missing, overlapping and foreign outputs and broken plan positions are refused.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use acs_schema::{read_shard, DatasetManifest, PairRecord};

use crate::util::{
    acs_command, copy_tree, run, s, smoke_manifest, smoke_manifest_text, text, tree,
};

/// `acs ARGS` with its model cache in `home` and the variables `envs` set (a job array's).
fn acs(home: &Path, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut command = acs_command(home, args);
    command.envs(envs.iter().copied());
    command
}

/// Every row of a dataset by pair id.
fn rows(dir: &Path) -> BTreeMap<String, PairRecord> {
    let manifest = DatasetManifest::load(dir).unwrap();
    let mut out = BTreeMap::new();
    for shard in &manifest.shards {
        for record in read_shard(&dir.join(&shard.path)).unwrap() {
            assert_eq!(record.split, shard.split);
            assert!(out.insert(record.pair_id.clone(), record).is_none());
        }
    }
    out
}

#[test]
fn four_workers_and_merge_equal_a_single_build() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let manifest = s(smoke_manifest());
    let single = work.path().join("single");
    let out = run(acs(
        home.path(),
        &[
            "build",
            "--manifest",
            &manifest,
            "--out",
            &single.display().to_string(),
        ],
        &[],
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Four workers at once, as four processes: two by flag, one as a Slurm array task
    // (indices 1..4), one as a Kubernetes Indexed Job pod.
    let worker_dir = |i: usize| work.path().join(format!("worker-{i}"));
    let dirs: Vec<String> = (0..4)
        .map(|i| worker_dir(i).display().to_string())
        .collect();
    let mut children = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let base = ["build", "--manifest", &manifest, "--out", dir];
        let mut command = match i {
            0 | 1 => {
                let flag = format!("{i}/4");
                let mut args = base.to_vec();
                args.extend(["--worker", &flag]);
                acs(home.path(), &args, &[])
            }
            2 => acs(
                home.path(),
                &base,
                &[
                    ("SLURM_ARRAY_TASK_ID", "3"),
                    ("SLURM_ARRAY_TASK_MIN", "1"),
                    ("SLURM_ARRAY_TASK_COUNT", "4"),
                ],
            ),
            _ => acs(
                home.path(),
                &base,
                &[("JOB_COMPLETION_INDEX", "3"), ("ACS_WORKER_COUNT", "4")],
            ),
        };
        let child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        children.push(child);
    }
    for (i, child) in children.into_iter().enumerate() {
        let child = child.wait_with_output().unwrap();
        assert!(
            child.status.success(),
            "worker {i}: {}",
            text(&child.stderr)
        );
        let m = DatasetManifest::load(&worker_dir(i)).unwrap();
        assert_eq!(m.worker.map(|w| (w.index, w.count)), Some((i as u32, 4)));
    }
    let slices: Vec<usize> = (0..4).map(|i| rows(&worker_dir(i)).len()).collect();
    assert!(slices.iter().all(|&n| n > 0), "{slices:?}");

    let merged = work.path().join("merged");
    let mut args = vec!["merge"];
    args.extend(dirs.iter().rev().map(String::as_str)); // order given does not matter
    let merged_arg = merged.display().to_string();
    args.extend(["--out", &merged_arg]);
    let out = run(acs(home.path(), &args, &[]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        tree(&merged) == tree(&single),
        "the merge differs from a one-process build"
    );

    // Content for content: the same rows, field by field (images and latents included).
    let (ours, theirs) = (rows(&merged), rows(&single));
    assert_eq!(ours.len(), theirs.len());
    assert_eq!(ours, theirs);
    let (m, s) = (
        DatasetManifest::load(&merged).unwrap(),
        DatasetManifest::load(&single).unwrap(),
    );
    assert!(m.complete && m.worker.is_none());
    assert_eq!(m.build_config_sha256, s.build_config_sha256);
    assert_eq!(m.rows_per_split(), s.rows_per_split());
    assert_eq!(
        std::fs::read(merged.join("rejects.jsonl")).unwrap(),
        std::fs::read(single.join("rejects.jsonl")).unwrap()
    );
    for shard in &m.shards {
        assert!(shard.path.contains("-of-"), "{}", shard.path);
    }
    let validate = run(acs(home.path(), &["validate", &merged_arg], &[]));
    assert!(validate.status.success(), "{}", text(&validate.stdout));

    // Merging twice gives the same bytes.
    let again = work.path().join("again");
    let mut args = vec!["merge"];
    args.extend(dirs.iter().map(String::as_str));
    let again_arg = again.display().to_string();
    args.extend(["--out", &again_arg]);
    let out = run(acs(home.path(), &args, &[]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::remove_file(merged.join("validation.json")).unwrap();
    assert!(tree(&merged) == tree(&again), "two merges differ");

    plan_positions_are_checked(home.path(), work.path(), &dirs, &single);

    // Refusals: a missing worker, an overlap, a whole build, a non-empty --out.
    let target = work.path().join("refused").display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![&dirs[0], &dirs[1], &dirs[2]],
            "missing worker outputs: 3/4",
        ),
        (
            vec![&dirs[0], &dirs[0], &dirs[1], &dirs[2], &dirs[3]],
            "overlap",
        ),
        (
            vec![&dirs[0], single.to_str().unwrap()],
            "not a worker output",
        ),
    ];
    for (inputs, expected) in cases {
        let mut args = vec!["merge"];
        args.extend(inputs);
        args.extend(["--out", &target]);
        let out = run(acs(home.path(), &args, &[]));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{expected}: {}",
            text(&out.stdout)
        );
        assert!(
            text(&out.stderr).contains(expected),
            "{}",
            text(&out.stderr)
        );
        assert!(!Path::new(&target).exists());
    }
    let out = run(acs(
        home.path(),
        &[
            "merge",
            &dirs[0],
            &dirs[1],
            &dirs[2],
            "--allow-partial",
            "--out",
            &target,
        ],
        &[],
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("partial"));
    let partial = DatasetManifest::load(Path::new(&target)).unwrap();
    assert_eq!(
        partial.total_rows() as usize,
        slices[..3].iter().sum::<usize>()
    );
    let out = run(acs(
        home.path(),
        &[
            "merge", &dirs[0], &dirs[1], &dirs[2], &dirs[3], "--out", &target,
        ],
        &[],
    ));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not an empty folder"));

    // Another build's worker output is refused.
    let other_manifest = work.path().join("other.toml");
    std::fs::write(
        &other_manifest,
        smoke_manifest_text().replace("steps = 25", "steps = 3"),
    )
    .unwrap();
    let other = work.path().join("other").display().to_string();
    let out = run(acs(
        home.path(),
        &[
            "build",
            "--manifest",
            &other_manifest.display().to_string(),
            "--out",
            &other,
            "--worker",
            "1/4",
        ],
        &[],
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(acs(
        home.path(),
        &[
            "merge",
            &dirs[0],
            &other,
            &dirs[2],
            &dirs[3],
            "--out",
            &work.path().join("x").display().to_string(),
        ],
        &[],
    ));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("one build"),
        "{}",
        text(&out.stderr)
    );
}

/// Copies of the worker outputs `dirs` under `work/name`, each manifest edited by `edit`
/// (given the worker's number).
fn edited_copies(
    work: &Path,
    name: &str,
    dirs: &[String],
    edit: impl Fn(usize, &mut serde_json::Value),
) -> Vec<String> {
    dirs.iter()
        .enumerate()
        .map(|(i, dir)| {
            let copy = work.join(format!("{name}-{i}"));
            copy_tree(Path::new(dir), &copy);
            let path = copy.join("acs-manifest.json");
            let mut manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            edit(i, &mut manifest);
            std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
            copy.display().to_string()
        })
        .collect()
}

/// Edits shard `k` of a worker manifest.
type EditShard = fn(&mut serde_json::Value, usize);

/// `acs merge DIRS --out work/OUT`.
fn merge_into(home: &Path, dirs: &[String], out: &Path) -> std::process::Output {
    let mut args = vec!["merge"];
    args.extend(dirs.iter().map(String::as_str));
    let out = out.display().to_string();
    args.extend(["--out", &out]);
    run(acs(home, &args, &[]))
}

/// Worker outputs without plan positions (written before acs recorded them) still merge, worker
/// after worker, to the single build's rows; positions that disagree with the rows are refused.
fn plan_positions_are_checked(home: &Path, work: &Path, dirs: &[String], single: &Path) {
    let legacy = edited_copies(work, "legacy", dirs, |_, m| {
        for shard in m["shards"].as_array_mut().unwrap() {
            assert!(shard["plan_positions"].is_array(), "{shard}");
            shard.as_object_mut().unwrap().remove("plan_positions");
        }
    });
    let merged = work.join("legacy-merged");
    let out = merge_into(home, &legacy, &merged);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("worker after worker"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(rows(&merged), rows(single));

    let first_with_two_rows = |m: &mut serde_json::Value| -> Option<usize> {
        let shards = m["shards"].as_array().unwrap();
        shards.iter().position(|s| s["rows"].as_u64().unwrap() >= 2)
    };
    let cases: [(&str, &str, EditShard); 2] = [
        ("swapped", "is out of order", |m, k| {
            let positions = m["shards"][k]["plan_positions"].as_array_mut().unwrap();
            positions.swap(0, 1);
        }),
        ("short", "plan positions for", |m, k| {
            let positions = m["shards"][k]["plan_positions"].as_array_mut().unwrap();
            positions.pop();
        }),
    ];
    for (name, expected, edit) in cases {
        let broken = edited_copies(work, name, dirs, |i, m| {
            if i == 0 {
                let k = first_with_two_rows(m).expect("worker 0 has a shard of 2 rows");
                edit(m, k);
            }
        });
        let target = work.join(format!("{name}-merged"));
        let out = merge_into(home, &broken, &target);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(
            err.contains(expected) && err.contains(&format!("{name}-0")),
            "{name}: {err}"
        );
        assert!(!target.exists(), "{name}: a refused merge left {target:?}");
    }
}

#[test]
fn worker_arguments_are_checked() {
    let home = tempfile::tempdir().unwrap();
    let manifest = s(smoke_manifest());
    for (args, envs, expected) in [
        (
            vec!["--worker", "4/4"],
            vec![],
            "--worker: `4/4`: need 0 <= i < n",
        ),
        (vec!["--worker", "x"], vec![], "is not of the form i/n"),
        (
            vec![],
            vec![("JOB_COMPLETION_INDEX", "1")],
            "ACS_WORKER_COUNT",
        ),
        (
            vec![],
            vec![("SLURM_ARRAY_TASK_ID", "2")],
            "SLURM_ARRAY_TASK_COUNT",
        ),
    ] {
        let out_dir = home.path().join("never");
        let out_arg = out_dir.display().to_string();
        let mut all = vec![
            "build",
            "--manifest",
            &manifest,
            "--out",
            &out_arg,
            "--dry-run",
        ];
        all.extend(args);
        let out = run(acs(home.path(), &all, &envs));
        assert_eq!(out.status.code(), Some(2), "{expected}");
        assert!(
            text(&out.stderr).contains(expected),
            "{}",
            text(&out.stderr)
        );
        assert!(!out_dir.exists());
    }
}
