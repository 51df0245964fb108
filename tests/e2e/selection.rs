//! End-to-end tests of `[alignment] keep_best` on the embedded demonstrator, ranked by the
//! shapes judge: of each prompt pair's seeds the best valid render is kept (the one with the
//! fewest pixels changed outside the edited object, as `acs metrics --prompts` measures it),
//! the others are invalid with their rank, `acs validate` agrees, two workers split the
//! prompt pairs, not their seeds (merged, they are the one-process build byte for byte), and a
//! build killed between two groups resumes to the same rows. CLIP-ranked selection against
//! transformers is tests/python/test_clip_similarity_parity.py.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use acs_schema::{Dataset, PairRecord};

use crate::util::{acs, build, repo_root, s, stderr, stdout, tree};

const SEEDS: usize = 3;

fn selection_manifest(dir: &Path) -> PathBuf {
    let pairs = dir.join("pairs.jsonl");
    let lines: String = std::fs::read_to_string(repo_root().join("samples/shapes-pairs.jsonl"))
        .unwrap()
        .lines()
        .take(3)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&pairs, lines).unwrap();
    let manifest = dir.join("m.toml");
    std::fs::write(
        &manifest,
        format!(
            "[sampling]\nscheduler = \"dpmpp-2m\"\nsteps = 4\nguidance_scale = 5.0\nheight = 64\n\
             width = 64\nseeds_per_prompt = {SEEDS}\nbatch_pairs = 2\n[alignment]\n\
             keep_best = 1\nrank_by = \"shapes\"\nmax_token_edits = 100\n[validation]\n\
             judges = [\"shapes\"]\n[[sources]]\nkind = \"pairs-jsonl\"\npath = {:?}\n\
             category = \"shapes\"\n[output]\nsplits = {{ train = 0.5, test = 0.5 }}\n",
            s(&pairs)
        ),
    )
    .unwrap();
    manifest
}

/// The selection manifest in `dir`, built into `dir/out_name` with its model cache in
/// `dir/home`: (manifest, home, output).
fn built_selection(dir: &Path, out_name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let manifest = selection_manifest(dir);
    let home = dir.join("home");
    let out = dir.join(out_name);
    let run = build(&home, &manifest, &out);
    assert!(run.status.success(), "{}", stderr(&run));
    (manifest, home, out)
}

/// The shapes judge's fraction of pixels changed outside the edited object (grown by 8 px).
fn outside_changed(home: &Path, dir: &Path, row: &PairRecord) -> f64 {
    let (u, v) = (dir.join("u.png"), dir.join("s.png"));
    std::fs::write(&u, &row.unsafe_image.bytes).unwrap();
    std::fs::write(&v, &row.safe_image.bytes).unwrap();
    let run = acs(
        home,
        &[
            "metrics",
            &s(&u),
            &s(&v),
            "--json",
            "--prompts",
            &row.unsafe_prompt,
            &row.safe_prompt,
        ],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let value: serde_json::Value = serde_json::from_str(&stdout(&run)).unwrap();
    value["shapes"]["outside_changed_8px"].as_f64().unwrap()
}

#[test]
fn keep_best_keeps_the_best_render_of_each_prompt_pair_and_validate_agrees() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let (manifest, home, out) = built_selection(dir, "out");
    let rows = Dataset::open(&out).unwrap().records().unwrap();
    assert_eq!(rows.len(), 3 * SEEDS);
    let mut groups: BTreeMap<String, Vec<&PairRecord>> = BTreeMap::new();
    for row in &rows {
        groups.entry(row.safe_prompt.clone()).or_default().push(row);
    }
    assert_eq!(groups.len(), 3);
    for renders in groups.values() {
        assert_eq!(renders.len(), SEEDS);
        // Without require_flip every render is valid before the selection: one is kept.
        let kept: Vec<&&PairRecord> = renders.iter().filter(|r| r.valid).collect();
        assert_eq!(kept.len(), 1, "{renders:?}");
        let best = outside_changed(&home, dir, kept[0]);
        for other in renders.iter().filter(|r| !r.valid) {
            assert_eq!(other.reject_reasons.len(), 1, "{:?}", other.reject_reasons);
            let reason = &other.reject_reasons[0];
            assert!(
                reason.starts_with("keep_best: rank ") && reason.ends_with(" of 3 valid, keeps 1"),
                "{reason}"
            );
            assert!(outside_changed(&home, dir, other) >= best);
        }
    }
    let validate = acs(&home, &["validate", &s(&out), "--json"]);
    assert!(
        validate.status.success(),
        "{}\n{}",
        stdout(&validate),
        stderr(&validate)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&validate)).unwrap();
    assert_eq!(report["errors"], serde_json::json!([]));
    assert_eq!(report["reject_reasons"]["keep_best"], 6);
    assert_eq!(
        report["not_kept_rows"], 6,
        "not kept is a choice, not a failure"
    );
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(
        card.contains(
            "- keep_best: of each prompt pair's 3 renders, the 1 best valid ones by shapes"
        ),
        "{card}"
    );

    // Two workers: each renders whole prompt pairs, so each keeps one render per pair.
    let mut seen = 0;
    for worker in ["0/2", "1/2"] {
        let part = dir.join(format!("part-{}", &worker[..1]));
        let run = acs(
            &home,
            &[
                "build",
                "--manifest",
                &s(&manifest),
                "--out",
                &s(&part),
                "--worker",
                worker,
            ],
        );
        assert!(run.status.success(), "{}", stderr(&run));
        let rows = Dataset::open(&part).unwrap().records().unwrap();
        assert_eq!(rows.len() % SEEDS, 0, "a worker holds whole prompt pairs");
        assert_eq!(rows.iter().filter(|r| r.valid).count(), rows.len() / SEEDS);
        seen += rows.len();
    }
    assert_eq!(seen, 3 * SEEDS);

    // Merged, the two slices are the one-process build, byte for byte.
    let merged = dir.join("merged");
    let (part_0, part_1) = (dir.join("part-0"), dir.join("part-1"));
    let run = acs(
        &home,
        &["merge", &s(&part_0), &s(&part_1), "--out", &s(&merged)],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let files = |d: &Path| -> Vec<(String, Vec<u8>)> {
        let mut files = tree(d);
        files.retain(|(name, _)| name != "validation.json");
        files
    };
    assert!(
        files(&merged) == files(&out),
        "the merge differs from the build"
    );
}

#[test]
fn a_keep_best_build_killed_after_a_group_resumes_to_the_same_rows() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let (manifest, home, whole) = built_selection(dir, "whole");

    // Aborted while the second group is spooled (before it is journaled): the first prompt
    // pair (its three renders arrive over two render batches of two), selected, is durable.
    let out = dir.join("out");
    let mut command = crate::util::acs_command(
        &home,
        &["build", "--manifest", &s(&manifest), "--out", &s(&out)],
    );
    command.env("ACS_FAULT_ABORT", "batch-spooled:2");
    let aborted = crate::util::run(command);
    assert!(!aborted.status.success());
    let resumed = build(&home, &manifest, &out);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(
        stderr(&resumed).contains("resuming: 3 of 9 pairs were already rendered"),
        "{}",
        stderr(&resumed)
    );
    let rows = |folder: &Path| {
        let mut rows = Dataset::open(folder).unwrap().records().unwrap();
        rows.sort_by(|a, b| a.pair_id.cmp(&b.pair_id));
        rows
    };
    assert_eq!(rows(&out), rows(&whole));
}
