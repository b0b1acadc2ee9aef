//! Helpers for whole-server tests: a `bigfoot serve` child process on free
//! ports, RTMP publishers (ffmpeg and GStreamer test patterns), HTTP fetches,
//! HLS playlist parsing and ffprobe checks of CMAF fragments.
//!
//! Helpers return `anyhow::Result` where a caller may want to retry, and
//! panic with the reason (and the server log, via `Server`'s `Drop`) where a
//! failure ends the test.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use m3u8_rs::{MasterPlaylist, MediaPlaylist, Playlist};
use serde::Deserialize;
use tempfile::TempDir;

/// How long a server may take to log both listen addresses.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long SIGTERM may take before a dropped server is killed.
const DROP_GRACE: Duration = Duration::from_secs(5);
/// Origin sent with every HTTP request, as a browser player would.
pub const TEST_ORIGIN: &str = "http://player.test";
/// HLS playlist content type.
pub const PLAYLIST_CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";
/// A cheap default ladder for tests.
pub const CHEAP_LADDER: &str = r#"[
  { name = "360p", height = 360, video_kbps = 800 },
  { name = "240p", height = 240, video_kbps = 400 },
]"#;

// ---------------------------------------------------------------------------
// Output capture

/// Text a child process writes to stdout and stderr, collected by threads.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<String>>);

impl Captured {
    /// Starts threads that copy the child's piped stdout and stderr.
    fn attach(child: &mut Child) -> Self {
        let captured = Self::default();
        if let Some(out) = child.stdout.take() {
            captured.copy_lines(out);
        }
        if let Some(err) = child.stderr.take() {
            captured.copy_lines(err);
        }
        captured
    }

    fn copy_lines(&self, stream: impl Read + Send + 'static) {
        let sink = Arc::clone(&self.0);
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let mut text = sink.lock().unwrap_or_else(|e| e.into_inner());
                text.push_str(&line);
                text.push('\n');
            }
        });
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn send_signal(child: &Child, signal: &str) {
    // The child may already have exited; `kill` then fails, which is fine.
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Reads all of `stream` on a thread; join the handle for the text.
pub fn read_in_thread(mut stream: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    })
}

/// Waits for `child` to exit for at most `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Ok(None) | Err(_) => return None,
        }
    }
}

// ---------------------------------------------------------------------------
// Server

/// The parts of a test config that tests vary. `start` writes it into a
/// temporary folder with free ports and runs `bigfoot serve` on it.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The `transcode.ladder` value, as TOML.
    pub ladder: String,
    pub passthrough: bool,
    pub segment_secs: f64,
    pub reconnect_grace_secs: u64,
    pub window_segments: u32,
    pub mirror_to_disk: bool,
    /// `(name, key)` pairs for `[[streams]]`.
    pub streams: Vec<(String, String)>,
    /// Appended to the file as it is: whole sections not written above
    /// (such as `[thumbnails]` or `[playback]`).
    pub extra_toml: String,
    /// `key = value` lines added to the `[ingest]` table.
    pub ingest_toml: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            ladder: CHEAP_LADDER.to_string(),
            passthrough: true,
            segment_secs: 2.0,
            reconnect_grace_secs: 30,
            window_segments: 10,
            mirror_to_disk: false,
            streams: vec![
                ("cam1".to_string(), "secretkey1".to_string()),
                ("cam2".to_string(), "secretkey2".to_string()),
            ],
            extra_toml: String::new(),
            ingest_toml: String::new(),
        }
    }
}

impl ServerConfig {
    /// Passthrough and audio only: no transcoding, cheap on two cores.
    pub fn passthrough_only() -> Self {
        Self {
            ladder: "[]".to_string(),
            ..Self::default()
        }
    }

    pub fn ladder(mut self, ladder_toml: &str) -> Self {
        self.ladder = ladder_toml.to_string();
        self
    }

    pub fn reconnect_grace_secs(mut self, secs: u64) -> Self {
        self.reconnect_grace_secs = secs;
        self
    }

    pub fn mirror_to_disk(mut self, on: bool) -> Self {
        self.mirror_to_disk = on;
        self
    }

    /// The config file text, with `data_dir` as the data directory.
    pub fn to_toml(&self, data_dir: &Path) -> String {
        let pipelines_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        let mut text = format!(
            "[server]\n\
             rtmp_listen = \"127.0.0.1:0\"\n\
             http_listen = \"127.0.0.1:0\"\n\
             data_dir = {data_dir}\n\
             \n\
             [ingest]\n\
             reconnect_grace_secs = {grace}\n\
             {ingest}\
             \n\
             [transcode]\n\
             pipelines_dir = {pipelines_dir}\n\
             x264_preset = \"superfast\"\n\
             segment_secs = {segment_secs:?}\n\
             passthrough = {passthrough}\n\
             ladder = {ladder}\n\
             \n\
             [package]\n\
             window_segments = {window}\n\
             mirror_to_disk = {mirror}\n",
            data_dir = toml_string(&data_dir.to_string_lossy()),
            grace = self.reconnect_grace_secs,
            ingest = self.ingest_toml,
            pipelines_dir = toml_string(&pipelines_dir.to_string_lossy()),
            segment_secs = self.segment_secs,
            passthrough = self.passthrough,
            ladder = self.ladder,
            window = self.window_segments,
            mirror = self.mirror_to_disk,
        );
        for (name, key) in &self.streams {
            text.push_str(&format!(
                "\n[[streams]]\nname = {}\nkey = {}\n",
                toml_string(name),
                toml_string(key)
            ));
        }
        if !self.extra_toml.is_empty() {
            text.push('\n');
            text.push_str(&self.extra_toml);
            text.push('\n');
        }
        text
    }

    /// Adds `key = value` lines (each ending in a newline) to `[ingest]`.
    pub fn ingest(mut self, lines: &str) -> Self {
        self.ingest_toml.push_str(lines);
        self
    }

    /// Appends whole TOML sections to the config.
    pub fn extra_toml(mut self, toml: &str) -> Self {
        self.extra_toml.push_str(toml);
        self.extra_toml.push('\n');
        self
    }

    /// Writes the config and starts a server on it.
    pub fn start(&self) -> Server {
        Server::start(self)
    }
}

/// A TOML basic string holding `value`.
pub fn toml_string(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// The path of the `bigfoot` binary under test.
pub fn bigfoot_bin() -> &'static str {
    env!("CARGO_BIN_EXE_bigfoot")
}

/// A running `bigfoot serve`. Dropping it sends SIGTERM (then SIGKILL), and
/// prints its log if the test is failing.
pub struct Server {
    child: Option<Child>,
    log: Captured,
    dir: TempDir,
    pub rtmp_addr: SocketAddr,
    pub http_addr: SocketAddr,
}

