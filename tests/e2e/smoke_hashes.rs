//! The smoke build's bytes do not change by accident, on any kernel path: `manifests/smoke.toml`
//! is built with the `acs` binary on every CPU kernel path this machine can run (`cpu-generic`
//! and `cpu-avx2` everywhere with AVX2, `cpu-avx512` too where the CPU has it; fewer when
//! `ACS_KERNEL_PATH` names a lower one, as if on a CPU without the others), and the sha256 of
//! every output file is compared with the committed list of that path,
//! `tests/data/smoke-build.<path>.sha256` (`sha256sum` format, sorted by path).
//!
//! An intended change of the output (a new acs version, which the manifest and every row
//! record; a schema, metric, sampler, kernel or card change) means regenerating every list,
//! from the repository root, on a machine with AVX-512 (it writes the lists of every path the
//! CPU runs and says which it could not):
//!
//! ```text
//! scripts/smoke-hashes.sh
//! ```
//!
//! and saying in the commit why the bytes changed.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use acs_builder::runtime::kernel_path::{self, KernelPath};

use crate::util::{
    acs_command, kernel_paths_here, relative_files, repo_root, run, s, smoke_manifest, stderr,
};

/// The committed list of `path`.
fn reference(path: KernelPath) -> String {
    format!("tests/data/smoke-build.{path}.sha256")
}

/// `./relative/path` -> sha256 (hex) of a `sha256sum` listing.
fn parse(listing: &str, reference: &str) -> BTreeMap<String, String> {
    listing
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (hash, path) = line
                .split_once("  ")
                .unwrap_or_else(|| panic!("{reference}: not `HASH  PATH`: {line}"));
            (path.to_owned(), hash.to_owned())
        })
        .collect()
}

/// The differences between the smoke build on `path` and its committed list.
fn check_path(path: KernelPath) -> Vec<String> {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("smoke");
    let mut command = acs_command(
        home.path(),
        &[
            "build",
            "--manifest",
            &s(smoke_manifest()),
            "--out",
            &s(&out),
        ],
    );
    command.env(kernel_path::ENV_VAR, path.name());
    let built_run = run(command);
    assert!(
        built_run.status.success(),
        "smoke build on {path} failed: {}",
        stderr(&built_run)
    );
    compare_with_list(&out, path)
}

/// The differences between the dataset in `out` and the committed list of `path`.
fn compare_with_list(out: &std::path::Path, path: KernelPath) -> Vec<String> {
    let built: BTreeMap<String, String> = hashes(out)
        .into_iter()
        .map(|(name, hash)| (format!("./{name}"), hash))
        .collect();
    let listing: String = built
        .iter()
        .map(|(path, hash)| format!("{hash}  {path}\n"))
        .collect();
    let reference_name = reference(path);
    let reference = std::fs::read_to_string(repo_root().join(&reference_name))
        .unwrap_or_else(|e| panic!("{reference_name}: {e}"));
    let expected = parse(&reference, &reference_name);

    let mut differ = Vec::new();
    for (file, hash) in &expected {
        match built.get(file) {
            None => differ.push(format!("{file}: missing from the build")),
            Some(got) if got != hash => {
                differ.push(format!("{file}: sha256 {got}, the list has {hash}"))
            }
            Some(_) => {}
        }
    }
    for file in built.keys().filter(|p| !expected.contains_key(*p)) {
        differ.push(format!("{file}: not in the list"));
    }
    if differ.is_empty() {
        return differ;
    }
    vec![format!(
        "{path}: the smoke build's output differs from {reference_name}:\n  {}\n\
         This build's list:\n{listing}",
        differ.join("\n  ")
    )]
}

#[test]
fn the_smoke_build_has_the_committed_bytes_on_every_kernel_path() {
    let paths = kernel_paths_here();
    assert!(paths.contains(&KernelPath::CpuGeneric));
    let differ: Vec<String> = paths.into_iter().flat_map(check_path).collect();
    assert!(
        differ.is_empty(),
        "{}\nIf the change is intended (e.g. a new acs version, which the manifest and every \
         row record), regenerate the lists with scripts/smoke-hashes.sh (on a CPU with \
         AVX-512) and say why in the commit.",
        differ.join("\n")
    );
}

#[test]
fn every_kernel_path_has_a_committed_list() {
    for path in KernelPath::ALL {
        let name = reference(path);
        let text = std::fs::read_to_string(repo_root().join(&name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let listed = parse(&text, &name);
        assert!(listed.contains_key("./acs-manifest.json"), "{name}");
        assert!(listed.keys().any(|f| f.ends_with(".parquet")), "{name}");
    }
}

/// The `qemu-x86_64` user-mode emulator, when installed (scripts/test.sh installs Debian's
/// qemu-user where it can).
fn qemu() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("qemu-x86_64"))
        .find(|candidate| candidate.is_file())
}

