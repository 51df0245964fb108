//! The HTTP client: one request at a time on a current-thread tokio runtime, redirects followed
//! by hand so that the access token only ever goes to the hub's own origin (never to the
//! storage host an LFS file redirects to), and transport failures turned into one line that
//! names the host.

use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT_ENCODING, AUTHORIZATION, LOCATION, RANGE};
use reqwest::{Method, Response, Url};

use crate::runtime::error::RuntimeError;
use crate::runtime::hub::settings::{HubSettings, Token, MIN_BYTES_PER_WINDOW};

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 10;

/// Which redirects [`HubClient::send`] follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Only relative `Location`s (a renamed repository); an absolute one (LFS storage) is
    /// returned to the caller, whose headers describe the file. `huggingface_hub` does the same
    /// for its metadata requests.
    Relative,
    /// Every redirect.
    All,
}

/// A transport failure (no HTTP status): refused or dropped connection, timeout, TLS.
#[derive(Debug, Clone)]
pub struct TransportError {
    /// The connection could not be made at all (retrying will not help).
    pub connect: bool,
    /// One line naming the host and the cause.
    pub message: String,
}

impl TransportError {
    /// Classifies a reqwest error for a request to `url`.
    pub fn new(url: &Url, err: &reqwest::Error) -> Self {
        let host = origin_text(url);
        let cause = root_cause(err);
        if err.is_connect() {
            Self {
                connect: true,
                message: format!("cannot connect to {host}: {cause}"),
            }
        } else if err.is_timeout() {
            Self {
                connect: false,
                message: format!("{host} did not answer in time: {cause}"),
            }
        } else {
            Self {
                connect: false,
                message: format!("connection to {host} failed: {cause}"),
            }
        }
    }
}

impl From<TransportError> for RuntimeError {
    fn from(err: TransportError) -> Self {
        RuntimeError::input(err.message)
    }
}

/// `scheme://host:port` of a URL.
pub fn origin_text(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// The innermost cause of an error chain (e.g. "Connection refused (os error 111)").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    crate::runtime::error::one_line(&current.to_string())
}

/// The hub client. reqwest's futures (its timeouts) need the runtime's context even to be
/// created, so every request and body read is made inside `block_on`.
pub struct HubClient {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    endpoint: Url,
    token: Option<Token>,
    timeout: Duration,
}

/// A body's progress within the current timeout window (see [`HubClient::chunk`]).
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    since: std::time::Instant,
    bytes: u64,
}

impl Pace {
    /// A window starting now.
    pub fn start() -> Self {
        Self {
            since: std::time::Instant::now(),
            bytes: 0,
        }
    }
}

/// The single-threaded tokio runtime acs's blocking HTTP clients run their requests on.
pub(crate) fn http_runtime() -> Result<tokio::runtime::Runtime, RuntimeError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RuntimeError::internal(format!("HTTP runtime: {e}")))
}

impl HubClient {
    /// A client for the endpoint and token of `settings`.
    pub fn new(settings: &HubSettings) -> Result<Self, RuntimeError> {
        let runtime = http_runtime()?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.timeout.min(Duration::from_secs(15)))
            .read_timeout(settings.timeout)
            .user_agent(concat!("acs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RuntimeError::internal(format!("HTTP client: {}", root_cause(&e))))?;
        if let Some(token) = &settings.token {
            if HeaderValue::from_str(&format!("Bearer {}", token.secret())).is_err() {
                return Err(RuntimeError::input(
                    "HF_TOKEN: holds characters that cannot be sent in an HTTP header",
                ));
            }
        }
        Ok(Self {
            runtime,
            http,
            endpoint: settings.endpoint.clone(),
            token: settings.token.clone(),
            timeout: settings.timeout,
        })
    }

    /// The hub's base URL, without a trailing slash.
    pub fn endpoint_text(&self) -> String {
        self.endpoint.as_str().trim_end_matches('/').to_owned()
    }

    /// Whether requests to the hub carry a token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// `path` (already percent-encoded) under the endpoint.
    pub fn url(&self, path: &str) -> Result<Url, RuntimeError> {
        let text = format!("{}/{}", self.endpoint_text(), path.trim_start_matches('/'));
        Url::parse(&text).map_err(|e| RuntimeError::internal(format!("URL `{text}`: {e}")))
    }

    /// Sends `method url` (with `Range: bytes=N-` when `range_from` is above 0), following
    /// redirects as `follow` says. Returns the last response and the URL it answered.
    pub fn send(
        &self,
        method: Method,
        url: Url,
        range_from: u64,
        follow: Follow,
    ) -> Result<(Response, Url), TransportError> {
        let mut url = url;
        let mut method = method;
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(ACCEPT_ENCODING, "identity");
            if range_from > 0 {
                request = request.header(RANGE, format!("bytes={range_from}-"));
            }
            if let Some(token) = &self.token {
                if url.origin() == self.endpoint.origin() {
                    // Checked in `new`: the value is a valid header.
                    if let Ok(mut value) =
                        HeaderValue::from_str(&format!("Bearer {}", token.secret()))
                    {
                        value.set_sensitive(true);
                        request = request.header(AUTHORIZATION, value);
                    }
                }
            }
            let timeout = self.timeout;
            let response = self
                .runtime
                .block_on(async { tokio::time::timeout(timeout, request.send()).await })
                .map_err(|_| self.gave_up(&url, "no answer"))?
                .map_err(|e| self.transport(&url, &e, "no answer"))?;
            let Some(next) = redirect_target(&response, &url, follow) else {
                return Ok((response, url));
            };
            if response.status() == reqwest::StatusCode::SEE_OTHER {
                method = Method::GET;
            }
            url = next;
        }
        Err(TransportError {
            connect: false,
            message: format!("{}: more than {MAX_REDIRECTS} redirects", origin_text(&url)),
        })
    }

