//! Bad-input suite (issue 6, item 6): table-driven cases that run the real `acs` binary on
//! malformed build manifests, prompt files, model folders, datasets and command lines.
//!
//! Every case asserts the product contract for bad input (SPEC "Commands"): the exit code
//! (2 for usage / input / integrity errors), a stderr of exactly one non-empty line starting
//! with `error: ` that names the file / field and the reason (checked by fragments; `a|b`
//! accepts either), no panic anywhere, and nothing half-written: every file of the case's
//! folder (inputs, a pre-existing `--out`) is byte-for-byte unchanged and nothing new appears
//! there (no `--out` folder, no `.tmp` sibling), except files a command documents writing
//! (`validation.json` of `acs validate`).
//!
//! Clap's own usage errors print a multi-line usage text: for those only the exit code and the
//! absence of a panic are checked.
//!
//! Cases that were product bugs when this suite was written (a vague or misleading message, a
//! message that is not one line, a memory blow-up) are in `reported_product_bugs_stay_fixed`.
//! `ACS_BAD_INPUT_SHOW=1` prints every case's exit code and stderr.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

use arrow_array::types::Int32Type;
use arrow_array::RecordBatch;
use arrow_array::{ArrayRef, Int64Array, ListArray, StringArray};

use crate::util::{copy_tree, isolate, repo_root, s, scratch, smoke_manifest, text, ACS};

/// The folder of this module for the whole run: the shared `ACS_HOME`, the tiny model, the
/// smoke dataset and one sub-folder per case (removed when the case passes).
fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = scratch().join("bad_input");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn home() -> PathBuf {
    root().join("home")
}

/// Runs `acs` with the shared `ACS_HOME`, in the repository root, outside any job array and
/// offline.
fn acs(args: &[String]) -> Output {
    acs_limited(args, None)
}

/// As `acs`, with the address space limited to `limit_kb` (through `sh -c 'ulimit -v'`) when
/// given, so that a case that would exhaust the machine's memory fails quickly instead.
fn acs_limited(args: &[String], limit_kb: Option<u64>) -> Output {
    let mut command = match limit_kb {
        None => Command::new(ACS),
        Some(kb) => {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!("ulimit -v {kb} && exec \"$0\" \"$@\""))
                .arg(ACS);
            sh
        }
    };
    isolate(&mut command, &home())
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", root().join("hf"))
        .output()
        .expect("run acs")
}

fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

/// `acs model init-tiny`, once per test run.
fn tiny_model() -> &'static Path {
    static TINY: OnceLock<PathBuf> = OnceLock::new();
    TINY.get_or_init(|| {
        let dir = root().join("tiny");
        let out = acs(&args(&["model", "init-tiny", &s(&dir)]));
        assert!(out.status.success(), "init-tiny: {}", text(&out.stderr));
        dir
    })
}

/// The smoke build, once per test run (about 10 s); cases copy it.
fn smoke_dataset() -> &'static Path {
    static SMOKE: OnceLock<PathBuf> = OnceLock::new();
    SMOKE.get_or_init(|| {
        let dir = root().join("smoke");
        let manifest = smoke_manifest();
        let out = acs(&args(&[
            "build",
            "--manifest",
            &s(manifest),
            "--out",
            &s(&dir),
        ]));
        assert!(out.status.success(), "smoke build: {}", text(&out.stderr));
        dir
    })
}

