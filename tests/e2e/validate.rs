//! End-to-end tests of `acs validate`: every integrity fault is found with exit code 2 and a
//! message naming the file (and row) and the reason; thresholds give exit code 1;
//! `--drop-invalid --out` writes a new dataset of the good pairs and leaves the input alone.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use acs_schema::{read_shard, write_shard, DatasetManifest, PairRecord};

use crate::util::{acs, copy_tree, files, repo_root, smoke_manifest_text, text};

/// A finished build shared by the tests (copied before any change): the smoke manifest with
/// `ssim_min` set so that some pairs are invalid and some valid.
struct Built {
    _root: tempfile::TempDir,
    home: PathBuf,
    dataset: PathBuf,
}

fn built() -> &'static Arc<Built> {
    static BUILT: OnceLock<Arc<Built>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        let manifest = smoke_manifest_text().replace("ssim_min = 0.0", "ssim_min = 0.6");
        let manifest_path = root.path().join("m.toml");
        std::fs::write(&manifest_path, manifest).unwrap();
        let dataset = root.path().join("ds");
        let out = acs(
            &home,
            &[
                "build",
                "--manifest",
                &manifest_path.display().to_string(),
                "--out",
                &dataset.display().to_string(),
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        Arc::new(Built {
            _root: root,
            home,
            dataset,
        })
    })
}

/// A private copy of the shared dataset.
fn copy_dataset(to: &Path) -> PathBuf {
    let dir = to.join("ds");
    copy_tree(&built().dataset, &dir);
    dir
}

/// Rewrites shard `index` with `change` applied to its records and updates the manifest, so
/// that only the deeper checks can notice.
fn rewrite_shard(dir: &Path, index: usize, change: impl FnOnce(&mut Vec<PairRecord>)) -> String {
    let mut manifest = DatasetManifest::load(dir).unwrap();
    let entry = &mut manifest.shards[index];
    let path = dir.join(&entry.path);
    let mut records = read_shard(&path).unwrap();
    change(&mut records);
    let facts = write_shard(&path, &records).unwrap();
    entry.rows = facts.rows;
    entry.bytes = facts.bytes;
    entry.sha256 = facts.sha256;
    let name = entry.path.clone();
    manifest.save(dir).unwrap();
    name
}

/// Re-hashes shard `index` after its bytes were changed in place.
fn rehash(dir: &Path, index: usize) {
    let mut manifest = DatasetManifest::load(dir).unwrap();
    let entry = &mut manifest.shards[index];
    let path = dir.join(&entry.path);
    entry.bytes = std::fs::metadata(&path).unwrap().len();
    entry.sha256 = acs_schema::sha256_file(&path).unwrap();
    manifest.save(dir).unwrap();
}

/// Runs validate and requires exit 2 with one stderr line holding every `needle`.
fn assert_integrity_error(dir: &Path, needles: &[&str]) {
    let out = acs(&built().home, &["validate", &dir.display().to_string()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}{stderr}", text(&out.stdout));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The index of the shard with the most rows.
fn largest_shard(dir: &Path) -> usize {
    let manifest = DatasetManifest::load(dir).unwrap();
    (0..manifest.shards.len())
        .max_by_key(|&i| manifest.shards[i].rows)
        .unwrap()
}

fn first_valid_row(dir: &Path) -> (usize, usize) {
    let manifest = DatasetManifest::load(dir).unwrap();
    for (i, shard) in manifest.shards.iter().enumerate() {
        let records = read_shard(&dir.join(&shard.path)).unwrap();
        if let Some(row) = records.iter().position(|r| r.valid) {
            return (i, row);
        }
    }
    panic!("no valid row");
}

/// A dataset whose build ran NudeNet, validated without the build's model: the stored scores
/// are checked, and the report says why the detector was not re-run (in a build without the
/// `nudenet` feature: that one).
#[test]
fn a_nudenet_build_without_its_detector_checks_the_stored_scores() {
    let b = built();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ds");
    copy_tree(&b.dataset, &dir);
    let manifest_path = dir.join("acs-manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["build_config"]["detector"] = serde_json::json!({ "sha256": "0".repeat(64) });
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    let out = acs(&b.home, &["validate", &dir.display().to_string(), "--json"]);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out.stderr)));
    let detector = report["detector"].as_str().unwrap_or_default().to_owned();
    assert!(detector.starts_with("stored scores only: "), "{detector}");
    let why = if cfg!(feature = "nudenet") {
        "is not here"
    } else {
        "built without the NudeNet detector"
    };
    assert!(detector.contains(why), "{detector}");
}