impl Server {
    /// Writes `config` into a temporary folder and starts `bigfoot serve`,
    /// waiting until it logs both listen addresses.
    pub fn start(config: &ServerConfig) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary folder for the server");
        let text = config.to_toml(&dir.path().join("data"));
        Self::start_with_text(dir, &text)
    }

    /// Writes `text` as `bigfoot.toml` in `dir` (which the server then owns)
    /// and starts `bigfoot serve` on it, waiting for both listen addresses.
    pub fn start_with_text(dir: TempDir, text: &str) -> Self {
        let config_path = dir.path().join("bigfoot.toml");
        std::fs::write(&config_path, text).expect("write the test config");
        let mut child = Command::new(bigfoot_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info,bigfoot=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bigfoot serve");
        let log = Captured::attach(&mut child);

        let mut server = Self {
            child: Some(child),
            log,
            dir,
            rtmp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        server.wait_for_listeners();
        server
    }

    fn wait_for_listeners(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let log = self.logs();
            let rtmp = listen_addr(&log, "RTMP listening on");
            let http = listen_addr(&log, "HTTP listening on");
            if let (Some(rtmp), Some(http)) = (rtmp, http) {
                self.rtmp_addr = rtmp;
                self.http_addr = http;
                return;
            }
            if let Some(status) = self.child_mut().try_wait().ok().flatten() {
                panic!("bigfoot serve exited during start-up with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "bigfoot serve did not log both `RTMP listening on` and \
                 `HTTP listening on` within {STARTUP_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("the server process is still owned")
    }

    /// The server's log so far (stderr and stdout).
    pub fn logs(&self) -> String {
        self.log.text()
    }

    /// The temporary folder holding the config and the data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory from the config.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `rtmp://127.0.0.1:PORT/live/{key}`.
    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://{}/live/{key}", self.rtmp_addr)
    }

    /// `http://127.0.0.1:PORT{path}`; `path` starts with `/`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }

    /// The master playlist URL of `stream`.
    pub fn master_url(&self, stream: &str) -> String {
        self.http_url(&format!("/live/{stream}/master.m3u8"))
    }

    /// The media playlist URL of one rendition of `stream`.
    pub fn media_url(&self, stream: &str, rendition: &str) -> String {
        self.http_url(&format!("/live/{stream}/{rendition}/index.m3u8"))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Panics if the server process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child_mut().try_wait().ok().flatten() {
            panic!("bigfoot serve exited unexpectedly with {status}");
        }
    }

    /// Sends SIGTERM and waits (at most 15 s) for the exit; returns the exit
    /// status and how long the exit took.
    pub fn stop_and_wait(&mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let child = self.child_mut();
        send_signal(child, "TERM");
        match wait_timeout(child, Duration::from_secs(15)) {
            Some(status) => (status, started.elapsed()),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("bigfoot serve did not exit within 15 s of SIGTERM");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && child.try_wait().ok().flatten().is_none()
        {
            send_signal(&child, "TERM");
            if wait_timeout(&mut child, DROP_GRACE).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if thread::panicking() {
            eprintln!(
                "----- bigfoot serve log (http {}, rtmp {}) -----\n{}\
                 ----- end of bigfoot serve log -----",
                self.http_addr,
                self.rtmp_addr,
                self.logs()
            );
        }
    }
}

/// Finds the address logged after `marker`, for example
/// `HTTP listening on 127.0.0.1:8080` or `HTTP listening on addr=127.0.0.1:8080`.
fn listen_addr(log: &str, marker: &str) -> Option<SocketAddr> {
    log.lines().find_map(|line| {
        let rest = &line[line.find(marker)? + marker.len()..];
        rest.split_whitespace().find_map(|token| {
            let value = token.rsplit('=').next().unwrap_or(token);
            value
                .trim_matches(|c: char| c == '"' || c == ',' || c == '`' || c == '\'')
                .parse()
                .ok()
        })
    })
}

/// Runs `bigfoot` with `args`, waiting at most `timeout` for it to exit.
pub fn run_bigfoot(args: &[&str], timeout: Duration) -> Output {
    let mut child = Command::new(bigfoot_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bigfoot");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let Some(status) = wait_timeout(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "`bigfoot {}` did not exit within {timeout:?}",
            args.join(" ")
        );
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------
// Publishers

/// What a test publisher sends: a moving test pattern and/or a sine tone.
#[derive(Debug, Clone, Copy)]
pub struct TestPattern {
    pub seconds: f64,
    pub width: u32,
    pub height: u32,
    pub video: bool,
    pub audio: bool,
}

impl TestPattern {
    /// 30 fps video and 48 kHz stereo AAC.
    pub fn av(seconds: f64, width: u32, height: u32) -> Self {
        Self {
            seconds,
            width,
            height,
            video: true,
            audio: true,
        }
    }

    pub fn video_only(seconds: f64, width: u32, height: u32) -> Self {
        Self {
            audio: false,
            ..Self::av(seconds, width, height)
        }
    }

    pub fn audio_only(seconds: f64) -> Self {
        Self {
            video: false,
            ..Self::av(seconds, 0, 0)
        }
    }
}

/// A publisher process, killed when dropped.
pub struct Publisher {
    child: Child,
    output: Captured,
    what: &'static str,
}

impl Publisher {
    fn spawn(what: &'static str, command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let output = Captured::attach(&mut child);
        Self {
            child,
            output,
            what,
        }
    }

    /// Whatever the publisher printed (errors only, at the log level used).
    pub fn output(&self) -> String {
        self.output.text()
    }

    /// `Some(status)` once it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_timeout(&mut self.child, timeout)
    }

    /// Waits for a successful exit, panicking with its output otherwise.
    pub fn wait_success(&mut self, timeout: Duration) {
        match self.wait_timeout(timeout) {
            Some(status) if status.success() => {}
            Some(status) => panic!(
                "{} publisher failed with {status}:\n{}",
                self.what,
                self.output()
            ),
            None => panic!("{} publisher still running after {timeout:?}", self.what),
        }
    }

    /// SIGKILL: the connection drops without an RTMP goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Publishes `seconds` of `width`x`height` video with a sine tone via ffmpeg.
pub fn publish_ffmpeg(url: &str, seconds: f64, width: u32, height: u32) -> Publisher {
    publish_ffmpeg_pattern(url, &TestPattern::av(seconds, width, height))
}

/// Publishes `pattern` in real time (`-re`) to `url` with ffmpeg: H.264
/// (keyframe every 2 s) and AAC-LC 48 kHz stereo in FLV.
pub fn publish_ffmpeg_pattern(url: &str, pattern: &TestPattern) -> Publisher {
    publish_ffmpeg_keyframes(url, pattern, None)
}

/// Like [`publish_ffmpeg_pattern`], but with keyframes only at the times
/// given (`-force_key_frames` syntax) when `keyframes` is set.
pub fn publish_ffmpeg_keyframes(
    url: &str,
    pattern: &TestPattern,
    keyframes: Option<&str>,
) -> Publisher {
    let mut command = Command::new("ffmpeg");
    command.args(["-nostdin", "-hide_banner", "-loglevel", "error", "-re"]);
    if pattern.video {
        let source = format!("testsrc2=size={}x{}:rate=30", pattern.width, pattern.height);
        command.args(["-f", "lavfi", "-i", &source]);
    }
    if pattern.audio {
        command.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]);
    }
    command.args(["-t", &format!("{:.3}", pattern.seconds)]);
    if pattern.video {
        let gop = if keyframes.is_some() { "100000" } else { "60" };
        command.args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ]);
        command.args(["-g", gop, "-keyint_min", gop, "-sc_threshold", "0"]);
        command.args(["-pix_fmt", "yuv420p"]);
        if let Some(times) = keyframes {
            command.args(["-force_key_frames", times]);
        }
    }
    if pattern.audio {
        command.args(["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2"]);
    }
    command.args(["-f", "flv", url]);
    Publisher::spawn("ffmpeg", &mut command)
}

/// Publishes `seconds` of `width`x`height` video with a sine tone via
/// GStreamer's `rtmp2sink`.
pub fn publish_gst(url: &str, seconds: f64, width: u32, height: u32) -> Publisher {
    publish_gst_pattern(url, &TestPattern::av(seconds, width, height))
}

/// Publishes `pattern` live to `url` with `gst-launch-1.0`: x264 (I420, a
/// keyframe every 2 s) and AAC 48 kHz stereo muxed by `flvmux`.
pub fn publish_gst_pattern(url: &str, pattern: &TestPattern) -> Publisher {
    const SAMPLES_PER_BUFFER: u32 = 1024;
    let mut description = format!("flvmux name=mux streamable=true ! rtmp2sink location={url}");
    if pattern.video {
        let frames = (pattern.seconds * 30.0).ceil() as u64;
        description.push_str(&format!(
            " videotestsrc is-live=true pattern=smpte num-buffers={frames} \
             ! video/x-raw,format=I420,width={w},height={h},framerate=30/1 \
             ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=60 \
             ! h264parse ! queue ! mux.",
            w = pattern.width,
            h = pattern.height,
        ));
    }
    if pattern.audio {
        let buffers = (pattern.seconds * 48_000.0 / f64::from(SAMPLES_PER_BUFFER)).ceil() as u64;
        description.push_str(&format!(
            " audiotestsrc is-live=true freq=440 samplesperbuffer={SAMPLES_PER_BUFFER} \
             num-buffers={buffers} ! audio/x-raw,rate=48000,channels=2 ! audioconvert \
             ! avenc_aac ! aacparse ! queue ! mux."
        ));
    }
    let mut command = Command::new("gst-launch-1.0");
    command
        .arg("-q")
        .arg("-e")
        .args(description.split_whitespace());
    Publisher::spawn("gst-launch-1.0", &mut command)
}

// ---------------------------------------------------------------------------
// HTTP

/// One HTTP response, fully read.
#[derive(Debug)]
pub struct Response {
    pub url: String,
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    /// A header value by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("{} body is not JSON: {:?}", self.url, self.text()))
    }

    /// The `code` of a JSON error body, if there is one.
    pub fn error_code(&self) -> Option<String> {
        let json = self.json().ok()?;
        json.get("code")?.as_str().map(str::to_string)
    }

    /// Panics unless the status is `status`.
    pub fn expect_status(self, status: u16) -> Self {
        assert_eq!(
            self.status,
            status,
            "GET {} answered {} with body {:?}",
            self.url,
            self.status,
            self.text()
        );
        self
    }
}

fn http_client() -> &'static reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .expect("build the HTTP client")
    })
}

