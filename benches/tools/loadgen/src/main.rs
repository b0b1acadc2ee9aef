//! Load for `scripts/bench`, bounded in count and time, loopback only.
//!
//! ```text
//! loadgen viewers --playlist URL [--playlist URL ...] --viewers N --secs S --segment-secs D
//! loadgen rest    --url URL --token JWT --rate PER_SEC --secs S
//! loadgen ws      --url URL --token JWT --subscribers N --secs S
//! ```
//!
//! `viewers` runs N simulated HLS players: each keeps one keep-alive
//! connection, polls one media playlist (viewer i takes playlist i mod k)
//! every half segment, and fetches every segment that appears after the
//! live edge it joined at. `rest` sends GETs at a fixed rate. `ws` opens N
//! WebSocket subscribers and measures, for every event, the time from the
//! event's `timestamp` to its arrival. Each prints one JSON object.
//!
//! The HTTP/1.1 and WebSocket clients are minimal on purpose (GET only,
//! Content-Length, chunked or close-delimited bodies, unmasked server
//! frames): enough for bigfoot and nginx, and cheap, so the load generator
//! takes as little CPU as possible from the servers on the same box.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{sleep, sleep_until, timeout};

/// Longest a single request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra time after `--secs` before the whole run is cut short.
const GRACE: Duration = Duration::from_secs(15);

#[derive(Clone, Debug)]
struct Url {
    authority: String,
    path: String,
}

impl Url {
    fn parse(text: &str) -> Option<Url> {
        let rest = text
            .strip_prefix("http://")
            .or_else(|| text.strip_prefix("ws://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        Some(Url {
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }

    /// Resolves a URI found in a playlist against this playlist's URL.
    fn join(&self, reference: &str) -> Url {
        if let Some(url) = Url::parse(reference) {
            return url;
        }
        if reference.starts_with('/') {
            return Url {
                authority: self.authority.clone(),
                path: reference.to_string(),
            };
        }
        let dir = match self.path.rfind('/') {
            Some(i) => &self.path[..=i],
            None => "/",
        };
        Url {
            authority: self.authority.clone(),
            path: format!("{dir}{reference}"),
        }
    }
}

/// One keep-alive HTTP/1.1 connection that reconnects when needed.
struct Connection {
    authority: String,
    stream: Option<BufReader<TcpStream>>,
}

struct Response {
    status: u16,
    body: Vec<u8>,
    length: usize,
}

impl Connection {
    fn new(authority: &str) -> Self {
        Self {
            authority: authority.to_string(),
            stream: None,
        }
    }

    async fn get(&mut self, path: &str, headers: &str, keep_body: bool) -> io::Result<Response> {
        match timeout(REQUEST_TIMEOUT, self.get_once(path, headers, keep_body)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err(io::Error::new(io::ErrorKind::TimedOut, "request timed out"))
            }
        }
    }

    async fn get_once(
        &mut self,
        path: &str,
        headers: &str,
        keep_body: bool,
    ) -> io::Result<Response> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: bigfoot-loadgen\r\n{headers}\r\n",
            self.authority
        );
        // A kept-alive connection the server closed fails on write or on
        // the first read: retry once on a fresh one.
        for attempt in 0..2 {
            let reused = self.stream.is_some();
            if self.stream.is_none() {
                let tcp = TcpStream::connect(&self.authority).await?;
                tcp.set_nodelay(true)?;
                self.stream = Some(BufReader::with_capacity(64 * 1024, tcp));
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            let result = exchange(stream, &request, keep_body).await;
            match result {
                Ok((response, keep_alive)) => {
                    if !keep_alive {
                        self.stream = None;
                    }
                    return Ok(response);
                }
                Err(e) if reused && attempt == 0 => {
                    let _ = e;
                    self.stream = None;
                }
                Err(e) => {
                    self.stream = None;
                    return Err(e);
                }
            }
        }
        Err(io::Error::other("no connection"))
    }
}

