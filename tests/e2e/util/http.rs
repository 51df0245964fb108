//! A small HTTP/1.1 server on 127.0.0.1 for the hub (`fetch`) and LLM (`llm`) tests: std::net,
//! one thread per connection, `Connection: close`. Each request is read whole (request line,
//! headers, a `Content-Length` body), logged, and handed to the test's handler, whose
//! [`Response`] is written back; a response can be delayed or cut short. The server counts the
//! requests it holds at once, and a handler can wait for that count. It stops when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Order of arrival across every server of the process (logs of two servers merge by it).
    pub seq: u64,
    pub method: String,
    /// The request target as sent: path and query.
    pub path: String,
    /// Header names and values as sent (values trimmed), in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The value of header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An answer to write.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Headers besides `Content-Length` and `Connection: close`, which are always sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Held this long before it is written (the request still counts as in flight).
    pub delay: Option<Duration>,
    /// Sends only the first half of the body (with the whole body's `Content-Length`), then
    /// closes the connection.
    pub cut: bool,
    /// Sends this many bytes of the body at once, then the rest a byte per second (a server
    /// that trickles).
    pub trickle: Option<usize>,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: None,
            cut: false,
            trickle: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Holds the answer for `delay` first.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Sends the first `head` bytes, then a byte a second.
    pub fn trickled(mut self, head: usize) -> Self {
        self.trickle = Some(head);
        self
    }

    /// Sends half the body, then closes (when `cut` and the body has more than one byte).
    pub fn cut_short(mut self, cut: bool) -> Self {
        self.cut = cut && self.body.len() > 1;
        self
    }
}

#[derive(Default)]
struct State {
    log: Vec<Request>,
    in_flight: usize,
    max_in_flight: usize,
}

/// What a server saw: its log and the requests it holds. Handlers get it too.
#[derive(Default)]
pub struct Traffic {
    state: Mutex<State>,
    changed: Condvar,
}

impl Traffic {
    /// Every request so far (since the last [`Traffic::clear`]), in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().log.clone()
    }

    /// Forgets the logged requests.
    pub fn clear(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// Requests being handled now (read, answer not yet written).
    pub fn in_flight(&self) -> usize {
        self.state.lock().unwrap().in_flight
    }

    /// The most requests ever in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }

    /// Blocks until at least `count` requests are in flight, or for at most `timeout`.
    pub fn wait_for_in_flight(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap();
        while state.in_flight < count && Instant::now() < deadline {
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(20))
                .unwrap()
                .0;
        }
    }

    fn arrived(&self, request: Request) {
        let mut state = self.state.lock().unwrap();
        state.log.push(request);
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        drop(state);
        self.changed.notify_all();
    }

    fn answered(&self) {
        self.state.lock().unwrap().in_flight -= 1;
        self.changed.notify_all();
    }
}

type Handler = dyn Fn(&Request, &Traffic) -> Response + Send + Sync;

/// A server on 127.0.0.1 (a free port), stopped when dropped.
pub struct Server {
    addr: SocketAddr,
    traffic: Arc<Traffic>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts a server that answers every request with `handler(request, traffic)`.
    pub fn start(handler: impl Fn(&Request, &Traffic) -> Response + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let traffic = Arc::new(Traffic::default());
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let thread = {
            let traffic = traffic.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let traffic = traffic.clone();
                    let handler = handler.clone();
                    std::thread::spawn(move || {
                        let _ = serve(stream, &traffic, &*handler);
                    });
                }
            })
        };
        Self {
            addr,
            traffic,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        self.traffic.requests()
    }

    /// Forgets the logged requests.
    pub fn clear(&self) {
        self.traffic.clear();
    }

    /// The most requests ever in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.traffic.max_in_flight()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `http://127.0.0.1:PORT` where nothing listens: a port that was just free.
pub fn unused_url() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

/// Reads one request from `stream`, answers it with `handler` and closes the connection.
fn serve(stream: TcpStream, traffic: &Traffic, handler: &Handler) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0usize);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let request = Request {
        seq: SEQ.fetch_add(1, Ordering::SeqCst),
        method,
        path,
        headers,
        body,
    };
    traffic.arrived(request.clone());
    let response = handler(&request, traffic);
    if let Some(delay) = response.delay {
        std::thread::sleep(delay);
    }
    // Before the answer is written: the client cannot start its next request before this.
    traffic.answered();
    write_response(&stream, &response, request.method == "HEAD")
}

fn write_response(mut stream: &TcpStream, response: &Response, head: bool) -> std::io::Result<()> {
    let reason = match response.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut text = format!("HTTP/1.1 {} {reason}\r\n", response.status);
    for (name, value) in &response.headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        response.body.len()
    ));
    stream.write_all(text.as_bytes())?;
    if !head {
        let end = if response.cut {
            response.body.len() / 2
        } else {
            response.body.len()
        };
        match response.trickle {
            Some(head) => {
                let head = head.min(end);
                stream.write_all(&response.body[..head])?;
                for byte in &response.body[head..end] {
                    stream.flush()?;
                    std::thread::sleep(Duration::from_secs(1));
                    // The client gave up: the write fails, the thread ends.
                    stream.write_all(std::slice::from_ref(byte))?;
                }
            }
            None => stream.write_all(&response.body[..end])?,
        }
    }
    stream.flush()?;
    stream.shutdown(Shutdown::Both)
}
