//! The object-store clients behind [`crate::RemoteDir`]: built once per bucket from the store's
//! environment variables, driven by a small tokio runtime, with a short retry policy; and the
//! one-line reasons of failed requests, with secrets removed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};

use crate::error::SchemaError;
use crate::remote::RemoteDir;

pub(crate) fn remote_error(url: &str, detail: impl Into<String>) -> SchemaError {
    SchemaError::Remote {
        url: url.to_owned(),
        detail: redact(&detail.into()),
    }
}

/// `url` without anything between `://` and `@` (credentials), and without a query.
pub(crate) fn safe_url_text(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = match rest.split_once('@') {
        Some((_, after)) => after,
        None => rest,
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    if scheme.is_empty() {
        rest.to_owned()
    } else {
        format!("{scheme}://{rest}")
    }
}

/// Runs `future` to completion on the store runtime.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("acs-store")
            .enable_all()
            .build()
            // Creating two threads and an epoll instance; failing here means the process
            // cannot run at all.
            .unwrap_or_else(|e| panic!("cannot start the object-store runtime: {e}"))
    });
    runtime.block_on(future)
}

/// The retry policy: a few quick retries (`ACS_STORE_RETRIES`, default 3) within 60 s, so that
/// an endpoint that does not answer fails in seconds, not minutes.
fn retry_config() -> RetryConfig {
    let max_retries = std::env::var("ACS_STORE_RETRIES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(3);
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries,
        retry_timeout: Duration::from_secs(60),
    }
}

/// The longest one request to the store may take, connection and body included
/// (`ACS_STORE_TIMEOUT` in seconds, default 30, object_store's own): an endpoint that accepts
/// and never answers, or answers a byte a second, fails the request after it (then the retries
/// of [`retry_config`]).
fn request_timeout_seconds() -> f64 {
    std::env::var("ACS_STORE_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(30.0)
}

/// [`request_timeout_seconds`] as object_store's configuration reads it.
fn request_timeout() -> String {
    format!("{}ms", (request_timeout_seconds() * 1000.0).ceil() as u64)
}

/// The store client of bucket `bucket_url`, built once per process from the environment.
pub(crate) fn client(
    scheme: &str,
    bucket: &str,
    bucket_url: &str,
) -> Result<Arc<dyn ObjectStore>, SchemaError> {
    static CLIENTS: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let clients = CLIENTS.get_or_init(Default::default);
    let mut clients = clients.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(store) = clients.get(bucket_url) {
        return Ok(Arc::clone(store));
    }
    let connect = ("connect_timeout", "5s");
    let timeout = request_timeout();
    let built: Result<Arc<dyn ObjectStore>, object_store::Error> = match scheme {
        "s3" => {
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry_config());
            let endpoint = b.get_config_value(&AmazonS3ConfigKey::Endpoint);
            if endpoint.is_some_and(|e| e.starts_with("http://")) {
                b = b.with_allow_http(true);
            }
            let key = AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout);
            if b.get_config_value(&key).is_none() {
                b = b.with_config(key, connect.1);
            }
            b = b.with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                timeout.as_str(),
            );
            b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        "gs" => GoogleCloudStorageBuilder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry_config())
            .with_config(
                GoogleConfigKey::Client(ClientConfigKey::Timeout),
                timeout.as_str(),
            )
            .with_config(
                GoogleConfigKey::Client(ClientConfigKey::ConnectTimeout),
                connect.1,
            )
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
        _ => {
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket)
                .with_retry(retry_config());
            let endpoint = b.get_config_value(&AzureConfigKey::Endpoint);
            if endpoint.is_some_and(|e| e.starts_with("http://")) {
                b = b.with_allow_http(true);
            }
            b = b
                .with_config(
                    AzureConfigKey::Client(ClientConfigKey::Timeout),
                    timeout.as_str(),
                )
                .with_config(
                    AzureConfigKey::Client(ClientConfigKey::ConnectTimeout),
                    connect.1,
                );
            b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
    };
    let store = built.map_err(|e| remote_error(bucket_url, reason(scheme, &e)))?;
    clients.insert(bucket_url.to_owned(), Arc::clone(&store));
    Ok(store)
}