async fn exchange(
    stream: &mut BufReader<TcpStream>,
    request: &str,
    keep_body: bool,
) -> io::Result<(Response, bool)> {
    stream.get_mut().write_all(request.as_bytes()).await?;
    let (status, headers) = read_head(stream).await?;
    let mut keep_alive = !headers
        .get("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let mut body = Vec::new();
    let length;
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        length = read_chunked(stream, &mut body, keep_body).await?;
    } else if let Some(n) = headers.get("content-length").and_then(|v| v.parse::<u64>().ok()) {
        length = read_exact_len(stream, n, &mut body, keep_body).await?;
    } else {
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await?;
        length = all.len();
        if keep_body {
            body = all;
        }
        keep_alive = false;
    }
    Ok((
        Response {
            status,
            body,
            length,
        },
        keep_alive,
    ))
}

async fn read_head(
    stream: &mut BufReader<TcpStream>,
) -> io::Result<(u16, BTreeMap<String, String>)> {
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a response"));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed in headers"));
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    Ok((status, headers))
}

async fn read_exact_len(
    stream: &mut BufReader<TcpStream>,
    n: u64,
    body: &mut Vec<u8>,
    keep_body: bool,
) -> io::Result<usize> {
    if keep_body {
        let start = body.len();
        body.resize(start + n as usize, 0);
        stream.read_exact(&mut body[start..]).await?;
    } else {
        let copied = tokio::io::copy(&mut (&mut *stream).take(n), &mut tokio::io::sink()).await?;
        if copied != n {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
        }
    }
    Ok(n as usize)
}

async fn read_chunked(
    stream: &mut BufReader<TcpStream>,
    body: &mut Vec<u8>,
    keep_body: bool,
) -> io::Result<usize> {
    let mut total = 0;
    let mut line = String::new();
    loop {
        line.clear();
        stream.read_line(&mut line).await?;
        let size_text = line.trim().split(';').next().unwrap_or("");
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                line.clear();
                stream.read_line(&mut line).await?;
                if line.trim().is_empty() {
                    return Ok(total);
                }
            }
        }
        total += read_exact_len(stream, size, body, keep_body).await?;
        line.clear();
        stream.read_line(&mut line).await?;
    }
}

// ---------------------------------------------------------------------------
// Statistics

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(|a, b| a.total_cmp(b));
    values
}

fn json_number(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.3}")
    } else {
        "null".to_string()
    }
}

// ---------------------------------------------------------------------------
// Viewers

#[derive(Default)]
struct ViewerReport {
    segment_ms: Vec<f64>,
    playlist_ms: Vec<f64>,
    not_found: u64,
    other_status: u64,
    errors: u64,
    bytes: u64,
}

async fn viewer(
    playlist: Url,
    start_after: Duration,
    poll: Duration,
    deadline: Instant,
) -> ViewerReport {
    let mut report = ViewerReport::default();
    sleep(start_after).await;
    let mut connection = Connection::new(&playlist.authority);
    let mut last_seen: Option<String> = None;
    let mut map_fetched = false;
    while Instant::now() < deadline {
        let tick = tokio::time::Instant::now() + poll;
        let started = Instant::now();
        let text = match connection.get(&playlist.path, "", true).await {
            Ok(response) if response.status == 200 => {
                report.playlist_ms.push(started.elapsed().as_secs_f64() * 1000.0);
                String::from_utf8_lossy(&response.body).into_owned()
            }
            Ok(response) => {
                count_status(&mut report, response.status);
                sleep_until(tick).await;
                continue;
            }
            Err(_) => {
                report.errors += 1;
                sleep_until(tick).await;
                continue;
            }
        };

        if !map_fetched {
            if let Some(map) = map_uri(&text) {
                let url = playlist.join(&map);
                match connection.get(&url.path, "", false).await {
                    Ok(response) if response.status == 200 => map_fetched = true,
                    Ok(response) => count_status(&mut report, response.status),
                    Err(_) => report.errors += 1,
                }
            } else {
                map_fetched = true;
            }
        }

        let uris: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let new: Vec<&str> = match &last_seen {
            None => uris.last().copied().into_iter().collect(),
            Some(seen) => match uris.iter().position(|u| u == seen) {
                Some(i) => uris[i + 1..].to_vec(),
                None => uris.clone(),
            },
        };
        for uri in new {
            if Instant::now() >= deadline {
                break;
            }
            let url = playlist.join(uri);
            let started = Instant::now();
            match connection.get(&url.path, "", false).await {
                Ok(response) if response.status == 200 => {
                    report.segment_ms.push(started.elapsed().as_secs_f64() * 1000.0);
                    report.bytes += response.length as u64;
                }
                Ok(response) => count_status(&mut report, response.status),
                Err(_) => report.errors += 1,
            }
            last_seen = Some(uri.to_string());
        }
        sleep_until(tick).await;
    }
    report
}