#[test]
fn the_shared_build_has_valid_and_invalid_pairs_and_thresholds_exit_1() {
    let b = built();
    let dir = b.dataset.display().to_string();
    let out = acs(&b.home, &["validate", &dir, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], serde_json::json!([]));
    let (valid, invalid) = (
        report["valid_rows"].as_u64().unwrap(),
        report["invalid_rows"].as_u64().unwrap(),
    );
    assert!(
        valid >= 2 && invalid >= 2,
        "{valid} valid, {invalid} invalid"
    );
    assert_eq!(report["reject_reasons"]["ssim"], invalid);
    assert_eq!(report["detector"], "none");
    assert!(text(&out.stderr).contains("fail the build's thresholds"));
    let lenient = acs(&b.home, &["validate", &dir, "--max-invalid-fraction", "1"]);
    assert!(lenient.status.success(), "{}", text(&lenient.stdout));
}

#[test]
fn shard_file_faults_exit_2_naming_the_shard() {
    let work = tempfile::tempdir().unwrap();

    // sha256 mismatch.
    let dir = copy_dataset(&work.path().join("sha"));
    let manifest = DatasetManifest::load(&dir).unwrap();
    let shard = dir.join(&manifest.shards[0].path);
    let mut bytes = std::fs::read(&shard).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&shard, &bytes).unwrap();
    assert_integrity_error(&dir, &[&manifest.shards[0].path, "sha256 mismatch"]);

    // A truncated file with a matching hash: unreadable footer.
    let dir = copy_dataset(&work.path().join("footer"));
    let shard = dir.join(&manifest.shards[1].path);
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 100]).unwrap();
    rehash(&dir, 1);
    assert_integrity_error(&dir, &[&manifest.shards[1].path, "unreadable footer"]);

    // Row count.
    let dir = copy_dataset(&work.path().join("rows"));
    let mut changed = DatasetManifest::load(&dir).unwrap();
    changed.shards[0].rows += 1;
    changed.save(&dir).unwrap();
    assert_integrity_error(&dir, &[&manifest.shards[0].path, "rows, manifest says"]);

    // Missing shard.
    let dir = copy_dataset(&work.path().join("missing"));
    std::fs::remove_file(dir.join(&manifest.shards[0].path)).unwrap();
    assert_integrity_error(&dir, &[&manifest.shards[0].path, "missing"]);

    // Extra shard.
    let dir = copy_dataset(&work.path().join("extra"));
    std::fs::copy(
        dir.join(&manifest.shards[0].path),
        dir.join("data/stray-00000.parquet"),
    )
    .unwrap();
    assert_integrity_error(
        &dir,
        &["data/stray-00000.parquet", "not listed in the manifest"],
    );

    // A shard path escaping the dataset folder.
    let dir = copy_dataset(&work.path().join("escape"));
    let mut changed = DatasetManifest::load(&dir).unwrap();
    std::fs::rename(
        dir.join(&changed.shards[0].path),
        dir.join("../outside.parquet"),
    )
    .unwrap();
    changed.shards[0].path = "../outside.parquet".into();
    changed.save(&dir).unwrap();
    assert_integrity_error(&dir, &["../outside.parquet", "shard path"]);
}

#[test]
fn schema_versions_other_than_1_are_refused() {
    let work = tempfile::tempdir().unwrap();
    // The dataset manifest's version.
    let dir = copy_dataset(work.path());
    let path = dir.join(acs_schema::MANIFEST_FILE);
    let manifest = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        manifest.replace("\"schema_version\": 1", "\"schema_version\": 2"),
    )
    .unwrap();
    assert_integrity_error(&dir, &[acs_schema::MANIFEST_FILE, "schema_version 2"]);

    // A shard whose footer says version 2.
    let dir = copy_dataset(&work.path().join("footer"));
    let manifest = DatasetManifest::load(&dir).unwrap();
    let shard = dir.join(&manifest.shards[0].path);
    let records = read_shard(&shard).unwrap();
    let batch = acs_schema::records_to_batch(&records).unwrap();
    let mut metadata = batch.schema().metadata().clone();
    metadata.insert("acs_schema_version", "2");
    let schema = std::sync::Arc::new(batch.schema().as_ref().clone().with_metadata(metadata));
    let batch =
        arrow_array::RecordBatch::try_new(schema.clone(), batch.columns().to_vec()).unwrap();
    let file = std::fs::File::create(&shard).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    rehash(&dir, 0);
    assert_integrity_error(
        &dir,
        &[&manifest.shards[0].path, "not an acs schema v1 shard"],
    );
}

