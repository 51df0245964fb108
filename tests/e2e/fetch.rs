//! End-to-end tests of `acs model fetch` and `acs model list` against a small Hugging Face hub
//! served on 127.0.0.1 from the tiny model (two `util::http` servers): the model-info API,
//! resolve URLs with the hub's headers (`ETag` = git blob sha1, `X-Linked-Etag` = LFS sha256,
//! `X-Linked-Size`, `X-Repo-Commit`), LFS files redirected to a second "storage" server with
//! Range support, and an optional access token. Knobs make the servers cut a body short,
//! ignore Range, corrupt a file or quote the Authorization header back; every request is
//! logged.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use acs_schema::DatasetManifest;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::util::http::{self, Request, Response, Server};
use crate::util::{acs_command, assert_exit_2, sample_manifest, stderr, stdout};

const REPO: &str = "acs-test/tiny-sd";
const COMMIT: &str = "4f3e2d1c0b9a8f7e6d5c4b3a291807f6e5d4c3b2";
const TOKEN: &str = "hf_SecretTestToken4242";
const FP16_UNET: &str = "unet/diffusion_pytorch_model.fp16.safetensors";
/// Listed by the API but never to be requested: pickles, the safety checker, the feature
/// extractor, root-level single-file checkpoints, docs.
const NEVER: [&str; 9] = [
    "unet/diffusion_pytorch_model.bin",
    "text_encoder/pytorch_model.bin",
    "safety_checker/model.safetensors",
    "safety_checker/config.json",
    "feature_extractor/preprocessor_config.json",
    "v1-5-pruned-emaonly.ckpt",
    "v1-5-pruned-emaonly.safetensors",
    "README.md",
    ".gitattributes",
];

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn git_sha1_hex(bytes: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {}\0", bytes.len()).as_bytes());
    hasher.update(bytes);
    hex::encode(hasher.finalize())
}

/// One file of the served repository.
struct HubFile {
    path: String,
    bytes: Vec<u8>,
    /// Stored with Git LFS (weights): served through the storage server.
    lfs: bool,
}

impl HubFile {
    /// The ETag the cache names its blob after.
    fn etag(&self) -> String {
        if self.lfs {
            sha256_hex(&self.bytes)
        } else {
            git_sha1_hex(&self.bytes)
        }
    }
}

/// The tiny model's files (written once by `acs model init-tiny`), plus an fp16 UNet variant.
fn tiny_files() -> &'static [HubFile] {
    static FILES: OnceLock<Vec<HubFile>> = OnceLock::new();
    FILES.get_or_init(|| {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("tiny");
        let init = acs_command(
            &work.path().join("acs"),
            &["model", "init-tiny", &dir.display().to_string()],
        )
        .output()
        .unwrap();
        assert!(init.status.success(), "{}", stderr(&init));
        let mut files: Vec<HubFile> = crate::util::relative_files(&dir)
            .into_iter()
            .map(|name| HubFile {
                lfs: name.ends_with(".safetensors"),
                bytes: std::fs::read(dir.join(&name)).unwrap(),
                path: name,
            })
            .collect();
        files.sort_by(|a: &HubFile, b| a.path.cmp(&b.path));
        let unet = files
            .iter()
            .find(|f| f.path == "unet/diffusion_pytorch_model.safetensors")
            .unwrap()
            .bytes
            .clone();
        files.push(HubFile {
            path: FP16_UNET.to_owned(),
            bytes: unet,
            lfs: true,
        });
        files
    })
}

/// The files a plain fetch must bring: all but the fp16 variant.
fn default_files() -> Vec<&'static HubFile> {
    tiny_files()
        .iter()
        .filter(|f| f.path != FP16_UNET)
        .collect()
}

fn file(path: &str) -> &'static HubFile {
    tiny_files().iter().find(|f| f.path == path).unwrap()
}

