//! The event socket, its server-sent twin, viewer sessions and webhooks
//! against a real server with real ffmpeg pushes: the order of a session's
//! events, resume and resync, a client that never reads, 200 subscribers
//! at once, signed and retried webhook deliveries, and the `on_publish`
//! hook refusing a publish.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::stream::MaybeTlsStream;
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

const WEBHOOK_SECRET: &str = "webhook-secret-0123456789";
/// Seconds without a request before a player has left, in these tests.
const VIEWER_TIMEOUT_SECS: u64 = 2;

fn events_server(viewer_timeout_secs: u64, extra: &str) -> (Server, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("a data directory");
    let extra = format!("[playback]\nviewer_timeout_secs = {viewer_timeout_secs}\n{extra}");
    let server = Server::start_in_data_dir(&ServerConfig::passthrough_only(), data.path(), &extra);
    (server, data)
}

// ---------------------------------------------------------------------------
// A blocking WebSocket client

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

struct EventClient {
    socket: Socket,
    /// Every event received, in order (not hello, acks or pongs).
    events: Vec<Value>,
    /// Other messages (acks, pongs, errors), in order.
    replies: Vec<Value>,
}

/// What a read gave.
#[derive(Debug)]
enum Received {
    Message(Value),
    Closed(Option<u16>),
    Nothing,
}

impl EventClient {
    /// Connects to `/api/v1/events?{query}` with the token as a header and
    /// reads the `hello`.
    fn connect(server: &Server, query: &str, token: &str) -> Self {
        let url = format!("ws://{}/api/v1/events?{query}", server.http_addr);
        let mut request = url.into_client_request().expect("a WebSocket request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("a header value"),
        );
        let (socket, response) = tungstenite::connect(request).expect("the event socket opens");
        assert_eq!(response.status(), 101);
        Self::opened(socket)
    }

    fn opened(socket: Socket) -> Self {
        let mut client = Self {
            socket,
            events: Vec::new(),
            replies: Vec::new(),
        };
        match client.read(Duration::from_secs(10)) {
            Received::Message(hello) => assert_eq!(hello["type"], "hello", "{hello}"),
            other => panic!("no hello: {other:?}"),
        }
        client
    }

    fn set_timeout(&mut self, timeout: Duration) {
        if let MaybeTlsStream::Plain(tcp) = self.socket.get_mut() {
            tcp.set_read_timeout(Some(timeout)).expect("a read timeout");
        }
    }

    /// Reads one message (answering pings on the way).
    fn read(&mut self, timeout: Duration) -> Received {
        self.set_timeout(timeout);
        loop {
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON messages");
                    return Received::Message(value);
                }
                Ok(Message::Close(frame)) => {
                    return Received::Closed(frame.map(|f| u16::from(f.code)));
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Received::Nothing;
                }
                Err(_) => return Received::Closed(None),
            }
        }
    }

    /// Reads until an event satisfies `done` (returning it) or `timeout`.
    fn until(&mut self, timeout: Duration, done: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.read(left.max(Duration::from_millis(1))) {
                Received::Message(m) if m["id"].is_u64() => {
                    self.events.push(m.clone());
                    if done(&m) {
                        return Some(m);
                    }
                }
                Received::Message(m) => self.replies.push(m),
                Received::Closed(code) => panic!("the event socket closed ({code:?})"),
                Received::Nothing => {}
            }
        }
        None
    }

    fn send(&mut self, message: Value) {
        self.socket
            .send(Message::text(message.to_string()))
            .expect("send a message");
    }
}

fn of_type<'a>(kind: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |e| e["type"] == kind
}

fn id(event: &Value) -> u64 {
    event["id"].as_u64().expect("an id")
}

// ---------------------------------------------------------------------------
// A blocking SSE reader

