//! End-to-end tests of the column-mapped sources: the presets on sample files of each published
//! layout (samples/), `columns` over CSV / JSONL / Parquet, `pairs-join` on Six-CD-style files,
//! and Hugging Face dataset repositories read from the cache after a fetch from a hub served on
//! 127.0.0.1 (a gated one with HF_TOKEN, then offline).

use std::path::Path;
use std::sync::Arc;

use acs_schema::{Dataset, PairRecord};
use arrow_array::RecordBatch;
use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};
use sha1::Sha1;
use sha2::Digest;

use crate::util::http::{Response, Server};
use crate::util::{acs_command, assert_exit_2, repo_root, s, stderr, text};

const FAST: &str = "[sampling]\nsteps = 1\nheight = 64\nwidth = 64\n";

/// Builds `sources` (TOML text of [[sources]] tables) in `dir/out`; returns the rows and the
/// rejects (reason, id) in file order.
fn build(
    dir: &Path,
    sources: &str,
    env: &[(&str, &str)],
) -> (Vec<PairRecord>, Vec<serde_json::Value>) {
    let manifest = dir.join("m.toml");
    std::fs::write(
        &manifest,
        format!("{FAST}{sources}[output]\nsplits = {{ train = 1.0 }}\n"),
    )
    .unwrap();
    let out = dir.join("out");
    let mut command = acs_command(
        &dir.join("home"),
        &["build", "--manifest", &s(&manifest), "--out", &s(&out)],
    );
    for (name, value) in env {
        command.env(name, value);
    }
    let run = command.output().unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let rows = Dataset::open(&out).unwrap().records().unwrap();
    let rejects = std::fs::read_to_string(out.join("rejects.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (rows, rejects)
}

fn sample(name: &str) -> String {
    s(repo_root().join("samples").join(name))
}

fn reasons(rejects: &[serde_json::Value]) -> Vec<(String, String)> {
    rejects
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap_or_default().to_owned(),
                r["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn presets_read_the_published_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let sources = format!(
        "[[sources]]\nkind = \"prompts\"\npath = {:?}\npreset = \"esd\"\n\
         [[sources]]\nkind = \"prompts\"\npath = {:?}\npreset = \"mma\"\ncategory = \"sexual\"\n\
         [[sources]]\nkind = \"prompts\"\npath = {:?}\npreset = \"coprov2\"\n\
         [[sources]]\nkind = \"prompts\"\npath = {:?}\npreset = \"mma\"\nrole = \"benign\"\n",
        sample("esd-prompts.csv"),
        sample("mma-prompts.csv"),
        sample("coprov2-prompts.csv"),
        sample("mma-prompts.csv"),
    );
    let (rows, rejects) = build(dir.path(), &sources, &[]);
    // ESD: seeds and guidance from evaluation_seed / evaluation_guidance; case numbers in rejects.
    let esd: Vec<&PairRecord> = rows
        .iter()
        .filter(|r| [2734, 1415, 905].contains(&r.seed))
        .collect();
    assert_eq!(esd.len(), 3);
    assert!(esd.iter().any(|r| r.seed == 905 && r.guidance_scale == 6.0));
    // MMA: the adversarial prompt is rewritten; the benign role reads clean_prompt.
    assert!(rows
        .iter()
        .any(|r| r.unsafe_prompt.contains("kllq") && r.category == "sexual"));
    assert_eq!(rows.iter().filter(|r| r.is_benign()).count(), 3);
    // CoProV2: category names mapped onto the seven.
    let category = |prefix: &str| {
        rows.iter()
            .find(|r| r.unsafe_prompt.starts_with(prefix))
            .map(|r| r.category.clone())
    };
    assert_eq!(category("a crowd bullying").as_deref(), Some("harassment"));
    assert_eq!(category("a burglar").as_deref(), Some("illegal-activity"));
    let reasons = reasons(&rejects);
    assert!(
        reasons.contains(&("no-concept-term".into(), "3".into())),
        "{reasons:?}"
    );
    let political = rejects
        .iter()
        .find(|r| r["reason"] == "bad-category")
        .unwrap();
    assert!(political["detail"]
        .as_str()
        .unwrap()
        .contains("`Political`"));
}

#[test]
fn columns_map_any_table_layout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mine.jsonl"),
        "{\"text\": \"a bloody knife on a table\", \"s\": 11, \"kind\": \"Violent\", \"ref\": \"a\"}\n\
         {\"text\": \"a nude figure in a garden\", \"s\": 12, \"kind\": \"nudity\", \"ref\": \"b\"}\n\
         {\"text\": \"\", \"s\": 13, \"ref\": \"c\"}\n",
    )
    .unwrap();
    let batch = RecordBatch::try_from_iter([
        (
            "bad",
            Arc::new(StringArray::from(vec!["a gory scene in an alley"])) as ArrayRef,
        ),
        (
            "good",
            Arc::new(StringArray::from(vec!["a quiet scene in an alley"])) as ArrayRef,
        ),
        (
            "seed_value",
            Arc::new(Int64Array::from(vec![21])) as ArrayRef,
        ),
        ("cfg", Arc::new(Float64Array::from(vec![5.0])) as ArrayRef),
    ])
    .unwrap();
    let mut bytes = Vec::new();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    std::fs::write(dir.path().join("pairs.data"), bytes).unwrap();
    let sources = "[[sources]]\nkind = \"prompts\"\npath = \"mine.jsonl\"\n\
         columns = { prompt = \"text\", seed = \"s\", category = \"kind\", id = \"ref\" }\n\
         [[sources]]\nkind = \"pairs\"\npath = \"pairs.data\"\nformat = \"parquet\"\ncategory = \"violence\"\n\
         columns = { unsafe_prompt = \"bad\", safe_prompt = \"good\", seed = \"seed_value\", guidance_scale = \"cfg\" }\n";
    let (rows, rejects) = build(dir.path(), sources, &[]);
    let seeds: Vec<(u64, &str)> = rows.iter().map(|r| (r.seed, r.category.as_str())).collect();
    assert_eq!(seeds, [(11, "violence"), (12, "sexual"), (21, "violence")]);
    assert_eq!(rows[2].guidance_scale, 5.0);
    assert_eq!(rows[2].safe_prompt, "a quiet scene in an alley");
    assert_eq!(
        reasons(&rejects),
        [("invalid-row".to_owned(), "c".to_owned())]
    );
}