    /// The error of a request given up on after the timeout: one line naming the URL (without
    /// its query: signed storage URLs carry credentials there), what did not arrive in time and
    /// the setting.
    fn gave_up(&self, url: &Url, what: &str) -> TransportError {
        let mut shown = url.clone();
        shown.set_query(None);
        TransportError {
            connect: false,
            message: format!(
                "{shown}: {what} within {} s; gave up (HF_HUB_DOWNLOAD_TIMEOUT)",
                self.timeout.as_secs_f64()
            ),
        }
    }

    /// A reqwest error as a transport error; its own read timeout reads like
    /// [`Self::gave_up`].
    fn transport(&self, url: &Url, err: &reqwest::Error, what: &str) -> TransportError {
        if err.is_timeout() {
            self.gave_up(url, what)
        } else {
            TransportError::new(url, err)
        }
    }

    /// The next piece of a response body from `url`; `None` at its end. Every window of the
    /// timeout must bring [`MIN_BYTES_PER_WINDOW`] bytes (or the end), else the body is given
    /// up on: a server that sends a byte a second fails like one that sends nothing.
    pub fn chunk(
        &self,
        response: &mut Response,
        url: &Url,
        pace: &mut Pace,
    ) -> Result<Option<Vec<u8>>, TransportError> {
        let left = self.timeout.saturating_sub(pace.since.elapsed());
        let slow = |bytes: u64| format!("only {bytes} bytes, not 64 KiB of the body, arrived");
        let chunk = self
            .runtime
            .block_on(async { tokio::time::timeout(left, response.chunk()).await })
            .map_err(|_| self.gave_up(url, &slow(pace.bytes)))?
            .map_err(|e| self.transport(url, &e, &slow(pace.bytes)))?;
        let Some(bytes) = chunk else {
            return Ok(None);
        };
        pace.bytes += bytes.len() as u64;
        if pace.bytes >= MIN_BYTES_PER_WINDOW {
            *pace = Pace::start();
        } else if pace.since.elapsed() >= self.timeout {
            return Err(self.gave_up(url, &slow(pace.bytes)));
        }
        Ok(Some(bytes.to_vec()))
    }

    /// A whole (small) response body from `url`, within the timeout.
    pub fn body(&self, response: Response, url: &Url) -> Result<Vec<u8>, TransportError> {
        let timeout = self.timeout;
        self.runtime
            .block_on(async { tokio::time::timeout(timeout, response.bytes()).await })
            .map_err(|_| self.gave_up(url, "the answer did not arrive whole"))?
            .map(|b| b.to_vec())
            .map_err(|e| self.transport(url, &e, "the answer did not arrive whole"))
    }
}

/// Where a redirect response sends `follow` next, if it is to be followed.
fn redirect_target(response: &Response, url: &Url, follow: Follow) -> Option<Url> {
    if !response.status().is_redirection() {
        return None;
    }
    let location = response.headers().get(LOCATION)?.to_str().ok()?;
    // Like Python's `urlparse(location).netloc == ""`: no scheme and no `//host`.
    let relative = Url::parse(location).is_err() && !location.starts_with("//");
    if follow == Follow::Relative && !relative {
        return None;
    }
    url.join(location).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_urls() {
        let settings = HubSettings {
            endpoint: Url::parse("http://127.0.0.1:9/").unwrap(),
            token: Token::new("hf_x"),
            offline: false,
            cache: std::env::temp_dir(),
            timeout: Duration::from_secs(5),
        };
        let client = HubClient::new(&settings).unwrap();
        assert_eq!(client.endpoint_text(), "http://127.0.0.1:9");
        assert_eq!(
            client.url("/api/models/a/b").unwrap().as_str(),
            "http://127.0.0.1:9/api/models/a/b"
        );
        assert_eq!(
            origin_text(&Url::parse("https://cdn.example:8443/x/y?z").unwrap()),
            "https://cdn.example:8443"
        );
        let bad = HubSettings {
            token: Token::new("hf_\u{7}bell"),
            ..settings
        };
        let err = HubClient::new(&bad).err().unwrap().to_string();
        assert!(
            err.starts_with("HF_TOKEN:") && !err.contains("bell"),
            "{err}"
        );
    }

    #[test]
    fn refused_connections_name_the_host() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let settings = HubSettings {
            endpoint: Url::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
            token: None,
            offline: false,
            cache: std::env::temp_dir(),
            timeout: Duration::from_secs(5),
        };
        let client = HubClient::new(&settings).unwrap();
        let url = client.url("api/models/a/b").unwrap();
        let err = client.send(Method::GET, url, 0, Follow::All).err().unwrap();
        assert!(err.connect, "{}", err.message);
        assert!(
            err.message
                .starts_with(&format!("cannot connect to http://127.0.0.1:{port}: ")),
            "{}",
            err.message
        );
    }
}