fn count_status(report: &mut ViewerReport, status: u16) {
    if status == 404 {
        report.not_found += 1;
    } else {
        report.other_status += 1;
    }
}

fn map_uri(playlist: &str) -> Option<String> {
    let line = playlist.lines().find(|l| l.starts_with("#EXT-X-MAP:"))?;
    let start = line.find("URI=\"")? + 5;
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_string())
}

async fn run_viewers(args: &Args) -> Result<String, String> {
    let playlists: Vec<Url> = args
        .all("--playlist")
        .iter()
        .map(|p| Url::parse(p).ok_or(format!("not an http URL: {p}")))
        .collect::<Result<_, _>>()?;
    if playlists.is_empty() {
        return Err("give at least one --playlist".into());
    }
    let count: usize = args.number("--viewers")?;
    let secs: f64 = args.number("--secs")?;
    let segment: f64 = args.number("--segment-secs")?;
    let poll = Duration::from_secs_f64(segment / 2.0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);

    // Joins are spread over one segment, as real audiences are.
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let playlist = playlists[i % playlists.len()].clone();
        let offset = Duration::from_secs_f64(segment * i as f64 / count.max(1) as f64);
        tasks.push(tokio::spawn(viewer(playlist, offset, poll, deadline)));
    }
    let mut reports = Vec::with_capacity(count);
    let hard_stop = tokio::time::Instant::now() + Duration::from_secs_f64(secs) + GRACE;
    for task in tasks {
        match tokio::time::timeout_at(hard_stop, task).await {
            Ok(Ok(report)) => reports.push(report),
            _ => reports.push(ViewerReport {
                errors: 1,
                ..ViewerReport::default()
            }),
        }
    }

    let limit_ms = segment * 500.0;
    let mut ok_viewers = 0;
    let (mut not_found, mut other, mut errors, mut bytes) = (0, 0, 0, 0);
    let mut all_segments = Vec::new();
    let mut all_playlists = Vec::new();
    for report in reports {
        let own = sorted(report.segment_ms.clone());
        if !own.is_empty() && percentile(&own, 99.0) < limit_ms && report.not_found == 0 {
            ok_viewers += 1;
        }
        not_found += report.not_found;
        other += report.other_status;
        errors += report.errors;
        bytes += report.bytes;
        all_segments.extend(report.segment_ms);
        all_playlists.extend(report.playlist_ms);
    }
    let segments = sorted(all_segments);
    let playlists_ms = sorted(all_playlists);
    let elapsed = started.elapsed().as_secs_f64();
    Ok(format!(
        "{{\"viewers\":{count},\"ok_viewers\":{ok_viewers},\"segments\":{},\
         \"segment_p50_ms\":{},\"segment_p99_ms\":{},\"segment_max_ms\":{},\
         \"playlists\":{},\"playlist_p99_ms\":{},\"not_found\":{not_found},\
         \"other_status\":{other},\"errors\":{errors},\"bytes\":{bytes},\"secs\":{}}}",
        segments.len(),
        json_number(percentile(&segments, 50.0)),
        json_number(percentile(&segments, 99.0)),
        json_number(segments.last().copied().unwrap_or(f64::NAN)),
        playlists_ms.len(),
        json_number(percentile(&playlists_ms, 99.0)),
        json_number(elapsed),
    ))
}