/// How the servers misbehave.
#[derive(Default, Clone)]
struct Behaviour {
    /// Requests to the hub must carry `Authorization: Bearer <token>`.
    token: Option<String>,
    /// 401 answers quote the Authorization header they got in X-Error-Message.
    echo_authorization: bool,
    /// Storage GETs still to cut short (half the body, then close).
    interrupt: usize,
    /// The storage server answers Range requests with 200 and the whole file.
    ignore_range: bool,
    /// Files served with one byte flipped.
    corrupt: Vec<String>,
    /// Storage GETs still to trickle (the first 1000 bytes, then a byte a second).
    trickle: usize,
    /// The hub's API accepts requests and never answers.
    silent_api: bool,
}

/// One request as a server saw it.
#[derive(Debug, Clone)]
struct Seen {
    storage: bool,
    method: String,
    path: String,
    range: Option<String>,
    authorization: Option<String>,
}

impl Seen {
    fn new(request: &Request, storage: bool) -> Self {
        Self {
            storage,
            method: request.method.clone(),
            path: request.path.clone(),
            range: request.header("range").map(str::to_owned),
            authorization: request.header("authorization").map(str::to_owned),
        }
    }
}

/// A hub server and a storage server on 127.0.0.1 sharing one `Behaviour`, stopped when
/// dropped.
struct Hub {
    hub: Server,
    storage: Server,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl Hub {
    fn start(behaviour: Behaviour) -> Self {
        let behaviour = Arc::new(Mutex::new(behaviour));
        let storage = {
            let behaviour = behaviour.clone();
            Server::start(move |request, _| {
                let seen = Seen::new(request, true);
                let (behaviour, cut, trickle) = {
                    let mut shared = behaviour.lock().unwrap();
                    let cut = seen.method == "GET" && shared.interrupt > 0;
                    if cut {
                        shared.interrupt -= 1;
                    }
                    let trickle = seen.method == "GET" && shared.trickle > 0;
                    if trickle {
                        shared.trickle -= 1;
                    }
                    (shared.clone(), cut, trickle)
                };
                let reply = storage_reply(&seen, &behaviour).cut_short(cut);
                if trickle {
                    reply.trickled(1000)
                } else {
                    reply
                }
            })
        };
        let hub = {
            let behaviour = behaviour.clone();
            let storage = storage.url();
            Server::start(move |request, _| {
                let behaviour = behaviour.lock().unwrap().clone();
                if behaviour.silent_api && request.path.starts_with("/api/") {
                    // Holds the connection open without a byte of answer.
                    return Response::new(500, "").delayed(Duration::from_secs(3600));
                }
                hub_reply(&Seen::new(request, false), &behaviour, &storage)
            })
        };
        Self {
            hub,
            storage,
            behaviour,
        }
    }

    fn endpoint(&self) -> String {
        self.hub.url()
    }

    /// The requests of both servers, in order of arrival.
    fn requests(&self) -> Vec<Seen> {
        let mut all: Vec<(u64, Seen)> = self
            .hub
            .requests()
            .iter()
            .map(|r| (r.seq, Seen::new(r, false)))
            .chain(
                self.storage
                    .requests()
                    .iter()
                    .map(|r| (r.seq, Seen::new(r, true))),
            )
            .collect();
        all.sort_by_key(|(seq, _)| *seq);
        all.into_iter().map(|(_, seen)| seen).collect()
    }

    fn clear_log(&self) {
        self.hub.clear();
        self.storage.clear();
    }

    fn behave(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.behaviour.lock().unwrap());
    }
}

impl Response {
    fn hub_error(status: u16, code: &str) -> Self {
        Self::new(status, code.to_owned()).header("X-Error-Code", code)
    }
}

/// The bytes served for `file`: flipped in the middle when it is to be corrupted.
fn served_bytes(file: &HubFile, behaviour: &Behaviour) -> Vec<u8> {
    let mut bytes = file.bytes.clone();
    if behaviour.corrupt.contains(&file.path) {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
    }
    bytes
}