/// Reads `/api/v1/events/sse` on a thread; each event arrives on the
/// channel.
fn sse_events(url: String, last_event_id: Option<u64>) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(None)
            .no_proxy()
            .build()
            .expect("an HTTP client");
        let mut request = client.get(&url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let Ok(response) = request.send() else {
            return;
        };
        assert_eq!(response.status().as_u16(), 200, "{url}");
        assert_eq!(
            response.headers()["content-type"].to_str().ok(),
            Some("text/event-stream")
        );
        let mut id = None;
        for line in BufReader::new(response).lines() {
            let Ok(line) = line else { return };
            if let Some(value) = line.strip_prefix("id: ") {
                id = value.parse::<u64>().ok();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let event: Value = serde_json::from_str(data).expect("JSON data");
                assert_eq!(event["id"].as_u64(), id, "id: line and JSON agree");
                if tx.send(event).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

fn sse_until(rx: &mpsc::Receiver<Value>, until_id: u64, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    let mut events = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(event) => {
                let done = id(&event) >= until_id;
                events.push(event);
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    events
}

fn summary(events: &[Value]) -> Vec<(u64, String)> {
    events
        .iter()
        .map(|e| (id(e), e["type"].as_str().unwrap_or("").to_string()))
        .collect()
}

// ---------------------------------------------------------------------------

#[test]
fn a_session_gives_started_joined_left_ended_over_websocket_and_sse() {
    let (server, _data) = events_server(VIEWER_TIMEOUT_SECS, "");
    let token = server.token("viewer", "events");

    // Refusals first: no token, and no upgrade.
    let url = format!("ws://{}/api/v1/events", server.http_addr);
    match tungstenite::connect(url.as_str()) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("a socket without a token: {:?}", other.map(|(_, r)| r)),
    }
    let plain = api_call("GET", &server.api_url("/events"), Some(&token), None);
    assert_eq!(plain.api_error(426), "UPGRADE_REQUIRED");

    let mut ws = EventClient::connect(&server, "", &token);
    let mut other_stream = EventClient::connect(&server, "streams=cam2", &token);
    let sse_url = server.api_url(&format!("/events/sse?streams=cam1&access_token={token}"));
    let sse = sse_events(sse_url, None);

    let mut push = publish_ffmpeg(&server.rtmp_url("secretkey1"), 16.0, 320, 240);
    let started = ws
        .until(Duration::from_secs(20), of_type("stream:started"))
        .expect("stream:started");
    assert_eq!(started["streamId"], "cam1");
    assert_eq!(
        started["data"]["renditions"],
        serde_json::json!(["source", "audio"])
    );

    // The cam2 client follows cam1 from now on.
    other_stream.send(serde_json::json!({"type": "subscribe", "streams": ["cam1"]}));

    // Watch for a few seconds through a signed URL, then stop.
    let master = server.sign("cam1", &[]);
    wait_for_master(&master, Duration::from_secs(15));
    let media = resolve(&master, "source/index.m3u8");
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        get_ok(&media);
        thread::sleep(Duration::from_millis(400));
    }
    let watching = api_call("GET", &server.api_url("/streams/cam1"), Some(&token), None).data(200);
    assert_eq!(watching["currentViewers"], 1, "{watching}");
    assert_eq!(
        watching["viewers"]["byRendition"]["source"], 1,
        "{watching}"
    );
    let metrics = get_ok(&server.http_url("/metrics")).text();
    assert!(
        metrics
            .lines()
            .any(|l| l == "bigfoot_stream_viewers{stream=\"cam1\"} 1"),
        "{metrics}"
    );

    let joined = ws
        .until(Duration::from_secs(5), of_type("viewer:joined"))
        .expect("viewer:joined");
    assert_eq!(joined["data"]["viewers"], 1);
    let left = ws
        .until(Duration::from_secs(10), of_type("viewer:left"))
        .expect("viewer:left once the player went quiet");
    assert!(left["data"]["watchedSecs"].as_u64() >= Some(2), "{left}");
    push.wait_success(Duration::from_secs(30));
    let ended = ws
        .until(Duration::from_secs(15), of_type("stream:ended"))
        .expect("stream:ended after the push ended");
    assert_eq!(ended["data"]["peakViewers"], 1, "{ended}");

    let order: Vec<&str> = ws
        .events
        .iter()
        .filter_map(|e| e["type"].as_str())
        .filter(|t| {
            !matches!(
                *t,
                "stream:health" | "stream:qualityChanged" | "thumbnail:updated"
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            "stream:started",
            "viewer:joined",
            "viewer:left",
            "stream:ended"
        ]
    );
    let ids: Vec<u64> = ws.events.iter().map(id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

    // The client that changed its subscription saw cam1's viewer events.
    let changed = other_stream
        .until(Duration::from_secs(5), of_type("stream:ended"))
        .expect("cam1's events after subscribing");
    assert_eq!(changed["streamId"], "cam1");
    assert!(other_stream.events.iter().any(of_type("viewer:joined")));
    assert_eq!(other_stream.replies[0]["type"], "ack");
    assert_eq!(
        other_stream.replies[0]["streams"],
        serde_json::json!(["cam1", "cam2"])
    );

    // SSE delivered the very same sequence.
    let over_sse = sse_until(&sse, id(&ended), Duration::from_secs(10));
    assert_eq!(summary(&over_sse), summary(&ws.events));

    // Resume from stream:started: exactly what came after it, over both.
    let mut resumed = EventClient::connect(&server, &format!("since={}", id(&started)), &token);
    resumed.until(Duration::from_secs(5), |e| id(e) == id(&ended));
    assert_eq!(summary(&resumed.events), summary(&ws.events[1..]));
    let sse_resumed = sse_events(
        server.api_url(&format!("/events/sse?access_token={token}")),
        Some(id(&started)),
    );
    let over_sse = sse_until(&sse_resumed, id(&ended), Duration::from_secs(10));
    assert_eq!(summary(&over_sse), summary(&ws.events[1..]));

    // Totals of the stream session stay for the API.
    let after = api_call("GET", &server.api_url("/streams/cam1"), Some(&token), None).data(200);
    assert_eq!(after["viewers"]["peak"], 1, "{after}");
    assert_eq!(after["viewers"]["current"], 0, "{after}");
    assert!(
        after["viewers"]["viewerSeconds"].as_u64() >= Some(2),
        "{after}"
    );
}

/// GETs `path` over one kept-alive connection with a chosen user agent.
struct Player {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Player {
    fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Self { stream, reader }
    }

    fn get(&mut self, path: &str, user_agent: &str) -> u16 {
        write!(
            self.stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: {user_agent}\r\n\r\n"
        )
        .expect("send a request");
        let mut status = String::new();
        self.reader.read_line(&mut status).expect("a status line");
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("a header");
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().expect("a length");
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).expect("the body");
        status
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

#[test]
fn a_client_that_never_reads_is_cut_off_while_another_keeps_receiving() {
    // Players stay for the whole test: only the joins flow.
    let (server, _data) =
        events_server(120, "[events]\nreplay_buffer = 256\nclient_queue = 1024\n");
    let token = server.token("viewer", "events");
    let mut push = publish_ffmpeg(&server.rtmp_url("secretkey1"), 40.0, 320, 240);
    let mut watcher = EventClient::connect(&server, "", &token);
    watcher
        .until(Duration::from_secs(20), of_type("stream:started"))
        .expect("stream:started");
    drop(watcher);
    wait_for_master(&server.master_url("cam1"), Duration::from_secs(15));

    // The slow client has a small receive buffer and reads nothing.
    let slow = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let tcp = runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
            socket.set_recv_buffer_size(4096).expect("a small buffer");
            socket.connect(server.http_addr).await.expect("connect")
        });
        let tcp = tcp.into_std().expect("a std socket");
        tcp.set_nonblocking(false).expect("blocking");
        let mut request = format!("ws://{}/api/v1/events", server.http_addr)
            .into_client_request()
            .expect("a request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("a header value"),
        );
        let (socket, _) = tungstenite::client(request, MaybeTlsStream::Plain(tcp))
            .expect("the slow client's socket opens");
        socket
    };

    // The healthy client reads on its own thread.
    let joins = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = mpsc::channel();
    let healthy = {
        let joins = joins.clone();
        let mut client = EventClient::connect(&server, "", &token);
        thread::spawn(move || {
            client.until(Duration::from_secs(60), |e| {
                if e["type"] == "viewer:joined" {
                    joins.fetch_add(1, Ordering::Relaxed);
                }
                done_rx.try_recv().is_ok()
            });
            client.events
        })
    };

    // New players join until the server has cut the slow client: its
    // socket buffers hold a few thousand events before the bus moves on.
    const ROUND: usize = 1000;
    let flood_started = Instant::now();
    let mut player = Player::connect(server.http_addr);
    let mut players = 0;
    let cut = "bigfoot_event_disconnects_total{reason=\"slow_consumer\"} 1";
    while players < 40 * ROUND {
        for _ in 0..ROUND {
            let status = player.get("/live/cam1/master.m3u8", &format!("player-{players}"));
            assert_eq!(status, 200);
            players += 1;
        }
        let metrics = get_ok(&server.http_url("/metrics")).text();
        if metrics.lines().any(|l| l == cut) {
            break;
        }
    }
    eprintln!(
        "{players} viewer joins in {:?} until the slow client was cut",
        flood_started.elapsed()
    );

    // The slow client got some events, then the slow-consumer close.
    let mut slow = EventClient {
        socket: slow,
        events: Vec::new(),
        replies: Vec::new(),
    };
    let mut received = 0;
    let mut slow_last = 0;
    let code = loop {
        match slow.read(Duration::from_secs(15)) {
            Received::Message(m) => {
                received += 1;
                slow_last = m["id"].as_u64().unwrap_or(slow_last);
            }
            Received::Closed(code) => break code,
            Received::Nothing => panic!("the slow client was not closed"),
        }
    };
    assert_eq!(code, Some(4008), "after {received} messages");
    eprintln!("the slow client got {received} messages before close 4008");

    // The healthy one saw every join, in order, with no gap.
    let deadline = Instant::now() + Duration::from_secs(20);
    while joins.load(Ordering::Relaxed) < players && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let _ = done_tx.send(());
    let events = healthy.join().expect("the healthy reader");
    let ids: Vec<u64> = events.iter().map(id).collect();
    let joined = events
        .iter()
        .filter(|e| e["type"] == "viewer:joined")
        .count();
    assert_eq!(joined, players);
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "no gap in ids");
    assert!(
        slow_last < *ids.last().unwrap_or(&0),
        "the slow client missed what came after its cut"
    );

    // A position older than the replay buffer gets a resync.
    let mut late = EventClient::connect(&server, "since=1", &token);
    let resync = late
        .until(Duration::from_secs(5), |_| true)
        .expect("a first event");
    assert_eq!(resync["type"], "resync", "{resync}");
    assert!(id(&resync) >= *ids.last().unwrap_or(&0));
    push.kill();
}

#[test]
fn two_hundred_subscribers_get_an_event_within_a_second() {
    const SUBSCRIBERS: usize = 200;
    let (server, _data) = events_server(VIEWER_TIMEOUT_SECS, "");
    let token = server.token("viewer", "events");
    let mut push = publish_ffmpeg(&server.rtmp_url("secretkey1"), 30.0, 320, 240);
    let mut first = EventClient::connect(&server, "streams=cam1", &token);
    first
        .until(Duration::from_secs(20), of_type("stream:started"))
        .expect("stream:started");
    wait_for_master(&server.master_url("cam1"), Duration::from_secs(15));

    let (ready_tx, ready_rx) = mpsc::channel();
    let delays = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut client = EventClient::connect(&server, "streams=cam1", &token);
        let ready = ready_tx.clone();
        let delays = delays.clone();
        readers.push(thread::spawn(move || {
            let _ = ready.send(());
            let joined = client.until(Duration::from_secs(20), of_type("viewer:joined"));
            let received = SystemTime::now();
            if let Some(joined) = joined {
                let sent = utc_millis(joined["timestamp"].as_str().unwrap_or(""))
                    .expect("an RFC 3339 timestamp");
                let received = received
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                delays.lock().expect("delays").push(received - sent);
            }
        }));
    }
    for _ in 0..SUBSCRIBERS {
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("every reader starts");
    }

    // A player never seen before joins: one viewer:joined for everyone.
    let mut player = Player::connect(server.http_addr);
    assert_eq!(player.get("/live/cam1/master.m3u8", "delay-probe"), 200);
    for reader in readers {
        reader.join().expect("a reader");
    }
    let mut delays = delays.lock().expect("delays").clone();
    assert_eq!(delays.len(), SUBSCRIBERS, "every subscriber got the event");
    delays.sort_unstable();
    let (median, p95, max) = (
        delays[SUBSCRIBERS / 2],
        delays[SUBSCRIBERS * 95 / 100],
        delays[SUBSCRIBERS - 1],
    );
    eprintln!(
        "{SUBSCRIBERS} subscribers: delivery delay median {median} ms, p95 {p95} ms, max {max} ms"
    );
    assert!(max < 2000, "an event took {max} ms to reach a subscriber");
    push.kill();
}