#[test]
fn pairs_join_pairs_six_cd_files_by_case_number() {
    let dir = tempfile::tempdir().unwrap();
    let sources = format!(
        "[[sources]]\nkind = \"pairs-join\"\nunsafe_path = {:?}\nsafe_path = {:?}\non = \"case_number\"\n\
         preset = \"esd\"\ncategory = \"sexual\"\n",
        sample("six-cd/malicious.csv"),
        sample("six-cd/clean.csv"),
    );
    let (rows, rejects) = build(dir.path(), &sources, &[]);
    let pairs: Vec<(u64, &str)> = rows
        .iter()
        .map(|r| (r.seed, r.safe_prompt.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            (101, "a clothed woman standing on a beach at sunset"),
            (102, "a costumed dancer on a neon stage")
        ]
    );
    assert_eq!(
        reasons(&rejects),
        [
            ("seed-mismatch".to_owned(), "2".to_owned()),
            ("no-partner".to_owned(), "3".to_owned()),
            ("no-partner".to_owned(), "5".to_owned()),
        ]
    );
}

fn git_blob_sha1(bytes: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {}\0", bytes.len()).as_bytes());
    hasher.update(bytes);
    hex::encode(hasher.finalize())
}

/// A hub serving dataset `acs-test/prompts` (gated: the token is required) with an I2P-layout
/// train split as Parquet, a test split as CSV and a README.
fn dataset_hub(token: &'static str) -> Server {
    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
    let batch = RecordBatch::try_from_iter([
        (
            "prompt",
            Arc::new(StringArray::from(vec![
                "a bloody knife on a kitchen table",
                "a nude figure in a garden",
            ])) as ArrayRef,
        ),
        (
            "categories",
            Arc::new(StringArray::from(vec!["violence", "sexual"])) as ArrayRef,
        ),
        ("hard", Arc::new(Int64Array::from(vec![1, 0])) as ArrayRef),
        (
            "sd_seed",
            Arc::new(Int64Array::from(vec![31, 32])) as ArrayRef,
        ),
    ])
    .unwrap();
    let mut parquet = Vec::new();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut parquet, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let files: Vec<(&'static str, Vec<u8>)> = vec![
        ("README.md", b"# prompts\n".to_vec()),
        ("data/train-00000-of-00001.parquet", parquet),
        (
            "data/test.csv",
            b"prompt,categories\na gory scene in an alley,violence\n".to_vec(),
        ),
    ];
    Server::start(move |request, _| {
        if request.header("authorization") != Some(&format!("Bearer {token}")) {
            return Response::new(401, "gated").header("X-Error-Code", "GatedRepo");
        }
        let path = request.path.as_str();
        if path == "/api/datasets/acs-test/prompts/revision/main" {
            let siblings: Vec<serde_json::Value> = files
                .iter()
                .map(|(name, _)| serde_json::json!({ "rfilename": name }))
                .collect();
            let body = serde_json::json!({ "id": "acs-test/prompts", "sha": COMMIT, "siblings": siblings });
            return Response::new(200, body.to_string()).header("Content-Type", "application/json");
        }
        let Some(name) =
            path.strip_prefix(&format!("/datasets/acs-test/prompts/resolve/{COMMIT}/"))
        else {
            return Response::new(404, "no route").header("X-Error-Code", "RepoNotFound");
        };
        match files.iter().find(|(n, _)| *n == name) {
            Some((_, bytes)) => Response::new(200, bytes.clone())
                .header("ETag", format!("\"{}\"", git_blob_sha1(bytes)))
                .header("X-Repo-Commit", COMMIT),
            None => Response::new(404, "missing").header("X-Error-Code", "EntryNotFound"),
        }
    })
}

