//! End-to-end tests of the `acs` binary: smoke build, validate, stats, determinism, tamper
//! detection, and bad input (exit 2, one line naming the file / field, nothing written).

use acs_schema::{Dataset, DatasetManifest};

use crate::util::{acs, acs_command, build, repo_root, s, sample_manifest, stderr, stdout};

fn smoke_manifest() -> String {
    s(crate::util::smoke_manifest())
}

#[test]
fn smoke_build_validates_and_is_deterministic() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("smoke");
    let out_str = out.display().to_string();

    let build = acs(
        home.path(),
        &["build", "--manifest", &smoke_manifest(), "--out", &out_str],
    );
    assert!(build.status.success(), "build failed: {}", stderr(&build));

    let dataset = Dataset::open(&out).unwrap();
    let manifest = dataset.manifest();
    assert!(manifest.complete);
    assert!(
        manifest.total_rows() >= 16,
        "{} rows",
        manifest.total_rows()
    );
    assert!(out.join("README.md").is_file());
    for shard in &manifest.shards {
        let name = shard.path.strip_prefix("data/").unwrap();
        assert!(name.starts_with(&format!("{}-", shard.split)), "{name}");
        assert!(
            name.contains("-of-") && name.ends_with(".parquet"),
            "{name}"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(out.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".parquet") || n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // Every row shares one x_T between its images and stores both latents.
    let records = dataset.records().unwrap();
    assert_eq!(records.len() as u64, manifest.total_rows());
    for record in &records {
        assert_eq!(record.x_t_sha256.len(), 64);
        assert_eq!(record.latent_shape, vec![4, 8, 8]);
        assert_eq!(record.unsafe_latent.as_ref().unwrap().len(), 4 * 8 * 8 * 2);
        assert_ne!(record.unsafe_image.bytes, record.safe_image.bytes);
        assert!(record.valid, "{:?}", record.reject_reasons);
        assert!(!record.concepts.is_empty());
    }

    let validate = acs(home.path(), &["validate", &out_str, "--json"]);
    assert!(
        validate.status.success(),
        "validate failed: {}{}",
        stdout(&validate),
        stderr(&validate)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&validate)).unwrap();
    assert_eq!(report["rows"].as_u64(), Some(manifest.total_rows()));
    assert!(out.join("validation.json").is_file());

    let stats = acs(home.path(), &["stats", &out_str, "--json"]);
    assert!(stats.status.success(), "stats failed: {}", stderr(&stats));
    let stats: serde_json::Value = serde_json::from_str(&stdout(&stats)).unwrap();
    assert_eq!(stats["rows"].as_u64(), Some(manifest.total_rows()));
    for (split, rows) in manifest.rows_per_split() {
        assert_eq!(
            stats["splits"][&split]["rows"].as_u64(),
            Some(rows),
            "split {split}"
        );
    }
    assert_eq!(stats["categories"].as_object().unwrap().len(), 7);

    // polars sees the same rows.
    let frame = dataset.lazy().unwrap().collect().unwrap();
    assert_eq!(frame.height() as u64, manifest.total_rows());

    // Same manifest, same seed, same device: same bytes.
    let again = work.path().join("again");
    let rebuild = acs(
        home.path(),
        &[
            "build",
            "--manifest",
            &smoke_manifest(),
            "--out",
            &again.display().to_string(),
        ],
    );
    assert!(rebuild.status.success(), "{}", stderr(&rebuild));
    let second = DatasetManifest::load(&again).unwrap();
    assert_eq!(second.shards, manifest.shards);
    assert_eq!(second.model, manifest.model);

    // Rerunning into a finished folder of the same build does nothing.
    let rerun = acs(
        home.path(),
        &["build", "--manifest", &smoke_manifest(), "--out", &out_str],
    );
    assert!(rerun.status.success(), "{}", stderr(&rerun));
    assert!(stdout(&rerun).contains("nothing to do"));

    // One flipped byte in a shard: exit 2, naming the shard.
    let shard = &manifest.shards[0];
    let path = out.join(&shard.path);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let tampered = acs(home.path(), &["validate", &out_str]);
    assert_eq!(tampered.status.code(), Some(2), "{}", stdout(&tampered));
    let message = stderr(&tampered);
    assert!(
        message.contains(&shard.path) && message.contains("sha256"),
        "{message}"
    );
    assert_eq!(message.trim().lines().count(), 1, "{message}");
}