/// The hub's answer; LFS files redirect to `storage` (`http://127.0.0.1:PORT`).
fn hub_reply(seen: &Seen, behaviour: &Behaviour, storage: &str) -> Response {
    if let Some(token) = &behaviour.token {
        let expected = format!("Bearer {token}");
        if seen.authorization.as_deref() != Some(expected.as_str()) {
            let message = if behaviour.echo_authorization {
                format!(
                    "Invalid credentials in Authorization header: {}",
                    seen.authorization.as_deref().unwrap_or("(none)")
                )
            } else {
                "Invalid credentials in Authorization header".to_owned()
            };
            return Response::new(401, "unauthorized").header("X-Error-Message", message);
        }
    }
    if let Some(rest) = seen.path.strip_prefix("/api/models/") {
        let Some((repo, revision)) = rest.split_once("/revision/") else {
            return Response::new(404, "no route");
        };
        if repo != REPO {
            return Response::hub_error(404, "RepoNotFound");
        }
        if revision != "main" && revision != COMMIT {
            return Response::hub_error(404, "RevisionNotFound");
        }
        let siblings: Vec<serde_json::Value> = tiny_files()
            .iter()
            .map(|f| f.path.as_str())
            .chain(NEVER)
            .map(|name| serde_json::json!({ "rfilename": name }))
            .collect();
        let body = serde_json::json!({
            "id": REPO,
            "modelId": REPO,
            "sha": COMMIT,
            "siblings": siblings,
        });
        return Response::new(200, body.to_string()).header("Content-Type", "application/json");
    }
    let Some(rest) = seen.path.strip_prefix(&format!("/{REPO}/resolve/")) else {
        return Response::hub_error(404, "RepoNotFound");
    };
    let Some((revision, name)) = rest.split_once('/') else {
        return Response::new(404, "no route");
    };
    if revision != COMMIT && revision != "main" {
        return Response::hub_error(404, "RevisionNotFound");
    }
    if NEVER.contains(&name) {
        return Response::new(500, "this file must never be requested");
    }
    let Some(file) = tiny_files().iter().find(|f| f.path == name) else {
        return Response::hub_error(404, "EntryNotFound");
    };
    if file.lfs {
        Response::new(302, Vec::new())
            .header(
                "Location",
                format!("{storage}/lfs/{}?signature=x", sha256_hex(&file.bytes)),
            )
            .header("X-Linked-Etag", format!("\"{}\"", sha256_hex(&file.bytes)))
            .header("X-Linked-Size", file.bytes.len().to_string())
            // The ETag of the LFS pointer file, which a client must not verify against.
            .header(
                "ETag",
                format!("\"{}\"", git_sha1_hex(b"version lfs pointer")),
            )
            .header("X-Repo-Commit", COMMIT)
    } else {
        Response::new(200, served_bytes(file, behaviour))
            .header("ETag", format!("\"{}\"", git_sha1_hex(&file.bytes)))
            .header("X-Repo-Commit", COMMIT)
    }
}

fn storage_reply(seen: &Seen, behaviour: &Behaviour) -> Response {
    let sha = seen
        .path
        .strip_prefix("/lfs/")
        .and_then(|rest| rest.split('?').next())
        .unwrap_or_default();
    let Some(file) = tiny_files()
        .iter()
        .find(|f| f.lfs && sha256_hex(&f.bytes) == sha)
    else {
        return Response::new(404, "no such object");
    };
    let bytes = served_bytes(file, behaviour);
    let start = seen
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    match start {
        Some(start) if !behaviour.ignore_range => {
            if start >= bytes.len() {
                return Response::new(416, Vec::new())
                    .header("Content-Range", format!("bytes */{}", bytes.len()));
            }
            Response::new(206, bytes[start..].to_vec()).header(
                "Content-Range",
                format!("bytes {start}-{}/{}", bytes.len() - 1, bytes.len()),
            )
        }
        _ => Response::new(200, bytes),
    }
}