/// Reads a whole answer into a `Response`.
fn read_response(url: &str, response: reqwest::blocking::Response) -> anyhow::Result<Response> {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_string(), value)
        })
        .collect();
    let body = response
        .bytes()
        .with_context(|| format!("read the body of {url}"))?
        .to_vec();
    Ok(Response {
        url: url.to_string(),
        status,
        headers,
        body,
    })
}

/// GETs `url` (with an `Origin` header) and reads the whole body.
pub fn get(url: &str) -> anyhow::Result<Response> {
    let response = http_client()
        .get(url)
        .header("origin", TEST_ORIGIN)
        .send()
        .with_context(|| format!("GET {url}"))?;
    read_response(url, response)
}

/// GETs `url` and panics unless the answer is 200.
pub fn get_ok(url: &str) -> Response {
    get(url)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .expect_status(200)
}

/// Sends `GET {raw_path}` over a plain socket, so that the path reaches the
/// server exactly as written (no `..` normalisation). Returns the status
/// and the body.
pub fn raw_get(addr: SocketAddr, raw_path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {raw_path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;

    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {:?}", String::from_utf8_lossy(&reply)))?;
    let head = String::from_utf8_lossy(&reply[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:?}"))?;
    let body = &reply[split + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunk size"))?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim().to_string();
        let size = usize::from_str_radix(&size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        ensure!(data.len() >= size, "truncated chunk");
        body.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

/// Calls `probe` every 200 ms until it returns `Ok`, panicking with the last
/// error after `timeout`.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> anyhow::Result<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(e) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {e:#}")
            }
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Polls `url` until it answers `status`.
pub fn wait_for_status(url: &str, status: u16, timeout: Duration) -> Response {
    wait_until(&format!("{status} from {url}"), timeout, || {
        let response = get(url)?;
        ensure!(
            response.status == status,
            "{} {:?}",
            response.status,
            response.text()
        );
        Ok(response)
    })
}

/// Polls a master playlist until it answers 200. Every other answer on the
/// way must be the documented 404 `STREAM_NOT_FOUND` (before the publish
/// registers) or 503 `STREAM_STARTING` (live, no segment yet).
pub fn wait_for_master(url: &str, timeout: Duration) -> Response {
    wait_until(&format!("200 from {url}"), timeout, || {
        let response = get(url)?;
        let code = response.error_code();
        match response.status {
            200 => return Ok(response),
            404 => assert_eq!(
                code.as_deref(),
                Some("STREAM_NOT_FOUND"),
                "404 body {:?}",
                response.text()
            ),
            503 => assert_eq!(
                code.as_deref(),
                Some("STREAM_STARTING"),
                "503 body {:?}",
                response.text()
            ),
            other => panic!("master playlist answered {other}: {:?}", response.text()),
        }
        bail!("{} {:?}", response.status, response.text())
    })
}

// ---------------------------------------------------------------------------
// Playlists

/// Parses a master playlist.
pub fn parse_master(text: &[u8]) -> anyhow::Result<MasterPlaylist> {
    match m3u8_rs::parse_playlist_res(text) {
        Ok(Playlist::MasterPlaylist(master)) => Ok(master),
        Ok(Playlist::MediaPlaylist(_)) => bail!(
            "expected a master playlist, got a media playlist:\n{}",
            String::from_utf8_lossy(text)
        ),
        Err(_) => bail!("cannot parse playlist:\n{}", String::from_utf8_lossy(text)),
    }
}

/// Parses a media playlist.
pub fn parse_media(text: &[u8]) -> anyhow::Result<MediaPlaylist> {
    match m3u8_rs::parse_playlist_res(text) {
        Ok(Playlist::MediaPlaylist(media)) => Ok(media),
        Ok(Playlist::MasterPlaylist(_)) => bail!(
            "expected a media playlist, got a master playlist:\n{}",
            String::from_utf8_lossy(text)
        ),
        Err(_) => bail!("cannot parse playlist:\n{}", String::from_utf8_lossy(text)),
    }
}

/// GETs and parses a media playlist (status 200 required).
pub fn fetch_media(url: &str) -> anyhow::Result<MediaPlaylist> {
    let response = get(url)?;
    ensure!(
        response.status == 200,
        "{url} answered {} {:?}",
        response.status,
        response.text()
    );
    parse_media(&response.body)
}

/// Resolves a URI from a playlist against the playlist's URL.
pub fn resolve(base: &str, uri: &str) -> String {
    reqwest::Url::parse(base)
        .and_then(|base| base.join(uri))
        .unwrap_or_else(|e| panic!("cannot resolve {uri:?} against {base}: {e}"))
        .to_string()
}

/// The rendition name of a child playlist URI: `360p/index.m3u8` -> `360p`.
pub fn rendition_of(uri: &str) -> String {
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    let mut parts = path.rsplit('/');
    let file = parts.next().unwrap_or_default();
    assert_eq!(file, "index.m3u8", "child playlist URI {uri:?}");
    parts
        .next()
        .unwrap_or_else(|| panic!("no rendition folder in {uri:?}"))
        .to_string()
}

/// The media sequence number of the last listed segment.
pub fn last_sequence(playlist: &MediaPlaylist) -> Option<u64> {
    let count = playlist.segments.len() as u64;
    count
        .checked_sub(1)
        .map(|last| playlist.media_sequence + last)
}

/// The `max-age` of a `cache-control` value.
pub fn max_age(cache_control: &str) -> Option<u64> {
    cache_control.split(',').find_map(|directive| {
        let value = directive.trim().strip_prefix("max-age=")?;
        value.trim().parse().ok()
    })
}

// ---------------------------------------------------------------------------
// ffprobe

/// What ffprobe reports about one CMAF fragment (init segment + one media
/// segment).
#[derive(Debug, Deserialize)]
pub struct Probe {
    #[serde(default)]
    pub streams: Vec<ProbeStream>,
    #[serde(default)]
    pub packets: Vec<ProbePacket>,
}

#[derive(Debug, Deserialize)]
pub struct ProbeStream {
    pub codec_type: String,
    pub codec_name: Option<String>,
    pub profile: Option<String>,
    pub pix_fmt: Option<String>,
    pub level: Option<i64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub sample_rate: Option<String>,
    pub channels: Option<u32>,
    pub nb_read_frames: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ProbePacket {
    pub codec_type: String,
    pub pts_time: Option<String>,
    pub dts_time: Option<String>,
    pub duration_time: Option<String>,
    #[serde(default)]
    pub flags: String,
}

impl ProbeStream {
    pub fn sample_rate(&self) -> Option<u32> {
        self.sample_rate.as_deref()?.parse().ok()
    }
}

impl ProbePacket {
    pub fn is_keyframe(&self) -> bool {
        self.flags.starts_with('K')
    }

    pub fn pts(&self) -> Option<f64> {
        self.pts_time.as_deref()?.parse().ok()
    }

    pub fn duration(&self) -> Option<f64> {
        self.duration_time.as_deref()?.parse().ok()
    }
}

impl Probe {
    /// The only stream of `codec_type` ("video" or "audio").
    pub fn stream(&self, codec_type: &str) -> Option<&ProbeStream> {
        self.streams.iter().find(|s| s.codec_type == codec_type)
    }

    /// Packets of `codec_type` in file (decode) order.
    pub fn packets(&self, codec_type: &str) -> impl Iterator<Item = &ProbePacket> {
        self.packets
            .iter()
            .filter(move |p| p.codec_type == codec_type)
    }

    /// The earliest presentation time of `codec_type`, in seconds.
    pub fn first_pts(&self, codec_type: &str) -> Option<f64> {
        self.packets(codec_type)
            .filter_map(ProbePacket::pts)
            .min_by(f64::total_cmp)
    }

    /// The summed packet durations of `codec_type`, in seconds.
    pub fn duration(&self, codec_type: &str) -> f64 {
        self.packets(codec_type)
            .filter_map(ProbePacket::duration)
            .sum()
    }
}

fn fragment_file(init: &[u8], segment: &[u8]) -> anyhow::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new()
        .prefix("bigfoot-fragment-")
        .suffix(".mp4")
        .tempfile()?;
    file.write_all(init)?;
    file.write_all(segment)?;
    file.flush()?;
    Ok(file)
}

fn ffprobe_json<T: for<'de> Deserialize<'de>>(path: &Path, args: &[&str]) -> anyhow::Result<T> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .context("run ffprobe")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success() && stderr.trim().is_empty(),
        "ffprobe {} failed ({}): {stderr}",
        args.join(" "),
        output.status
    );
    serde_json::from_slice(&output.stdout).context("parse ffprobe JSON")
}

/// Probes `init` followed by `segment`: streams and packets, no decoding.
pub fn probe_fragment(init: &[u8], segment: &[u8]) -> anyhow::Result<Probe> {
    let file = fragment_file(init, segment)?;
    ffprobe_json(file.path(), &["-show_streams", "-show_packets"])
}

/// Decodes every frame of `init` + `segment`; fails on any decoder error.
/// Returns the frames decoded per codec type.
pub fn decode_fragment(init: &[u8], segment: &[u8]) -> anyhow::Result<HashMap<String, u64>> {
    let file = fragment_file(init, segment)?;
    let probe: Probe = ffprobe_json(file.path(), &["-count_frames", "-show_streams"])?;
    Ok(probe
        .streams
        .iter()
        .map(|s| {
            let frames = s.nb_read_frames.as_deref().and_then(|n| n.parse().ok());
            (s.codec_type.clone(), frames.unwrap_or(0))
        })
        .collect())
}

/// Checks the `avc1.PPCCLL` entry of an HLS `CODECS` value against the
/// profile and level ffprobe reads from the stream itself.
pub fn check_avc_codec(codecs: &str, video: &ProbeStream) -> anyhow::Result<()> {
    let avc = codecs
        .split(',')
        .map(str::trim)
        .find(|c| c.starts_with("avc1.") || c.starts_with("avc3."))
        .ok_or_else(|| anyhow!("no avc1 entry in CODECS {codecs:?}"))?;
    let hex = &avc[5..];
    ensure!(hex.len() == 6, "{avc:?} is not avc1.PPCCLL");
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16);
    let (profile_idc, constraints, level_idc) = (byte(0)?, byte(2)?, byte(4)?);

    let profile = video.profile.as_deref().unwrap_or_default();
    let expected_idc = match profile {
        "Baseline" | "Constrained Baseline" => 0x42,
        "Main" => 0x4D,
        "Extended" => 0x58,
        "High" => 0x64,
        "High 10" => 0x6E,
        "High 4:2:2" => 0x7A,
        "High 4:4:4 Predictive" => 0xF4,
        other => bail!("unexpected H.264 profile {other:?} from ffprobe"),
    };
    ensure!(
        profile_idc == expected_idc,
        "{avc}: profile byte {profile_idc:#04x} but the stream is {profile} ({expected_idc:#04x})"
    );
    if profile == "Constrained Baseline" {
        ensure!(
            constraints & 0x40 != 0,
            "{avc}: constraint_set1 missing for Constrained Baseline"
        );
    }
    let level = video.level.unwrap_or_default();
    ensure!(
        i64::from(level_idc) == level,
        "{avc}: level byte {level_idc} but the stream is level {level}"
    );
    Ok(())
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Waits up to `timeout` for process `pid` to hold at most `limit` open
/// file descriptors; panics with `what` and the count otherwise.
pub fn wait_for_fds_at_most(pid: u32, limit: usize, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    loop {
        let fds = open_fds(pid);
        if fds <= limit {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {fds} descriptors open, wanted at most {limit}"
        );
        thread::sleep(Duration::from_millis(250));
    }
}

/// Whether `width` is an even width within 2 pixels of the width that keeps
/// the source aspect ratio at `height`.
pub fn is_scaled_width(width: u32, height: u32, source_width: u32, source_height: u32) -> bool {
    let exact = f64::from(height) * f64::from(source_width) / f64::from(source_height);
    width.is_multiple_of(2) && (f64::from(width) - exact).abs() <= 2.0
}

/// Asserts that the rendition `name` (`source` or `{height}p`) of a publish
/// of size `source` came out at `actual`: the source size itself, or the
/// named height at the source aspect ratio.
pub fn assert_rendition_size(what: &str, name: &str, actual: (u32, u32), source: (u32, u32)) {
    if name == "source" {
        assert_eq!(actual, source, "{what}: size of {name}");
        return;
    }
    let height: u32 = name
        .strip_suffix('p')
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("{what}: unexpected rendition {name:?}"));
    assert_eq!(actual.1, height, "{what}: height of {name}");
    assert!(
        is_scaled_width(actual.0, actual.1, source.0, source.1),
        "{what}: width {} of {name} does not keep the {}x{} aspect ratio",
        actual.0,
        source.0,
        source.1
    );
}

// ===========================================================================
// DASH and thumbnails (used by tests/dash_thumbnails.rs)
//
// A purpose-built scan of the MPD bigfoot writes (no XML crate), ISO 8601
// durations and UTC times, and ffprobe checks of MPD URLs and JPEGs.

impl Server {
    /// Like `start`, with `extra_toml` appended to the generated config, for
    /// sections `ServerConfig` does not model (for example `[thumbnails]`).
    /// The generated config ends with `[[streams]]` entries, so `extra_toml`
    /// must start with a table header.
    pub fn start_with_extra_toml(config: &ServerConfig, extra_toml: &str) -> Self {
        Self::start(&config.clone().extra_toml(extra_toml))
    }

    /// The DASH manifest URL of `stream`.
    pub fn mpd_url(&self, stream: &str) -> String {
        self.http_url(&format!("/live/{stream}/manifest.mpd"))
    }

    /// The live thumbnail URL of `stream`.
    pub fn thumbnail_url(&self, stream: &str) -> String {
        self.http_url(&format!("/live/{stream}/thumbnail.jpg"))
    }
}

/// DASH MPD content type.
pub const MPD_CONTENT_TYPE: &str = "application/dash+xml";

/// GETs `url` with `host` as the `Host` header.
pub fn get_with_host(url: &str, host: &str) -> anyhow::Result<Response> {
    let response = http_client()
        .get(url)
        .header("host", host)
        .send()
        .with_context(|| format!("GET {url} (Host: {host})"))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_string(), value)
        })
        .collect();
    let body = response.bytes()?.to_vec();
    Ok(Response {
        url: url.to_string(),
        status,
        headers,
        body,
    })
}