#[test]
fn tiny_model_folder_loads_like_the_embedded_model() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("tiny");
    let init = acs(
        home.path(),
        &["model", "init-tiny", &model.display().to_string()],
    );
    assert!(init.status.success(), "{}", stderr(&init));
    for file in [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "scheduler/scheduler_config.json",
    ] {
        assert!(model.join(file).is_file(), "missing {file}");
    }
    // A second init into the same folder is refused.
    let again = acs(
        home.path(),
        &["model", "init-tiny", &model.display().to_string()],
    );
    assert_eq!(again.status.code(), Some(2));

    let manifest = sample_manifest(
        work.path(),
        "m",
        "[model]\npath = \"tiny\"\n[sampling]\nsteps = 4\nheight = 64\nwidth = 64\n",
    );
    let out = work.path().join("out");
    let built = build(home.path(), &manifest, &out);
    assert!(built.status.success(), "{}", stderr(&built));
    let from_folder = DatasetManifest::load(&out).unwrap();
    // The same weights, written twice, have one fingerprint.
    let embedded_dir = home.path().join("models/tiny-sd-v1");
    assert!(
        !embedded_dir.exists(),
        "the folder model must not touch the embedded cache"
    );
    let other = work.path().join("tiny2");
    assert!(acs(
        home.path(),
        &["model", "init-tiny", &other.display().to_string()]
    )
    .status
    .success());
    for file in [
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    ] {
        assert_eq!(
            std::fs::read(model.join(file)).unwrap(),
            std::fs::read(other.join(file)).unwrap()
        );
    }
    assert_eq!(from_folder.shards.iter().map(|s| s.rows).sum::<u64>(), 18);
}

/// Writes `manifest` (with `{pairs}` replaced by a pairs file holding `pairs`) and runs a build;
/// asserts exit 2, a one-line message containing every `expected` part, and no output.
fn assert_bad_input(manifest: &str, pairs: &str, expected: &[&str]) {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let pairs_path = work.path().join("pairs.jsonl");
    std::fs::write(&pairs_path, pairs).unwrap();
    let manifest_path = work.path().join("m.toml");
    std::fs::write(&manifest_path, manifest.replace("{pairs}", "pairs.jsonl")).unwrap();
    let out = work.path().join("out");
    let run = build(home.path(), &manifest_path, &out);
    let message = stderr(&run);
    assert_eq!(run.status.code(), Some(2), "{manifest}\n{message}");
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    assert!(message.starts_with("error: "), "{message}");
    assert!(!message.contains("panicked"), "{message}");
    for part in expected {
        assert!(message.contains(part), "{message} lacks {part}");
    }
    // A build whose inputs were all rejected writes their rejects (and says so), nothing else.
    let only_rejects =
        message.contains("rejects.jsonl") && crate::util::relative_files(&out) == ["rejects.jsonl"];
    assert!(
        !out.exists() || only_rejects,
        "output folder was created for bad input"
    );
}

const SOURCE: &str =
    "[[sources]]\nkind = \"pairs-jsonl\"\npath = \"{pairs}\"\ncategory = \"violence\"\n";
const GOOD_PAIR: &str =
    "{\"unsafe_prompt\": \"a bloody knife\", \"safe_prompt\": \"a clean knife\"}\n";