/// A private HF_HOME and ACS_HOME, and `acs` run inside them.
struct Sandbox {
    root: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Self {
            root: tempfile::tempdir().unwrap(),
        }
    }

    fn hf_home(&self) -> PathBuf {
        self.root.path().join("hf")
    }

    fn repo_dir(&self) -> PathBuf {
        self.hf_home().join("hub/models--acs-test--tiny-sd")
    }

    /// `acs ARGS` with only this sandbox's hub settings (no token, not offline, no proxy).
    fn command(&self, args: &[&str]) -> Command {
        let mut command = acs_command(&self.root.path().join("acs"), args);
        command.env("HF_HOME", self.hf_home());
        command
    }

    /// `acs model fetch ARGS` against `endpoint`.
    fn fetch(&self, endpoint: &str, args: &[&str], token: Option<&str>) -> Output {
        let mut all = vec!["model", "fetch"];
        all.extend_from_slice(args);
        let mut command = self.command(&all);
        command.env("HF_ENDPOINT", endpoint);
        if let Some(token) = token {
            command.env("HF_TOKEN", token);
        }
        command.output().unwrap()
    }

    /// Names in `blobs/`.
    fn blobs(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.repo_dir().join("blobs"))
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Asserts the snapshot of COMMIT holds exactly `files`, each a relative link to its
    /// verified blob, and that `refs/main` names COMMIT.
    fn assert_snapshot(&self, files: &[&HubFile]) {
        let repo = self.repo_dir();
        assert_eq!(
            std::fs::read_to_string(repo.join("refs/main")).unwrap(),
            COMMIT
        );
        let snapshot = repo.join("snapshots").join(COMMIT);
        for file in files {
            let pointer = snapshot.join(&file.path);
            assert_eq!(
                std::fs::read(&pointer).unwrap(),
                file.bytes,
                "{}",
                file.path
            );
            let depth = file.path.matches('/').count() + 2;
            let target = format!("{}blobs/{}", "../".repeat(depth), file.etag());
            assert_eq!(
                std::fs::read_link(&pointer).unwrap(),
                PathBuf::from(target),
                "{}",
                file.path
            );
        }
        let mut expected: Vec<String> = files.iter().map(|f| f.etag()).collect();
        expected.sort();
        expected.dedup();
        assert_eq!(
            self.blobs(),
            expected,
            "blobs/ holds exactly the verified files"
        );
    }
}