/// The attributes of one XML element.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs(std::collections::BTreeMap<String, String>);

impl Attrs {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The attribute, which must be present.
    pub fn require(&self, name: &str) -> anyhow::Result<&str> {
        self.get(name)
            .ok_or_else(|| anyhow!("no attribute {name} in {:?}", self.0))
    }

    /// The attribute parsed as `T`; it must be present.
    pub fn number<T: std::str::FromStr>(&self, name: &str) -> anyhow::Result<T> {
        let text = self.require(name)?;
        text.parse()
            .map_err(|_| anyhow!("attribute {name}={text:?} is not a number"))
    }
}

/// One tag of an XML document: `<name ...>`, `</name>` or `<name .../>`.
#[derive(Debug)]
struct XmlTag {
    name: String,
    attrs: Attrs,
    closing: bool,
    empty: bool,
}

/// Splits `text` into tags, skipping the declaration, comments and text.
fn xml_tags(text: &str) -> anyhow::Result<Vec<XmlTag>> {
    let mut tags = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        rest = &rest[start..];
        let skip_to = |end: &str| {
            rest.find(end)
                .map(|i| i + end.len())
                .ok_or_else(|| anyhow!("unterminated {:?}", &rest[..rest.len().min(40)]))
        };
        if rest.starts_with("<?") {
            rest = &rest[skip_to("?>")?..];
            continue;
        }
        if rest.starts_with("<!--") {
            rest = &rest[skip_to("-->")?..];
            continue;
        }
        let end = tag_end(rest)?;
        tags.push(parse_tag(&rest[1..end])?);
        rest = &rest[end + 1..];
    }
    Ok(tags)
}