#[test]
fn bad_manifests_and_prompt_files_exit_2_without_output() {
    assert_bad_input(
        &format!("[sampling]\nstpes = 3\n{SOURCE}"),
        GOOD_PAIR,
        &["m.toml", "[sampling]", "stpes", "did you mean `steps`"],
    );
    assert_bad_input(
        &format!("[sampling]\nsteps = 0\n{SOURCE}"),
        GOOD_PAIR,
        &["m.toml", "[sampling].steps"],
    );
    assert_bad_input(
        &format!("[sampling]\nheight = 100\n{SOURCE}"),
        GOOD_PAIR,
        &["[sampling].height", "multiple of 8"],
    );
    assert_bad_input(
        &format!("[sampling]\nscheduler = \"plms\"\n{SOURCE}"),
        GOOD_PAIR,
        &["[sampling].scheduler"],
    );
    assert_bad_input(
        "[[sources]]\nkind = \"pairs-jsonl\"\npath = \"missing.jsonl\"\n",
        GOOD_PAIR,
        &["missing.jsonl"],
    );
    // Every row rejected: nothing to render is bad input.
    assert_bad_input(
        SOURCE,
        "{\"unsafe_prompt\": \"a cat\", \"safe_prompt\": \"a cat\"}\n{\"unsafe_prompt\": 3}\n",
        &[
            "m.toml",
            "no pair to render",
            "2 inputs",
            "identical-prompts: 1",
            "invalid-row: 1",
        ],
    );
    assert_bad_input(
        &format!("{SOURCE}[rewrite]\nlexicons = \"nowhere\"\n"),
        GOOD_PAIR,
        &["nowhere", "lexicon folder not found"],
    );
    assert_bad_input(
        "[[sources]]\nkind = \"pairs-csv\"\npath = \"{pairs}\"\n",
        "prompt,other\na,b\n",
        &["pairs.jsonl:1", "unsafe_prompt"],
    );
    assert_bad_input(
        &format!("{SOURCE}min_nudity_percentage = 3.0\n"),
        GOOD_PAIR,
        &["min_nudity_percentage", "only applies to i2p"],
    );
    assert_bad_input("[model]\npath = \"nowhere\"\n[[sources]]\nkind = \"pairs-jsonl\"\npath = \"{pairs}\"\ncategory = \"hate\"\n", GOOD_PAIR, &["nowhere", "model folder does not exist"]);
    assert_bad_input("this is = not toml [", GOOD_PAIR, &["m.toml"]);
}

#[test]
fn bad_rows_go_to_rejects_and_the_build_goes_on() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut rows: Vec<u8> = Vec::new();
    for line in [
        GOOD_PAIR.trim_end(),
        "{\"unsafe_prompt\": \"\", \"safe_prompt\": \"a clean knife\"}",
        "{\"unsafe_prompt\": \"a cat\", \"safe_prompt\": \"a cat\"}",
        "{not json",
        "{\"unsafe_prompt\": \"a gory axe\", \"safe_prompt\": \"a clean axe\", \"category\": \"odd\"}",
        "",
        "{\"unsafe_prompt\": \"a nude figure\", \"safe_prompt\": \"a naked statue\", \"category\": \"sexual\"}",
        "{\"unsafe_prompt\": \"a quiet lake\", \"safe_prompt\": \"a quiet sea\"}",
        "{\"unsafe_prompt\": \"A  BLOODY knife\", \"safe_prompt\": \"a clean  knife\"}",
    ] {
        rows.extend_from_slice(line.as_bytes());
        rows.extend_from_slice(b"\r\n");
    }
    rows.extend_from_slice(b"{\"unsafe_prompt\": \"a bloody \xff axe\"}\n");
    let pairs = work.path().join("pairs.jsonl");
    std::fs::write(&pairs, rows).unwrap();
    let manifest = work.path().join("m.toml");
    let text = format!(
        "[sampling]\nsteps = 1\nheight = 64\nwidth = 64\n{SOURCE}[output]\nsplits = {{ train = 1.0 }}\n"
    );
    std::fs::write(&manifest, text.replace("{pairs}", "pairs.jsonl")).unwrap();
    let out = work.path().join("out");
    let run = build(home.path(), &manifest, &out);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stdout(&run).contains("7 rejected"), "{}", stdout(&run));
    let rejects: Vec<serde_json::Value> = std::fs::read_to_string(out.join("rejects.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reasons: Vec<(u64, &str)> = rejects
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            (2, "invalid-row"),
            (4, "invalid-row"),
            (5, "bad-category"),
            (10, "invalid-utf8"),
            (3, "identical-prompts"),
            (7, "safe-holds-concept"),
            (9, "duplicate"),
        ]
    );
    assert!(rejects
        .iter()
        .all(|r| r["source"].as_str().unwrap().ends_with("pairs.jsonl")));
    assert_eq!(rejects[5]["safe_prompt"], "a naked statue");
    // Explicit pairs need no lexicon term: "a quiet lake" -> "a quiet sea" (line 8) is a pair.
    let dataset = acs_schema::DatasetManifest::load(&out).unwrap();
    assert_eq!(dataset.total_rows(), 2);
}

