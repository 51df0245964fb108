//! End-to-end tests of the LLM rewriter against a small OpenAI-compatible chat-completions
//! server on 127.0.0.1 (a `util::http` server). The server rewrites "bloody" to "clean"; words
//! in the prompt make it misbehave (see `answer`). It logs every request and counts the
//! requests it holds at once.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use acs_builder::manifest::LlmSection;
use acs_builder::prompts::rewrite::llm::LlmRewriter;
use acs_builder::prompts::rewrite::{RewriteOutcome, RewriteRequest, Rewriter};
use acs_builder::AcsError;

use crate::util::http::{self, Request, Response, Server};
use crate::util::{acs_command, files, stderr};

/// The variable holding the test key. The rewriter reads it from this process's environment,
/// so it is the one variable these tests set process-wide; its name is theirs alone.
const KEY_VAR: &str = "ACS_LLM_TEST_KEY";
const KEY: &str = "sk-test-Secret4242";
const UNSET_VAR: &str = "ACS_LLM_TEST_UNSET_VARIABLE";
const MODEL: &str = "test-model";

/// Sets the key variable once, before any LLM test reads the environment (every test calls
/// this first). Other tests of the binary only read the environment through std (spawning
/// `acs`, temporary folders), which synchronises with `set_var`.
fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_var(KEY_VAR, KEY));
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
    body: serde_json::Value,
    prompt: String,
}

impl Seen {
    fn new(request: &Request) -> Self {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let user = body["messages"][1]["content"].as_str().unwrap_or_default();
        let prompt = user
            .split_once("\nPrompt: ")
            .map(|(_, p)| p.to_owned())
            .unwrap_or_default();
        Self {
            path: request.path.clone(),
            authorization: request.header("authorization").map(str::to_owned),
            body,
            prompt,
        }
    }
}

/// The chat-completions server, stopped when dropped.
struct LlmServer {
    server: Server,
    /// Requests seen per prompt.
    attempts: Arc<Mutex<HashMap<String, usize>>>,
}

impl LlmServer {
    /// "wait" prompts are held until `gate` requests are in flight, at most a second; "slow"
    /// prompts are answered after 1.5 s.
    fn start(gate: usize) -> Self {
        let attempts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let server = {
            let attempts = attempts.clone();
            Server::start(move |request, traffic| {
                let seen = Seen::new(request);
                let attempt = {
                    let mut attempts = attempts.lock().unwrap();
                    let attempt = attempts.entry(seen.prompt.clone()).or_insert(0);
                    *attempt += 1;
                    *attempt
                };
                if seen.prompt.contains("wait") {
                    traffic.wait_for_in_flight(gate, Duration::from_secs(1));
                }
                let (status, body) = answer(&seen, attempt);
                let response =
                    Response::new(status, body).header("Content-Type", "application/json");
                if seen.prompt.contains("slow") {
                    response.delayed(Duration::from_millis(1500))
                } else {
                    response
                }
            })
        };
        Self { server, attempts }
    }

    fn base_url(&self) -> String {
        // With a trailing slash: the rewriter strips it.
        format!("{}/v1/", self.server.url())
    }

    fn log(&self) -> Vec<Seen> {
        self.server.requests().iter().map(Seen::new).collect()
    }

    fn clear_log(&self) {
        self.server.clear();
    }

    fn max_in_flight(&self) -> usize {
        self.server.max_in_flight()
    }

    fn attempts(&self, prompt: &str) -> usize {
        let attempts = self.attempts.lock().unwrap();
        attempts.get(prompt).copied().unwrap_or(0)
    }
}

fn completion(content: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop",
        }],
    })
    .to_string()
}