/// The index of the `>` that ends the tag at the start of `text`, ignoring
/// `>` inside quoted attribute values.
fn tag_end(text: &str) -> anyhow::Result<usize> {
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '>') => return Ok(i),
            _ => {}
        }
    }
    bail!("unterminated tag {:?}", &text[..text.len().min(40)])
}

/// Parses the inside of `<...>`.
fn parse_tag(inner: &str) -> anyhow::Result<XmlTag> {
    let closing = inner.starts_with('/');
    let empty = inner.ends_with('/');
    let inner = inner.trim_start_matches('/').trim_end_matches('/');
    let name_end = inner
        .find(|c: char| c.is_whitespace())
        .unwrap_or(inner.len());
    let name = inner[..name_end].to_string();
    ensure!(!name.is_empty(), "tag without a name: <{inner}>");

    let mut attrs = std::collections::BTreeMap::new();
    let mut rest = inner[name_end..].trim_start();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| anyhow!("attribute without a value in <{inner}>"))?;
        let key = rest[..eq].trim().to_string();
        let after = rest[eq + 1..].trim_start();
        let quote = after
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')
            .ok_or_else(|| anyhow!("unquoted value of {key} in <{inner}>"))?;
        let close = after[1..]
            .find(quote)
            .ok_or_else(|| anyhow!("unterminated value of {key} in <{inner}>"))?;
        let value = xml_unescape(&after[1..1 + close])?;
        ensure!(
            attrs.insert(key.clone(), value).is_none(),
            "attribute {key} twice in <{inner}>"
        );
        rest = after[close + 2..].trim_start();
    }
    Ok(XmlTag {
        name,
        attrs: Attrs(attrs),
        closing,
        empty,
    })
}