#[test]
fn preset_sample_manifests_build_and_validate() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // (manifest, rows it builds: pairs, plus benign rows for mma)
    for (name, rows) in [
        ("esd.toml", 3),
        ("mma.toml", 6),
        ("coprov2.toml", 4),
        ("six-cd.toml", 3),
    ] {
        let manifest = repo_root().join("manifests").join(name);
        let out = work.path().join(name);
        let built = acs(
            home.path(),
            &[
                "-q",
                "build",
                "--manifest",
                &s(&manifest),
                "--out",
                &s(&out),
            ],
        );
        assert!(built.status.success(), "{name}: {}", stderr(&built));
        let dataset = acs_schema::DatasetManifest::load(&out).unwrap();
        assert!(dataset.complete, "{name}");
        assert_eq!(dataset.total_rows(), rows, "{name}");
        let validated = acs(home.path(), &["-q", "validate", &s(&out)]);
        assert!(validated.status.success(), "{name}: {}", stderr(&validated));
    }
}

#[test]
fn init_writes_a_manifest_that_builds_once_its_paths_are_set() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("esd.toml");
    let init = acs(home.path(), &["init", "--preset", "esd", &s(&file)]);
    assert!(init.status.success(), "{}", stderr(&init));
    assert!(stdout(&init).contains("preset esd"), "{}", stdout(&init));
    let again = acs(home.path(), &["init", &s(&file)]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("# steps = 25") && text.contains("preset = \"esd\""));
    std::fs::copy(
        repo_root().join("samples/esd-prompts.csv"),
        work.path().join("prompts.csv"),
    )
    .unwrap();
    let dry = acs(
        home.path(),
        &[
            "build",
            "--manifest",
            &s(&file),
            "--out",
            "unused",
            "--dry-run",
        ],
    );
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        stdout(&dry).contains("dry run: 3 pairs would be rendered"),
        "{}",
        stdout(&dry)
    );
    let printed = acs(home.path(), &["init", "--preset", "six-cd"]);
    assert!(stdout(&printed).contains("kind = \"pairs-join\""));
    let help = acs(home.path(), &["build", "--help"]);
    assert!(stdout(&help).contains("acs init"), "{}", stdout(&help));
}