#[test]
fn fetched_models_build_offline_list_and_are_not_fetched_twice() {
    let hub = Hub::start(Behaviour::default());
    let sandbox = Sandbox::new();
    let fetched = sandbox.fetch(&hub.endpoint(), &[REPO], None);
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    let files = default_files();
    assert!(
        stdout(&fetched).contains(&format!(
            "downloaded {} of {} files",
            files.len(),
            files.len()
        )),
        "{}",
        stdout(&fetched)
    );
    assert!(stdout(&fetched).contains(COMMIT), "{}", stdout(&fetched));
    // Not a terminal: no progress bar, no noise.
    assert_eq!(stderr(&fetched), "");
    sandbox.assert_snapshot(&files);

    let requests = hub.requests();
    for seen in &requests {
        assert!(
            !NEVER.iter().any(|never| seen.path.ends_with(never)),
            "requested {}",
            seen.path
        );
        assert!(!seen.path.contains(".fp16."), "requested {}", seen.path);
    }
    // One API call, one HEAD per file, one GET per file (LFS ones on the storage server).
    assert_eq!(requests.len(), 1 + 2 * files.len(), "{requests:#?}");
    let lfs = files.iter().filter(|f| f.lfs).count();
    assert_eq!(requests.iter().filter(|s| s.storage).count(), lfs);

    // A second fetch asks the API which commit `main` is, and nothing else.
    hub.clear_log();
    let again = sandbox.fetch(&hub.endpoint(), &[REPO], None);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("already in the cache"),
        "{}",
        stdout(&again)
    );
    let requests = hub.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(
        requests[0].path,
        format!("/api/models/{REPO}/revision/main")
    );
    sandbox.assert_snapshot(&files);

    // Pinned by commit: no ref is written for it. A snapshot file that went missing while its
    // blob stayed is relinked after a HEAD, without downloading it again.
    let unet = file("unet/diffusion_pytorch_model.safetensors");
    std::fs::remove_file(
        sandbox
            .repo_dir()
            .join("snapshots")
            .join(COMMIT)
            .join(&unet.path),
    )
    .unwrap();
    hub.clear_log();
    let pinned = sandbox.fetch(&hub.endpoint(), &[REPO, "--revision", COMMIT], None);
    assert!(pinned.status.success(), "{}", stderr(&pinned));
    assert!(
        stdout(&pinned).contains("already in the cache"),
        "{}",
        stdout(&pinned)
    );
    let requests = hub.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_eq!(requests[1].method, "HEAD");
    assert!(requests[1].path.ends_with(&unet.path));
    assert!(!sandbox.repo_dir().join("refs").join(COMMIT).exists());
    sandbox.assert_snapshot(&files);

    let list = sandbox.command(&["model", "list"]).output().unwrap();
    assert!(list.status.success(), "{}", stderr(&list));
    let listing = stdout(&list);
    let line = listing
        .lines()
        .find(|l| l.contains(REPO))
        .unwrap_or_else(|| panic!("{REPO} not listed: {listing}"));
    assert!(
        line.contains(COMMIT) && line.contains("main") && line.contains("MiB"),
        "{line}"
    );
    assert!(!line.contains("incomplete"), "{line}");

    // The hub is gone: the build reads the cache only.
    drop(hub);
    let manifest = sample_manifest(
        sandbox.root.path(),
        "m",
        &format!("[model]\nrepo = \"{REPO}\"\n[sampling]\nsteps = 2\nheight = 64\nwidth = 64\n"),
    );
    let out = sandbox.root.path().join("out");
    let build = sandbox
        .command(&[
            "build",
            "--manifest",
            &manifest.display().to_string(),
            "--out",
            &out.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", stderr(&build));
    let dataset = DatasetManifest::load(&out).unwrap();
    assert_eq!(dataset.model.id, REPO);
    assert_eq!(dataset.shards.iter().map(|s| s.rows).sum::<u64>(), 18);
}

#[test]
fn a_dry_run_of_a_hub_model_never_touches_the_network() {
    let hub = Hub::start(Behaviour::default());
    let sandbox = Sandbox::new();
    let manifest = sample_manifest(
        sandbox.root.path(),
        "m",
        &format!("[model]\nrepo = \"{REPO}\"\n[sampling]\nsteps = 1\nheight = 64\nwidth = 64\n"),
    );
    let out = sandbox.root.path().join("out");
    let dry = sandbox
        .command(&[
            "build",
            "--manifest",
            &manifest.display().to_string(),
            "--out",
            &out.display().to_string(),
            "--dry-run",
        ])
        .env("HF_ENDPOINT", hub.endpoint())
        .output()
        .unwrap();
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        stderr(&dry).contains("a dry run does not download it"),
        "{}",
        stderr(&dry)
    );
    assert!(String::from_utf8_lossy(&dry.stdout).contains("18"));
    assert!(hub.requests().is_empty());
    assert!(!out.exists() && !sandbox.repo_dir().exists());
}

#[test]
fn a_build_fetches_a_model_missing_from_the_cache_unless_offline() {
    let hub = Hub::start(Behaviour::default());
    let sandbox = Sandbox::new();
    let manifest = sample_manifest(
        sandbox.root.path(),
        "m",
        &format!("[model]\nrepo = \"{REPO}\"\n[sampling]\nsteps = 1\nheight = 64\nwidth = 64\n"),
    );
    let build = |out: &str, offline: bool| {
        let out = sandbox.root.path().join(out);
        let mut command = sandbox.command(&[
            "build",
            "--manifest",
            &manifest.display().to_string(),
            "--out",
            &out.display().to_string(),
        ]);
        command.env("HF_ENDPOINT", hub.endpoint());
        if offline {
            command.env("HF_HUB_OFFLINE", "1");
        }
        (command.output().unwrap(), out)
    };
    let (offline, out) = build("offline", true);
    assert_exit_2(&offline, &[REPO, "acs model fetch"]);
    assert!(!out.join("acs-manifest.json").exists());
    assert!(hub.requests().is_empty());

    let (online, out) = build("online", false);
    assert!(online.status.success(), "{}", stderr(&online));
    sandbox.assert_snapshot(&default_files());
    assert_eq!(DatasetManifest::load(&out).unwrap().model.id, REPO);
}