/// polars' options for scanning objects of `dir`'s store: its own client reads the same
/// environment variables; a plain-HTTP endpoint (a local test server) must be allowed.
pub(crate) fn polars_cloud_options(dir: &RemoteDir) -> polars::prelude::cloud::CloudOptions {
    let options = polars::prelude::cloud::CloudOptions::default();
    let http = |name: &str| std::env::var(name).is_ok_and(|v| v.starts_with("http://"));
    if dir.url().starts_with("s3://")
        && ["AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ENDPOINT_URL_S3"]
            .iter()
            .any(|n| http(n))
    {
        return options.with_aws([(
            AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp),
            "true",
        )]);
    }
    if dir.url().starts_with("az://")
        && ["AZURE_STORAGE_ENDPOINT", "AZURE_ENDPOINT"]
            .iter()
            .any(|n| http(n))
    {
        return options.with_azure([(AzureConfigKey::Client(ClientConfigKey::AllowHttp), "true")]);
    }
    options
}

/// Where the `scheme` store's client takes its credentials from, as the environment decides
/// (the order object_store follows), for messages about refused requests.
pub(crate) fn credential_source(scheme: &str) -> String {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let first = |names: &[&'static str]| names.iter().copied().find(|n| set(n));
    match scheme {
        "s3" => {
            if set("AWS_SKIP_SIGNATURE") {
                "none: AWS_SKIP_SIGNATURE sends unsigned requests".to_owned()
            } else if set("AWS_ACCESS_KEY_ID") {
                "the keys in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY".to_owned()
            } else if set("AWS_WEB_IDENTITY_TOKEN_FILE") {
                "the web identity token in AWS_WEB_IDENTITY_TOKEN_FILE".to_owned()
            } else if let Some(name) = first(&[
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            ]) {
                format!("the container credentials endpoint of {name}")
            } else {
                "none in the environment (AWS_ACCESS_KEY_ID is unset), so the instance metadata \
                 service was asked: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run \
                 where an instance role applies"
                    .to_owned()
            }
        }
        "gs" => match first(&[
            "GOOGLE_SERVICE_ACCOUNT",
            "GOOGLE_SERVICE_ACCOUNT_PATH",
            "GOOGLE_SERVICE_ACCOUNT_KEY",
            "GOOGLE_APPLICATION_CREDENTIALS",
        ]) {
            Some(name) => format!("the service account of {name}"),
            None => "none in the environment (GOOGLE_SERVICE_ACCOUNT_PATH and \
                     GOOGLE_APPLICATION_CREDENTIALS are unset), so the default credentials \
                     and the metadata server were asked: set one of them"
                .to_owned(),
        },
        _ => match first(&[
            "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_ACCESS_KEY",
            "AZURE_STORAGE_SAS_KEY",
            "AZURE_STORAGE_TOKEN",
            "AZURE_CLIENT_SECRET",
            "AZURE_STORAGE_USE_EMULATOR",
        ]) {
            Some(name) => format!("those of {name}"),
            None => "none in the environment (AZURE_STORAGE_ACCOUNT_KEY, a SAS key and a \
                     client secret are unset), so a managed identity was asked: set \
                     AZURE_STORAGE_ACCOUNT_KEY"
                .to_owned(),
        },
    }
}

/// One line saying why a request to a `scheme` store failed, for a person: the store's error
/// code and message when it sent one, "cannot reach the endpoint" for connection failures,
/// where the credentials came from when they were refused; never a raw client error prefix.
pub(crate) fn reason(scheme: &str, error: &object_store::Error) -> String {
    let text = raw_reason(error);
    // The credential source is looked up only for a message that needs it.
    let credentials = || format!("credentials: {}", credential_source(scheme));
    let text = if text.contains("check the store's credentials") {
        text.replace("check the store's credentials", &credentials())
    } else {
        text
    };
    if text.contains("Account must be specified") {
        return "no storage account: set AZURE_STORAGE_ACCOUNT_NAME (and AZURE_STORAGE_ACCOUNT_KEY, \
                a SAS key or a client secret)"
            .to_owned();
    }
    let generic = [
        "Generic S3 error: ",
        "Generic GCS error: ",
        "Generic MicrosoftAzure error: ",
    ];
    let text = generic.iter().fold(text, |t, prefix| t.replace(prefix, ""));
    let lower = text.to_lowercase();
    if lower.contains("404 not found") || lower.contains("status: 404") {
        let endpoint = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AZURE_STORAGE_ENDPOINT"]
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
            .map_or(String::new(), |e| format!(" {}", redact(&e)));
        return format!(
            "the endpoint{endpoint} answered 404 Not Found: the bucket does not exist there, or \
             the endpoint is not the store's"
        );
    }
    if text.starts_with("cannot get credentials") {
        return format!("{text}; {}", credentials());
    }
    text
}

/// [`reason`] before it names the credential source.
fn raw_reason(error: &object_store::Error) -> String {
    if let object_store::Error::NotFound { .. } = error {
        return "not found".into();
    }
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !chain.contains(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        source = cause.source();
    }
    let chain = chain.split_whitespace().collect::<Vec<_>>().join(" ");
    let between = |open: &str, close: &str| {
        let start = chain.find(open)? + open.len();
        let end = chain[start..].find(close)? + start;
        Some(chain[start..end].to_owned())
    };
    let code = between("<Code>", "</Code>");
    let message = between("<Message>", "</Message>").unwrap_or_default();
    let text = match code.as_deref() {
        Some("NoSuchBucket") | Some("ContainerNotFound") => {
            "the bucket does not exist (NoSuchBucket)".to_owned()
        }
        Some(
            code @ ("InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "AccessDenied"
            | "AuthenticationFailed"
            | "AuthorizationFailure"
            | "InvalidToken"
            | "ExpiredToken"),
        ) => format!("access denied ({code}: {message}); check the store's credentials"),
        Some(code) => format!("{code}: {message}"),
        None => {
            let lower = chain.to_lowercase();
            let unreachable = [
                "connection refused",
                "tcp connect error",
                "dns error",
                "timed out",
                "operation timed out",
                "error sending request",
                "connection reset",
            ];
            // No connection at all (before anything could time out).
            let refused = [
                "connection refused",
                "tcp connect error",
                "dns error",
                "connection reset",
            ];
            // A request to a credential source (instance metadata, a token endpoint).
            let credential_markers = ["credential", "metadata", "/api/token", "oauth2"];
            if credential_markers.iter().any(|m| lower.contains(m)) {
                // Getting the credentials failed (e.g. no instance metadata service): not the
                // store's endpoint; `reason` names where they were looked for.
                let hint = unreachable.iter().find(|h| lower.contains(*h));
                format!(
                    "cannot get credentials{}",
                    hint.map_or(String::new(), |h| format!(" ({h})"))
                )
            } else if let Some(hint) = refused.iter().find(|h| lower.contains(*h)) {
                format!("cannot reach the endpoint ({hint})")
            } else if lower.contains("timed out") {
                format!(
                    "the endpoint did not answer within {} s (ACS_STORE_TIMEOUT; a request is \
                     retried {}, ACS_STORE_RETRIES)",
                    request_timeout_seconds(),
                    match retry_config().max_retries {
                        0 => "never".to_owned(),
                        1 => "once".to_owned(),
                        n => format!("up to {n} times"),
                    }
                )
            } else if let Some(hint) = unreachable.iter().find(|h| lower.contains(*h)) {
                format!("cannot reach the endpoint ({hint})")
            } else if lower.contains("403") || lower.contains("forbidden") {
                "access denied (HTTP 403); check the store's credentials".to_owned()
            } else if lower.contains("401") || lower.contains("unauthorized") {
                "not authorised (HTTP 401); check the store's credentials".to_owned()
            } else {
                chain.clone()
            }
        }
    };
    let mut text = redact(&text);
    if text.chars().count() > 300 {
        text = text.chars().take(300).collect::<String>() + "...";
    }
    text
}

/// `text` with the values of the stores' secret environment variables and URL signatures
/// replaced by `***`.
pub(crate) fn redact(text: &str) -> String {
    let mut out = text.to_owned();
    for (name, value) in std::env::vars() {
        let upper = name.to_ascii_uppercase();
        let store_var = ["AWS_", "GOOGLE_", "AZURE_", "ACS_"]
            .iter()
            .any(|p| upper.starts_with(p));
        let secret = ["SECRET", "TOKEN", "KEY", "PASSWORD", "SAS", "CREDENTIAL"]
            .iter()
            .any(|w| upper.contains(w));
        if store_var && secret && value.len() >= 4 {
            out = out.replace(&value, "***");
        }
    }
    for marker in [
        "Signature=",
        "signature=",
        "sig=",
        "X-Amz-Credential=",
        "X-Amz-Security-Token=",
        "Credential=",
    ] {
        let mut from = 0;
        while let Some(at) = out[from..].find(marker) {
            let start = from + at + marker.len();
            let end = out[start..]
                .find(|c: char| c == '&' || c == ',' || c == '"' || c.is_whitespace())
                .map_or(out.len(), |e| start + e);
            out.replace_range(start..end, "***");
            from = start + 3;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_signatures_are_redacted() {
        let text = redact("GET /b?X-Amz-Signature=abcdef&x=1 sig=zzz, other");
        assert_eq!(text, "GET /b?X-Amz-Signature=***&x=1 sig=***, other");
    }
}