// ---------------------------------------------------------------------------
// REST

async fn run_rest(args: &Args) -> Result<String, String> {
    let url = Url::parse(&args.one("--url")?).ok_or("--url must be http://")?;
    let token = args.one("--token")?;
    let rate: f64 = args.number("--rate")?;
    let secs: f64 = args.number("--secs")?;
    let connections = 4usize;
    let interval = Duration::from_secs_f64(connections as f64 / rate);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let headers = format!("Authorization: Bearer {token}\r\n");

    let mut tasks = Vec::new();
    for i in 0..connections {
        let url = url.clone();
        let headers = headers.clone();
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::new(&url.authority);
            let mut latencies = Vec::new();
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let mut errors = 0u64;
            let mut next = tokio::time::Instant::now() + interval.mul_f64(i as f64 / 4.0);
            while Instant::now() < deadline {
                sleep_until(next).await;
                next += interval;
                let started = Instant::now();
                match connection.get(&url.path, &headers, false).await {
                    Ok(response) => {
                        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                        *statuses.entry(response.status).or_default() += 1;
                    }
                    Err(_) => errors += 1,
                }
            }
            (latencies, statuses, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((l, s, e)) = task.await {
            latencies.extend(l);
            for (k, v) in s {
                *statuses.entry(k).or_default() += v;
            }
            errors += e;
        }
    }
    let latencies = sorted(latencies);
    let statuses: Vec<String> = statuses.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    Ok(format!(
        "{{\"requests\":{},\"p50_ms\":{},\"p99_ms\":{},\"max_ms\":{},\"errors\":{errors},\
         \"statuses\":{{{}}}}}",
        latencies.len(),
        json_number(percentile(&latencies, 50.0)),
        json_number(percentile(&latencies, 99.0)),
        json_number(latencies.last().copied().unwrap_or(f64::NAN)),
        statuses.join(","),
    ))
}

// ---------------------------------------------------------------------------
// WebSocket subscribers

enum Subscriber {
    Refused(u16),
    Failed,
    Delays(Vec<f64>),
}

async fn subscriber(url: Url, token: String, deadline: Instant) -> Subscriber {
    let Ok(Ok(tcp)) = timeout(REQUEST_TIMEOUT, TcpStream::connect(&url.authority)).await else {
        return Subscriber::Failed;
    };
    let mut stream = BufReader::new(tcp);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n",
        url.path, url.authority
    );
    if stream.get_mut().write_all(request.as_bytes()).await.is_err() {
        return Subscriber::Failed;
    }
    let head = timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await;
    let Ok(Ok((status, _))) = head else {
        return Subscriber::Failed;
    };
    if status != 101 {
        return Subscriber::Refused(status);
    }
    let mut delays = Vec::new();
    let remaining = deadline.saturating_duration_since(Instant::now());
    let _ = timeout(remaining, read_frames(&mut stream, &mut delays)).await;
    Subscriber::Delays(delays)
}