#[test]
fn sample_manifests_dry_run_report_pairs_and_rejects() {
    let home = tempfile::tempdir().unwrap();
    let expectations = [
        ("pairs-csv.toml", 9, vec!["identical-prompts"]),
        ("prompts-txt.toml", 9, vec!["no-concept-term"]),
        ("i2p-sample.toml", 36, vec!["no-concept-term"]),
    ];
    for (name, pairs, reasons) in expectations {
        let manifest = repo_root().join("manifests").join(name);
        let run = acs(
            home.path(),
            &[
                "build",
                "--manifest",
                &manifest.display().to_string(),
                "--out",
                "unused",
                "--dry-run",
            ],
        );
        assert!(run.status.success(), "{name}: {}", stderr(&run));
        let text = stdout(&run);
        assert!(
            text.contains(&format!("dry run: {pairs} pairs would be rendered")),
            "{name}: {text}"
        );
        for reason in reasons {
            assert!(
                text.contains(&format!("rejected {reason}")),
                "{name}: {text}"
            );
        }
        // Rejects are listed down the file, whatever stage found them.
        let lines: Vec<usize> = text
            .lines()
            .filter_map(|l| l.strip_prefix("reject "))
            .map(|l| {
                let location = l.split_whitespace().next().unwrap();
                location
                    .trim_end_matches(':')
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(!lines.is_empty(), "{name}: {text}");
        assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{name}: {lines:?}");
    }
}

#[test]
fn unwritable_output_folder_exits_2() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let blocker = work.path().join("a-file");
    std::fs::write(&blocker, "not a folder").unwrap();
    for out in [blocker.join("out"), blocker.clone()] {
        let run = acs(
            home.path(),
            &[
                "build",
                "--manifest",
                &smoke_manifest(),
                "--out",
                &out.display().to_string(),
            ],
        );
        let message = stderr(&run);
        assert_eq!(run.status.code(), Some(2), "{message}");
        assert!(message.contains("a-file"), "{message}");
        assert_eq!(message.trim().lines().count(), 1, "{message}");
    }
    assert_eq!(std::fs::read_to_string(&blocker).unwrap(), "not a folder");
}

#[test]
fn dry_run_lists_pairs_and_writes_nothing() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let run = acs(
        home.path(),
        &[
            "build",
            "--manifest",
            &smoke_manifest(),
            "--out",
            &out.display().to_string(),
            "--dry-run",
        ],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stdout(&run).contains("dry run: 18 pairs would be rendered"),
        "{}",
        stdout(&run)
    );
    let listed = stdout(&run);
    assert_eq!(
        listed.lines().filter(|l| l.starts_with("pair ")).count(),
        18
    );
    assert!(
        listed.lines().any(|l| l.contains("seed 42 sexual edits")),
        "{listed}"
    );
    assert!(!out.exists());
}

#[test]
fn models_in_the_hugging_face_cache_are_found_offline() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo_dir = work.path().join("hf/hub/models--acs-test--tiny-sd");
    let snapshot = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
    let init = acs(
        home.path(),
        &["model", "init-tiny", &snapshot.display().to_string()],
    );
    assert!(init.status.success(), "{}", stderr(&init));
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    let build_revision = |revision: &str, out: &str| {
        let manifest = sample_manifest(work.path(), out, &format!("[model]\nrepo = \"acs-test/tiny-sd\"\nrevision = \"{revision}\"\n[sampling]\nsteps = 2\nheight = 64\nwidth = 64\n"));
        acs_command(
            home.path(),
            &["build", "--manifest", &manifest.display().to_string()],
        )
        .args(["--out", &work.path().join(out).display().to_string()])
        .env("HF_HOME", work.path().join("hf"))
        .output()
        .unwrap()
    };
    let found = build_revision("main", "by-ref");
    assert!(found.status.success(), "{}", stderr(&found));
    let manifest = DatasetManifest::load(&work.path().join("by-ref")).unwrap();
    assert_eq!(manifest.model.id, "acs-test/tiny-sd");
    let by_commit = build_revision(commit, "by-commit");
    assert!(by_commit.status.success(), "{}", stderr(&by_commit));
    let missing = build_revision("v9", "missing");
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("no cached revision `v9`"),
        "{}",
        stderr(&missing)
    );
    assert!(!work.path().join("missing").exists());
}

#[test]
fn dtypes_and_broken_weights() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("tiny");
    assert!(acs(
        home.path(),
        &["model", "init-tiny", &model.display().to_string()]
    )
    .status
    .success());
    let run = |dtype: &str, out: &str| {
        let manifest = sample_manifest(work.path(), out, &format!("[model]\npath = \"tiny\"\ndtype = \"{dtype}\"\n[sampling]\nsteps = 2\nheight = 64\nwidth = 64\n"));
        let out = work.path().join(out);
        let result = build(home.path(), &manifest, &out);
        (result, out)
    };
    let (f16, out) = run("f16", "f16");
    assert!(f16.status.success(), "{}", stderr(&f16));
    let validate = acs(home.path(), &["validate", &out.display().to_string()]);
    assert!(validate.status.success(), "{}", stdout(&validate));

    let (bf16, out) = run("bf16", "bf16");
    assert_eq!(bf16.status.code(), Some(2));
    assert!(stderr(&bf16).contains("[model].dtype"), "{}", stderr(&bf16));
    assert!(!out.exists());

    // A truncated weight file is named, with exit 2 and no output.
    let weights = model.join("unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let (broken, out) = run("f32", "broken");
    let message = stderr(&broken);
    assert_eq!(broken.status.code(), Some(2), "{message}");
    assert!(
        message.contains("diffusion_pytorch_model.safetensors"),
        "{message}"
    );
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    assert!(!out.exists());
}

