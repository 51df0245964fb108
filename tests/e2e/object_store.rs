//! Object-store arguments that are refused before any request (the tests against a real S3
//! server are tests/python/test_object_storage.py, run by scripts/test.sh with moto): one line,
//! exit 2, never a credential, nothing written.

use crate::util::{acs_command, assert_exit_2, run, s, scratch, smoke_manifest};

const SECRET: &str = "e2e-secret-Qx71";

/// `acs ARGS` with S3 settings whose endpoint does not answer (port 1 of the loopback).
fn acs_s3(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut command = acs_command(home, args);
    command
        .env("AWS_ACCESS_KEY_ID", "e2e-key")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
        .env("ACS_STORE_RETRIES", "0");
    run(command)
}

#[test]
fn refused_urls_and_flags_name_the_url_and_never_a_secret() {
    let home = scratch().join("object_store");
    std::fs::create_dir_all(&home).unwrap();
    let manifest = s(smoke_manifest());
    let out = acs_s3(
        &home,
        &[
            "build",
            "--manifest",
            &manifest,
            "--out",
            &format!("s3://key:{SECRET}@bucket/p"),
        ],
    );
    let err = assert_exit_2(&out, &["s3://bucket/p", "credentials"]);
    assert!(!err.contains(SECRET), "{err}");

    let out = acs_s3(&home, &["validate", "s3://bucket/a/../b"]);
    assert_exit_2(&out, &["s3://bucket/a/../b", ".."]);

    let local = home.join("local-out");
    let out = acs_s3(
        &home,
        &[
            "build",
            "--manifest",
            &manifest,
            "--out",
            &s(&local),
            "--journal",
            &s(&home),
        ],
    );
    assert_exit_2(&out, &["--journal", "object-store"]);
    assert!(!local.exists());

    // A store that does not answer: every command says so in one line, and writes nothing.
    let journal = home.join("journal");
    for args in [
        vec![
            "build",
            "--manifest",
            &manifest,
            "--out",
            "s3://bucket/ds",
            "--journal",
            &s(&journal),
        ],
        vec!["validate", "s3://bucket/ds"],
        vec!["stats", "s3://bucket/ds"],
        vec!["merge", "s3://bucket/w0", "--out", "s3://bucket/all"],
    ] {
        let out = acs_s3(&home, &args);
        let err = assert_exit_2(&out, &["s3://bucket/", "cannot reach the endpoint"]);
        assert!(!err.contains(SECRET) && !err.contains("e2e-key"), "{err}");
    }
    assert!(!journal.exists());
}