#[test]
fn interrupted_downloads_resume_with_a_range_request() {
    let weights = file("text_encoder/model.safetensors");
    let sha = sha256_hex(&weights.bytes);

    // Cut once: the same run resumes from where the body stopped.
    let hub = Hub::start(Behaviour {
        interrupt: 1,
        ..Behaviour::default()
    });
    let sandbox = Sandbox::new();
    let fetched = sandbox.fetch(&hub.endpoint(), &[REPO], None);
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    sandbox.assert_snapshot(&default_files());
    let gets: Vec<Seen> = hub
        .requests()
        .into_iter()
        .filter(|s| s.storage && s.path.contains(&sha))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:#?}");
    assert_eq!(gets[0].range, None);
    assert_eq!(
        gets[1].range.as_deref(),
        Some(format!("bytes={}-", weights.bytes.len() / 2).as_str())
    );

    // Cut every time: the run gives up, keeps the partial blob, publishes nothing; the next
    // run resumes it with a Range request.
    let hub = Hub::start(Behaviour {
        interrupt: 1000,
        ..Behaviour::default()
    });
    let sandbox = Sandbox::new();
    let failed = sandbox.fetch(&hub.endpoint(), &[REPO], None);
    assert_exit_2(
        &failed,
        &[
            "text_encoder/model.safetensors",
            "interrupted",
            &format!("{sha}.incomplete"),
        ],
    );
    let partial = sandbox
        .repo_dir()
        .join("blobs")
        .join(format!("{sha}.incomplete"));
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept > 0 && kept < weights.bytes.len() as u64, "{kept}");
    assert!(!sandbox.repo_dir().join("blobs").join(&sha).exists());
    assert!(!sandbox
        .repo_dir()
        .join("snapshots")
        .join(COMMIT)
        .join(&weights.path)
        .exists());
    assert!(!sandbox.repo_dir().join("refs/main").exists());
    hub.behave(|b| b.interrupt = 0);
    hub.clear_log();
    let resumed = sandbox.fetch(&hub.endpoint(), &[REPO], None);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    sandbox.assert_snapshot(&default_files());
    let first = hub
        .requests()
        .into_iter()
        .find(|s| s.storage && s.path.contains(&sha))
        .unwrap();
    assert_eq!(first.range, Some(format!("bytes={kept}-")));

    // A server that ignores Range (200 with the whole file) is read from the start.
    let hub = Hub::start(Behaviour {
        interrupt: 1,
        ignore_range: true,
        ..Behaviour::default()
    });
    let sandbox = Sandbox::new();
    let fetched = sandbox.fetch(&hub.endpoint(), &[REPO], None);
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    sandbox.assert_snapshot(&default_files());
    assert!(hub.requests().iter().any(|s| s.range.is_some()));
}