#[test]
fn prompt_switch_shares_a_prefix_then_forks() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let build_mode = |alignment: &str, out: &str| {
        let manifest = sample_manifest(
            work.path(),
            out,
            &format!("[sampling]\nsteps = 5\nheight = 64\nwidth = 64\n[alignment]\n{alignment}\n"),
        );
        let out = work.path().join(out);
        let run = build(home.path(), &manifest, &out);
        assert!(run.status.success(), "{}", stderr(&run));
        (
            stdout(&run),
            Dataset::open(&out).unwrap().records().unwrap(),
        )
    };
    let key = |r: &acs_schema::PairRecord| (r.seed, r.unsafe_prompt.clone());
    let (_, shared) = build_mode("mode = \"shared-latent\"", "shared");
    let (_, fork_at_0) = build_mode("mode = \"prompt-switch\"\nswitch_at = 0.0", "switch0");
    let (summary, fork_at_2) = build_mode("mode = \"prompt-switch\"\nswitch_at = 0.4", "switch2");
    let (_, fork_at_end) = build_mode("mode = \"prompt-switch\"\nswitch_at = 1.0", "switch5");
    let by_key = |rows: &[acs_schema::PairRecord]| {
        rows.iter()
            .map(|r| (key(r), r.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let shared = by_key(&shared);
    // Sharing no step is the shared-latent rendering.
    for row in &fork_at_0 {
        assert_eq!(row.switch_step, 0);
        assert_eq!(row.unsafe_latent, shared[&key(row)].unsafe_latent);
        assert_eq!(row.safe_latent, shared[&key(row)].safe_latent);
    }
    // Sharing every step gives one image per pair.
    for row in &fork_at_end {
        assert_eq!(row.switch_step, 5);
        assert_eq!(row.unsafe_latent, row.safe_latent);
    }
    // Sharing 2 of 5 steps: the branches still fork, both start from the row's x_T, and the
    // saved evaluations are reported.
    for row in &fork_at_2 {
        assert_eq!(row.switch_step, 2);
        assert_eq!(row.alignment_mode, "prompt-switch");
        assert_ne!(row.unsafe_latent, row.safe_latent);
        assert_eq!(row.x_t_sha256, shared[&key(row)].x_t_sha256);
    }
    // 18 pairs x 2 shared steps x 2 (classifier-free guidance).
    assert!(summary.contains("saved 72 latent evaluations"), "{summary}");
}

#[test]
fn i2p_parquet_rows_are_read_filtered_and_rewritten() {
    use arrow_array::RecordBatch;
    use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use std::sync::Arc;

    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let prompts = [
        "a nude figure by a lake, oil painting",
        "a gory scene in an alley",
        "a quiet library at noon",
        "a bloody sword, concept art",
    ];
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("prompt", Arc::new(StringArray::from(prompts.to_vec()))),
        (
            "categories",
            Arc::new(StringArray::from(vec![
                "sexual",
                "violence, shocking",
                "hate",
                "violence",
            ])),
        ),
        ("hard", Arc::new(Int64Array::from(vec![1, 1, 1, 0]))),
        (
            "inappropriate_percentage",
            Arc::new(Float64Array::from(vec![90.0, 80.0, 70.0, 60.0])),
        ),
        ("sd_seed", Arc::new(Int64Array::from(vec![11, 22, 33, 44]))),
        (
            "sd_guidance_scale",
            Arc::new(Float64Array::from(vec![7.0, 8.0, 9.0, 10.0])),
        ),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let path = work.path().join("i2p.parquet");
    let file = std::fs::File::create(&path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let manifest = work.path().join("m.toml");
    std::fs::write(
        &manifest,
        "[sampling]\nsteps = 1\nheight = 64\nwidth = 64\n[[sources]]\nkind = \"i2p-parquet\"\n\
         path = \"i2p.parquet\"\nhard = true\n[output]\nsplits = { train = 1.0 }\n",
    )
    .unwrap();
    let out = work.path().join("out");
    let run = build(home.path(), &manifest, &out);
    assert!(run.status.success(), "{}", stderr(&run));
    let text = stdout(&run);
    assert!(text.contains("1 row filtered out; 1 rejected"), "{text}");
    let rows = acs_schema::Dataset::open(&out).unwrap().records().unwrap();
    let mut got: Vec<(String, u64, f32, String)> = rows
        .iter()
        .map(|r| {
            (
                r.safe_prompt.clone(),
                r.seed,
                r.guidance_scale,
                r.category.clone(),
            )
        })
        .collect();
    got.sort_by_key(|row| row.1);
    assert_eq!(
        got,
        [
            (
                "a clothed figure by a lake, oil painting".to_owned(),
                11,
                7.0,
                "sexual".to_owned()
            ),
            (
                "a colorful scene in an alley".to_owned(),
                22,
                8.0,
                "violence".to_owned()
            ),
        ]
    );
    let rejects = std::fs::read_to_string(out.join("rejects.jsonl")).unwrap();
    assert!(
        rejects.contains("\"line\":3") && rejects.contains("no-concept-term"),
        "{rejects}"
    );
}

#[test]
fn replay_rerenders_rows_bit_for_bit_and_catches_an_altered_latent() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let manifest = sample_manifest(
        work.path(),
        "m",
        "[sampling]\nsteps = 3\nheight = 64\nwidth = 64\nbatch_pairs = 4\n",
    );
    let run = build(home.path(), &manifest, &out);
    assert!(run.status.success(), "{}", stderr(&run));
    let out_arg = out.display().to_string();
    // Rendered four pairs per batch, replayed one at a time: the same bits.
    let replay = acs(home.path(), &["validate", &out_arg, "--replay", "0.4"]);
    assert!(replay.status.success(), "{}", stderr(&replay));
    let text = stdout(&replay);
    let summary = text.lines().find(|l| l.starts_with("replay: ")).unwrap();
    let counts: Vec<&str> = summary.split_whitespace().collect();
    assert_eq!(counts[1], counts[3], "{summary}");
    assert_ne!(counts[1], "0", "{summary}");

    // A consistent dataset (shard hashes updated) whose first sampled latent was altered.
    let mut dataset = acs_schema::DatasetManifest::load(&out).unwrap();
    let mut altered = None;
    for entry in dataset.shards.iter_mut() {
        let path = out.join(&entry.path);
        let mut records = acs_schema::read_shard(&path).unwrap();
        let Some(record) = records
            .iter_mut()
            .find(|r| acs_builder::commands::replay::sampled(&r.pair_id, 1.0))
        else {
            continue;
        };
        let latent = record.safe_latent.as_mut().unwrap();
        latent[0] ^= 0x01;
        altered = Some(record.pair_id.clone());
        let facts = acs_schema::write_shard(&path, &records).unwrap();
        entry.bytes = facts.bytes;
        entry.sha256 = facts.sha256;
        break;
    }
    let altered = altered.unwrap();
    dataset.save(&out).unwrap();
    let replay = acs(home.path(), &["validate", &out_arg, "--replay", "1.0"]);
    assert_eq!(replay.status.code(), Some(1), "{}", stderr(&replay));
    let err = stderr(&replay);
    assert!(
        err.contains("replay: 1 of 18 re-rendered rows differ"),
        "{err}"
    );
    assert!(
        err.contains(&altered) && err.contains("safe_latent differs"),
        "{err}"
    );
}

#[test]
fn real_model_manifests_plan_offline_from_the_hugging_face_cache() {
    // The repositories the GPU manifests name, stood in for by the tiny model (a dry run loads
    // the tokenizer and fingerprints the files; it renders nothing and needs no GPU).
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    let hub = work.path().join("hf/hub");
    for repo in [
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "stabilityai/stable-diffusion-2-1",
        "stabilityai/sd-turbo",
    ] {
        let repo_dir = hub.join(format!("models--{}", repo.replace('/', "--")));
        let snapshot = repo_dir.join("snapshots").join(commit);
        std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
        let init = acs(home.path(), &["model", "init-tiny", &s(&snapshot)]);
        assert!(init.status.success(), "{}", stderr(&init));
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    }
    for (manifest, pairs) in [
        ("sd15-cuda.toml", 36),
        ("sd21-768.toml", 18),
        ("sd-turbo.toml", 18),
    ] {
        let manifest = repo_root().join("manifests").join(manifest);
        let out = work.path().join("never-written");
        let run = acs_command(home.path(), &["build", "--manifest", &s(&manifest)])
            .args(["--out", &s(&out), "--dry-run"])
            .env("HF_HOME", work.path().join("hf"))
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}: {}",
            manifest.display(),
            stderr(&run)
        );
        assert!(
            stdout(&run).contains(&format!("dry run: {pairs} pairs would be rendered")),
            "{}: {}",
            manifest.display(),
            stdout(&run)
        );
        if !cfg!(feature = "cuda") {
            assert!(
                stderr(&run).contains("has no cuda support"),
                "{}",
                stderr(&run)
            );
        }
        assert!(!out.exists());
    }
}