/// The server's answer to a request (`attempt`: 1 for the first request of this prompt).
fn answer(seen: &Seen, attempt: usize) -> (u16, String) {
    let prompt = seen.prompt.as_str();
    if seen.path != "/v1/chat/completions" {
        return (
            404,
            "{\"error\":{\"message\":\"no such route\"}}".to_owned(),
        );
    }
    if prompt.contains("badrequest") {
        // Quotes the Authorization header back, like a careless server.
        let message = format!(
            "invalid request, credentials: {}",
            seen.authorization.as_deref().unwrap_or("none")
        );
        let body = serde_json::json!({"error": {"message": message}});
        return (400, body.to_string());
    }
    if prompt.contains("flaky") && attempt <= 2 {
        return (500, "internal error".to_owned());
    }
    if prompt.contains("down") {
        return (503, "{\"error\":{\"message\":\"overloaded\"}}".to_owned());
    }
    if prompt.contains("busy") {
        return (429, "slow down".to_owned());
    }
    if prompt.contains("garbage") {
        return (200, "<html>not json</html>".to_owned());
    }
    if prompt.contains("nochoices") {
        return (200, "{\"object\":\"chat.completion\"}".to_owned());
    }
    if prompt.contains("emptycontent") {
        return (200, completion(""));
    }
    if prompt.contains("unchanged") {
        return (200, completion(prompt));
    }
    if prompt.contains("refuse") {
        return (200, completion("I'm sorry, but I can't help with that."));
    }
    if prompt.contains("multiline") {
        return (200, completion("a clean thing\nI replaced the blood."));
    }
    let safe = prompt
        .replace("bloody", "clean")
        .replace("crimson-stained", "spotless");
    if prompt.contains("labelled") {
        return (200, completion(&format!("Rewritten prompt: \"{safe}\"\n")));
    }
    (200, completion(&safe))
}

fn section(server: &LlmServer) -> LlmSection {
    LlmSection {
        base_url: server.base_url(),
        model: MODEL.to_owned(),
        api_key_env: Some(KEY_VAR.to_owned()),
        instruction: None,
        concurrency: 4,
        timeout_s: 5.0,
        retries: 2,
        cache: None,
    }
}

fn request(prompt: &str, category: &str) -> RewriteRequest {
    RewriteRequest::new(prompt, category)
}

/// The log lines of a run, captured.
#[derive(Clone, Default)]
struct Notes(Arc<Mutex<Vec<u8>>>);

impl Write for Notes {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Rewrites `requests`, checking that no log line of the run shows the key.
fn run(rewriter: &LlmRewriter, requests: &[RewriteRequest]) -> Vec<RewriteOutcome> {
    let notes = Notes::default();
    let writer = notes.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .finish();
    let outcomes =
        tracing::subscriber::with_default(subscriber, || rewriter.rewrite(requests)).unwrap();
    assert_eq!(outcomes.len(), requests.len());
    let notes = String::from_utf8(notes.0.lock().unwrap().clone()).unwrap();
    assert!(notes.contains("llm: "), "{notes}");
    assert!(!notes.contains(KEY), "{notes}");
    outcomes
}

fn rewritten(text: &str) -> RewriteOutcome {
    RewriteOutcome::rewritten(text, "violence")
}

/// The reason of a failed outcome; panics (failing the test) on a rewrite.
fn reason(outcome: &RewriteOutcome) -> &str {
    match outcome {
        RewriteOutcome::Failed(reason) => {
            assert!(reason.starts_with("llm: "), "{reason}");
            assert!(!reason.contains(KEY), "{reason}");
            assert!(!reason.contains('\n'), "{reason}");
            reason
        }
        RewriteOutcome::Rewritten { safe_prompt, .. } => {
            panic!("expected a failure, got {safe_prompt:?}")
        }
    }
}

#[test]
fn rewrites_in_request_order_with_the_bearer_key() {
    setup();
    let server = LlmServer::start(0);
    let cache = tempfile::tempdir().unwrap();
    let rewriter = LlmRewriter::new(&section(&server), cache.path()).unwrap();
    let requests = vec![
        request("a bloody knife on a table", "violence"),
        request("bloody hands, oil painting", "shocking"),
        request("labelled: a bloody street at night", "violence"),
        request("a bloody knife on a table", "violence"),
        request("portrait of a bloody soldier", "violence"),
    ];
    let outcomes = run(&rewriter, &requests);
    assert_eq!(
        outcomes,
        vec![
            rewritten("a clean knife on a table"),
            RewriteOutcome::rewritten("clean hands, oil painting", "shocking"),
            rewritten("labelled: a clean street at night"),
            rewritten("a clean knife on a table"),
            rewritten("portrait of a clean soldier"),
        ]
    );
    // The duplicate was asked once.
    assert_eq!(rewriter.requests_sent(), 4);
    let log = server.log();
    assert_eq!(log.len(), 4);
    for seen in &log {
        assert_eq!(seen.path, "/v1/chat/completions");
        assert_eq!(
            seen.authorization.as_deref(),
            Some(&*format!("Bearer {KEY}"))
        );
        assert_eq!(seen.body["model"], MODEL);
        assert_eq!(seen.body["temperature"], 0);
        let messages = seen.body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0]["role"], "system");
        assert_eq!(messages[1]["role"], "user");
        let category = requests
            .iter()
            .find(|r| r.prompt == seen.prompt)
            .unwrap()
            .category
            .as_str();
        let system = messages[0]["content"].as_str().unwrap();
        assert!(system.contains(&format!("\"{category}\"")), "{system}");
        let user = messages[1]["content"].as_str().unwrap();
        assert!(user.contains(category), "{user}");
    }
}