fn xml_unescape(value: &str) -> anyhow::Result<String> {
    ensure!(!value.contains('<'), "raw `<` in attribute value {value:?}");
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let semi = rest[amp..]
            .find(';')
            .ok_or_else(|| anyhow!("bare `&` in {value:?}"))?;
        let entity = &rest[amp + 1..amp + semi];
        out.push(match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            other => bail!("unknown entity &{other}; in {value:?}"),
        });
        rest = &rest[amp + semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One `<S t= d= r=/>` of a `SegmentTimeline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineEntry {
    pub t: Option<u64>,
    pub d: u64,
    pub r: i64,
}

/// A `SegmentTemplate` with its timeline.
#[derive(Debug, Clone, Default)]
pub struct SegmentTemplate {
    pub attrs: Attrs,
    pub timeline: Vec<TimelineEntry>,
}

/// One media segment of a representation, expanded from the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DashSegment {
    pub number: u64,
    /// Start, in timescale units, before `presentationTimeOffset`.
    pub t: u64,
    pub d: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Representation {
    pub attrs: Attrs,
    pub template: Option<SegmentTemplate>,
    pub audio_channels: Option<Attrs>,
}

#[derive(Debug, Clone, Default)]
pub struct AdaptationSet {
    pub attrs: Attrs,
    pub representations: Vec<Representation>,
}

#[derive(Debug, Clone, Default)]
pub struct MpdPeriod {
    pub attrs: Attrs,
    pub adaptation_sets: Vec<AdaptationSet>,
}

/// The parts of an MPD the tests check.
#[derive(Debug, Clone, Default)]
pub struct Mpd {
    pub attrs: Attrs,
    pub periods: Vec<MpdPeriod>,
    pub utc_timings: Vec<Attrs>,
}

impl Mpd {
    /// Scans an MPD document; fails on unbalanced tags and on elements of
    /// interest in unexpected places.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut mpd = Self::default();
        let mut open: Vec<String> = Vec::new();
        let mut seen_root = false;
        for tag in xml_tags(text)? {
            if tag.closing {
                let top = open.pop();
                ensure!(
                    top.as_deref() == Some(tag.name.as_str()),
                    "</{}> closes {top:?}",
                    tag.name
                );
                continue;
            }
            let parent = open.last().map(String::as_str);
            mpd.add(&tag, parent)?;
            if tag.name == "MPD" {
                ensure!(!seen_root, "two MPD elements");
                seen_root = true;
            }
            if !tag.empty {
                open.push(tag.name.clone());
            }
        }
        ensure!(open.is_empty(), "unclosed elements {open:?}");
        ensure!(seen_root, "no MPD element");
        Ok(mpd)
    }

    fn add(&mut self, tag: &XmlTag, parent: Option<&str>) -> anyhow::Result<()> {
        let attrs = tag.attrs.clone();
        let misplaced = || anyhow!("<{}> inside {parent:?}", tag.name);
        match (tag.name.as_str(), parent) {
            ("MPD", None) => self.attrs = attrs,
            ("Period", Some("MPD")) => self.periods.push(MpdPeriod {
                attrs,
                ..MpdPeriod::default()
            }),
            ("UTCTiming", Some("MPD")) => self.utc_timings.push(attrs),
            ("AdaptationSet", Some("Period")) => {
                let period = self.periods.last_mut().ok_or_else(misplaced)?;
                period.adaptation_sets.push(AdaptationSet {
                    attrs,
                    ..AdaptationSet::default()
                });
            }
            ("Representation", Some("AdaptationSet")) => {
                self.last_set()
                    .ok_or_else(misplaced)?
                    .representations
                    .push(Representation {
                        attrs,
                        ..Representation::default()
                    });
            }
            ("SegmentTemplate", Some("Representation")) => {
                let representation = self.last_representation().ok_or_else(misplaced)?;
                ensure!(
                    representation.template.is_none(),
                    "two SegmentTemplates in one Representation"
                );
                representation.template = Some(SegmentTemplate {
                    attrs,
                    timeline: Vec::new(),
                });
            }
            ("AudioChannelConfiguration", Some("Representation")) => {
                self.last_representation()
                    .ok_or_else(misplaced)?
                    .audio_channels = Some(attrs);
            }
            ("SegmentTimeline", Some("SegmentTemplate")) => {}
            ("S", Some("SegmentTimeline")) => {
                let entry = TimelineEntry {
                    t: attrs.get("t").map(|_| attrs.number("t")).transpose()?,
                    d: attrs.number("d")?,
                    r: attrs
                        .get("r")
                        .map(|_| attrs.number("r"))
                        .transpose()?
                        .unwrap_or(0),
                };
                let template = self
                    .last_representation()
                    .and_then(|r| r.template.as_mut())
                    .ok_or_else(misplaced)?;
                template.timeline.push(entry);
            }
            ("SegmentTemplate" | "SegmentTimeline" | "S", _) => return Err(misplaced()),
            ("Period" | "AdaptationSet" | "Representation" | "UTCTiming", _) => {
                return Err(misplaced());
            }
            _ => {}
        }
        Ok(())
    }

    fn last_set(&mut self) -> Option<&mut AdaptationSet> {
        self.periods.last_mut()?.adaptation_sets.last_mut()
    }

    fn last_representation(&mut self) -> Option<&mut Representation> {
        self.last_set()?.representations.last_mut()
    }

    /// Every representation with its period and adaptation set.
    pub fn representations(
        &self,
    ) -> impl Iterator<Item = (&MpdPeriod, &AdaptationSet, &Representation)> {
        self.periods.iter().flat_map(|period| {
            period.adaptation_sets.iter().flat_map(move |set| {
                set.representations
                    .iter()
                    .map(move |representation| (period, set, representation))
            })
        })
    }
}

impl MpdPeriod {
    /// `Period@start` in seconds.
    pub fn start_secs(&self) -> anyhow::Result<f64> {
        iso_duration_secs(self.attrs.require("start")?)
    }

    /// The representation with `id`, if this period has one.
    pub fn representation(&self, id: &str) -> Option<&Representation> {
        self.adaptation_sets
            .iter()
            .flat_map(|set| &set.representations)
            .find(|r| r.attrs.get("id") == Some(id))
    }
}

impl Representation {
    pub fn id(&self) -> &str {
        self.attrs.get("id").unwrap_or_default()
    }

    pub fn template(&self) -> anyhow::Result<&SegmentTemplate> {
        self.template
            .as_ref()
            .ok_or_else(|| anyhow!("Representation {} has no SegmentTemplate", self.id()))
    }

    /// `SegmentTemplate@timescale` (1 when absent, as DASH says).
    pub fn timescale(&self) -> anyhow::Result<u64> {
        let template = self.template()?;
        match template.attrs.get("timescale") {
            Some(_) => template.attrs.number("timescale"),
            None => Ok(1),
        }
    }

    /// `SegmentTemplate@presentationTimeOffset` (0 when absent).
    pub fn presentation_time_offset(&self) -> anyhow::Result<u64> {
        let template = self.template()?;
        match template.attrs.get("presentationTimeOffset") {
            Some(_) => template.attrs.number("presentationTimeOffset"),
            None => Ok(0),
        }
    }

    /// The segments of the timeline, numbered from `startNumber` (1 when
    /// absent), with `r` expanded. Negative `r` is not supported.
    pub fn segments(&self) -> anyhow::Result<Vec<DashSegment>> {
        let template = self.template()?;
        let mut number = match template.attrs.get("startNumber") {
            Some(_) => template.attrs.number("startNumber")?,
            None => 1,
        };
        let mut next_t = 0;
        let mut segments = Vec::new();
        for entry in &template.timeline {
            ensure!(entry.r >= 0, "{}: negative S@r {entry:?}", self.id());
            let mut t = entry.t.unwrap_or(next_t);
            for _ in 0..=entry.r {
                segments.push(DashSegment {
                    number,
                    t,
                    d: entry.d,
                });
                number += 1;
                t += entry.d;
            }
            next_t = t;
        }
        Ok(segments)
    }

    /// The initialization URI, relative to the MPD.
    pub fn init_uri(&self) -> anyhow::Result<String> {
        let template = self.template()?;
        Ok(template
            .attrs
            .require("initialization")?
            .replace("$RepresentationID$", self.id()))
    }

    /// The URI of media segment `number`, relative to the MPD.
    pub fn media_uri(&self, number: u64) -> anyhow::Result<String> {
        let template = self.template()?;
        let media = template.attrs.require("media")?;
        ensure!(
            media.contains("$Number$"),
            "{}: media template {media:?} has no $Number$",
            self.id()
        );
        Ok(media
            .replace("$RepresentationID$", self.id())
            .replace("$Number$", &number.to_string()))
    }
}

/// GETs and scans an MPD (status 200 required).
pub fn fetch_mpd(url: &str) -> anyhow::Result<Mpd> {
    let response = get(url)?;
    ensure!(
        response.status == 200,
        "{url} answered {} {:?}",
        response.status,
        response.text()
    );
    Mpd::parse(&response.text()).with_context(|| format!("scan the MPD:\n{}", response.text()))
}

/// Polls an MPD until it answers 200. Every other answer on the way must be
/// 404 `STREAM_NOT_FOUND` (before the publish registers) or 503
/// `STREAM_STARTING` (live, no segment yet).
pub fn wait_for_mpd(url: &str, timeout: Duration) -> (Response, Mpd) {
    wait_until(&format!("200 from {url}"), timeout, || {
        let response = get(url)?;
        let code = response.error_code();
        match (response.status, code.as_deref()) {
            (200, _) => {
                let mpd = Mpd::parse(&response.text())
                    .unwrap_or_else(|e| panic!("{url}: {e:#}\n{}", response.text()));
                return Ok((response, mpd));
            }
            (404, Some("STREAM_NOT_FOUND")) | (503, Some("STREAM_STARTING")) => {}
            (status, _) => panic!("{url} answered {status}: {:?}", response.text()),
        }
        bail!("{} {:?}", response.status, response.text())
    })
}

/// Seconds in an ISO 8601 duration of the form `PnDTnHnMn.nS` (the subset
/// MPDs use; no years or months).
pub fn iso_duration_secs(text: &str) -> anyhow::Result<f64> {
    let bad = || anyhow!("{text:?} is not an ISO 8601 duration");
    let mut rest = text.strip_prefix('P').ok_or_else(bad)?;
    let mut secs = 0.0;
    let mut in_time = false;
    let mut seen_unit = false;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('T') {
            ensure!(!in_time, "{text:?}: two T");
            in_time = true;
            rest = after;
            continue;
        }
        let unit_at = rest
            .find(|c: char| c.is_ascii_alphabetic())
            .ok_or_else(bad)?;
        let value: f64 = rest[..unit_at].parse().map_err(|_| bad())?;
        let scale = match (in_time, &rest[unit_at..=unit_at]) {
            (false, "D") => 86_400.0,
            (true, "H") => 3_600.0,
            (true, "M") => 60.0,
            (true, "S") => 1.0,
            _ => return Err(bad()),
        };
        secs += value * scale;
        seen_unit = true;
        rest = &rest[unit_at + 1..];
    }
    ensure!(seen_unit, "{text:?}: no value");
    Ok(secs)
}

/// Milliseconds since the Unix epoch of a UTC time written
/// `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
pub fn utc_millis(text: &str) -> anyhow::Result<i64> {
    let bad = || anyhow!("{text:?} is not a UTC time YYYY-MM-DDTHH:MM:SS[.fff]Z");
    let body = text.strip_suffix('Z').ok_or_else(bad)?;
    let (date, clock) = body.split_once('T').ok_or_else(bad)?;
    let mut date_parts = date.split('-');
    let mut next_date = || -> anyhow::Result<i64> {
        date_parts
            .next()
            .ok_or_else(bad)?
            .parse()
            .map_err(|_| bad())
    };
    let (year, month, day) = (next_date()?, next_date()?, next_date()?);
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let hms: Vec<i64> = hms
        .split(':')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<anyhow::Result<_>>()?;
    ensure!(hms.len() == 3, "{text:?}: expected HH:MM:SS");
    ensure!(
        fraction.bytes().all(|b| b.is_ascii_digit()),
        "{text:?}: bad fraction"
    );
    let millis = format!("{fraction:0<3}")[..3].parse::<i64>().unwrap_or(0);

    let month = time::Month::try_from(u8::try_from(month)?)?;
    let date = time::Date::from_calendar_date(i32::try_from(year)?, month, u8::try_from(day)?)?;
    let time = time::Time::from_hms(
        u8::try_from(hms[0])?,
        u8::try_from(hms[1])?,
        u8::try_from(hms[2])?,
    )?;
    let seconds = time::PrimitiveDateTime::new(date, time)
        .assume_utc()
        .unix_timestamp();
    Ok(seconds * 1000 + millis)
}

/// Milliseconds since the Unix epoch, now, by the local clock.
pub fn now_millis() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since.as_millis()).expect("milliseconds fit in i64")
}

/// Runs ffprobe on a URL (an MPD, say) and returns its streams.
pub fn probe_url(url: &str) -> anyhow::Result<Probe> {
    ffprobe_json(
        Path::new(url),
        &["-rw_timeout", "10000000", "-show_streams"],
    )
}

/// Decodes a JPEG with ffprobe; returns its one video stream.
pub fn decode_jpeg(bytes: &[u8]) -> anyhow::Result<ProbeStream> {
    ensure!(
        bytes.starts_with(&[0xFF, 0xD8]) && bytes.ends_with(&[0xFF, 0xD9]),
        "not a complete JPEG ({} bytes, starts {:02X?})",
        bytes.len(),
        &bytes[..bytes.len().min(4)]
    );
    let mut file = tempfile::Builder::new()
        .prefix("bigfoot-thumbnail-")
        .suffix(".jpg")
        .tempfile()?;
    file.write_all(bytes)?;
    file.flush()?;
    let probe: Probe = ffprobe_json(file.path(), &["-count_frames", "-show_streams"])?;
    ensure!(
        probe.streams.len() == 1,
        "{} streams in a JPEG",
        probe.streams.len()
    );
    let stream = probe.streams.into_iter().next().expect("checked above");
    ensure!(
        stream.nb_read_frames.as_deref() == Some("1"),
        "decoded {:?} frames from the JPEG",
        stream.nb_read_frames
    );
    Ok(stream)
}

