//! Helpers shared by the end-to-end modules: where the repository and the `acs` binary are,
//! running `acs` isolated from the caller's caches and job-array settings, output text, file
//! trees, sample manifests, the scratch folder of this test run, and (in `http`) the loopback
//! HTTP server of the hub and LLM tests.

#![allow(dead_code)] // Not every module uses every helper.

pub mod http;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `acs` binary cargo built for these tests.
pub const ACS: &str = env!("CARGO_BIN_EXE_acs");

/// Variables that make `acs build` one worker of a job array (Slurm, Kubernetes Indexed Job);
/// removed from every run, so a build is a whole build unless a test sets them.
pub const WORKER_VARS: [&str; 5] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_COUNT",
    "JOB_COMPLETION_INDEX",
    "ACS_WORKER_COUNT",
];

/// The caller's Hugging Face hub settings (cache location, endpoint, token, offline mode) and
/// proxies; removed from every run, so only what a test sets reaches `acs`.
pub const HUB_VARS: [&str; 12] = [
    "HF_HUB_CACHE",
    "HF_ENDPOINT",
    "HF_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HUB_OFFLINE",
    "XDG_CACHE_HOME",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
];

/// The repository root (the parent of acs-builder/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `manifests/smoke.toml`, absolute.
pub fn smoke_manifest() -> PathBuf {
    repo_root().join("manifests/smoke.toml")
}

/// The text of `manifests/smoke.toml` with its sample paths made absolute, to be edited and
/// written anywhere.
pub fn smoke_manifest_text() -> String {
    std::fs::read_to_string(smoke_manifest()).unwrap().replace(
        "../samples/",
        &format!("{}/samples/", repo_root().display()),
    )
}

/// `path` as a `String` (for argument lists).
pub fn s(path: impl AsRef<Path>) -> String {
    path.as_ref().display().to_string()
}

/// Makes `command` (`acs`, or a wrapper that runs it) run like every `acs` run of these tests:
/// in the repository root, with its model cache in `home` (`ACS_HOME`), a private Hugging Face
/// cache `home/hf` (`HF_HOME`), none of the caller's hub settings or proxies, and outside any
/// job array. Tests set what they need on top.
pub fn isolate<'a>(command: &'a mut Command, home: &Path) -> &'a mut Command {
    command
        .current_dir(repo_root())
        .env("ACS_HOME", home)
        .env("HF_HOME", home.join("hf"));
    for name in WORKER_VARS.iter().chain(&HUB_VARS) {
        command.env_remove(name);
    }
    command
}

/// `acs ARGS`, isolated (see [`isolate`]) with its model cache in `home`; not yet run.
pub fn acs_command(home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(ACS);
    command.args(args);
    isolate(&mut command, home);
    command
}

/// Runs `acs ARGS` with its model cache in `home` (see [`isolate`]).
pub fn acs(home: &Path, args: &[&str]) -> Output {
    run(acs_command(home, args))
}

/// Runs `command` to its end, capturing stdout and stderr.
pub fn run(mut command: Command) -> Output {
    command.output().expect("run acs")
}

/// `acs build --manifest MANIFEST --out OUT` with its model cache in `home`.
pub fn build(home: &Path, manifest: &Path, out: &Path) -> Output {
    acs(
        home,
        &["build", "--manifest", &s(manifest), "--out", &s(out)],
    )
}

/// Bytes as text (lossy UTF-8).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A run's stdout as text.
pub fn stdout(output: &Output) -> String {
    text(&output.stdout)
}

/// A run's stderr as text.
pub fn stderr(output: &Output) -> String {
    text(&output.stderr)
}

/// Writes `DIR/NAME.toml`: `head` (model / sampling / alignment tables), then the sample pairs
/// as the only source and a single train split; returns its path.
pub fn sample_manifest(dir: &Path, name: &str, head: &str) -> PathBuf {
    let pairs = repo_root().join("samples/pairs.jsonl");
    let path = dir.join(format!("{name}.toml"));
    let source = format!(
        "[[sources]]\nkind = \"pairs-jsonl\"\npath = {:?}\n[output]\nsplits = {{ train = 1.0 }}\n",
        pairs.display().to_string()
    );
    std::fs::write(&path, format!("{head}{source}")).unwrap();
    path
}

/// Every file under `dir` (recursively, folders left out), sorted.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every file under `dir` as a path relative to it (`data/x.parquet`), sorted.
pub fn relative_files(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = files(dir)
        .iter()
        .map(|path| path.strip_prefix(dir).unwrap().display().to_string())
        .collect();
    out.sort();
    out
}

/// Every file under `dir` with its contents, by relative path, sorted.
pub fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    relative_files(dir)
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            (name, bytes)
        })
        .collect()
}

/// Copies the folder `from` (recursively) to `to`, which is created.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// This test run's scratch folder, `CARGO_TARGET_TMPDIR/e2e/run-PID`, for state a module keeps
/// for the whole run (a static is never dropped, so a `TempDir` would never be removed). The
/// folders of earlier runs whose process is gone are removed first. Each module works in its
/// own sub-folder (`scratch().join("bad_input")`).
pub fn scratch() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e");
        std::fs::create_dir_all(&base).unwrap();
        if Path::new("/proc/self").exists() {
            for entry in std::fs::read_dir(&base).unwrap().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let stale = name
                    .strip_prefix("run-")
                    .and_then(|pid| pid.parse::<u32>().ok())
                    .is_some_and(|pid| !Path::new("/proc").join(pid.to_string()).exists());
                if stale {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = base.join(format!("run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// The CPU kernel paths these tests may use: those this CPU runs, up to the one
/// `ACS_KERNEL_PATH` names (so that forcing `cpu-avx2` tests as if on a CPU without AVX-512).
pub fn kernel_paths_here() -> Vec<acs_builder::runtime::KernelPath> {
    use acs_builder::runtime::kernel_path::{supported_paths, KernelPathChoice};
    let ceiling = KernelPathChoice::from_env()
        .expect("ACS_KERNEL_PATH names a kernel path")
        .resolve()
        .expect("ACS_KERNEL_PATH names a path this CPU runs");
    supported_paths()
        .into_iter()
        .filter(|path| *path <= ceiling)
        .collect()
}

/// Asserts exit status 2 with exactly one line on stderr that contains every part of
/// `expected`; returns stderr.
pub fn assert_exit_2(output: &Output, expected: &[&str]) -> String {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for part in expected {
        assert!(err.contains(part), "`{part}` missing from: {err}");
    }
    err
}