// ---------------------------------------------------------------------------
// A webhook receiver

#[derive(Debug, Clone)]
struct Delivery {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    received: Instant,
}

/// An HTTP server on 127.0.0.1 that records every request and answers
/// with `answer(path, count of earlier requests to that path)`: a status,
/// or `None` to never answer.
fn webhook_receiver(
    answer: impl Fn(&str, usize) -> Option<u16> + Send + Sync + 'static,
) -> (SocketAddr, Arc<Mutex<Vec<Delivery>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
    let addr = listener.local_addr().expect("its address");
    let seen = Arc::new(Mutex::new(Vec::<Delivery>::new()));
    let answer = Arc::new(answer);
    let recorded = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = recorded.clone();
            let answer = answer.clone();
            thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut stream = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let mut headers = HashMap::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line.trim().is_empty() {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            headers.insert(name.trim().to_lowercase(), value.trim().to_string());
                        }
                    }
                    let length = headers
                        .get("content-length")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let earlier = {
                        let mut seen = seen.lock().expect("deliveries");
                        let earlier = seen.iter().filter(|d| d.path == path).count();
                        seen.push(Delivery {
                            path: path.clone(),
                            headers,
                            body,
                            received: Instant::now(),
                        });
                        earlier
                    };
                    let Some(status) = answer(&path, earlier) else {
                        thread::sleep(Duration::from_secs(30));
                        return;
                    };
                    let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                    if stream.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn verify_signature(delivery: &Delivery, secret: &str) {
    let timestamp = &delivery.headers["x-bigfoot-timestamp"];
    let signature = &delivery.headers["x-bigfoot-signature"];
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("an HMAC key");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&delivery.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(signature, &expected, "signature of {}", delivery.path);
    let now = unix_secs();
    let at: i64 = timestamp.parse().expect("a Unix time");
    assert!((now - at).abs() < 60, "timestamp {at} vs now {now}");
}