// ===========================================================================
// Signed playback URLs and the browser harness (used by
// tests/signed_urls.rs)
//
// Servers whose data directory outlives them (for restarts that must find
// the same secrets and sequence numbers), `bigfoot sign` against a running
// server, GETs from a chosen loopback address, and `tests/browser/play.mjs`.

impl Server {
    /// Starts `bigfoot serve` on `config` plus `extra_toml` (which must start
    /// with a table header, such as `[playback]`), with `data_dir` as the
    /// data directory. The caller owns `data_dir`, so a second server can
    /// start on it after this one is stopped.
    pub fn start_in_data_dir(config: &ServerConfig, data_dir: &Path, extra_toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary folder for the server");
        let text = format!("{}\n{extra_toml}", config.to_toml(data_dir));
        Self::start_with_text(dir, &text)
    }

    /// The config file the server runs on.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("bigfoot.toml")
    }

    /// Runs `bigfoot sign --config {this server's config} --stream {stream}
    /// --base-url http://{this server}` with `args` appended, and returns the
    /// URL it prints. Panics unless it exits 0 with exactly one line.
    pub fn sign(&self, stream: &str, args: &[&str]) -> String {
        let config = self.config_path().to_string_lossy().into_owned();
        let base = format!("http://{}", self.http_addr);
        let mut all = vec![
            "sign",
            "--config",
            config.as_str(),
            "--stream",
            stream,
            "--base-url",
            base.as_str(),
        ];
        all.extend_from_slice(args);
        let output = run_bigfoot(&all, Duration::from_secs(20));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "`bigfoot {}` failed ({}): {stderr}",
            all.join(" "),
            output.status
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "`bigfoot {}` printed {stdout:?} (stderr {stderr:?})",
            all.join(" ")
        );
        lines[0].trim().to_string()
    }
}

/// GETs `url` over a connection from the local address `local` (any
/// `127.0.0.0/8` address reaches a server on 127.0.0.1).
pub fn get_from(local: std::net::IpAddr, url: &str) -> anyhow::Result<Response> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .local_address(local)
        .build()
        .context("build an HTTP client")?;
    let response = client
        .get(url)
        .send()
        .with_context(|| format!("GET {url} from {local}"))?;
    read_response(url, response)
}

/// `tests/browser`, where `play.mjs` and its `node_modules` live.
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Fails (never skips) when the browser tooling is not installed.
pub fn require_browser_tooling() {
    const HOW: &str = "run scripts/setup to install chromium and tests/browser/node_modules";
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        node.is_ok_and(|status| status.success()),
        "`node` is not on PATH; install Node 20 or newer, then {HOW}"
    );
    let modules = browser_dir().join("node_modules");
    for package in ["puppeteer-core", "hls.js", "dashjs"] {
        assert!(
            modules.join(package).join("package.json").is_file(),
            "{} is missing; {HOW}",
            modules.join(package).display()
        );
    }
    assert!(
        Path::new("/usr/bin/chromium").is_file(),
        "/usr/bin/chromium is missing; {HOW}"
    );
}

/// Runs `node tests/browser/play.mjs --player {player} --url {url}
/// --seconds {seconds} --timeout {timeout_secs}` and returns the JSON line it
/// prints. Panics with its output when the harness itself broke (no JSON,
/// exit status 2, or running 15 s past its own deadline).
pub fn run_play_mjs(
    player: &str,
    url: &str,
    seconds: u32,
    timeout_secs: u64,
    screenshot: &Path,
) -> serde_json::Value {
    let mut child = Command::new("node")
        .arg(browser_dir().join("play.mjs"))
        .args(["--player", player, "--url", url])
        .args(["--seconds", &seconds.to_string()])
        .args(["--timeout", &timeout_secs.to_string()])
        .arg("--screenshot")
        .arg(screenshot)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node tests/browser/play.mjs");
    let stdout = read_in_thread(child.stdout.take().expect("piped stdout"));
    let stderr = read_in_thread(child.stderr.take().expect("piped stderr"));

    let limit = Duration::from_secs(timeout_secs + 15);
    let status = wait_timeout(&mut child, limit);
    if status.is_none() {
        // SIGTERM first: puppeteer then closes Chromium with it.
        send_signal(&child, "TERM");
        if wait_timeout(&mut child, Duration::from_secs(5)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let Some(status) = status else {
        panic!("play.mjs ran past {limit:?}\nstdout: {stdout}\nstderr: {stderr}");
    };
    let raw: serde_json::Value = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!("play.mjs ({status}) printed no JSON report\nstdout: {stdout}\nstderr: {stderr}")
        });
    assert!(
        status.success(),
        "play.mjs harness failure ({status}): {}\nstderr: {stderr}",
        raw.get("harnessError").unwrap_or(&raw)
    );
    raw
}

// ===========================================================================
// Encoder backends (used by tests/encoders.rs)
//
// Configs that set `transcode.encoder`, `transcode.fallback` and, for
// test-only backends, `transcode.pipelines_dir`, which `ServerConfig` writes
// with fixed values.

/// The encoder keys a test sets on top of a `ServerConfig`.
#[derive(Debug, Clone)]
pub struct EncoderSettings {
    /// `transcode.encoder`: a backend name or `auto`.
    pub encoder: String,
    /// `transcode.fallback`.
    pub fallback: bool,
    /// `transcode.pipelines_dir`; `None` keeps the shipped `pipelines/`.
    pub pipelines_dir: Option<PathBuf>,
}

impl EncoderSettings {
    pub fn new(encoder: &str, fallback: bool) -> Self {
        Self {
            encoder: encoder.to_string(),
            fallback,
            pipelines_dir: None,
        }
    }

    pub fn pipelines_dir(mut self, dir: &Path) -> Self {
        self.pipelines_dir = Some(dir.to_path_buf());
        self
    }

    /// `config`'s text with the encoder keys written into `[transcode]`.
    pub fn apply(&self, config: &ServerConfig, data_dir: &Path) -> String {
        let mut out = String::new();
        for line in config.to_toml(data_dir).lines() {
            match &self.pipelines_dir {
                Some(dir) if line.starts_with("pipelines_dir = ") => {
                    out.push_str("pipelines_dir = ");
                    out.push_str(&toml_string(&dir.to_string_lossy()));
                }
                _ => out.push_str(line),
            }
            out.push('\n');
            if line.trim() == "[transcode]" {
                out.push_str(&format!(
                    "encoder = {}\nfallback = {}\n",
                    toml_string(&self.encoder),
                    self.fallback
                ));
            }
        }
        out
    }

    /// Writes the config into a new temporary folder (data under `data/`);
    /// returns the folder and the config file's path.
    pub fn write(&self, config: &ServerConfig) -> (TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("create a temporary folder for the config");
        let path = dir.path().join("bigfoot.toml");
        let text = self.apply(config, &dir.path().join("data"));
        std::fs::write(&path, text).expect("write the test config");
        (dir, path)
    }
}

impl Server {
    /// Like `start`, with the encoder keys of `encoder` in the config.
    pub fn start_with_encoder(config: &ServerConfig, encoder: &EncoderSettings) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary folder for the server");
        let text = encoder.apply(config, &dir.path().join("data"));
        Self::start_with_text(dir, &text)
    }
}

/// Copies the shipped `pipelines/*.toml` into `dir`.
pub fn copy_shipped_pipelines(dir: &Path) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    for entry in std::fs::read_dir(&shipped).expect("read pipelines/") {
        let path = entry.expect("pipelines/ entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("toml") {
            let name = path.file_name().expect("file name");
            std::fs::copy(&path, dir.join(name)).expect("copy a pipeline description");
        }
    }
}