/// Every file and folder under `dir` (relative path -> contents, `None` for a folder).
fn snapshot(dir: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(base: &Path, dir: &Path, into: &mut BTreeMap<String, Option<Vec<u8>>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let path = entry.path();
            let relative = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if entry.file_type().unwrap().is_dir() {
                into.insert(relative, None);
                walk(base, &path, into);
            } else {
                into.insert(relative, Some(std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files);
    files
}

// ----------------------------------------------------------------------------------------
// The case table.

type Setup = Box<dyn Fn(&Path) -> Vec<String> + Send + Sync>;

struct Case {
    name: &'static str,
    /// Writes the case's inputs into its (empty) folder; returns the `acs` arguments.
    setup: Setup,
    code: i32,
    /// Fragments stderr must contain, with the case folder written `CASE`; `a|b` accepts
    /// either.
    expect: Vec<&'static str>,
    /// Fragments stderr must not contain.
    forbid: Vec<&'static str>,
    /// Clap's multi-line usage error: only the exit code and "no panic" are checked.
    clap: bool,
    /// Paths (relative to the case folder) the command may create.
    may_write: Vec<&'static str>,
    /// Address-space limit for the run, in KiB.
    limit_kb: Option<u64>,
}

/// What loading a file that is not NudeNet's ONNX model prints: that it is not one, or, in a
/// build without the `nudenet` feature, that this build has no detector and how to get one.
fn unloadable_nudenet() -> &'static [&'static str] {
    if cfg!(feature = "nudenet") {
        &["fake.onnx", "not a loadable NudeNet ONNX model"]
    } else {
        &[
            "NudeNet: this acs was built without the NudeNet detector",
            "cargo build --release --features nudenet",
        ]
    }
}

fn case(
    name: &'static str,
    expect: &[&'static str],
    setup: impl Fn(&Path) -> Vec<String> + Send + Sync + 'static,
) -> Case {
    Case {
        name,
        setup: Box::new(setup),
        code: 2,
        expect: expect.to_vec(),
        forbid: Vec::new(),
        clap: false,
        may_write: Vec::new(),
        limit_kb: None,
    }
}

impl Case {
    fn clap(mut self) -> Self {
        self.clap = true;
        self
    }

    fn may_write(mut self, path: &'static str) -> Self {
        self.may_write.push(path);
        self
    }

    fn limit_memory(mut self, kb: u64) -> Self {
        self.limit_kb = Some(kb);
        self
    }

    fn forbid(mut self, fragments: &[&'static str]) -> Self {
        self.forbid.extend_from_slice(fragments);
        self
    }
}

/// Runs one case; returns a description of every broken promise.
fn run_case(group: &str, case: &Case) -> Result<(), String> {
    let dir = root().join("cases").join(format!("{group}-{}", case.name));
    std::fs::create_dir_all(&dir).unwrap();
    let arguments = (case.setup)(&dir);
    let before = snapshot(&dir);
    let started = std::time::Instant::now();
    let output = acs_limited(&arguments, case.limit_kb);
    let elapsed = started.elapsed();
    let after = snapshot(&dir);
    let (out, err) = (text(&output.stdout), text(&output.stderr));
    if std::env::var_os("ACS_BAD_INPUT_SHOW").is_some() {
        eprintln!(
            "[{group}/{}] exit {:?}: {}",
            case.name,
            output.status.code(),
            err.trim_end()
        );
    }

    let mut problems = Vec::new();
    if output.status.code() != Some(case.code) {
        problems.push(format!(
            "exit status {:?}, expected {}",
            output.status.code(),
            case.code
        ));
    }
    if out.contains("panicked") || err.contains("panicked") {
        problems.push("panicked".to_owned());
    }
    if !case.clap {
        let line = err.strip_suffix('\n').unwrap_or(&err);
        if line.is_empty() || line.contains('\n') || line.contains('\r') {
            problems.push("stderr is not exactly one non-empty line".to_owned());
        }
        if !line.starts_with("error: ") {
            problems.push("stderr does not start with `error: `".to_owned());
        }
        // Fragments are matched with the case folder written as `CASE`, so that a case's own
        // name in the path cannot satisfy them.
        let err = err.replace(&s(&dir), "CASE");
        for fragment in &case.expect {
            if !fragment.split('|').any(|f| err.contains(f)) {
                problems.push(format!("stderr lacks `{fragment}`"));
            }
        }
        for fragment in &case.forbid {
            if err.contains(fragment) {
                problems.push(format!("stderr holds `{fragment}`"));
            }
        }
    }
    for (path, contents) in &before {
        match after.get(path) {
            None => problems.push(format!("{path} was removed")),
            Some(now) if now != contents => problems.push(format!("{path} was changed")),
            Some(_) => {}
        }
    }
    // A build with nothing to render still writes its rejects, and says where.
    let rejects_named = err.contains("no pair to render") && err.contains("rejects.jsonl");
    for path in after.keys() {
        let rejects = rejects_named && (path == "out" || path == "out/rejects.jsonl");
        if !before.contains_key(path) && !case.may_write.iter().any(|p| p == path) && !rejects {
            problems.push(format!("{path} was created"));
        }
    }
    if problems.is_empty() {
        // Model copies are 13 MB each: keep only the folders of failed cases.
        std::fs::remove_dir_all(&dir).unwrap();
        Ok(())
    } else {
        let tail = |t: &str| {
            let start = t.len().saturating_sub(1500);
            let start = (start..=t.len())
                .find(|&i| t.is_char_boundary(i))
                .unwrap_or(t.len());
            t[start..].to_owned()
        };
        Err(format!(
            "[{group}/{}] {}\n  command: acs {}\n  folder (kept): {}\n  exit: {:?} after {:.1} s\n  stderr: {}\n  stdout: {}",
            case.name,
            problems.join("; "),
            arguments.join(" "),
            dir.display(),
            output.status.code(),
            elapsed.as_secs_f64(),
            tail(&err),
            tail(&out),
        ))
    }
}

/// Runs a group's cases (at least `min` of them) and fails listing every failed case.
fn check_group(group: &str, cases: Vec<Case>, min: usize) {
    assert!(cases.len() >= min, "{group}: {} cases", cases.len());
    let mut names = std::collections::BTreeSet::new();
    for case in &cases {
        assert!(names.insert(case.name), "duplicate case name {}", case.name);
    }
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| run_case(group, case).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} {group} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ----------------------------------------------------------------------------------------
// Build manifests.

const FAST: [(&str, &str); 3] = [("steps", "1"), ("height", "64"), ("width", "64")];

/// Completes a manifest body so that a case that unexpectedly succeeds is fast: missing
/// `steps` / `height` / `width` are set to 1 / 64 / 64, the sample pairs (copied as
/// `pairs.jsonl`) are the source unless the body names sources, and a single train split.
fn complete_manifest(body: &str) -> String {
    let fast: String = FAST
        .iter()
        .filter(|(key, _)| !body.contains(&format!("{key} =")))
        .map(|(key, value)| format!("{key} = {value}\n"))
        .collect();
    let mut text = if body.contains("[sampling]\n") {
        body.replacen("[sampling]\n", &format!("[sampling]\n{fast}"), 1)
    } else {
        format!("{body}\n[sampling]\n{fast}")
    };
    if !body.contains("[[sources]]") && !body.contains("sources =") {
        text.push_str("\n[[sources]]\nkind = \"pairs-jsonl\"\npath = \"pairs.jsonl\"\n");
    }
    if !body.contains("[output]") {
        text.push_str("\n[output]\nsplits = { train = 1.0 }\n");
    }
    text
}

fn copy_sample_pairs(dir: &Path) {
    std::fs::copy(
        repo_root().join("samples/pairs.jsonl"),
        dir.join("pairs.jsonl"),
    )
    .unwrap();
}

fn build_args(dir: &Path, manifest: &str) -> Vec<String> {
    args(&[
        "build",
        "--manifest",
        &s(dir.join(manifest)),
        "--out",
        &s(dir.join("out")),
    ])
}

/// `acs build --manifest DIR/m.toml --out DIR/out` on the completed `body`.
fn manifest_case(name: &'static str, body: &'static str, expect: &[&'static str]) -> Case {
    case(name, expect, move |dir| {
        copy_sample_pairs(dir);
        std::fs::write(dir.join("m.toml"), complete_manifest(body)).unwrap();
        build_args(dir, "m.toml")
    })
}

/// As `manifest_case`, with the bytes of `m.toml` given as they are.
fn raw_manifest_case(name: &'static str, bytes: &'static [u8], expect: &[&'static str]) -> Case {
    case(name, expect, move |dir| {
        copy_sample_pairs(dir);
        std::fs::write(dir.join("m.toml"), bytes).unwrap();
        build_args(dir, "m.toml")
    })
}

/// As `manifest_case`, with `{tiny}` in the body replaced by the shared tiny model's folder.
fn tiny_manifest_case(name: &'static str, body: &'static str, expect: &[&'static str]) -> Case {
    case(name, expect, move |dir| {
        copy_sample_pairs(dir);
        let body = body.replace("{tiny}", &s(tiny_model()));
        std::fs::write(dir.join("m.toml"), complete_manifest(&body)).unwrap();
        build_args(dir, "m.toml")
    })
}

/// A build with `[rewrite] lexicons = "lexicons"` holding `violence.toml` = `lexicon`.
fn lexicon_case(name: &'static str, lexicon: &'static str, expect: &[&'static str]) -> Case {
    case(name, expect, move |dir| {
        copy_sample_pairs(dir);
        std::fs::create_dir(dir.join("lexicons")).unwrap();
        std::fs::write(dir.join("lexicons/violence.toml"), lexicon).unwrap();
        std::fs::write(
            dir.join("m.toml"),
            complete_manifest("[rewrite]\nlexicons = \"lexicons\"\n"),
        )
        .unwrap();
        build_args(dir, "m.toml")
    })
}

fn manifest_cases() -> Vec<Case> {
    vec![
        raw_manifest_case(
            "toml-syntax-error",
            b"this is = not toml [\n",
            &["m.toml:1:6: ", "key with no value"],
        ),
        raw_manifest_case(
            "duplicate-key",
            b"[sampling]\nsteps = 3\nsteps = 4\n",
            &["m.toml:3:1: duplicate key in `steps = 4`"],
        ),
        manifest_case(
            "unknown-top-level-table",
            "[sampels]\nsteps = 1\n",
            &["m.toml", "top level", "`sampels`", "did you mean `sampling`?"],
        ),
        manifest_case(
            "unknown-key-model",
            "[model]\npath = \"m\"\ndtpye = \"f32\"\n",
            &["m.toml", "[model]", "`dtpye`", "did you mean `dtype`?"],
        ),
        manifest_case(
            "unknown-key-sampling",
            "[sampling]\nstpes = 3\n",
            &["m.toml", "[sampling]", "`stpes`", "did you mean `steps`?"],
        ),
        manifest_case(
            "unknown-key-alignment",
            "[alignment]\nswich_at = 0.3\n",
            &["m.toml", "[alignment]", "`swich_at`", "did you mean `switch_at`?"],
        ),
        manifest_case(
            "unknown-key-sources",
            "[[sources]]\nkind = \"pairs-jsonl\"\npath = \"pairs.jsonl\"\ncatgory = \"sexual\"\n",
            &["m.toml", "[[sources]] #1", "`catgory`", "did you mean `category`?"],
        ),
        manifest_case(
            "unknown-key-rewrite",
            "[rewrite]\nlexicon = \"lexicons\"\n",
            &["m.toml", "[rewrite]", "`lexicon`", "did you mean `lexicons`?"],
        ),
        manifest_case(
            "unknown-key-rewrite-llm",
            "[rewrite.llm]\nbase_url = \"http://127.0.0.1:9/v1\"\nmodle = \"m\"\n",
            &["m.toml", "[rewrite.llm]", "`modle`", "did you mean `model`?"],
        ),
        manifest_case(
            "unknown-key-validation",
            "[validation]\nnudenet_treshold = 0.3\n",
            &[
                "m.toml",
                "[validation]",
                "`nudenet_treshold`",
                "did you mean `nudenet_threshold`?",
            ],
        ),
        manifest_case(
            "unknown-key-output",
            "[output]\nshard_row = 3\nsplits = { train = 1.0 }\n",
            &["m.toml", "[output]", "`shard_row`", "did you mean `shard_rows`?"],
        ),
        manifest_case(
            "trajectory-step-outside-the-schedule",
            "[sampling]\nsteps = 4\n[output]\ntrajectory_steps = [0, 4]\nsplits = { train = 1.0 }\n",
            &["m.toml", "[output].trajectory_steps", "step 4", "0..=3"],
        ),
        manifest_case(
            "trajectory-step-twice",
            "[sampling]\nsteps = 4\n[output]\ntrajectory_steps = [1, 2, 1]\nsplits = { train = 1.0 }\n",
            &["m.toml", "[output].trajectory_steps", "step 1 is listed twice"],
        ),
        manifest_case(
            "trajectory-without-latents",
            "[output]\ntrajectory_steps = [0]\nstore_latents = false\nsplits = { train = 1.0 }\n",
            &["m.toml", "[output].trajectory_steps", "store_latents = true"],
        ),
        manifest_case(
            "negative-trajectory-step",
            "[output]\ntrajectory_steps = [-1]\nsplits = { train = 1.0 }\n",
            &["m.toml", "[output].trajectory_steps[0]", "whole number from 0", "(got -1)"],
        ),
        manifest_case(
            "mask-threshold-too-high",
            "[output]\nmask_threshold = 255\nsplits = { train = 1.0 }\n",
            &["m.toml", "[output].mask_threshold", "0..=254"],
        ),
        manifest_case(
            "benign-source-with-a-category",
            "[[sources]]\nkind = \"pairs-jsonl\"\npath = \"pairs.jsonl\"\nrole = \"benign\"\ncategory = \"sexual\"\n",
            &["m.toml", "[[sources]] #1.category", "benign source has no category"],
        ),
        manifest_case(
            "benign-i2p-source",
            "[[sources]]\nkind = \"i2p-csv\"\npath = \"pairs.jsonl\"\nrole = \"benign\"\n",
            &["m.toml", "[[sources]] #1.role", "not from I2P"],
        ),
        manifest_case(
            "unknown-source-role",
            "[[sources]]\nkind = \"pairs-jsonl\"\npath = \"pairs.jsonl\"\nrole = \"harmless\"\n",
            &["m.toml", "role", "harmless", "benign"],
        ),
        manifest_case(
            "pairs-join-without-safe-path",
            "[[sources]]\nkind = \"pairs-join\"\nunsafe_path = \"pairs.jsonl\"\n",
            &["m.toml", "[[sources]] #1.safe_path", "needs both"],
        ),
        manifest_case(
            "preset-on-a-fixed-layout",
            "[[sources]]\nkind = \"pairs-jsonl\"\npath = \"pairs.jsonl\"\npreset = \"esd\"\n",
            &["m.toml", "[[sources]] #1.preset", "column-mapped kinds"],
        ),
        manifest_case(
            "preset-on-explicit-pairs",
            "[[sources]]\nkind = \"pairs\"\npath = \"pairs.jsonl\"\npreset = \"esd\"\n",
            &["m.toml", "[[sources]] #1.preset", "kind = \"prompts\""],
        ),
        manifest_case(
            "path-and-repo",
            "[[sources]]\nkind = \"prompts\"\npath = \"pairs.jsonl\"\nrepo = \"org/name\"\n",
            &["m.toml", "[[sources]] #1.repo", "both set"],
        ),
        manifest_case(
            "split-without-repo",
            "[[sources]]\nkind = \"prompts\"\npath = \"pairs.jsonl\"\nsplit = \"train\"\n",
            &["m.toml", "[[sources]] #1.split", "only applies with `repo`"],
        ),
        manifest_case(
            "repo-on-a-fixed-layout",
            "[[sources]]\nkind = \"pairs-jsonl\"\nrepo = \"org/name\"\n",
            &["m.toml", "[[sources]] #1.repo", "reads a local file"],
        ),
        manifest_case(
            "unknown-preset",
            "[[sources]]\nkind = \"prompts\"\npath = \"pairs.jsonl\"\npreset = \"i2p2\"\n",
            &["m.toml", "preset", "i2p2", "esd"],
        ),
        manifest_case(
            "unknown-column-key",
            "[[sources]]\nkind = \"prompts\"\npath = \"pairs.jsonl\"\ncolumns = { promt = \"x\" }\n",
            &["m.toml", "[[sources]] #1.columns", "did you mean `prompt`?"],
        ),
        manifest_case(
            "pair-columns-on-prompts",
            "[[sources]]\nkind = \"prompts\"\npath = \"pairs.jsonl\"\ncolumns = { unsafe_prompt = \"x\" }\n",
            &["m.toml", "[[sources]] #1.columns", "kind = \"pairs\""],
        ),
        manifest_case(
            "i2p-filter-on-esd-preset",
            "[[sources]]\nkind = \"prompts\"\npath = \"pairs.jsonl\"\npreset = \"esd\"\nhard = true\n",
            &["m.toml", "[[sources]] #1.hard", "preset = \"i2p\""],
        ),
        manifest_case(
            "wrong-type-string-for-int",
            "[sampling]\nsteps = \"ten\"\n",
            &["m.toml", "[sampling].steps", "must be a whole number", "\"ten\""],
        ),
        manifest_case(
            "wrong-type-string-for-bool",
            "[output]\nstore_latents = \"yes\"\nsplits = { train = 1.0 }\n",
            &["m.toml", "[output].store_latents", "must be true or false"],
        ),
        manifest_case(
            "wrong-type-float-for-int",
            "[sampling]\nheight = 64.5\n",
            &["m.toml", "[sampling].height", "whole number", "64.5"],
        ),
        manifest_case(
            "steps-zero",
            "[sampling]\nsteps = 0\n",
            &["m.toml", "[sampling].steps", "(got 0)"],
        ),
        manifest_case(
            "guidance-negative",
            "[sampling]\nguidance_scale = -1.0\n",
            &["m.toml", "[sampling].guidance_scale", "[0, 100]", "(got -1;"],
        ),
        manifest_case(
            "guidance-a-typo-away",
            "[sampling]\nguidance_scale = 1e9\n",
            &["m.toml", "[sampling].guidance_scale", "[0, 100]", "(got 1000000000;"],
        ),
        manifest_case(
            "height-not-multiple-of-8",
            "[sampling]\nheight = 100\n",
            &["m.toml", "[sampling].height", "multiple of 8", "(got 100)"],
        ),
        manifest_case(
            "width-zero",
            "[sampling]\nwidth = 0\n",
            &["m.toml", "[sampling].width", "(got 0)"],
        ),
        manifest_case(
            "seeds-per-prompt-zero",
            "[sampling]\nseeds_per_prompt = 0\n",
            &["m.toml", "[sampling].seeds_per_prompt", "1..=10000"],
        ),
        manifest_case(
            "switch-at-above-1",
            "[alignment]\nmode = \"prompt-switch\"\nswitch_at = 1.5\n",
            &["m.toml", "[alignment].switch_at", "[0, 1]", "(got 1.5)"],
        ),
        manifest_case(
            "ssim-min-above-1",
            "[alignment]\nssim_min = 1.5\n",
            &["m.toml", "[alignment].ssim_min", "(got 1.5)"],
        ),
        manifest_case(
            "changed-area-max-above-1",
            "[alignment]\nchanged_area_max = 2.0\n",
            &["m.toml", "[alignment].changed_area_max", "(got 2)"],
        ),
        manifest_case(
            "splits-not-summing-to-1",
            "[output]\nsplits = { train = 0.5, test = 0.3 }\n",
            &["m.toml", "[output].splits", "sum to 1", "(got 0.8)"],
        ),
        manifest_case(
            "split-negative",
            "[output]\nsplits = { train = 1.5, test = -0.5 }\n",
            &["m.toml", "[output].splits.test", "(got -0.5)"],
        ),
        manifest_case(
            "shard-bytes-unparseable",
            "[output]\nshard_bytes = \"lots\"\nsplits = { train = 1.0 }\n",
            &["m.toml", "[output].shard_bytes", "`lots`", "not a size"],
        ),
        manifest_case(
            "shard-rows-zero",
            "[output]\nshard_rows = 0\nsplits = { train = 1.0 }\n",
            &["m.toml", "[output].shard_rows", "at least 1"],
        ),
        manifest_case(
            "nudenet-threshold-above-1",
            "[validation]\nnudenet_model = \"320n.onnx\"\nnudenet_threshold = 1.5\n",
            &["m.toml", "[validation].nudenet_threshold", "(got 1.5)"],
        ),
        manifest_case(
            "unknown-scheduler",
            "[sampling]\nscheduler = \"plms\"\n",
            &["m.toml", "[sampling].scheduler", "`plms`", "ddim"],
        ),
        manifest_case(
            "unknown-rng",
            "[sampling]\nrng = \"numpy\"\n",
            &["m.toml", "[sampling].rng", "`numpy`", "torch-cpu"],
        ),
        tiny_manifest_case(
            "unknown-dtype",
            "[model]\npath = \"{tiny}\"\ndtype = \"f64\"\n",
            &["m.toml", "[model].dtype", "`f64`", "f32, f16, bf16"],
        ),
        tiny_manifest_case(
            "unknown-device",
            "[model]\npath = \"{tiny}\"\ndevice = \"tpu\"\n",
            &["m.toml", "[model].device", "`tpu`", "cuda:N"],
        ),
        tiny_manifest_case(
            "bf16-on-cpu",
            "[model]\npath = \"{tiny}\"\ndtype = \"bf16\"\ndevice = \"cpu\"\n",
            &["m.toml", "[model].dtype", "bf16 needs a GPU"],
        ),
        tiny_manifest_case(
            "model-path-and-repo",
            "[model]\npath = \"{tiny}\"\nrepo = \"org/name\"\n",
            &["m.toml", "[model]", "`path` and `repo` are both set"],
        ),
        manifest_case(
            "unknown-mode",
            "[alignment]\nmode = \"blend\"\n",
            &["m.toml", "[alignment].mode", "`blend`", "shared-latent"],
        ),
        manifest_case(
            "unknown-source-kind",
            "[[sources]]\nkind = \"pairs-xml\"\npath = \"pairs.jsonl\"\n",
            &["m.toml", "[[sources]] #1.kind", "`pairs-xml`", "pairs-jsonl"],
        ),
        manifest_case(
            "unknown-category",
            "[[sources]]\nkind = \"pairs-jsonl\"\npath = \"pairs.jsonl\"\ncategory = \"spam\"\n",
            &["m.toml", "[[sources]] #1.category", "`spam`", "violence"],
        ),
        manifest_case(
            "no-sources",
            "sources = []\n",
            &["m.toml", "[[sources]]", "at least one source"],
        ),
        manifest_case(
            "i2p-filter-on-pairs-source",
            "[[sources]]\nkind = \"pairs-jsonl\"\npath = \"pairs.jsonl\"\nmin_nudity_percentage = 3.0\n",
            &[
                "m.toml",
                "[[sources]] #1.min_nudity_percentage",
                "only applies to i2p-csv and i2p-parquet",
            ],
        ),
        manifest_case(
            "i2p-hard-on-pairs-source",
            "[[sources]]\nkind = \"pairs-jsonl\"\npath = \"pairs.jsonl\"\nhard = true\n",
            &["m.toml", "[[sources]] #1.hard", "only applies to i2p"],
        ),
        manifest_case(
            "require-flip-without-detector",
            "[alignment]\nrequire_flip = true\n",
            &[
                "m.toml",
                "[alignment].require_flip",
                "[validation].nudenet_model",
            ],
        ),
        manifest_case(
            "unknown-nudenet-class",
            "[validation]\nnudenet_model = \"320n.onnx\"\n\
             nudenet_classes = [\"FEMALE_BREAST_EXPOSED\", \"NOSE_EXPOSED\"]\n",
            &[
                "m.toml",
                "[validation].nudenet_classes",
                "`NOSE_EXPOSED` is not a NudeNet class",
            ],
        ),
        manifest_case(
            "nudenet-model-missing",
            "[validation]\nnudenet_model = \"nowhere/320n.onnx\"\n",
            &[
                "nowhere/320n.onnx",
                "[validation].nudenet_model",
                "no such file",
            ],
        ),
        case(
            "nudenet-model-not-onnx",
            unloadable_nudenet(),
            |dir| {
                copy_sample_pairs(dir);
                std::fs::write(dir.join("fake.onnx"), "this is not a protobuf\n").unwrap();
                std::fs::write(
                    dir.join("m.toml"),
                    complete_manifest("[validation]\nnudenet_model = \"fake.onnx\"\n"),
                )
                .unwrap();
                build_args(dir, "m.toml")
            },
        ),
        case(
            "manifest-missing",
            &["absent.toml", "No such file"],
            |dir| build_args(dir, "absent.toml"),
        ),
        lexicon_case(
            "lexicon-toml-syntax-error",
            "category = \"violence\"\n[terms\n",
            &["lexicons/violence.toml:2:7: ", "unclosed table"],
        ),
        manifest_case(
            "attention-key-without-attention-mode",
            "[alignment]\ncross_replace = 0.5\n",
            &["m.toml: [alignment].cross_replace: needs mode = \"attention\""],
        ),
        manifest_case(
            "attention-range-outside-the-run",
            "[alignment]\nmode = \"attention\"\nself_replace = [0.2, 1.4]\n",
            &["m.toml: [alignment].self_replace: [0.2, 1.4] is not within [0, 1]"],
        ),
        manifest_case(
            "attention-blend-threshold-outside-the-open-interval",
            "[alignment]\nmode = \"attention\"\nlocal_blend = { threshold = 0.0 }\n",
            &["m.toml: [alignment].local_blend.threshold: must be in (0, 1)"],
        ),
        manifest_case(
            "attention-blend-unknown-key",
            "[alignment]\nmode = \"attention\"\nlocal_blend = { treshold = 0.4 }\n",
            &["[alignment].local_blend: unknown key `treshold`", "did you mean `threshold`?"],
        ),
        manifest_case(
            "attention-variant-mixed-with-prompt-to-prompt",
            "[alignment]\nmode = \"attention\"\nshare_self_attention = 0.5\ncross_replace = 0.8\n",
            &["[alignment].share_self_attention:", "remove `cross_replace`"],
        ),
        tiny_manifest_case(
            "attention-word-in-no-prompt",
            "[model]\npath = \"{tiny}\"\n[alignment]\nmode = \"attention\"\nreweight = { zebra = 2.0 }\n",
            &["m.toml: [alignment].reweight.zebra: \"zebra\" is in no prompt pair of this build"],
        ),
        tiny_manifest_case(
            "attention-blend-level-the-model-lacks",
            "[model]\npath = \"{tiny}\"\n[alignment]\nmode = \"attention\"\n\
             local_blend = { downscale = 64 }\n",
            &["m.toml: [alignment].local_blend: the model's UNet has no down or up block with \
               cross-attention at latent/64"],
        ),
        manifest_case(
            "keep-best-above-seeds-per-prompt",
            "[alignment]\nkeep_best = 3\n[sampling]\nseeds_per_prompt = 2\n",
            &["m.toml: [alignment].keep_best: 3 is more than [sampling].seeds_per_prompt 2"],
        ),
        manifest_case(
            "rank-by-without-keep-best",
            "[alignment]\nrank_by = \"clip-direction\"\n",
            &["m.toml: [alignment].rank_by: `clip-direction` ranks renders for keep_best, which is not set"],
        ),
        manifest_case(
            "rank-by-shapes-without-the-shapes-judge",
            "[alignment]\nkeep_best = 1\nrank_by = \"shapes\"\n[sampling]\nseeds_per_prompt = 2\n",
            &["m.toml: [alignment].rank_by: `shapes` needs the shapes judge"],
        ),
        manifest_case(
            "clip-threshold-without-clip-similarity",
            "[validation]\nclip_direction_min = 0.3\n",
            &["m.toml: [validation].clip_direction_min: CLIP similarity is off"],
        ),
        manifest_case(
            "clip-threshold-outside-a-cosine",
            "[validation]\nclip_similarity = true\nclip_image_min = 1.5\n",
            &["m.toml: [validation].clip_image_min: 1.5 is outside [-1, 1]"],
        ),
        manifest_case(
            "clip-model-not-found",
            "[validation]\nclip_similarity = true\nclip_model = \"nowhere\"\n",
            &["[validation].clip_model: `nowhere` is neither a folder nor a hub id"],
        ),
        lexicon_case(
            "lexicon-of-another-category",
            "category = \"hate\"\n[terms]\n\"bloody\" = \"clean\"\n",
            &["lexicons/violence.toml", "category `hate`", "expected `violence`"],
        ),
        lexicon_case(
            "lexicon-substitute-not-a-string",
            "category = \"violence\"\n[terms]\n\"bloody\" = 3\n",
            &["lexicons/violence.toml:3:", "expected a string"],
        ),
        manifest_case(
            "lexicon-folder-missing",
            "[rewrite]\nlexicons = \"nowhere\"\n",
            &["CASE/nowhere:", "lexicon folder not found"],
        ),
        case(
            "output-folder-not-empty",
            &["CASE/out:", "not empty"],
            |dir| {
                copy_sample_pairs(dir);
                std::fs::write(dir.join("m.toml"), complete_manifest("")).unwrap();
                std::fs::create_dir(dir.join("out")).unwrap();
                std::fs::write(dir.join("out/keep.txt"), "someone else's file\n").unwrap();
                build_args(dir, "m.toml")
            },
        ),
    ]
}

#[test]
fn malformed_build_manifests() {
    check_group("manifest", manifest_cases(), 18);
}

// ----------------------------------------------------------------------------------------
// Prompt files.

/// `acs build` (a real build, not a dry run) of a manifest whose source is `file` (written
/// with `bytes`) of `kind`.
fn source_case(
    name: &'static str,
    kind: &'static str,
    file: &'static str,
    bytes: impl Fn() -> Vec<u8> + Send + Sync + 'static,
    expect: &[&'static str],
) -> Case {
    case(name, expect, move |dir| {
        std::fs::write(dir.join(file), bytes()).unwrap();
        let body =
            format!("[[sources]]\nkind = \"{kind}\"\npath = \"{file}\"\ncategory = \"violence\"\n");
        let body = if kind.starts_with("i2p") {
            body.replace("category = \"violence\"\n", "")
        } else {
            body
        };
        std::fs::write(dir.join("m.toml"), complete_manifest(&body)).unwrap();
        build_args(dir, "m.toml")
    })
}

/// Deterministic binary garbage: 4 KiB of bytes >= 0x80 (no line break, not UTF-8).
fn garbage() -> Vec<u8> {
    (0..4096u32)
        .map(|i| 0x80 | (i.wrapping_mul(2_654_435_761) >> 25) as u8)
        .collect()
}

fn parquet_bytes(columns: Vec<(&str, ArrayRef)>) -> Vec<u8> {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut bytes = Vec::new();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    bytes
}

/// A case whose manifest holds `source` (a [[sources]] table) next to `files` written as given.
fn mapped_case(
    name: &'static str,
    source: &'static str,
    files: &'static [(&'static str, &'static str)],
    expect: &[&'static str],
) -> Case {
    case(name, expect, move |dir| {
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
        }
        std::fs::write(dir.join("m.toml"), complete_manifest(source)).unwrap();
        build_args(dir, "m.toml")
    })
}

fn mapped_source_cases() -> Vec<Case> {
    vec![
        mapped_case(
            "columns-name-an-absent-column",
            "[[sources]]\nkind = \"prompts\"\npath = \"p.csv\"\ncolumns = { prompt = \"text\" }\n",
            &[("p.csv", "prompt,seed\na bloody knife,3\n")],
            &["p.csv:1", "`text`", "columns", "found: \"prompt\", \"seed\""],
        ),
        mapped_case(
            "preset-that-does-not-fit-the-file",
            "[[sources]]\nkind = \"prompts\"\npath = \"p.jsonl\"\npreset = \"mma\"\n",
            &[("p.jsonl", "{\"prompt\": \"a bloody knife\"}\n")],
            &["p.jsonl", "no `adv_prompt` column", "preset mma", "found: \"prompt\""],
        ),
        mapped_case(
            "format-not-told-by-the-name",
            "[[sources]]\nkind = \"prompts\"\npath = \"p.txt\"\n",
            &[("p.txt", "a bloody knife\n")],
            &["p.txt", "cannot tell the format", "format = "],
        ),
        mapped_case(
            "pairs-join-key-column-missing",
            "[[sources]]\nkind = \"pairs-join\"\nunsafe_path = \"u.csv\"\nsafe_path = \"s.csv\"\ncategory = \"violence\"\n",
            &[
                ("u.csv", "id,prompt\n1,a bloody knife\n"),
                ("s.csv", "id,prompt\n1,a clean knife\n"),
            ],
            &["u.csv:1", "`case_number`", "key column of pairs-join", "found: \"id\", \"prompt\""],
        ),
        mapped_case(
            "parquet-prompts-that-are-numbers",
            "[[sources]]\nkind = \"prompts\"\npath = \"p.jsonl\"\nformat = \"parquet\"\n",
            &[("p.jsonl", "{\"prompt\": \"a bloody knife\"}\n")],
            &["p.jsonl", "not a readable Parquet file"],
        ),
    ]
}

fn prompt_file_cases() -> Vec<Case> {
    vec![
        case(
            "source-file-missing",
            &["nowhere.jsonl", "No such file"],
            |dir| {
                std::fs::write(
                    dir.join("m.toml"),
                    complete_manifest(
                        "[[sources]]\nkind = \"pairs-jsonl\"\npath = \"nowhere.jsonl\"\n",
                    ),
                )
                .unwrap();
                build_args(dir, "m.toml")
            },
        ),
        case(
            "source-path-is-a-folder",
            &["CASE/sub:", "directory"],
            |dir| {
                std::fs::create_dir(dir.join("sub")).unwrap();
                std::fs::write(
                    dir.join("m.toml"),
                    complete_manifest("[[sources]]\nkind = \"pairs-jsonl\"\npath = \"sub\"\n"),
                )
                .unwrap();
                build_args(dir, "m.toml")
            },
        ),
        source_case(
            "pairs-jsonl-every-line-broken",
            "pairs-jsonl",
            "broken.jsonl",
            || {
                b"{\"unsafe_prompt\": \"a bloody knife\", \"safe_prompt\": \"a bloody knife\"}\n\
                  {not json\n{\"unsafe_prompt\": 3}\n{\"safe_prompt\": \"a clean knife\"}\n"
                    .to_vec()
            },
            &[
                "m.toml",
                "no pair to render",
                "all 4 inputs were rejected",
                "identical-prompts: 1",
                "invalid-row: 3",
            ],
        ),
        source_case(
            "pairs-jsonl-binary-garbage",
            "pairs-jsonl",
            "garbage.jsonl",
            garbage,
            &[
                "m.toml",
                "no pair to render",
                "the only input was rejected",
                "invalid-utf8: 1",
            ],
        ),
        source_case(
            "pairs-csv-every-record-empty",
            "pairs-csv",
            "empty-fields.csv",
            || b"unsafe_prompt,safe_prompt\n,\n\"a bloody knife\",\n".to_vec(),
            &["m.toml", "no pair to render", "invalid-row: 2"],
        ),
        source_case(
            "pairs-csv-without-header-columns",
            "pairs-csv",
            "no-header.csv",
            || b"prompt,other\na bloody knife,a clean knife\n".to_vec(),
            &[
                "no-header.csv:1",
                "`unsafe_prompt` and `safe_prompt`",
                "found: \"prompt\", \"other\"",
            ],
        ),
        source_case(
            "pairs-csv-empty",
            "pairs-csv",
            "empty.csv",
            Vec::new,
            &["empty.csv:1", "`unsafe_prompt` and `safe_prompt`"],
        ),
        source_case(
            "i2p-csv-without-prompt-column",
            "i2p-csv",
            "no-prompt.csv",
            || b"text,categories,hard\na bloody knife,violence,1\n".to_vec(),
            &[
                "no-prompt.csv:1",
                "must name `prompt`",
                "found: \"text\", \"categories\", \"hard\"",
            ],
        ),
        source_case(
            "i2p-parquet-not-parquet",
            "i2p-parquet",
            "fake.parquet",
            || b"prompt,categories\na bloody knife,violence\n".to_vec(),
            &["fake.parquet", "not a readable Parquet file"],
        ),
        source_case(
            "i2p-parquet-without-prompt-column",
            "i2p-parquet",
            "no-prompt.parquet",
            || {
                parquet_bytes(vec![
                    (
                        "text",
                        std::sync::Arc::new(StringArray::from(vec!["a bloody knife"])) as ArrayRef,
                    ),
                    (
                        "categories",
                        std::sync::Arc::new(StringArray::from(vec!["violence"])),
                    ),
                ])
            },
            &[
                "no-prompt.parquet",
                "no `prompt` column",
                "found: \"text\", \"categories\"",
            ],
        ),
        // A column of the wrong type makes every row unreadable: rows become rejects (the
        // user guide: "bad number" is `invalid-row`), and all rejected is exit 2.
        source_case(
            "i2p-parquet-seed-column-of-strings",
            "i2p-parquet",
            "types.parquet",
            || {
                parquet_bytes(vec![
                    (
                        "prompt",
                        Arc::new(StringArray::from(vec!["a bloody knife", "a gory axe"]))
                            as ArrayRef,
                    ),
                    (
                        "categories",
                        Arc::new(StringArray::from(vec!["violence", "violence"])),
                    ),
                    ("sd_seed", Arc::new(StringArray::from(vec!["abc", "x1"]))),
                ])
            },
            &[
                "m.toml",
                "no pair to render",
                "all 2 inputs",
                "invalid-row: 2",
            ],
        ),
        source_case(
            "prompts-txt-only-invalid-utf8",
            "prompts-txt",
            "bad.txt",
            || b"\xff\xfe a bloody \xfd knife\n\xc3\x28 a gory \xa0\xa1 axe\n".to_vec(),
            &[
                "m.toml",
                "no pair to render",
                "all 2 inputs were rejected",
                "invalid-utf8: 2",
            ],
        ),
    ]
}

#[test]
fn malformed_prompt_files() {
    check_group("prompts", prompt_file_cases(), 8);
    check_group("mapped-sources", mapped_source_cases(), 5);
}

// ----------------------------------------------------------------------------------------
// Model folders.

/// A real build (1 step, 64 px) from `[model] path = "model"`, a copy of the tiny model that
/// `breaks` changes (or no folder at all when `copy` is false).
fn model_case(
    name: &'static str,
    expect: &[&'static str],
    copy: bool,
    breaks: impl Fn(&Path) + Send + Sync + 'static,
) -> Case {
    case(name, expect, move |dir| {
        copy_sample_pairs(dir);
        let model = dir.join("model");
        if copy {
            copy_tree(tiny_model(), &model);
        }
        breaks(&model);
        std::fs::write(
            dir.join("m.toml"),
            complete_manifest("[model]\npath = \"model\"\n"),
        )
        .unwrap();
        build_args(dir, "m.toml")
    })
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} lacks {from}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// Rewrites a safetensors file with `tensor` replaced by one of `shape` (same dtype, the
/// leading bytes of its data).
fn reshape_tensor(path: &Path, tensor: &str, shape: &[usize]) {
    use safetensors::tensor::{SafeTensors, TensorView};
    let bytes = std::fs::read(path).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let mut views: Vec<(String, TensorView)> = tensors.tensors();
    let view = views
        .iter_mut()
        .find(|(name, _)| name == tensor)
        .unwrap_or_else(|| panic!("no tensor {tensor}"));
    let dtype = view.1.dtype();
    let size = shape.iter().product::<usize>() * dtype.bitsize() / 8;
    let data = &view.1.data()[..size];
    view.1 = TensorView::new(dtype, shape.to_vec(), data).unwrap();
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(path, out).unwrap();
}

fn model_folder_cases() -> Vec<Case> {
    const UNET_WEIGHTS: &str = "unet/diffusion_pytorch_model.safetensors";
    vec![
        model_case(
            "model-index-missing",
            &["CASE/model:", "no model_index.json"],
            true,
            |m| std::fs::remove_file(m.join("model_index.json")).unwrap(),
        ),
        model_case(
            "model-index-not-json",
            &["model/model_index.json", "invalid JSON"],
            true,
            |m| std::fs::write(m.join("model_index.json"), "[1, 2").unwrap(),
        ),
        model_case(
            "unet-config-missing",
            &["model/unet/config.json", "No such file"],
            true,
            |m| std::fs::remove_file(m.join("unet/config.json")).unwrap(),
        ),
        model_case(
            "unet-config-not-json",
            &["model/unet/config.json", "invalid JSON", "line 2"],
            true,
            |m| std::fs::write(m.join("unet/config.json"), "{\"in_channels\": 4,\n").unwrap(),
        ),
        model_case(
            "unet-unsupported-activation",
            &[
                "model/unet/config.json",
                "`act_fn`",
                "\"mish\"",
                "not supported",
            ],
            true,
            |m| {
                edit(
                    &m.join("unet/config.json"),
                    "\"act_fn\": \"silu\"",
                    "\"act_fn\": \"mish\"",
                )
            },
        ),
        model_case(
            "unet-sdxl-addition-embed",
            &[
                "model/unet/config.json",
                "`addition_embed_type`",
                "\"text_time\"",
                "not supported",
            ],
            true,
            |m| {
                edit(
                    &m.join("unet/config.json"),
                    "\"act_fn\": \"silu\"",
                    "\"act_fn\": \"silu\", \"addition_embed_type\": \"text_time\"",
                )
            },
        ),
        model_case(
            "text-encoder-unsupported-activation",
            &[
                "model/text_encoder/config.json",
                "`hidden_act`",
                "`relu6`",
                "not supported",
            ],
            true,
            |m| {
                edit(
                    &m.join("text_encoder/config.json"),
                    "\"hidden_act\": \"quick_gelu\"",
                    "\"hidden_act\": \"relu6\"",
                )
            },
        ),
        model_case(
            "scheduler-unsupported-prediction-type",
            &[
                "model/scheduler/scheduler_config.json",
                "`prediction_type`",
                "\"sample\"",
                "not supported",
            ],
            true,
            |m| {
                edit(
                    &m.join("scheduler/scheduler_config.json"),
                    "\"prediction_type\": \"epsilon\"",
                    "\"prediction_type\": \"sample\"",
                )
            },
        ),
        model_case(
            "tokenizer-vocab-missing",
            &["model/tokenizer/vocab.json", "No such file"],
            true,
            |m| std::fs::remove_file(m.join("tokenizer/vocab.json")).unwrap(),
        ),
        model_case(
            "unet-weights-cut-in-half",
            &[UNET_WEIGHTS, "not fully covered|truncated"],
            true,
            |m| {
                let path = m.join(UNET_WEIGHTS);
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            },
        ),
        model_case(
            "unet-weights-only-pickle",
            &[
                "model/unet/diffusion_pytorch_model.bin",
                "pickle checkpoints are refused",
            ],
            true,
            |m| {
                std::fs::rename(
                    m.join(UNET_WEIGHTS),
                    m.join("unet/diffusion_pytorch_model.bin"),
                )
                .unwrap()
            },
        ),
        model_case(
            "vae-weights-missing",
            &[
                "model/vae",
                "missing weights diffusion_pytorch_model.safetensors",
            ],
            true,
            |m| std::fs::remove_file(m.join("vae/diffusion_pytorch_model.safetensors")).unwrap(),
        ),
        model_case(
            "unet-tensor-wrong-shape",
            &[
                UNET_WEIGHTS,
                "shape mismatch",
                "conv_in.weight",
                "[32, 4, 3, 3]",
                "[32, 4, 1, 1]",
            ],
            true,
            |m| reshape_tensor(&m.join(UNET_WEIGHTS), "conv_in.weight", &[32, 4, 1, 1]),
        ),
        model_case(
            "unet-config-disagrees-with-weights",
            &[UNET_WEIGHTS, "shape mismatch", "attn2.to_k.weight"],
            true,
            |m| {
                edit(
                    &m.join("unet/config.json"),
                    "\"cross_attention_dim\": 32",
                    "\"cross_attention_dim\": 48",
                )
            },
        ),
    ]
}

#[test]
fn malformed_model_folders() {
    check_group("model", model_folder_cases(), 7);
}

// ----------------------------------------------------------------------------------------
// Datasets and shards.

/// A private copy of the smoke dataset at `DIR/ds`, changed by `breaks`.
fn dataset(dir: &Path, breaks: impl FnOnce(&Path)) -> PathBuf {
    let ds = dir.join("ds");
    copy_tree(smoke_dataset(), &ds);
    breaks(&ds);
    ds
}

fn edit_manifest(ds: &Path, change: impl FnOnce(&mut serde_json::Value)) {
    let path = ds.join("acs-manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    change(&mut manifest);
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

/// Re-hashes the manifest entry of `shard` (a path relative to the dataset) after its bytes
/// were replaced, so that only the deeper checks can notice.
fn replace_shard(ds: &Path, shard: &str, bytes: &[u8]) {
    let path = ds.join(shard);
    std::fs::write(&path, bytes).unwrap();
    let sha256 = acs_schema::sha256_file(&path).unwrap();
    edit_manifest(ds, |m| {
        let entry = m["shards"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|e| e["path"] == shard)
            .unwrap_or_else(|| panic!("no shard {shard}"));
        entry["bytes"] = serde_json::json!(bytes.len());
        entry["sha256"] = serde_json::json!(sha256);
    });
}

/// The largest shard of the smoke build (always present: 18 rows in 8-row shards).
const SHARD: &str = "data/train-00000-of-00002.parquet";

/// `acs COMMAND DIR/ds ...` on a broken copy of the smoke dataset. `validate` may write
/// `ds/validation.json`; `preview` gets `--out DIR/sheet.png`, `merge` `--out DIR/merged`,
/// which must not appear.
fn dataset_case(
    name: &'static str,
    command: &'static str,
    expect: &[&'static str],
    breaks: impl Fn(&Path) + Send + Sync + 'static,
) -> Case {
    let made = case(name, expect, move |dir| {
        let ds = dataset(dir, &breaks);
        let mut arguments = args(&[command, &s(&ds)]);
        match command {
            "preview" => arguments.extend(args(&["--out", &s(dir.join("sheet.png"))])),
            "merge" => arguments.extend(args(&["--out", &s(dir.join("merged"))])),
            _ => {}
        }
        arguments
    });
    if command == "validate" {
        made.may_write("ds/validation.json")
    } else {
        made
    }
}

/// Marks a dataset as the output of `--worker index/count`.
fn worker_of(ds: &Path, index: u64, count: u64) {
    edit_manifest(ds, |m| {
        m["worker"] = serde_json::json!({"index": index, "count": count});
    })
}

fn other_schema_parquet() -> Vec<u8> {
    parquet_bytes(vec![
        (
            "pair_id",
            Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef,
        ),
        ("prompt", Arc::new(StringArray::from(vec!["a", "b", "c"]))),
    ])
}

fn dataset_cases() -> Vec<Case> {
    let not_parquet = |ds: &Path| replace_shard(ds, SHARD, b"this is not a Parquet file\n");
    let other_schema = |ds: &Path| replace_shard(ds, SHARD, &other_schema_parquet());
    let dot_dot = |ds: &Path| {
        std::fs::rename(ds.join(SHARD), ds.join("../outside.parquet")).unwrap();
        edit_manifest(ds, |m| {
            for entry in m["shards"].as_array_mut().unwrap() {
                if entry["path"] == SHARD {
                    entry["path"] = serde_json::json!("../outside.parquet");
                }
            }
        });
    };
    let absolute = |ds: &Path| {
        let outside = ds.parent().unwrap().join("outside.parquet");
        std::fs::rename(ds.join(SHARD), &outside).unwrap();
        edit_manifest(ds, |m| {
            for entry in m["shards"].as_array_mut().unwrap() {
                if entry["path"] == SHARD {
                    entry["path"] = serde_json::json!(s(&outside));
                }
            }
        });
    };
    let as_worker = |ds: &Path, index: u64| worker_of(ds, index, 2);
    vec![
        case(
            "validate-missing-folder",
            &["missing/acs-manifest.json", "No such file"],
            |dir| args(&["validate", &s(dir.join("missing"))]),
        ),
        case(
            "validate-a-folder-that-is-no-dataset",
            &["CASE/plain:", "not an acs dataset (no acs-manifest.json)"],
            |dir| {
                std::fs::create_dir_all(dir.join("plain")).unwrap();
                args(&["validate", &s(dir.join("plain"))])
            },
        ),
        case(
            "stats-missing-folder",
            &["missing/acs-manifest.json", "No such file"],
            |dir| args(&["stats", &s(dir.join("missing"))]),
        ),
        case(
            "preview-missing-folder",
            &["missing/acs-manifest.json", "No such file"],
            |dir| {
                args(&[
                    "preview",
                    &s(dir.join("missing")),
                    "--out",
                    &s(dir.join("sheet.png")),
                ])
            },
        ),
        dataset_case(
            "validate-manifest-not-json",
            "validate",
            &["ds/acs-manifest.json", "line 2", "EOF while parsing"],
            |ds| std::fs::write(ds.join("acs-manifest.json"), "{\"schema_version\": 1,\n").unwrap(),
        ),
        dataset_case(
            "stats-manifest-not-json",
            "stats",
            &["ds/acs-manifest.json", "line 1, column 2", "expected ident"],
            |ds| std::fs::write(ds.join("acs-manifest.json"), "not json").unwrap(),
        ),
        dataset_case(
            "validate-schema-version-2",
            "validate",
            &[
                "ds/acs-manifest.json",
                "schema_version 2 is not supported",
                "supports 1",
            ],
            |ds| edit_manifest(ds, |m| m["schema_version"] = serde_json::json!(2)),
        ),
        dataset_case(
            "preview-schema-version-2",
            "preview",
            &["ds/acs-manifest.json", "schema_version 2 is not supported"],
            |ds| edit_manifest(ds, |m| m["schema_version"] = serde_json::json!(2)),
        ),
        dataset_case(
            "validate-manifest-unknown-key",
            "validate",
            &["ds/acs-manifest.json", "unknown field `extra_key`"],
            |ds| edit_manifest(ds, |m| m["extra_key"] = serde_json::json!(1)),
        ),
        dataset_case(
            "stats-manifest-missing-key",
            "stats",
            &["ds/acs-manifest.json", "missing field `model`"],
            |ds| {
                edit_manifest(ds, |m| {
                    m.as_object_mut().unwrap().remove("model");
                })
            },
        ),
        dataset_case(
            "validate-shard-not-parquet",
            "validate",
            &[SHARD, "unreadable footer"],
            not_parquet,
        ),
        dataset_case(
            "stats-shard-not-parquet",
            "stats",
            &[SHARD, "unreadable footer"],
            not_parquet,
        ),
        case(
            "merge-shard-not-parquet",
            &[SHARD, "Corrupt footer"],
            move |dir| {
                // The only worker of one, so that every pair is in its slice.
                let ds = dataset(dir, |ds| {
                    worker_of(ds, 0, 1);
                    not_parquet(ds);
                });
                args(&["merge", &s(&ds), "--out", &s(dir.join("merged"))])
            },
        ),
        dataset_case(
            "validate-shard-other-schema",
            "validate",
            &[SHARD, "schema"],
            other_schema,
        ),
        dataset_case(
            "stats-shard-other-schema",
            "stats",
            &[SHARD, "not an acs schema v1 shard"],
            other_schema,
        ),
        dataset_case(
            "validate-shard-file-missing",
            "validate",
            &[SHARD, "but missing"],
            |ds| std::fs::remove_file(ds.join(SHARD)).unwrap(),
        ),
        dataset_case(
            "stats-shard-file-missing",
            "stats",
            &[SHARD, "but missing"],
            |ds| std::fs::remove_file(ds.join(SHARD)).unwrap(),
        ),
        dataset_case(
            "validate-unfinished-dataset",
            "validate",
            &[
                "CASE/ds/acs-manifest.json",
                "did not finish",
                "complete = false",
            ],
            |ds| edit_manifest(ds, |m| m["complete"] = serde_json::json!(false)),
        ),
        dataset_case(
            "stats-unfinished-dataset",
            "stats",
            &[
                "CASE/ds: the build did not finish (",
                "finished shards",
                "rerun the same `acs build --manifest MANIFEST --out ",
            ],
            |ds| edit_manifest(ds, |m| m["complete"] = serde_json::json!(false)),
        ),
        dataset_case(
            "validate-shard-path-dot-dot",
            "validate",
            &["../outside.parquet", "contains '..'"],
            dot_dot,
        ),
        dataset_case(
            "preview-shard-path-dot-dot",
            "preview",
            &["ds/acs-manifest.json", "shards[1].path", "contains '..'"],
            dot_dot,
        ),
        dataset_case(
            "stats-shard-path-absolute",
            "stats",
            &["ds/acs-manifest.json", "shards[1].path", "is absolute"],
            absolute,
        ),
        dataset_case(
            "merge-non-worker-dataset",
            "merge",
            &["CASE/ds:", "not a worker output", "--worker i/n"],
            |_| {},
        ),
        case(
            "merge-pairs-in-the-wrong-slice",
            &["CASE/ds/data/", "does not belong to worker 0/2"],
            move |dir| {
                let ds = dataset(dir, |ds| as_worker(ds, 0));
                args(&[
                    "merge",
                    &s(&ds),
                    "--allow-partial",
                    "--out",
                    &s(dir.join("merged")),
                ])
            },
        ),
        case(
            "merge-same-worker-twice",
            &["CASE/ds and CASE/ds:", "both hold worker 0/2", "overlap"],
            move |dir| {
                let ds = dataset(dir, |ds| as_worker(ds, 0));
                args(&["merge", &s(&ds), &s(&ds), "--out", &s(dir.join("merged"))])
            },
        ),
        case(
            "merge-missing-input",
            &["missing/acs-manifest.json", "No such file"],
            move |dir| {
                let ds = dataset(dir, |ds| as_worker(ds, 0));
                args(&[
                    "merge",
                    &s(&ds),
                    &s(dir.join("missing")),
                    "--out",
                    &s(dir.join("merged")),
                ])
            },
        ),
        case(
            "drop-invalid-of-a-broken-dataset",
            &["ds/acs-manifest.json", "schema_version 2"],
            |dir| {
                let ds = dataset(dir, |ds| {
                    edit_manifest(ds, |m| m["schema_version"] = serde_json::json!(2))
                });
                args(&[
                    "validate",
                    &s(&ds),
                    "--drop-invalid",
                    "--out",
                    &s(dir.join("repaired")),
                ])
            },
        ),
    ]
}

#[test]
fn bad_datasets_and_shards() {
    check_group("dataset", dataset_cases(), 8);
}

// ----------------------------------------------------------------------------------------
// Command lines.

/// A PNG of `width` x `height` grey pixels.
fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_pixel(width, height, image::Rgb([128, 128, 128]));
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}

/// `acs ARGS` where `{ds}` is a copy of the smoke dataset and `{dir}` the case folder.
fn cli_case(
    name: &'static str,
    template: &'static [&'static str],
    expect: &[&'static str],
) -> Case {
    let made = case(name, expect, move |dir| {
        let needs_dataset = template.iter().any(|a| a.contains("{ds}"));
        let ds = if needs_dataset {
            dataset(dir, |_| {})
        } else {
            dir.join("ds")
        };
        template
            .iter()
            .map(|a| a.replace("{ds}", &s(&ds)).replace("{dir}", &s(dir)))
            .collect()
    });
    if template.first() == Some(&"validate") {
        made.may_write("ds/validation.json")
    } else {
        made
    }
}

fn cli_cases() -> Vec<Case> {
    vec![
        cli_case("unknown-subcommand", &["frobnicate", "{ds}"], &[]).clap(),
        cli_case("unknown-flag", &["validate", "{ds}", "--bogus"], &[]).clap(),
        cli_case("validate-missing-argument", &["validate", "--json"], &[]).clap(),
        cli_case(
            "drop-invalid-without-out",
            &["validate", "{ds}", "--drop-invalid"],
            &[],
        )
        .clap(),
        cli_case(
            "validate-replay-2",
            &["validate", "{ds}", "--replay", "2"],
            &["--replay", "[0, 1]", "(got 2)"],
        ),
        cli_case(
            "validate-replay-nan",
            &["validate", "{ds}", "--replay", "nan"],
            &["--replay", "(got NaN)"],
        ),
        cli_case(
            "validate-max-invalid-fraction-negative",
            &["validate", "{ds}", "--max-invalid-fraction=-1"],
            &["--max-invalid-fraction", "[0, 1]", "(got -1)"],
        ),
        cli_case(
            "drop-invalid-into-the-input",
            &["validate", "{ds}", "--drop-invalid", "--out", "{ds}"],
            &["CASE/ds:", "--out must be a new folder"],
        ),
        cli_case(
            "build-worker-5-of-4",
            &[
                "build",
                "--manifest",
                "manifests/smoke.toml",
                "--out",
                "{dir}/out",
                "--worker",
                "5/4",
            ],
            &["--worker", "`5/4`", "0 <= i < n"],
        ),
        cli_case(
            "build-worker-not-a-slice",
            &[
                "build",
                "--manifest",
                "manifests/smoke.toml",
                "--out",
                "{dir}/out",
                "--worker",
                "abc",
            ],
            &["--worker", "`abc`", "i/n"],
        ),
        cli_case(
            "preview-count-0",
            &[
                "preview",
                "{ds}",
                "--out",
                "{dir}/sheet.png",
                "--count",
                "0",
            ],
            &["--count", "(got 0)"],
        ),
        cli_case(
            "preview-panel-too-small",
            &[
                "preview",
                "{ds}",
                "--out",
                "{dir}/sheet.png",
                "--panel",
                "10",
            ],
            &["--panel", "(got 10)"],
        ),
        cli_case(
            "preview-no-row-matches",
            &[
                "preview",
                "{ds}",
                "--out",
                "{dir}/sheet.png",
                "--category",
                "spam",
            ],
            &["CASE/ds:", "category=spam", "categories: harassment"],
        ),
        case(
            "init-tiny-into-non-empty-folder",
            &["CASE/tiny:", "not empty"],
            |dir| {
                std::fs::create_dir(dir.join("tiny")).unwrap();
                std::fs::write(dir.join("tiny/notes.txt"), "mine\n").unwrap();
                args(&["model", "init-tiny", &s(dir.join("tiny"))])
            },
        ),
        cli_case(
            "initial-latent-empty-shape",
            &[
                "model",
                "initial-latent",
                "--seed",
                "1",
                "--shape",
                "1,0,64",
                "--out",
                "{dir}/x.npy",
            ],
            &["--shape", "[1, 0, 64]", "elements"],
        ),
        cli_case(
            "tokenize-missing-file",
            &["model", "tokenize", "{dir}/nowhere.txt"],
            &["nowhere.txt", "No such file"],
        ),
        cli_case(
            "fetch-malformed-repo-id",
            &["model", "fetch", "not a repo"],
            &["`not a repo`", "org/name"],
        ),
        case("detect-model-not-onnx", unloadable_nudenet(), |dir| {
            std::fs::write(dir.join("a.png"), png(8, 8)).unwrap();
            std::fs::write(dir.join("fake.onnx"), "not a protobuf\n").unwrap();
            args(&[
                "detect",
                "--nudenet-model",
                &s(dir.join("fake.onnx")),
                &s(dir.join("a.png")),
            ])
        }),
        case(
            "metrics-images-of-different-sizes",
            &["b.png", "16x8", "a.png", "8x8", "same size"],
            |dir| {
                std::fs::write(dir.join("a.png"), png(8, 8)).unwrap();
                std::fs::write(dir.join("b.png"), png(16, 8)).unwrap();
                args(&["metrics", &s(dir.join("a.png")), &s(dir.join("b.png"))])
            },
        ),
        case(
            "token-map-line-not-json",
            &["pairs.jsonl:2", "not a JSON object"],
            |dir| {
                let pairs = "{\"unsafe\": \"a cat\", \"safe\": \"a dog\"}\n{unsafe: a cat}\n";
                std::fs::write(dir.join("pairs.jsonl"), pairs).unwrap();
                args(&["model", "token-map", &s(dir.join("pairs.jsonl"))])
            },
        ),
        case(
            "token-map-safe-missing",
            &["pairs.jsonl:1", "`safe` is missing or not a string"],
            |dir| {
                std::fs::write(dir.join("pairs.jsonl"), "{\"unsafe\": \"a cat\"}\n").unwrap();
                args(&["model", "token-map", &s(dir.join("pairs.jsonl"))])
            },
        ),
        case(
            "metrics-not-a-png",
            &["b.png", "not a decodable PNG"],
            |dir| {
                std::fs::write(dir.join("a.png"), png(8, 8)).unwrap();
                std::fs::write(dir.join("b.png"), "GIF89a").unwrap();
                args(&["metrics", &s(dir.join("a.png")), &s(dir.join("b.png"))])
            },
        ),
    ]
}

#[test]
fn bad_command_lines() {
    check_group("cli", cli_cases(), 4);
}

// ----------------------------------------------------------------------------------------
// Product bugs this suite found, fixed since: their intended behaviour.

fn bug_cases() -> Vec<Case> {
    vec![
        // No upper bound on seeds_per_prompt: the planner allocates every pair (a dry run
        // with 4294967295 took 24 GB and was killed by the OOM killer; here, limited to
        // 1 GB, it aborts with "memory allocation of ... bytes failed", SIGABRT).
        manifest_case(
            "seeds-per-prompt-unbounded",
            "[sampling]\nseeds_per_prompt = 4294967295\n",
            &["m.toml", "[sampling].seeds_per_prompt"],
        )
        .limit_memory(1_000_000),
        // Accurate, but without the position the contract asks for ("line/row/field").
        raw_manifest_case(
            "manifest-not-utf8",
            b"[sampling]\nnegative_prompt = \"\xff\xfe\"\n",
            &["m.toml", "UTF-8", "line 2|byte 30|offset 30"],
        ),
        // `acs detect` names a manifest key the command line does not have.
        case(
            "detect-model-missing",
            &["nope.onnx", "--nudenet-model"],
            |dir| {
                std::fs::write(dir.join("a.png"), png(8, 8)).unwrap();
                args(&[
                    "detect",
                    "--nudenet-model",
                    &s(dir.join("nope.onnx")),
                    &s(dir.join("a.png")),
                ])
            },
        )
        .forbid(&["[validation]"]),
        // A PNG given as forward inputs: "header too large" (safetensors' jargon).
        case(
            "forward-inputs-not-safetensors",
            &["CASE/a.png", "safetensors"],
            |dir| {
                std::fs::write(dir.join("a.png"), png(8, 8)).unwrap();
                args(&[
                    "model",
                    "forward",
                    "--model",
                    &s(tiny_model()),
                    "--inputs",
                    &s(dir.join("a.png")),
                    "--out",
                    &s(dir.join("o.safetensors")),
                ])
            },
        ),
        // A `prompt` column of list<int32> is cast to text ("[1, 2]") and every row ends as
        // `no-concept-term`; the message names neither the file nor the column's type.
        source_case(
            "i2p-parquet-prompt-column-of-lists",
            "i2p-parquet",
            "types.parquet",
            || {
                let lists = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                    Some(vec![Some(1), Some(2)]),
                    Some(vec![Some(3)]),
                ]);
                parquet_bytes(vec![
                    ("prompt", Arc::new(lists) as ArrayRef),
                    (
                        "categories",
                        Arc::new(StringArray::from(vec!["violence", "sexual"])),
                    ),
                ])
            },
            &[
                "CASE/types.parquet",
                "`prompt`",
                "list|not a string|not text",
            ],
        ),
        // Exit 2 with "all 0 inputs were rejected ()": names neither the source nor the fact
        // that it is empty.
        source_case(
            "pairs-jsonl-empty-file",
            "pairs-jsonl",
            "nothing.jsonl",
            Vec::new,
            &["nothing.jsonl", "empty|no rows|no input"],
        )
        .forbid(&["()"]),
        source_case(
            "prompts-txt-empty-file",
            "prompts-txt",
            "nothing.txt",
            Vec::new,
            &["nothing.txt", "empty|no rows|no input|no prompt"],
        )
        .forbid(&["()"]),
        // The header is echoed raw: a quoted line break splits the message in two lines.
        source_case(
            "pairs-csv-header-with-line-break",
            "pairs-csv",
            "newline.csv",
            || b"\"unsafe\nprompt\",other\na,b\n".to_vec(),
            &["newline.csv:1", "`unsafe_prompt` and `safe_prompt`"],
        ),
        // A text encoder shipped only as a pickle says "missing weights model.safetensors"
        // instead of refusing the pickle as the UNet's does.
        model_case(
            "text-encoder-weights-only-pickle",
            &["model/text_encoder/pytorch_model.bin", "pickle"],
            true,
            |m| {
                std::fs::rename(
                    m.join("text_encoder/model.safetensors"),
                    m.join("text_encoder/pytorch_model.bin"),
                )
                .unwrap()
            },
        ),
        // A folder that does not exist is "not a diffusers model folder (no model_index.json)".
        model_case(
            "model-folder-missing",
            &[
                "CASE/model",
                "does not exist|no such folder|not found|No such file",
            ],
            false,
            |_| {},
        ),
        // polars' message, with a hint about scan options a user of the CLI cannot apply;
        // validate and stats say "not an acs schema v1 shard".
        dataset_case(
            "preview-shard-other-schema",
            "preview",
            &[SHARD, "not an acs schema v1 shard"],
            |ds| replace_shard(ds, SHARD, &other_schema_parquet()),
        )
        .forbid(&["extra_columns"]),
        // The message names `DIR//abs/path` (the dataset folder joined with the absolute path),
        // a path that does not exist.
        dataset_case(
            "validate-shard-path-absolute",
            "validate",
            &["outside.parquet", "is absolute"],
            |ds| {
                let outside = ds.parent().unwrap().join("outside.parquet");
                std::fs::rename(ds.join(SHARD), &outside).unwrap();
                edit_manifest(ds, |m| {
                    for entry in m["shards"].as_array_mut().unwrap() {
                        if entry["path"] == SHARD {
                            entry["path"] = serde_json::json!(s(&outside));
                        }
                    }
                });
            },
        )
        .forbid(&["ds//", "ds/CASE"]),
        // preview names the dataset folder and polars' message, not the shard.
        dataset_case("preview-shard-not-parquet", "preview", &[SHARD], |ds| {
            replace_shard(ds, SHARD, b"this is not a Parquet file\n")
        }),
        // The plot's folder does not exist: the message names the hidden temporary file.
        cli_case(
            "stats-plot-into-missing-folder",
            &["stats", "{ds}", "--plot", "{dir}/nowhere/plot.png"],
            &["nowhere/plot.png"],
        )
        .forbid(&[".tmp"]),
        cli_case(
            "preview-into-missing-folder",
            &["preview", "{ds}", "--out", "{dir}/nowhere/sheet.png"],
            &["nowhere/sheet.png"],
        )
        .forbid(&[".tmp"]),
    ]
}

/// Cases that once failed (found while writing this suite, fixed in the product).
#[test]
fn reported_product_bugs_stay_fixed() {
    check_group("bug", bug_cases(), 1);
}