#[test]
fn row_faults_exit_2_naming_shard_row_and_column() {
    let work = tempfile::tempdir().unwrap();
    type Change = fn(&mut Vec<PairRecord>);
    let cases: [(&str, Change, &[&str]); 8] = [
        (
            "image",
            |r| r[0].unsafe_image.bytes = b"not a png".to_vec(),
            &["row 0, column unsafe_image", "not a decodable PNG"],
        ),
        (
            "image-size",
            |r| r[1].width = 32,
            &["row 1, column unsafe_image", "row says 32x64"],
        ),
        (
            "latent",
            |r| {
                if let Some(latent) = r[0].safe_latent.as_mut() {
                    latent.truncate(10);
                }
            },
            &["row 0, column safe_latent", "10 bytes"],
        ),
        (
            "metric",
            |r| r[0].ssim = (r[0].ssim - 0.25).max(-1.0),
            &["row 0, column ssim", "differs from the recomputed"],
        ),
        (
            "box",
            |r| r[0].changed_box = Some(vec![0, 0, 1, 1]),
            &["row 0, column changed_box"],
        ),
        (
            "valid",
            |r| r[0].valid = !r[0].valid,
            &["row 0, column valid", "contradicts reject_reasons"],
        ),
        (
            "model",
            |r| r[0].model_sha256 = "0".repeat(64),
            &["row 0, column model_sha256"],
        ),
        (
            "detector",
            |r| r[0].nudenet_unsafe = Some(0.9),
            &["row 0, column nudenet_unsafe", "no detector"],
        ),
    ];
    for (name, change, needles) in cases {
        let dir = copy_dataset(&work.path().join(name));
        let shard = rewrite_shard(&dir, largest_shard(&dir), change);
        let mut all = vec![shard.as_str()];
        all.extend_from_slice(needles);
        assert_integrity_error(&dir, &all);
    }
}

#[test]
fn duplicate_pair_ids_across_shards_are_found() {
    let work = tempfile::tempdir().unwrap();
    let dir = copy_dataset(work.path());
    let manifest = DatasetManifest::load(&dir).unwrap();
    let first = read_shard(&dir.join(&manifest.shards[0].path)).unwrap();
    let second_split = manifest.shards[1].split.clone();
    let shard = rewrite_shard(&dir, 1, |records| {
        let mut copy = first[0].clone();
        copy.split = second_split;
        records.push(copy);
    });
    assert_integrity_error(
        &dir,
        &[&shard, "column pair_id: duplicate", &first[0].pair_id],
    );
}