#[test]
fn silent_and_trickling_hubs_are_given_up_on_and_the_download_resumes() {
    let fetch_in_1s = |sandbox: &Sandbox, hub: &Hub| {
        let mut command = sandbox.command(&["model", "fetch", REPO]);
        command
            .env("HF_ENDPOINT", hub.endpoint())
            .env("HF_HUB_DOWNLOAD_TIMEOUT", "1");
        command.output().unwrap()
    };
    // An API that accepts and never answers: one line naming the URL and the setting.
    let hub = Hub::start(Behaviour {
        silent_api: true,
        ..Behaviour::default()
    });
    let silent = fetch_in_1s(&Sandbox::new(), &hub);
    let api = format!("{}/api/models/{REPO}/revision/main", hub.endpoint());
    assert_exit_2(&silent, &[&api, "within 1 s", "HF_HUB_DOWNLOAD_TIMEOUT"]);

    // Storage that sends 1000 bytes, then a byte a second: every attempt is given up on after
    // a window without 64 KiB, the bytes received are kept, and the next run resumes them.
    let weights = file("text_encoder/model.safetensors");
    assert!(weights.bytes.len() > 2000);
    let hub = Hub::start(Behaviour {
        trickle: 1000,
        ..Behaviour::default()
    });
    let sandbox = Sandbox::new();
    let trickled = fetch_in_1s(&sandbox, &hub);
    assert_exit_2(
        &trickled,
        &["64 KiB of the body", "within 1 s", ".incomplete"],
    );
    let blobs = sandbox.repo_dir().join("blobs");
    let partial: Vec<_> = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".incomplete"))
        .collect();
    assert_eq!(partial.len(), 1, "{partial:?}");
    let kept = partial[0].metadata().unwrap().len();
    assert!(kept >= 1000, "{kept}");
    assert!(!sandbox.repo_dir().join("refs/main").exists());
    hub.behave(|b| b.trickle = 0);
    hub.clear_log();
    let resumed = sandbox.fetch(&hub.endpoint(), &[REPO], None);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    sandbox.assert_snapshot(&default_files());
    let name = partial[0]
        .file_name()
        .to_string_lossy()
        .replace(".incomplete", "");
    let first = hub
        .requests()
        .into_iter()
        .find(|s| s.storage && s.path.contains(&name))
        .unwrap();
    assert_eq!(first.range, Some(format!("bytes={kept}-")));
}

#[test]
fn corrupted_files_are_integrity_errors_and_never_published() {
    let unet = file("unet/diffusion_pytorch_model.safetensors");
    let sha = sha256_hex(&unet.bytes);
    let hub = Hub::start(Behaviour {
        corrupt: vec![unet.path.clone()],
        ..Behaviour::default()
    });
    let sandbox = Sandbox::new();
    let failed = sandbox.fetch(&hub.endpoint(), &[REPO], None);
    let corrupted = served_bytes(
        unet,
        &Behaviour {
            corrupt: vec![unet.path.clone()],
            ..Behaviour::default()
        },
    );
    assert_exit_2(
        &failed,
        &[
            "unet/diffusion_pytorch_model.safetensors",
            "sha256 mismatch",
            &sha,
            &sha256_hex(&corrupted),
        ],
    );
    let blobs = sandbox.blobs();
    assert!(
        !blobs.iter().any(|b| b.starts_with(&sha)),
        "nothing under the final or partial name: {blobs:?}"
    );
    assert!(!sandbox
        .repo_dir()
        .join("snapshots")
        .join(COMMIT)
        .join(&unet.path)
        .exists());
    assert!(!sandbox.repo_dir().join("refs/main").exists());

    // A plain git file is checked against its git blob sha1.
    let config = file("unet/config.json");
    hub.behave(|b| b.corrupt = vec![config.path.clone()]);
    let sandbox = Sandbox::new();
    let failed = sandbox.fetch(&hub.endpoint(), &[REPO], None);
    assert_exit_2(
        &failed,
        &[
            "unet/config.json",
            "git blob sha1 mismatch",
            &git_sha1_hex(&config.bytes),
        ],
    );
    assert!(!sandbox.blobs().contains(&git_sha1_hex(&config.bytes)));

    // Once the server is right again, the same cache completes.
    hub.behave(|b| b.corrupt.clear());
    let fetched = sandbox.fetch(&hub.endpoint(), &[REPO], None);
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    sandbox.assert_snapshot(&default_files());
}