/// Whether GStreamer on this box has the element `factory`.
pub fn gst_element_exists(factory: &str) -> bool {
    Command::new("gst-inspect-1.0")
        .args(["--exists", factory])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ===========================================================================
// Control API (used by tests/api.rs)
//
// JSON calls with a bearer token from a chosen loopback address, tokens from
// `bigfoot token` or signed here with chosen claims, and an RSA key with its
// JWKS file made by `openssl`.

impl Server {
    /// `http://127.0.0.1:PORT/api/v1{path}`.
    pub fn api_url(&self, path: &str) -> String {
        self.http_url(&format!("/api/v1{path}"))
    }

    /// An HS256 token from `bigfoot token --role ROLE --subject SUBJECT` on
    /// this server's config.
    pub fn token(&self, role: &str, subject: &str) -> String {
        let config = self.config_path().to_string_lossy().into_owned();
        let args = [
            "token",
            "--config",
            config.as_str(),
            "--role",
            role,
            "--subject",
            subject,
            "--ttl",
            "600",
        ];
        let output = run_bigfoot(&args, Duration::from_secs(20));
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
        assert!(
            output.status.success() && stdout.split('.').count() == 3,
            "`bigfoot {}` failed ({}): {stdout:?} {:?}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

/// Sends an API request: `method` to `url`, with `Authorization: Bearer
/// {token}` when given and a JSON `body` when given.
pub fn api_call(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> Response {
    api_call_from(None, method, url, token, body)
}

/// Like `api_call`, over a connection from the local address `local`.
pub fn api_call_from(
    local: Option<std::net::IpAddr>,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Response {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(15))
        .no_proxy()
        .local_address(local)
        .build()
        .expect("build an HTTP client");
    let method_value = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut request = client.request(method_value, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request
        .send()
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_string(), value)
        })
        .collect();
    let body = response
        .bytes()
        .unwrap_or_else(|e| panic!("read the body of {method} {url}: {e}"))
        .to_vec();
    Response {
        url: format!("{method} {url}"),
        status,
        headers,
        body,
    }
}

impl Response {
    /// The envelope's `data` of a 2xx answer; panics with the body unless
    /// the status is `status` and the envelope is well formed.
    pub fn data(&self, status: u16) -> serde_json::Value {
        assert_eq!(self.status, status, "{} answered {}", self.url, self.text());
        let json = self.json().unwrap_or_else(|e| panic!("{e:#}"));
        check_envelope(self, &json);
        json["data"].clone()
    }

    /// The error `code`; panics unless the status is `status` and the error
    /// body is well formed.
    pub fn api_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{} answered {}", self.url, self.text());
        let json = self.json().unwrap_or_else(|e| panic!("{e:#}"));
        let request_id = self.header("x-request-id").unwrap_or_default();
        assert!(!request_id.is_empty(), "{} has no X-Request-Id", self.url);
        assert_eq!(json["requestId"], request_id, "{}: {json}", self.url);
        assert!(json["message"].is_string(), "{}: {json}", self.url);
        assert!(json["timestamp"].is_string(), "{}: {json}", self.url);
        json["code"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no code in {json}", self.url))
            .to_string()
    }

    /// `details.reason` of an auth error.
    pub fn auth_reason(&self) -> String {
        let json = self.json().unwrap_or_default();
        json["details"]["reason"].as_str().unwrap_or("").to_string()
    }
}

/// Panics unless `json` is `{data, meta: {timestamp, requestId}}` with the
/// response's `X-Request-Id`.
pub fn check_envelope(response: &Response, json: &serde_json::Value) {
    let request_id = response.header("x-request-id").unwrap_or_default();
    assert!(
        !request_id.is_empty(),
        "{} has no X-Request-Id",
        response.url
    );
    assert!(
        json.get("data").is_some(),
        "{}: no data in {json}",
        response.url
    );
    assert_eq!(
        json["meta"]["requestId"], request_id,
        "{}: {json}",
        response.url
    );
    let timestamp = json["meta"]["timestamp"].as_str().unwrap_or("");
    assert!(
        utc_millis(timestamp).is_ok(),
        "{}: meta.timestamp {timestamp:?}",
        response.url
    );
}

/// Base64url without padding, as JWTs and JWKS use.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// A JWT with `"alg": "none"` and an empty signature.
pub fn unsigned_jwt(claims: &serde_json::Value) -> String {
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64url(claims.to_string().as_bytes());
    format!("{header}.{payload}.")
}

/// Signs `claims` with `key` as `alg`, naming `kid` in the header.
pub fn sign_jwt(
    alg: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
    kid: Option<&str>,
    claims: &serde_json::Value,
) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).expect("sign a test JWT")
}

/// Seconds since the Unix epoch, now.
pub fn unix_secs() -> i64 {
    now_millis() / 1000
}

/// An RSA key made by `openssl genrsa`, with a JWKS file that lists its
/// public half under `kid`.
pub struct RsaTestKey {
    pub private_pem: Vec<u8>,
    pub public_pem: Vec<u8>,
    pub jwks_path: PathBuf,
    pub kid: String,
    _dir: TempDir,
}

impl RsaTestKey {
    pub fn generate(kid: &str) -> Self {
        let dir = tempfile::tempdir().expect("a folder for the RSA key");
        let key = dir.path().join("key.pem");
        let key_arg = key.to_string_lossy().into_owned();
        let openssl = |args: &[&str]| -> Vec<u8> {
            let output = Command::new("openssl")
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("run openssl {}: {e}", args.join(" ")));
            assert!(
                output.status.success(),
                "openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
            output.stdout
        };
        openssl(&["genrsa", "-out", &key_arg, "2048"]);
        let public_pem = openssl(&["rsa", "-in", &key_arg, "-pubout"]);
        let modulus = String::from_utf8(openssl(&["rsa", "-in", &key_arg, "-noout", "-modulus"]))
            .expect("openssl prints text");
        let hex = modulus
            .trim()
            .strip_prefix("Modulus=")
            .expect("openssl -modulus prints Modulus=HEX");
        let n: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex modulus"))
            .collect();
        let jwks = serde_json::json!({ "keys": [{
            "kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
            "n": base64url(&n), "e": "AQAB",
        }]});
        let jwks_path = dir.path().join("jwks.json");
        std::fs::write(&jwks_path, jwks.to_string()).expect("write the JWKS file");
        Self {
            private_pem: std::fs::read(&key).expect("read the RSA key"),
            public_pem,
            jwks_path,
            kid: kid.to_string(),
            _dir: dir,
        }
    }

    /// The private key for signing RS256 test tokens.
    pub fn encoding_key(&self) -> jsonwebtoken::EncodingKey {
        jsonwebtoken::EncodingKey::from_rsa_pem(&self.private_pem).expect("an RSA PEM key")
    }
}

/// Sends `body` with chunked transfer encoding (no `Content-Length`) over a
/// plain socket; returns the status.
pub fn post_chunked(addr: SocketAddr, path: &str, token: &str, body: &[u8]) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
    )?;
    // The server may answer 413 and close before the whole body is sent, so
    // write errors end the body rather than the call.
    for chunk in body.chunks(1024) {
        let sent = write!(stream, "{:x}\r\n", chunk.len())
            .and_then(|()| stream.write_all(chunk))
            .and_then(|()| write!(stream, "\r\n"));
        if sent.is_err() {
            break;
        }
    }
    let _ = write!(stream, "0\r\n\r\n");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let head = String::from_utf8_lossy(&reply);
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:?}"))
}

pub mod rtmp_client;

// ---------------------------------------------------------------------------
// Event tests: keys added to the `[ingest]` table `ServerConfig` writes, for
// the `on_publish` hook.

impl Server {
    /// Like `start_in_data_dir`, with `ingest_toml` (lines such as
    /// `on_publish_url = "..."`) added to the `[ingest]` table.
    pub fn start_with_ingest_toml(
        config: &ServerConfig,
        data_dir: &Path,
        ingest_toml: &str,
        extra_toml: &str,
    ) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary folder for the server");
        let text = config.to_toml(data_dir).replacen(
            "[ingest]\n",
            &format!("[ingest]\n{ingest_toml}\n"),
            1,
        );
        let text = format!("{text}\n{extra_toml}\n");
        Self::start_with_text(dir, &text)
    }
}
