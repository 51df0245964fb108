//! Crash safety and resume: a build killed at any moment (fault points inside shard writing,
//! manifest updates and the final renames, and SIGKILL at random times) and then rerun ends
//! with exactly the dataset an uninterrupted build writes; full disks, read-only outputs and
//! vanished inputs give a clear error and leave resumable work; another manifest is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use acs_schema::{read_shard, DatasetManifest};

use crate::util::{acs_command, relative_files, repo_root, smoke_manifest, text};

/// The model cache shared by all builds of this file (the tiny model is written once).
fn home() -> &'static Path {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn build_command(manifest: &Path, out: &Path, envs: &[(&str, &str)]) -> Command {
    let mut command = acs_command(home(), &["build", "--manifest"]);
    command.arg(manifest).arg("--out").arg(out);
    command.envs(envs.iter().copied());
    command
}

fn build(manifest: &Path, out: &Path, envs: &[(&str, &str)]) -> Output {
    build_command(manifest, out, envs)
        .output()
        .expect("run acs")
}

fn build_with(manifest: &Path, out: &Path, extra: &[&str]) -> Output {
    build_command(manifest, out, &[])
        .args(extra)
        .output()
        .expect("run acs")
}

/// The smoke manifest with its prompt file copied beside it (so a test can remove it).
fn manifest_in(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(
        repo_root().join("samples/pairs.jsonl"),
        dir.join("pairs.jsonl"),
    )
    .unwrap();
    let smoke = std::fs::read_to_string(smoke_manifest()).unwrap();
    let path = dir.join("smoke.toml");
    std::fs::write(
        &path,
        smoke.replace("../samples/pairs.jsonl", "pairs.jsonl"),
    )
    .unwrap();
    path
}

/// An uninterrupted build of the smoke manifest.
fn reference() -> &'static PathBuf {
    static REFERENCE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &REFERENCE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let manifest = manifest_in(&dir.path().join("m"));
            let out = dir.path().join("ref");
            let done = build(&manifest, &out, &[]);
            assert!(done.status.success(), "{}", text(&done.stderr));
            (dir, out)
        })
        .1
}

/// The resumed dataset equals the uninterrupted one: same files, same manifest (so the same
/// shard bytes), same rows, and nothing else (no temporary file, no journal).
fn assert_same_as_reference(out: &Path) {
    let reference = reference();
    assert_eq!(
        relative_files(out),
        relative_files(reference),
        "{}",
        out.display()
    );
    let ours = DatasetManifest::load(out).unwrap();
    let theirs = DatasetManifest::load(reference).unwrap();
    assert!(ours.complete);
    assert_eq!(ours.shards, theirs.shards);
    for name in ["README.md", "rejects.jsonl", acs_schema::MANIFEST_FILE] {
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(reference.join(name)).unwrap(),
            "{name}"
        );
    }
    let mut ids = std::collections::HashSet::new();
    for shard in &ours.shards {
        for record in read_shard(&out.join(&shard.path)).unwrap() {
            assert!(
                ids.insert(record.pair_id.clone()),
                "duplicate {}",
                record.pair_id
            );
        }
    }
    assert_eq!(ids.len() as u64, theirs.total_rows());
}

/// The manifest of an unfinished build lists only complete, intact shard files.
fn assert_consistent(out: &Path) {
    let Ok(manifest) = DatasetManifest::load(out) else {
        return; // killed before the first manifest
    };
    for shard in &manifest.shards {
        let path = out.join(&shard.path);
        if !path.is_file() {
            // Renamed already: the journal's rename plan finishes it.
            continue;
        }
        assert_eq!(
            acs_schema::sha256_file(&path).unwrap(),
            shard.sha256,
            "{}",
            shard.path
        );
    }
}

fn aborted(output: &Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    output.status.signal().is_some()
}

#[test]
fn kills_at_every_stage_then_resume_equal_an_uninterrupted_build() {
    let work = tempfile::tempdir().unwrap();
    let manifest = manifest_in(&work.path().join("m"));
    let out = work.path().join("out");
    // Each run is killed at the named moment (counted within that run), then the next resumes.
    let kills = [
        "batch-spooled:1",   // a batch on disk, not yet journaled
        "batch-spooled:2",   // ... after the first resume rendered one more batch
        "shard-written:1",   // a shard file written, not yet journaled
        "shard-journaled:1", // journaled, not yet in the manifest
        "manifest-saved:1",  // in the manifest, spool not yet cleaned
        "shard-written:1",   // during the final flushes
        "shard-renamed:1",   // in the middle of the final renames
        "shard-renamed:2",
        "manifest-complete:1", // complete manifest, journal not yet removed
    ];
    let mut killed = 0;
    for spec in kills {
        let run = build(&manifest, &out, &[("ACS_FAULT_ABORT", spec)]);
        if aborted(&run) {
            killed += 1;
        } else {
            assert!(run.status.success(), "{spec}: {}", text(&run.stderr));
        }
        assert_consistent(&out);
    }
    let last = build(&manifest, &out, &[]);
    assert!(last.status.success(), "{}", text(&last.stderr));
    assert!(killed >= 8, "only {killed} runs were killed");
    assert_same_as_reference(&out);
}