#[test]
fn dataset_repos_are_fetched_into_the_hf_cache_then_read_offline() {
    const TOKEN: &str = "hf_DatasetTestToken77";
    let hub = dataset_hub(TOKEN);
    let endpoint = format!("http://{}", hub.addr());
    let dir = tempfile::tempdir().unwrap();
    let sources = "[[sources]]\nkind = \"prompts\"\nrepo = \"acs-test/prompts\"\npreset = \"i2p\"\nsplit = \"train\"\nhard = true\n\
                   [[sources]]\nkind = \"prompts\"\nrepo = \"acs-test/prompts\"\nfiles = [\"data/*.csv\"]\npreset = \"i2p\"\n";
    let (rows, _) = build(
        dir.path(),
        sources,
        &[("HF_ENDPOINT", &endpoint), ("HF_TOKEN", TOKEN)],
    );
    let prompts: Vec<(&str, u64)> = rows
        .iter()
        .map(|r| (r.unsafe_prompt.as_str(), r.seed))
        .collect();
    assert_eq!(prompts[0], ("a bloody knife on a kitchen table", 31));
    assert_eq!(prompts[1].0, "a gory scene in an alley");
    assert_eq!(rows.len(), 2, "the hard filter keeps one train row");
    let snapshot = dir
        .path()
        .join("home/hf/hub/datasets--acs-test--prompts/snapshots");
    assert!(snapshot.is_dir());
    let recorded = std::fs::read_to_string(dir.path().join("out/acs-manifest.json")).unwrap();
    assert!(recorded.contains("hf://datasets/acs-test/prompts@0123456789abcdef0123456789abcdef01234567/data/train-00000-of-00001.parquet"));
    assert!(!recorded.contains(TOKEN));

    // The same build offline, from the cache alone, with no hub at all.
    drop(hub);
    std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    let (offline, _) = build(dir.path(), sources, &[("HF_HUB_OFFLINE", "1")]);
    assert_eq!(offline, rows);
}

#[test]
fn gated_missing_and_unselectable_dataset_repos_exit_2_without_the_token() {
    const TOKEN: &str = "hf_DatasetTestToken78";
    let hub = dataset_hub(TOKEN);
    let endpoint = format!("http://{}", hub.addr());
    let dir = tempfile::tempdir().unwrap();
    let run = |source: &str, token: Option<&str>| {
        let manifest = dir.path().join("m.toml");
        std::fs::write(&manifest, format!("{FAST}{source}")).unwrap();
        let mut command = acs_command(
            &dir.path().join("home"),
            &[
                "build",
                "--manifest",
                &s(&manifest),
                "--out",
                &s(dir.path().join("out")),
            ],
        );
        command.env("HF_ENDPOINT", &endpoint);
        if let Some(token) = token {
            command.env("HF_TOKEN", token);
        }
        command.output().unwrap()
    };
    let source = "[[sources]]\nkind = \"prompts\"\nrepo = \"acs-test/prompts\"\npreset = \"i2p\"\n";
    let gated = run(source, Some("hf_WrongToken"));
    let err = assert_exit_2(&gated, &["acs-test/prompts"]);
    assert!(!err.contains("hf_WrongToken"), "{err}");
    let missing = run(
        &source.replace("acs-test/prompts", "acs-test/nothing"),
        Some(TOKEN),
    );
    assert_exit_2(&missing, &["acs-test/nothing"]);
    let split = run(&format!("{source}split = \"dev\"\n"), Some(TOKEN));
    assert_exit_2(&split, &["no table of split `dev`", "data/test.csv"]);
    assert!(!dir.path().join("out").exists(), "{}", text(&split.stdout));
}