#[test]
fn webhooks_are_signed_and_retried_and_on_publish_allows() {
    // The first event delivery fails with 500; everything after succeeds.
    let (addr, seen) = webhook_receiver(|path, earlier| match path {
        "/hooks" if earlier == 0 => Some(500),
        _ => Some(204),
    });
    let data = tempfile::tempdir().expect("a data directory");
    let ingest = format!(
        "on_publish_url = \"http://{addr}/on_publish\"\non_publish_secret = \"{WEBHOOK_SECRET}\""
    );
    let extra = format!(
        "[[webhooks]]\nurl = \"http://{addr}/hooks\"\n\
         events = [\"stream:started\", \"stream:ended\"]\nsecret = \"{WEBHOOK_SECRET}\"\n"
    );
    let server = Server::start_with_ingest_toml(
        &ServerConfig::passthrough_only(),
        data.path(),
        &ingest,
        &extra,
    );
    let mut push = publish_ffmpeg(&server.rtmp_url("secretkey1"), 5.0, 320, 240);
    push.wait_success(Duration::from_secs(30));

    let deadline = Instant::now() + Duration::from_secs(20);
    let deliveries = loop {
        let deliveries = seen.lock().expect("deliveries").clone();
        let hooks = deliveries.iter().filter(|d| d.path == "/hooks").count();
        // started (failed), started again, ended.
        if hooks >= 3 || Instant::now() > deadline {
            break deliveries;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let publish: Vec<&Delivery> = deliveries
        .iter()
        .filter(|d| d.path == "/on_publish")
        .collect();
    assert_eq!(publish.len(), 1, "{deliveries:?}");
    verify_signature(publish[0], WEBHOOK_SECRET);
    let asked: Value = serde_json::from_slice(&publish[0].body).expect("JSON");
    assert_eq!(asked["stream"], "cam1");
    assert_eq!(asked["app"], "live");
    assert_eq!(asked["clientIp"], "127.0.0.1");
    assert!(!String::from_utf8_lossy(&publish[0].body).contains("secretkey1"));

    let hooks: Vec<&Delivery> = deliveries.iter().filter(|d| d.path == "/hooks").collect();
    let kinds: Vec<String> = hooks
        .iter()
        .map(|d| {
            verify_signature(d, WEBHOOK_SECRET);
            let event: Value = serde_json::from_slice(&d.body).expect("JSON");
            assert_eq!(
                d.headers["x-bigfoot-event"],
                event["type"].as_str().unwrap_or("")
            );
            format!("{}#{}", event["type"].as_str().unwrap_or(""), event["id"])
        })
        .collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert_eq!(
        kinds[0], kinds[1],
        "the failed delivery is retried: {kinds:?}"
    );
    assert!(kinds[0].starts_with("stream:started#"), "{kinds:?}");
    assert!(kinds[2].starts_with("stream:ended#"), "{kinds:?}");
    let backoff = hooks[1].received - hooks[0].received;
    assert!(
        backoff >= Duration::from_millis(400),
        "retried after {backoff:?}"
    );

    let metrics = get_ok(&server.http_url("/metrics")).text();
    for line in [
        "bigfoot_webhook_deliveries_total{result=\"retry\"} 1",
        "bigfoot_webhook_deliveries_total{result=\"ok\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
}

/// Starts a server whose `on_publish` hook is `addr`, pushes to cam1 and
/// checks the push fails and the stream never goes live.
fn assert_publish_refused(addr: SocketAddr, timeout_ms: u64) {
    let data = tempfile::tempdir().expect("a data directory");
    let ingest = format!(
        "on_publish_url = \"http://{addr}/on_publish\"\non_publish_timeout_ms = {timeout_ms}"
    );
    let server =
        Server::start_with_ingest_toml(&ServerConfig::passthrough_only(), data.path(), &ingest, "");
    let token = server.token("viewer", "events");
    let mut ws = EventClient::connect(&server, "", &token);
    let mut push = publish_ffmpeg(&server.rtmp_url("secretkey1"), 5.0, 320, 240);
    let status = push
        .wait_timeout(Duration::from_secs(20))
        .expect("ffmpeg gives up");
    assert!(
        !status.success(),
        "the push went through:\n{}",
        push.output()
    );
    assert!(
        ws.until(Duration::from_secs(1), |_| true).is_none(),
        "events for a refused publish: {:?}",
        ws.events
    );
    let cam1 = api_call("GET", &server.api_url("/streams/cam1"), Some(&token), None).data(200);
    assert_eq!(cam1["live"], false);
    assert!(
        server.logs().contains("refused by the on_publish hook")
            || server
                .logs()
                .contains("the on_publish hook refused a publish"),
        "{}",
        server.logs()
    );
}

#[test]
fn on_publish_refusing_or_not_answering_fails_the_push() {
    let (refusing, _) = webhook_receiver(|_, _| Some(403));
    assert_publish_refused(refusing, 2000);
    let (silent, asked) = webhook_receiver(|_, _| None);
    let started = Instant::now();
    assert_publish_refused(silent, 500);
    assert!(!asked.lock().expect("requests").is_empty());
    assert!(started.elapsed() < Duration::from_secs(30));
}