#[test]
fn sigkill_at_random_moments_then_resume_equal_an_uninterrupted_build() {
    let work = tempfile::tempdir().unwrap();
    let manifest = manifest_in(&work.path().join("m"));
    let out = work.path().join("out");
    // A fixed-seed generator for the kill times (the build's own randomness is not involved).
    let mut state = 0x2026_1128_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut kills = 0;
    for _ in 0..40 {
        let mut child = build_command(&manifest, &out, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Between 0.3 and 3.3 s: model loading, rendering, shard writing and finishing.
        std::thread::sleep(Duration::from_millis(300 + next() % 3000));
        match child.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success());
                break;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                assert_consistent(&out);
            }
        }
    }
    let last = build(&manifest, &out, &[]);
    assert!(last.status.success(), "{}", text(&last.stderr));
    assert!(kills >= 2, "only {kills} kills");
    assert_same_as_reference(&out);
}

#[test]
fn ctrl_c_says_how_far_the_build_got_exits_130_and_the_rerun_resumes() {
    let work = tempfile::tempdir().unwrap();
    let manifest = manifest_in(&work.path().join("m"));
    let out = work.path().join("out");
    let child = build_command(&manifest, &out, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the first shard's batch is rendered (its journal entry exists), or after
    // a few seconds at the latest.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(20) && !out.join(".acs-journal").is_dir() {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let signalled = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let output = child.wait_with_output().unwrap();
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{err}");
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("interrupted after ")
            && last.ends_with("of 18 pairs; run the same command to resume"),
        "{err}"
    );
    assert_consistent(&out);
    let resumed = build(&manifest, &out, &[]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_same_as_reference(&out);
}

#[test]
fn full_disk_and_read_only_output_fail_clearly_and_resume() {
    let work = tempfile::tempdir().unwrap();
    let manifest = manifest_in(&work.path().join("m"));
    for (fault, reason) in [
        ("4", "No space left on device"),
        ("7:read-only", "Read-only file system"),
        ("2", "No space left on device"),
    ] {
        let out = work.path().join(format!("out-{}", fault.replace(':', "-")));
        let failed = build(&manifest, &out, &[("ACS_FAULT_WRITE_FAIL", fault)]);
        let stderr = text(&failed.stderr);
        assert_eq!(failed.status.code(), Some(2), "{fault}: {stderr}");
        let error = stderr.lines().last().unwrap_or_default();
        assert!(
            error.starts_with("error: ") && error.contains(reason),
            "{error}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_consistent(&out);
        if out.join(acs_schema::MANIFEST_FILE).is_file() {
            assert!(error.contains("resume"), "{error}");
        }
        let resumed = build(&manifest, &out, &[]);
        assert!(
            resumed.status.success(),
            "{fault}: {}",
            text(&resumed.stderr)
        );
        assert_same_as_reference(&out);
    }
}

#[test]
fn vanished_input_and_another_manifest_are_refused_then_the_build_resumes() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("m");
    let manifest = manifest_in(&dir);
    let out = work.path().join("out");
    let killed = build(&manifest, &out, &[("ACS_FAULT_ABORT", "manifest-saved:1")]);
    assert!(aborted(&killed), "{}", text(&killed.stderr));
    let before = DatasetManifest::load(&out).unwrap();
    assert!(!before.complete && !before.shards.is_empty());

    // The prompt file vanished: a clear error naming it, the finished shards untouched.
    let pairs = dir.join("pairs.jsonl");
    let saved = std::fs::read(&pairs).unwrap();
    std::fs::remove_file(&pairs).unwrap();
    let missing = build(&manifest, &out, &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("pairs.jsonl"),
        "{}",
        text(&missing.stderr)
    );
    assert_eq!(DatasetManifest::load(&out).unwrap(), before);
    assert_consistent(&out);

    // A different manifest pointed at the same folder.
    std::fs::write(&pairs, &saved).unwrap();
    let other = dir.join("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&manifest)
            .unwrap()
            .replace("steps = 25", "steps = 24"),
    )
    .unwrap();
    let refused = build(&other, &out, &[]);
    assert_eq!(refused.status.code(), Some(2));
    let message = text(&refused.stderr);
    assert!(
        message.contains(
            "holds an unfinished build of another manifest (changed: [sampling].steps 25 -> 24)"
        ) && message.contains("rerun with --restart"),
        "{message}"
    );
    assert_eq!(DatasetManifest::load(&out).unwrap(), before);

    let resumed = build(&manifest, &out, &[]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert!(text(&resumed.stdout).contains("resumed an unfinished run"));
    assert_same_as_reference(&out);

    // A finished dataset is never discarded, by --restart or by another manifest.
    let finished = DatasetManifest::load(&out).unwrap();
    for extra in [&["--restart"][..], &[]] {
        let refused = build_with(&other, &out, extra);
        assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
        assert_eq!(DatasetManifest::load(&out).unwrap(), finished);
    }
}

#[test]
fn restart_discards_an_unfinished_build_and_says_what() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("m");
    let manifest = manifest_in(&dir);
    let out = work.path().join("out");
    let killed = build(&manifest, &out, &[("ACS_FAULT_ABORT", "manifest-saved:1")]);
    assert!(aborted(&killed), "{}", text(&killed.stderr));
    let other = dir.join("other.toml");
    let text_of = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&other, text_of.replace("steps = 25", "steps = 24")).unwrap();
    let restarted = build_with(&other, &out, &["--restart"]);
    assert!(restarted.status.success(), "{}", text(&restarted.stderr));
    let said = text(&restarted.stderr);
    assert!(
        said.contains("--restart: removing the unfinished build in")
            && said.contains("acs-manifest.json and its")
            && said.contains("the journal ("),
        "{said}"
    );
    let rebuilt = DatasetManifest::load(&out).unwrap();
    assert!(rebuilt.complete);
    assert_eq!(rebuilt.build_config["manifest"]["sampling"]["steps"], 24);
}