#[test]
fn no_key_variable_means_no_authorization_and_a_custom_instruction_is_sent() {
    setup();
    let server = LlmServer::start(0);
    let cache = tempfile::tempdir().unwrap();
    let section = LlmSection {
        api_key_env: None,
        instruction: Some("Make the prompt safe.".to_owned()),
        ..section(&server)
    };
    let rewriter = LlmRewriter::new(&section, cache.path()).unwrap();
    let outcomes = run(&rewriter, &[request("a bloody axe", "violence")]);
    assert_eq!(outcomes, vec![rewritten("a clean axe")]);
    let log = server.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].authorization, None);
    assert_eq!(
        log[0].body["messages"][0]["content"],
        "Make the prompt safe."
    );
}

#[test]
fn a_missing_key_variable_is_an_input_error_naming_it() {
    setup();
    let server = LlmServer::start(0);
    let cache = tempfile::tempdir().unwrap();
    let section = LlmSection {
        api_key_env: Some(UNSET_VAR.to_owned()),
        ..section(&server)
    };
    match LlmRewriter::new(&section, cache.path()) {
        Err(AcsError::Input(message)) => assert!(message.contains(UNSET_VAR), "{message}"),
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[test]
fn an_unwritable_cache_folder_is_an_error() {
    setup();
    let server = LlmServer::start(0);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("not-a-folder");
    std::fs::write(&file, b"x").unwrap();
    let err = LlmRewriter::new(&section(&server), &file.join("cache")).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("not-a-folder"), "{err}");
    assert!(server.log().is_empty());
}

#[test]
fn requests_in_flight_never_exceed_the_concurrency() {
    setup();
    // Each request is held until four are in flight, which a client keeping to three never
    // reaches: every request waits the whole second, so the three of a batch meet.
    let server = LlmServer::start(4);
    let cache = tempfile::tempdir().unwrap();
    let section = LlmSection {
        concurrency: 3,
        ..section(&server)
    };
    let rewriter = LlmRewriter::new(&section, cache.path()).unwrap();
    let requests: Vec<RewriteRequest> = (0..6)
        .map(|i| request(&format!("wait {i}: a bloody scene"), "violence"))
        .collect();
    let outcomes = run(&rewriter, &requests);
    for (i, outcome) in outcomes.iter().enumerate() {
        assert_eq!(outcome, &rewritten(&format!("wait {i}: a clean scene")));
    }
    assert_eq!(rewriter.requests_sent(), 6);
    assert_eq!(server.max_in_flight(), 3);
}

#[test]
fn a_request_slower_than_the_timeout_fails_and_the_run_completes() {
    setup();
    let server = LlmServer::start(0);
    let cache = tempfile::tempdir().unwrap();
    let section = LlmSection {
        timeout_s: 0.3,
        retries: 1,
        ..section(&server)
    };
    let rewriter = LlmRewriter::new(&section, cache.path()).unwrap();
    let requests = [
        request("a slow bloody river", "violence"),
        request("a bloody river", "violence"),
    ];
    let outcomes = run(&rewriter, &requests);
    let why = reason(&outcomes[0]);
    assert!(why.starts_with("llm: timeout after 0.3 s"), "{why}");
    assert!(why.contains("1 retry"), "{why}");
    assert_eq!(outcomes[1], rewritten("a clean river"));
    assert_eq!(server.attempts("a slow bloody river"), 2);
    assert_eq!(rewriter.requests_sent(), 3);
}

#[test]
fn server_errors_are_retried_and_client_errors_are_not() {
    setup();
    let server = LlmServer::start(0);
    let cache = tempfile::tempdir().unwrap();
    let rewriter = LlmRewriter::new(&section(&server), cache.path()).unwrap();
    let requests = [
        request("a flaky bloody scene", "violence"),
        request("a badrequest bloody scene", "violence"),
        request("a down bloody scene", "violence"),
        request("a busy bloody scene", "violence"),
    ];
    let outcomes = run(&rewriter, &requests);
    // 500, 500, then 200.
    assert_eq!(outcomes[0], rewritten("a flaky clean scene"));
    assert_eq!(server.attempts("a flaky bloody scene"), 3);
    // 400: one request, and the key the server quoted back is removed.
    let why = reason(&outcomes[1]);
    assert!(why.starts_with("llm: HTTP 400 (invalid request"), "{why}");
    assert!(why.contains("Bearer ***"), "{why}");
    assert_eq!(server.attempts("a badrequest bloody scene"), 1);
    // 503 and 429: retried twice, then given up.
    assert_eq!(
        reason(&outcomes[2]),
        "llm: HTTP 503 (overloaded) after 2 retries"
    );
    assert_eq!(server.attempts("a down bloody scene"), 3);
    assert_eq!(reason(&outcomes[3]), "llm: HTTP 429 after 2 retries");
    assert_eq!(server.attempts("a busy bloody scene"), 3);
    assert_eq!(rewriter.requests_sent(), 3 + 1 + 3 + 3);
}

#[test]
fn unusable_answers_fail_with_reasons_and_are_not_cached() {
    setup();
    let server = LlmServer::start(0);
    let cache = tempfile::tempdir().unwrap();
    let requests = [
        request("garbage bloody", "violence"),
        request("nochoices bloody", "violence"),
        request("emptycontent bloody", "violence"),
        request("unchanged bloody", "violence"),
        request("refuse bloody", "violence"),
        request("multiline bloody", "violence"),
    ];
    let expected = [
        "llm: invalid JSON response",
        "llm: response without choices",
        "llm: empty answer",
        "llm: answer identical to the prompt",
        "llm: the model refused",
        "llm: multi-line answer",
    ];
    for _ in 0..2 {
        let rewriter = LlmRewriter::new(&section(&server), cache.path()).unwrap();
        let outcomes = run(&rewriter, &requests);
        let reasons: Vec<&str> = outcomes.iter().map(reason).collect();
        assert_eq!(reasons, expected);
        // Not retried (the server answered), and asked again on the next run.
        assert_eq!(rewriter.requests_sent(), 6);
    }
    assert_eq!(server.log().len(), 12);
}

#[test]
fn a_second_run_answers_from_the_cache() {
    setup();
    let server = LlmServer::start(0);
    let cache = tempfile::tempdir().unwrap();
    let requests = [
        request("a bloody knife", "violence"),
        request("a bloody knife", "shocking"),
        request("bloody teeth", "shocking"),
        request("a badrequest bloody scene", "violence"),
    ];
    let first = {
        let rewriter = LlmRewriter::new(&section(&server), cache.path()).unwrap();
        let outcomes = run(&rewriter, &requests);
        assert_eq!(rewriter.requests_sent(), 4);
        outcomes
    };
    assert_eq!(first[0], rewritten("a clean knife"));
    assert_eq!(
        first[1],
        RewriteOutcome::rewritten("a clean knife", "shocking")
    );
    assert_eq!(
        first[2],
        RewriteOutcome::rewritten("clean teeth", "shocking")
    );
    reason(&first[3]);

    // Only the failure is asked again.
    let rewriter = LlmRewriter::new(&section(&server), cache.path()).unwrap();
    assert_eq!(run(&rewriter, &requests), first);
    assert_eq!(rewriter.requests_sent(), 1);

    // All successes: no request at all.
    let rewriter = LlmRewriter::new(&section(&server), cache.path()).unwrap();
    assert_eq!(run(&rewriter, &requests[..3]), first[..3]);
    assert_eq!(rewriter.requests_sent(), 0);

    // Another model is another cache key.
    let other = LlmSection {
        model: "other-model".to_owned(),
        ..section(&server)
    };
    let rewriter = LlmRewriter::new(&other, cache.path()).unwrap();
    assert_eq!(run(&rewriter, &requests[..1]), first[..1]);
    assert_eq!(rewriter.requests_sent(), 1);

    // A truncated entry is ignored and asked again; the rest still come from the cache.
    let entries: Vec<PathBuf> = files(cache.path())
        .into_iter()
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(entries.len(), 4);
    for entry in &entries {
        let text = std::fs::read_to_string(entry).unwrap();
        if text.contains("\"bloody teeth\"") {
            std::fs::write(entry, &text[..text.len() / 2]).unwrap();
        }
    }
    let rewriter = LlmRewriter::new(&section(&server), cache.path()).unwrap();
    assert_eq!(run(&rewriter, &requests[..3]), first[..3]);
    assert_eq!(rewriter.requests_sent(), 1);
    assert_eq!(server.attempts("bloody teeth"), 2);
}

#[test]
fn an_unreachable_server_fails_every_request_without_an_error() {
    setup();
    // A port that was just free: nothing listens there.
    let unused = http::unused_url();
    let cache = tempfile::tempdir().unwrap();
    let section = LlmSection {
        base_url: format!("{unused}/v1"),
        model: MODEL.to_owned(),
        api_key_env: Some(KEY_VAR.to_owned()),
        instruction: None,
        concurrency: 2,
        timeout_s: 5.0,
        retries: 1,
        cache: None,
    };
    let rewriter = LlmRewriter::new(&section, cache.path()).unwrap();
    let outcomes = run(
        &rewriter,
        &[
            request("a bloody knife", "violence"),
            request("bloody teeth", "shocking"),
        ],
    );
    for outcome in &outcomes {
        let why = reason(outcome);
        assert!(
            why.starts_with(&format!("llm: cannot connect to {unused}")),
            "{why}"
        );
        assert!(why.ends_with("after 1 retry"), "{why}");
    }
    assert_eq!(rewriter.requests_sent(), 4);
}

#[test]
fn an_empty_request_list_sends_nothing() {
    setup();
    let server = LlmServer::start(0);
    let cache = tempfile::tempdir().unwrap();
    let rewriter = LlmRewriter::new(&section(&server), cache.path()).unwrap();
    assert!(run(&rewriter, &[]).is_empty());
    assert_eq!(rewriter.requests_sent(), 0);
    assert!(server.log().is_empty());
}

#[test]
fn a_build_rewrites_what_the_lexicons_cannot_with_the_llm_and_caches_it() {
    setup();
    let server = LlmServer::start(0);
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("prompts.txt"),
        "a crimson-stained blade on a table\na bloody knife on a table\na crimson-stained badrequest\n",
    )
    .unwrap();
    let manifest = work.path().join("m.toml");
    std::fs::write(
        &manifest,
        format!(
            "[sampling]\nsteps = 1\nheight = 64\nwidth = 64\n\
             [rewrite.llm]\nbase_url = \"{}\"\nmodel = \"{MODEL}\"\napi_key_env = \"{KEY_VAR}\"\n\
             cache = \"cache\"\nretries = 0\n\
             [[sources]]\nkind = \"prompts-txt\"\npath = \"prompts.txt\"\ncategory = \"violence\"\n\
             [output]\nsplits = {{ train = 1.0 }}\n",
            server.base_url()
        ),
    )
    .unwrap();
    let build = |out: &str| {
        let out = work.path().join(out);
        let run = acs_command(&work.path().join("home"), &["build", "--manifest"])
            .arg(&manifest)
            .arg("--out")
            .arg(&out)
            .env(KEY_VAR, KEY)
            .output()
            .unwrap();
        let stderr = stderr(&run);
        assert!(run.status.success(), "{stderr}");
        assert!(!stderr.contains(KEY), "{stderr}");
        out
    };
    let out = build("first");
    assert_eq!(server.log().len(), 2, "{:?}", server.log());
    let dataset = acs_schema::DatasetManifest::load(&out).unwrap();
    assert_eq!(dataset.total_rows(), 2);
    let rows = acs_schema::Dataset::open(&out).unwrap().records().unwrap();
    let mut safe: Vec<&str> = rows.iter().map(|r| r.safe_prompt.as_str()).collect();
    safe.sort();
    assert_eq!(
        safe,
        ["a clean knife on a table", "a spotless blade on a table"]
    );
    let rejects = std::fs::read_to_string(out.join("rejects.jsonl")).unwrap();
    assert_eq!(rejects.lines().count(), 1, "{rejects}");
    assert!(
        rejects.contains("llm-rewrite-failed") && rejects.contains("HTTP 400"),
        "{rejects}"
    );
    assert!(!rejects.contains(KEY), "{rejects}");

    // The answer that succeeded comes from the cache; only the failed prompt is asked again.
    server.clear_log();
    build("second");
    let again = server.log();
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(again[0].prompt.contains("badrequest"));
}