async fn read_frames(stream: &mut BufReader<TcpStream>, delays: &mut Vec<f64>) -> io::Result<()> {
    loop {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await?;
        let opcode = head[0] & 0x0f;
        let masked = head[1] & 0x80 != 0;
        let mut length = u64::from(head[1] & 0x7f);
        if length == 126 {
            length = u64::from(stream.read_u16().await?);
        } else if length == 127 {
            length = stream.read_u64().await?;
        }
        let mut mask = [0u8; 4];
        if masked {
            stream.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; length as usize];
        stream.read_exact(&mut payload).await?;
        let arrived = OffsetDateTime::now_utc();
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        match opcode {
            0x1 => {
                if let Some(delay) = event_delay_ms(&payload, arrived) {
                    delays.push(delay);
                }
            }
            0x8 => return Ok(()),
            0x9 => {
                // Pong with the same payload; client frames are masked (a
                // zero key leaves the bytes as they are).
                let mut frame = vec![0x8a, 0x80 | (payload.len().min(125) as u8), 0, 0, 0, 0];
                frame.extend_from_slice(&payload[..payload.len().min(125)]);
                stream.get_mut().write_all(&frame).await?;
            }
            _ => {}
        }
    }
}

fn event_delay_ms(payload: &[u8], arrived: OffsetDateTime) -> Option<f64> {
    let text = std::str::from_utf8(payload).ok()?;
    let start = text.find("\"timestamp\":\"")? + 13;
    let end = text[start..].find('"')? + start;
    let at = OffsetDateTime::parse(&text[start..end], &Rfc3339).ok()?;
    Some((arrived - at).as_seconds_f64() * 1000.0)
}

async fn run_ws(args: &Args) -> Result<String, String> {
    let url = Url::parse(&args.one("--url")?).ok_or("--url must be http:// or ws://")?;
    let token = args.one("--token")?;
    let count: usize = args.number("--subscribers")?;
    let secs: f64 = args.number("--secs")?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        // Connections open over the first second.
        let offset = Duration::from_secs_f64(i as f64 / count.max(1) as f64);
        let url = url.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            sleep(offset).await;
            subscriber(url, token, deadline).await
        }));
    }
    let (mut connected, mut failed) = (0, 0);
    let mut refused: BTreeMap<u16, u64> = BTreeMap::new();
    let mut delays = Vec::new();
    let hard_stop = tokio::time::Instant::now() + Duration::from_secs_f64(secs) + GRACE;
    for task in tasks {
        match tokio::time::timeout_at(hard_stop, task).await {
            Ok(Ok(Subscriber::Delays(d))) => {
                connected += 1;
                delays.extend(d);
            }
            Ok(Ok(Subscriber::Refused(status))) => *refused.entry(status).or_default() += 1,
            _ => failed += 1,
        }
    }
    let delays = sorted(delays);
    let refused: Vec<String> = refused.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    Ok(format!(
        "{{\"subscribers\":{count},\"connected\":{connected},\"failed\":{failed},\
         \"refused\":{{{}}},\"events\":{},\"p50_ms\":{},\"p99_ms\":{},\"max_ms\":{}}}",
        refused.join(","),
        delays.len(),
        json_number(percentile(&delays, 50.0)),
        json_number(percentile(&delays, 99.0)),
        json_number(delays.last().copied().unwrap_or(f64::NAN)),
    ))
}

// ---------------------------------------------------------------------------
// Command line

struct Args(Vec<String>);

impl Args {
    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .windows(2)
            .filter(|w| w[0] == name)
            .map(|w| w[1].clone())
            .collect()
    }

    fn one(&self, name: &str) -> Result<String, String> {
        self.all(name).pop().ok_or(format!("missing {name}"))
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<T, String> {
        self.one(name)?
            .parse()
            .map_err(|_| format!("{name} must be a number"))
    }
}

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let command = argv.first().cloned().unwrap_or_default();
    let args = Args(argv);
    let result = match command.as_str() {
        "viewers" => run_viewers(&args).await,
        "rest" => run_rest(&args).await,
        "ws" => run_ws(&args).await,
        _ => Err("usage: loadgen viewers|rest|ws ... (see the source)".to_string()),
    };
    match result {
        Ok(json) => println!("{json}"),
        Err(message) => {
            eprintln!("loadgen: {message}");
            std::process::exit(2);
        }
    }
}