#[test]
fn tokens_go_only_to_the_hub_and_are_never_shown() {
    let hub = Hub::start(Behaviour {
        token: Some(TOKEN.to_owned()),
        echo_authorization: true,
        ..Behaviour::default()
    });
    let sandbox = Sandbox::new();
    let missing = sandbox.fetch(&hub.endpoint(), &[REPO], None);
    assert_exit_2(
        &missing,
        &["401", "gated or private", "HF_TOKEN is not set", REPO],
    );

    let wrong = "hf_WrongToken9876";
    let refused = sandbox.fetch(&hub.endpoint(), &[REPO], Some(wrong));
    let err = assert_exit_2(&refused, &["401", "HF_TOKEN is set but was refused"]);
    // The server quoted the header back; acs shows the quote without the token.
    assert!(err.contains("Bearer ***"), "{err}");
    assert!(
        !err.contains(wrong) && !stdout(&refused).contains(wrong),
        "{err}"
    );

    let fetched = sandbox.fetch(&hub.endpoint(), &[REPO], Some(TOKEN));
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    assert!(!stdout(&fetched).contains(TOKEN) && !stderr(&fetched).contains(TOKEN));
    sandbox.assert_snapshot(&default_files());
    let requests = hub.requests();
    let bearer = format!("Bearer {TOKEN}");
    for seen in requests.iter().filter(|s| !s.storage) {
        assert!(
            seen.authorization.is_none()
                || seen.authorization.as_deref() == Some(bearer.as_str())
                || seen.authorization.as_deref() == Some(&format!("Bearer {wrong}")),
            "{seen:?}"
        );
    }
    let storage: Vec<&Seen> = requests.iter().filter(|s| s.storage).collect();
    assert!(!storage.is_empty());
    for seen in storage {
        assert_eq!(
            seen.authorization, None,
            "the token leaked to storage: {seen:?}"
        );
    }

    // The token `huggingface-cli login` stores in $HF_HOME/token is used too.
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.hf_home()).unwrap();
    std::fs::write(sandbox.hf_home().join("token"), format!("{TOKEN}\n")).unwrap();
    let fetched = sandbox.fetch(&hub.endpoint(), &[REPO], None);
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    assert!(!stdout(&fetched).contains(TOKEN) && !stderr(&fetched).contains(TOKEN));
}

#[test]
fn unknown_repos_revisions_offline_and_unreachable_hubs_exit_2() {
    let hub = Hub::start(Behaviour::default());
    let sandbox = Sandbox::new();
    assert_exit_2(
        &sandbox.fetch(&hub.endpoint(), &["acs-test/nope"], None),
        &["acs-test/nope", "404", "repository not found"],
    );
    assert_exit_2(
        &sandbox.fetch(&hub.endpoint(), &[REPO, "--revision", "v9"], None),
        &["acs-test/tiny-sd@v9", "404", "revision not found"],
    );
    assert_exit_2(
        &sandbox.fetch(&hub.endpoint(), &["../etc"], None),
        &["not a hub id"],
    );
    hub.clear_log();
    let mut offline = sandbox.command(&["model", "fetch", REPO]);
    offline
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HUB_OFFLINE", "1");
    assert_exit_2(&offline.output().unwrap(), &["HF_HUB_OFFLINE", REPO]);
    assert!(hub.requests().is_empty(), "offline fetch made requests");
    drop(hub);

    let endpoint = http::unused_url();
    assert_exit_2(
        &sandbox.fetch(&endpoint, &[REPO], None),
        &[&format!("cannot connect to {endpoint}")],
    );
    assert!(
        !sandbox.repo_dir().exists(),
        "a failed fetch left a cache folder"
    );
    assert!(!sandbox
        .hf_home()
        .join("hub/models--acs-test--nope")
        .exists());
}

#[test]
fn the_fp16_variant_is_preferred_where_published() {
    let hub = Hub::start(Behaviour::default());
    let sandbox = Sandbox::new();
    let fetched = sandbox.fetch(&hub.endpoint(), &[REPO, "--variant", "fp16"], None);
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    let notes = stderr(&fetched);
    for fallback in [
        "text_encoder/model.fp16.safetensors is not published",
        "vae/diffusion_pytorch_model.fp16.safetensors is not published",
    ] {
        assert!(notes.contains(fallback), "{notes}");
    }
    let files: Vec<&HubFile> = tiny_files()
        .iter()
        .filter(|f| f.path != "unet/diffusion_pytorch_model.safetensors")
        .collect();
    sandbox.assert_snapshot(&files);
    assert!(!hub
        .requests()
        .iter()
        .any(|s| s.path.ends_with("unet/diffusion_pytorch_model.safetensors")));
    let list = sandbox.command(&["model", "list"]).output().unwrap();
    let listing = stdout(&list);
    assert!(
        listing.contains(REPO) && !listing.contains("incomplete"),
        "{listing}"
    );
}