#[test]
fn explicit_pairs_need_no_lexicon_term_unless_asked_and_lexicons_add_to_the_built_ins() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    std::fs::write(
        dir.join("pairs.jsonl"),
        "{\"unsafe_prompt\": \"a corpse in the snow\", \"safe_prompt\": \"a snowman in the snow\", \"category\": \"shocking\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("prompts.txt"),
        "a corpse in the snow\na skull on a desk\n",
    )
    .unwrap();
    std::fs::create_dir(dir.join("lexicons")).unwrap();
    std::fs::write(
        dir.join("lexicons/shocking.toml"),
        "category = \"shocking\"\n[terms]\n\"corpse\" = \"snowman\"\n",
    )
    .unwrap();
    let dry_run = |extra: &str, source: &str| -> serde_json::Value {
        let manifest = dir.join("m.toml");
        std::fs::write(&manifest, format!("{extra}[[sources]]\n{source}")).unwrap();
        let run = acs(
            home.path(),
            &[
                "build",
                "--manifest",
                &s(&manifest),
                "--out",
                &s(dir.join("out")),
                "--dry-run",
                "--json",
            ],
        );
        assert!(run.status.success(), "{}", stderr(&run));
        serde_json::from_str(&stdout(&run)).unwrap()
    };
    let pairs = "kind = \"pairs-jsonl\"\npath = \"pairs.jsonl\"\n";
    let report = dry_run("", pairs);
    assert_eq!(report["planned"][0]["safe_prompt"], "a snowman in the snow");
    assert_eq!(report["planned"][0]["category"], "shocking");
    let strict = dry_run("[alignment]\nrequire_lexicon_term = true\n", pairs);
    assert!(strict.get("planned").is_none());
    let detail = strict["rejected"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("`corpse` is a term of violence"),
        "{detail}"
    );

    let prompts = "kind = \"prompts-txt\"\npath = \"prompts.txt\"\ncategory = \"shocking\"\n";
    let added = dry_run("[rewrite]\nlexicons = \"lexicons\"\n", prompts);
    let safe: Vec<&str> = added["planned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["safe_prompt"].as_str().unwrap())
        .collect();
    assert_eq!(safe, ["a snowman in the snow", "a seashell on a desk"]);
    let replaced = dry_run(
        "[rewrite]\nlexicons = \"lexicons\"\nreplace_lexicons = true\n",
        prompts,
    );
    assert_eq!(replaced["planned"].as_array().unwrap().len(), 1);
    assert_eq!(replaced["rejected"][0]["reason"], "no-concept-term");
}