#[test]
fn drop_invalid_writes_a_new_dataset_of_the_good_pairs() {
    let b = built();
    let work = tempfile::tempdir().unwrap();
    let dir = copy_dataset(work.path());
    // One valid row gets an integrity fault: it is left out too.
    let (shard_index, row) = first_valid_row(&dir);
    rewrite_shard(&dir, shard_index, |r| r[row].latent_cosine -= 0.5);
    let before: Vec<(PathBuf, Vec<u8>)> = files(&dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    let input_report = acs(&b.home, &["validate", &dir.display().to_string(), "--json"]);
    let input_report: serde_json::Value = serde_json::from_slice(&input_report.stdout).unwrap();
    let valid = input_report["valid_rows"].as_u64().unwrap();
    // validate itself wrote validation.json into the input; the repair must not touch it.
    let before: Vec<(PathBuf, Vec<u8>)> = before
        .into_iter()
        .chain(std::iter::once({
            let p = dir.join("validation.json");
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        }))
        .collect();

    let kept = work.path().join("kept");
    let out = acs(
        &b.home,
        &[
            "validate",
            &dir.display().to_string(),
            "--drop-invalid",
            "--out",
            &kept.display().to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let summary = text(&out.stdout);
    assert!(
        summary.contains(&format!("wrote {} of", valid - 1)),
        "{summary}"
    );
    for (path, bytes) in &before {
        assert_eq!(
            &std::fs::read(path).unwrap(),
            bytes,
            "{} changed",
            path.display()
        );
    }
    let repaired = DatasetManifest::load(&kept).unwrap();
    assert!(repaired.complete);
    assert_eq!(repaired.total_rows(), valid - 1);
    assert_eq!(
        repaired.build_config,
        DatasetManifest::load(&dir).unwrap().build_config
    );
    for shard in &repaired.shards {
        assert!(shard.path.contains("-of-"), "{}", shard.path);
        assert!(read_shard(&kept.join(&shard.path))
            .unwrap()
            .iter()
            .all(|r| r.valid));
    }
    let card = std::fs::read_to_string(kept.join("README.md")).unwrap();
    assert!(card.contains("## Provenance"), "{card}");
    assert!(kept.join("validation.json").is_file());
    assert!(kept.join("rejects.jsonl").is_file());
    let again = acs(&b.home, &["validate", &kept.display().to_string()]);
    assert!(again.status.success(), "{}", text(&again.stdout));

    // The output must be new: a non-empty folder, or the input itself, is refused.
    for target in [&kept, &dir] {
        let refused = acs(
            &b.home,
            &[
                "validate",
                &dir.display().to_string(),
                "--drop-invalid",
                "--out",
                &target.display().to_string(),
            ],
        );
        assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stdout));
        assert!(text(&refused.stderr).contains("--out"));
    }
    // --drop-invalid without --out is a usage error.
    let usage = acs(
        &b.home,
        &["validate", &dir.display().to_string(), "--drop-invalid"],
    );
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn hostile_parquet_files_are_rejected_without_exhausting_memory() {
    use arrow_array::{ArrayRef, Int32Array, StructArray};
    use arrow_schema::{DataType, Field};
    let work = tempfile::tempdir().unwrap();

    // 200 levels of nested structs instead of the schema v1 columns.
    let dir = copy_dataset(&work.path().join("deep"));
    let manifest = DatasetManifest::load(&dir).unwrap();
    let mut array: ArrayRef = std::sync::Arc::new(Int32Array::from(vec![1, 2, 3]));
    for _ in 0..200 {
        let field = Field::new("x", array.data_type().clone(), true);
        array = std::sync::Arc::new(StructArray::from(vec![(std::sync::Arc::new(field), array)]));
    }
    let batch = arrow_array::RecordBatch::try_from_iter([("deep", array.clone())]).unwrap();
    assert!(matches!(array.data_type(), DataType::Struct(_)));
    let shard = dir.join(&manifest.shards[0].path);
    let file = std::fs::File::create(&shard).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    rehash(&dir, 0);
    assert_integrity_error(
        &dir,
        &[&manifest.shards[0].path, "not an acs schema v1 shard"],
    );

    // A footer that claims 2 GiB of metadata in a small file.
    let dir = copy_dataset(&work.path().join("footer"));
    let shard = dir.join(&manifest.shards[0].path);
    let mut bytes = std::fs::read(&shard).unwrap();
    let n = bytes.len();
    bytes[n - 8..n - 4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    std::fs::write(&shard, &bytes).unwrap();
    rehash(&dir, 0);
    assert_integrity_error(&dir, &[&manifest.shards[0].path, "unreadable footer"]);
}

#[test]
fn a_shard_that_makes_the_parquet_reader_panic_is_an_integrity_error() {
    // Found by the shard_reader fuzz target: parquet 60's byte-array reader divides by zero.
    let hostile =
        repo_root().join("fuzz/corpus/shard_reader/regression-parquet-divide-by-zero.parquet");
    let work = tempfile::tempdir().unwrap();
    let dir = copy_dataset(work.path());
    let manifest = DatasetManifest::load(&dir).unwrap();
    std::fs::copy(&hostile, dir.join(&manifest.shards[0].path)).unwrap();
    rehash(&dir, 0);
    let out = acs(&built().home, &["validate", &dir.display().to_string()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains(&manifest.shards[0].path), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