/// A one-pair, two-step build of the tiny model (the emulator runs the AVX2 kernels about 1,000
/// times slower than the CPU does): its manifest, written into `dir`.
fn one_pair_manifest(dir: &std::path::Path) -> std::path::PathBuf {
    let first = std::fs::read_to_string(repo_root().join("samples/pairs.jsonl")).unwrap();
    std::fs::write(dir.join("pair.jsonl"), first.lines().next().unwrap()).unwrap();
    let manifest = dir.join("one-pair.toml");
    std::fs::write(
        &manifest,
        "[model]\nembedded = \"tiny\"\n\
         [sampling]\nsteps = 2\nheight = 64\nwidth = 64\nbatch_pairs = 1\n\
         [[sources]]\nkind = \"pairs-jsonl\"\npath = \"pair.jsonl\"\ncategory = \"sexual\"\n\
         [output]\nsplits = { train = 1.0 }\n",
    )
    .unwrap();
    manifest
}

/// Every file of the dataset in `dir` (the journal left out) with its sha256.
fn hashes(dir: &std::path::Path) -> BTreeMap<String, String> {
    relative_files(dir)
        .into_iter()
        .filter(|name| !name.starts_with(".acs-journal"))
        .map(|name| {
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            (name, hex::encode(Sha256::digest(&bytes)))
        })
        .collect()
}

/// The one-pair build under `qemu-x86_64 -cpu MODEL` with no path forced (the CPU model's
/// CPUID decides, for acs, for its dependencies and for the C library, as on a real CPU of
/// that model) against the same build here with `path` forced: the differences.
fn check_emulated(qemu: &std::path::Path, model: &str, path: KernelPath) -> Vec<String> {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let manifest = one_pair_manifest(work.path());
    let (native, emulated) = (work.path().join("native"), work.path().join("emulated"));
    let (manifest, native_out, emulated_out) = (s(&manifest), s(&native), s(&emulated));
    let mut here = acs_command(
        home.path(),
        &["build", "--manifest", &manifest, "--out", &native_out],
    );
    here.env(kernel_path::ENV_VAR, path.name());
    let done = run(here);
    assert!(done.status.success(), "build on {path}: {}", stderr(&done));

    let mut there = std::process::Command::new(qemu);
    there.args(["-cpu", model, crate::util::ACS]).args([
        "build",
        "--manifest",
        &manifest,
        "--out",
        &emulated_out,
    ]);
    crate::util::isolate(&mut there, home.path());
    // One thread: the emulator gains nothing from a second one.
    there
        .env_remove(kernel_path::ENV_VAR)
        .env("RAYON_NUM_THREADS", "1");
    let done = run(there);
    assert!(
        done.status.success(),
        "build under qemu -cpu {model}: {}",
        stderr(&done)
    );
    let manifest = acs_schema::DatasetManifest::load(&emulated).unwrap();
    assert_eq!(
        manifest.kernel_paths,
        vec![path.name().to_owned()],
        "qemu -cpu {model} chose another path"
    );
    let (ours, theirs) = (hashes(&native), hashes(&emulated));
    if ours == theirs {
        return Vec::new();
    }
    vec![format!(
        "qemu -cpu {model} (auto: {path}) made other bytes than {path} forced here:\n  \
         here {ours:?}\n  emulated {theirs:?}"
    )]
}

#[test]
fn emulated_cpus_without_avx512_or_avx2_make_the_bytes_of_the_forced_paths() {
    // Forcing a path here is only worth something if it gives what a CPU without the faster
    // instructions gives: an Intel Haswell (AVX2 + FMA, no AVX-512) and Nehalem (SSE4.2, no
    // AVX), emulated by qemu's user mode.
    let Some(qemu) = qemu() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "qemu-x86_64 is not installed; scripts/test.sh installs Debian's qemu-user"
        );
        eprintln!("qemu-x86_64 not installed: the emulated-CPU check is skipped");
        return;
    };
    let here = kernel_paths_here();
    let differ: Vec<String> = [
        ("Haswell", KernelPath::CpuAvx2),
        ("Nehalem", KernelPath::CpuGeneric),
    ]
    .into_iter()
    .filter(|(_, path)| here.contains(path))
    .flat_map(|(model, path)| check_emulated(&qemu, model, path))
    .collect();
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
