//! Signed, expiring playback URLs against a real server: a client that
//! follows one `bigfoot sign` URL through every playlist and segment until
//! it expires, every token and path attack with its error code, key
//! rotation across restarts, client-IP binding, and hls.js in headless
//! Chromium playing from a signed URL.
//!
//! Run them one at a time (`--test-threads=1`): each pushes live video on
//! two cores. The hls.js test needs the browser tooling of
//! `tests/players.rs` and fails, never skips, without it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::ensure;
use common::{
    Response, Server, ServerConfig, get, get_from, get_ok, parse_master, parse_media,
    publish_ffmpeg, raw_get, require_browser_tooling, resolve, run_play_mjs, wait_for_master,
    wait_until,
};

/// From publish to a master playlist that answers 200.
const READY_TIMEOUT: Duration = Duration::from_secs(40);
/// Every push is short: the server keeps the window after it ends.
const PUBLISH_SECS: f64 = 15.0;
/// `default_ttl_secs` of the expiry test.
const SHORT_TTL_SECS: u64 = 12;
/// One transcoded rung beside the passthrough: a real ladder, cheap on two
/// cores.
const ONE_RUNG: &str = r#"[{ name = "240p", height = 240, video_kbps = 300 }]"#;

const K1_SECRET: &str = "k1: thirty-two bytes or more of signing secret";
const K2_SECRET: &str = "k2: a second, different signing secret for rotation";

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const OTHER_LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

// ---------------------------------------------------------------------------
// Config

/// A `[playback]` table that requires signed URLs, with `keys` as
/// `(id, secret)` pairs (none: the server generates one) and `more` lines.
fn playback_toml(keys: &[(&str, &str)], active: &str, more: &str) -> String {
    let mut text = String::from("[playback]\nrequire_signed_urls = true\n");
    if !keys.is_empty() {
        let list: Vec<String> = keys
            .iter()
            .map(|(id, secret)| format!("{{ id = \"{id}\", secret = \"{secret}\" }}"))
            .collect();
        text.push_str(&format!("signing_keys = [{}]\n", list.join(", ")));
    }
    if !active.is_empty() {
        text.push_str(&format!("signing_key_id = \"{active}\"\n"));
    }
    text.push_str(more);
    text
}

/// A live `cam1` on a server that requires signed URLs, publishing
/// `PUBLISH_SECS` of 640x360.
fn live_signed_server(
    config: &ServerConfig,
    data_dir: &Path,
    playback: &str,
) -> (Server, common::Publisher) {
    let server = Server::start_in_data_dir(config, data_dir, playback);
    let publisher = publish_ffmpeg(&server.rtmp_url("secretkey1"), PUBLISH_SECS, 640, 360);
    (server, publisher)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

// ---------------------------------------------------------------------------
// Tokens

/// The parts of a token as `bigfoot sign` prints it.
#[derive(Debug, Clone)]
struct Token {
    text: String,
    key: String,
    expires: u64,
    scope: String,
    tag: String,
    mac: String,
}

impl Token {
    /// Splits `http://{server}/p/{token}/live/{stream}/{file}` and checks
    /// the token's layout.
    fn from_url(server: &Server, url: &str, stream: &str, file: &str) -> Self {
        let text = url
            .strip_prefix(&server.http_url("/p/"))
            .and_then(|rest| rest.strip_suffix(&format!("/live/{stream}/{file}")))
            .unwrap_or_else(|| panic!("{url:?} is not /p/{{token}}/live/{stream}/{file}"));
        let parts: Vec<&str> = text.split('.').collect();
        let [key, expires, scope, tag, mac] = parts.as_slice() else {
            panic!("token {text:?} does not have five dot-separated parts");
        };
        let lower_hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        assert!(
            tag.len() == 8 && lower_hex(tag) && mac.len() == 64 && lower_hex(mac),
            "token {text:?}: stream tag or MAC is not lowercase hex of 8 and 64 digits"
        );
        Self {
            text: text.to_string(),
            key: key.to_string(),
            expires: expires
                .parse()
                .unwrap_or_else(|_| panic!("token {text:?}: expiry is not a number")),
            scope: scope.to_string(),
            tag: tag.to_string(),
            mac: mac.to_string(),
        }
    }

    /// The token with its parts replaced.
    fn with(&self, key: &str, expires: &str, scope: &str, tag: &str, mac: &str) -> String {
        format!("{key}.{expires}.{scope}.{tag}.{mac}")
    }
}

/// `http://{server}/p/{token}{path}`.
fn signed_url(server: &Server, token: &str, path: &str) -> String {
    server.http_url(&format!("/p/{token}{path}"))
}

fn fetch(url: &str) -> Response {
    get(url).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Asserts a JSON refusal: `status`, `code`, a message, a JSON type.
fn assert_refused(response: &Response, status: u16, code: &str) {
    let context = format!(
        "GET {} answered {} {:?}",
        response.url,
        response.status,
        response.text()
    );
    assert_eq!(response.status, status, "{context}; wanted {status} {code}");
    let json = response
        .json()
        .unwrap_or_else(|e| panic!("{context}: {e:#}"));
    assert_eq!(json["code"].as_str(), Some(code), "{context}");
    assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{context}: no message"
    );
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{context}: content-type {content_type:?}"
    );
}

// ---------------------------------------------------------------------------
// Following a signed master playlist

/// A player that fetches everything below one signed prefix and remembers
/// what it fetched.
struct SignedClient {
    /// `http://{server}/p/{token}/live/{stream}/`.
    prefix: String,
    expires: u64,
    /// Media playlist URL of each rendition.
    playlists: BTreeMap<String, String>,
    /// Init and segment URLs fetched, with their bodies' lengths.
    files: BTreeMap<String, usize>,
}

impl SignedClient {
    /// GETs `url`, which must lie under the prefix. Near the expiry either
    /// answer is right; clearly before it must be 200, clearly after it 403
    /// `TOKEN_EXPIRED`. Returns `None` once expired.
    fn fetch(&self, url: &str) -> Option<Response> {
        assert!(
            url.starts_with(&self.prefix),
            "{url} left the signed prefix {}",
            self.prefix
        );
        let before = unix_now();
        let response = fetch(url);
        let after = unix_now();
        if response.status == 200 {
            assert!(
                before <= self.expires,
                "GET {url} answered 200 at {before}, after the token expired at {}",
                self.expires
            );
            return Some(response);
        }
        assert!(
            after > self.expires,
            "GET {url} was refused at {after}, before the token expires at {}: {} {:?}",
            self.expires,
            response.status,
            response.text()
        );
        assert_refused(&response, 403, "TOKEN_EXPIRED");
        None
    }

    /// Fetches the master playlist and every media playlist it names, with
    /// every init and media segment listed. Returns the master's body.
    fn follow_master(&mut self, master_url: &str) -> Vec<u8> {
        let response = self.fetch(master_url).expect("the master before expiry");
        let master = parse_master(&response.body).unwrap_or_else(|e| panic!("{e:#}"));
        let uris = master
            .variants
            .iter()
            .filter(|v| !v.is_i_frame)
            .map(|v| v.uri.clone())
            .chain(master.alternatives.iter().filter_map(|a| a.uri.clone()));
        for uri in uris {
            let url = resolve(master_url, &uri);
            let rendition = url
                .strip_prefix(&self.prefix)
                .and_then(|rest| rest.strip_suffix("/index.m3u8"))
                .unwrap_or_else(|| panic!("{uri:?} resolves to {url}, outside {}", self.prefix))
                .to_string();
            self.playlists.insert(rendition, url);
        }
        for url in self.playlists.clone().values() {
            let fetched = self.fetch_new_files(url);
            assert!(fetched > 0, "{url} listed no segment");
        }
        response.body
    }

    /// Fetches a media playlist and every init and segment it lists that was
    /// not fetched yet. Returns how many were new; `None` once expired.
    fn poll_playlist(&mut self, url: &str) -> Option<usize> {
        let response = self.fetch(url)?;
        let playlist = parse_media(&response.body).unwrap_or_else(|e| panic!("{e:#}"));
        let mut new = 0;
        for segment in &playlist.segments {
            let map = segment.map.as_ref().map(|m| m.uri.clone());
            for uri in map.into_iter().chain([segment.uri.clone()]) {
                let file = resolve(url, &uri);
                if self.files.contains_key(&file) {
                    continue;
                }
                let body = self.fetch(&file)?.body;
                assert!(!body.is_empty(), "{file} is empty");
                self.files.insert(file, body.len());
                new += 1;
            }
        }
        Some(new)
    }

    fn fetch_new_files(&mut self, url: &str) -> usize {
        self.poll_playlist(url).expect("a playlist before expiry")
    }
}

/// A player follows one signed URL: the master, every media playlist, init
/// and segment through relative URIs, new segments while live, then 403
/// `TOKEN_EXPIRED` for all of it once the token expires.
#[test]
fn player_follows_one_signed_url_until_it_expires() {
    let data = tempfile::tempdir().expect("tempdir");
    let playback = playback_toml(
        &[("k1", K1_SECRET)],
        "k1",
        &format!("default_ttl_secs = {SHORT_TTL_SECS}\nclock_leeway_secs = 0\n"),
    );
    let config = ServerConfig::default().ladder(ONE_RUNG);
    let (server, _publisher) = live_signed_server(&config, data.path(), &playback);

    let health = get_ok(&server.http_url("/healthz"));
    assert!(
        health.text().contains(r#""status":"ok""#),
        "/healthz without a token: {:?}",
        health.text()
    );
    assert_refused(
        &fetch(&server.master_url("cam1")),
        403,
        "SIGNATURE_REQUIRED",
    );
    assert_refused(
        &fetch(&server.http_url("/live/cam1/source/0.m4s")),
        403,
        "SIGNATURE_REQUIRED",
    );

    let long_lived = server.sign("cam1", &["--ttl", "300"]);
    wait_for_master(&long_lived, READY_TIMEOUT);

    let started = Instant::now();
    let master_url = server.sign("cam1", &[]);
    let token = Token::from_url(&server, &master_url, "cam1", "master.m3u8");
    let now = unix_now();
    assert_eq!((token.key.as_str(), token.scope.as_str()), ("k1", "p"));
    assert!(
        (now + SHORT_TTL_SECS - 2..=now + SHORT_TTL_SECS).contains(&token.expires),
        "expiry {} is not default_ttl_secs ({SHORT_TTL_SECS}) after {now}",
        token.expires
    );
    let mut client = SignedClient {
        prefix: signed_url(&server, &token.text, "/live/cam1/"),
        expires: token.expires,
        playlists: BTreeMap::new(),
        files: BTreeMap::new(),
    };
    client.follow_master(&master_url);
    let names: Vec<&str> = client.playlists.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["240p", "audio", "source"],
        "renditions in the master"
    );
    let initial = client.files.len();

    // Poll like a live player until the token expires.
    let mut polls = 0;
    let mut expired_at = None;
    'polling: while expired_at.is_none() {
        for url in client.playlists.clone().values() {
            if client.poll_playlist(url).is_none() {
                expired_at = Some(unix_now());
                continue 'polling;
            }
        }
        polls += 1;
        assert!(
            started.elapsed() < Duration::from_secs(SHORT_TTL_SECS + 10),
            "still served {:?} after the token's lifetime",
            started.elapsed()
        );
        thread::sleep(Duration::from_millis(700));
    }
    let during = client.files.len() - initial;
    assert!(
        during >= 1,
        "no new segment appeared in {polls} polls of a live stream"
    );
    while unix_now() <= token.expires {
        thread::sleep(Duration::from_millis(100));
    }

    // Everything under the expired prefix is refused the same way.
    let file = client.files.keys().next_back().expect("a file").clone();
    let playlist = client.playlists["source"].clone();
    let init = client
        .files
        .keys()
        .find(|f| f.ends_with(".mp4"))
        .expect("an init")
        .clone();
    for url in [&master_url, &playlist, &file, &init] {
        assert_refused(&fetch(url), 403, "TOKEN_EXPIRED");
    }
    let fresh = file.replacen(
        &token.text,
        &Token::from_url(&server, &long_lived, "cam1", "master.m3u8").text,
        1,
    );
    let again = get_ok(&fresh);
    assert_eq!(
        again.body.len(),
        client.files[&file],
        "the same segment under a valid token"
    );
    eprintln!(
        "followed {} playlists, {initial} files at first and {during} more in {polls} polls; \
         refused from {expired_at:?} (expiry {})",
        client.playlists.len(),
        token.expires
    );
}

// ---------------------------------------------------------------------------
// Attacks

/// Polls a thumbnail URL until it answers 200; the answers on the way must
/// be 404 `THUMBNAIL_NOT_AVAILABLE`.
fn wait_for_thumbnail(url: &str) -> Response {
    wait_until("a thumbnail", READY_TIMEOUT, || {
        let response = get(url)?;
        if response.status != 200 {
            assert_refused(&response, 404, "THUMBNAIL_NOT_AVAILABLE");
        }
        ensure!(response.status == 200, "{}", response.text());
        Ok(response)
    })
}

/// Each token attack answers 403 with its own code; each path attack 400 or
/// 404 JSON, with and without a valid token in front; thumbnail tokens open
/// only the thumbnail.
#[test]
fn each_token_and_path_attack_is_refused_with_its_code() {
    let data = tempfile::tempdir().expect("tempdir");
    let (server, _publisher) = live_signed_server(
        &ServerConfig::passthrough_only(),
        data.path(),
        &playback_toml(&[], "", ""),
    );
    assert!(
        data.path().join("secrets.json").is_file(),
        "no generated secrets.json in the data directory"
    );

    let master_url = server.sign("cam1", &[]);
    let token = Token::from_url(&server, &master_url, "cam1", "master.m3u8");
    assert_eq!(token.key, "auto", "the generated key's id");
    let master = wait_for_master(&master_url, READY_TIMEOUT);
    let media = parse_master(&master.body).expect("master").variants[0]
        .uri
        .clone();
    let media_path = format!("/live/cam1/{media}");
    let playlist = parse_media(&fetch(&signed_url(&server, &token.text, &media_path)).body)
        .expect("media playlist");
    let segment_path = media_path.replace("index.m3u8", &playlist.segments[0].uri);
    get_ok(&signed_url(&server, &token.text, &segment_path));

    check_token_attacks(&server, &token, &segment_path);
    check_scopes(&server, &token, &media_path, &segment_path);
    check_dash(&server);
    check_path_attacks(&server, &token.text);
}

fn check_token_attacks(server: &Server, token: &Token, segment_path: &str) {
    let t = token;
    let later = (t.expires + 3600).to_string();
    let expires = t.expires.to_string();
    let mut flipped_last = t.mac.clone().into_bytes();
    flipped_last[63] = if flipped_last[63] == b'0' { b'1' } else { b'0' };
    let flipped_last = String::from_utf8(flipped_last).expect("ascii");
    let flipped_first = format!(
        "{}{}",
        if t.mac.starts_with('f') { 'e' } else { 'f' },
        &t.mac[1..]
    );
    let invalid = vec![
        t.with(&t.key, &later, "p", &t.tag, &t.mac),
        t.with(&t.key, "1", "p", &t.tag, &t.mac),
        t.with(&t.key, &expires, "p", &t.tag, &flipped_last),
        t.with(&t.key, &expires, "p", &t.tag, &flipped_first),
        t.with(&t.key, &expires, "pi", &t.tag, &t.mac),
    ];
    let unknown_key = vec![t.with("k9", &expires, "p", &t.tag, &t.mac)];
    let malformed = vec![
        "token".to_string(),
        "auto.1".to_string(),
        format!("{}.ab", t.text),
        format!("{}.", t.text),
        t.with("", &expires, "p", &t.tag, &t.mac),
        t.with(&t.key, "12x4", "p", &t.tag, &t.mac),
        t.with(&t.key, &"9".repeat(21), "p", &t.tag, &t.mac),
        t.with(&t.key, &"9".repeat(20), "p", &t.tag, &t.mac),
        t.with(&t.key, &expires, "q", &t.tag, &t.mac),
        t.with(&t.key, &expires, "p", &t.tag[1..], &t.mac),
        t.with(&t.key, &expires, "p", &t.tag, &t.mac[1..]),
        t.with(&t.key, &expires, "p", &t.tag, &format!("{}0", t.mac)),
        t.with(&t.key, &expires, "p", &t.tag, &"g".repeat(64)),
    ];
    let cases = [
        ("TOKEN_INVALID", invalid),
        ("TOKEN_UNKNOWN_KEY", unknown_key),
        ("TOKEN_MALFORMED", malformed),
    ];
    for (code, tokens) in &cases {
        for bad in tokens {
            for path in ["/live/cam1/master.m3u8", segment_path] {
                let response = fetch(&signed_url(server, bad, path));
                assert!(
                    response.status == 403 && response.error_code().as_deref() == Some(code),
                    "/p/{bad}{path} answered {} {:?}, wanted 403 {code}",
                    response.status,
                    response.text()
                );
            }
        }
    }

    for path in [
        "/live/cam2/master.m3u8",
        "/live/cam2/source/0.m4s",
        "/live/nosuch/master.m3u8",
    ] {
        assert_refused(
            &fetch(&signed_url(server, &t.text, path)),
            403,
            "TOKEN_WRONG_STREAM",
        );
    }
}

fn check_scopes(server: &Server, token: &Token, media_path: &str, segment_path: &str) {
    let thumbnail_url = server.sign("cam1", &["--thumbnail"]);
    let thumb = Token::from_url(server, &thumbnail_url, "cam1", "thumbnail.jpg");
    assert_eq!(thumb.scope, "t");
    let jpeg = wait_for_thumbnail(&thumbnail_url);
    assert!(
        jpeg.body.starts_with(&[0xFF, 0xD8]) && jpeg.header("content-type") == Some("image/jpeg"),
        "thumbnail {:?} with {} bytes",
        jpeg.header("content-type"),
        jpeg.body.len()
    );
    for path in [
        "/live/cam1/master.m3u8",
        "/live/cam1/manifest.mpd",
        media_path,
        segment_path,
    ] {
        assert_refused(
            &fetch(&signed_url(server, &thumb.text, path)),
            403,
            "TOKEN_WRONG_SCOPE",
        );
    }
    let playback = get_ok(&signed_url(server, &token.text, "/live/cam1/thumbnail.jpg"));
    assert!(
        playback.body.starts_with(&[0xFF, 0xD8]),
        "playback scope opens the thumbnail"
    );
    assert_refused(
        &fetch(&server.http_url("/live/cam1/thumbnail.jpg")),
        403,
        "SIGNATURE_REQUIRED",
    );
    assert_refused(
        &fetch(&signed_url(server, &thumb.text, "/live/cam2/thumbnail.jpg")),
        403,
        "TOKEN_WRONG_STREAM",
    );
}

/// A `--dash` URL opens the MPD, and its relative templates keep the token.
fn check_dash(server: &Server) {
    let url = server.sign("cam1", &["--dash"]);
    let token = Token::from_url(server, &url, "cam1", "manifest.mpd");
    let mpd = common::fetch_mpd(&url).unwrap_or_else(|e| panic!("{e:#}"));
    let (_, _, representation) = mpd.representations().next().expect("a representation");
    let segments = representation.segments().expect("a timeline");
    let last = segments.last().expect("a segment").number;
    let uris = [
        representation.init_uri().expect("init"),
        representation.media_uri(last).expect("media"),
    ];
    let prefix = signed_url(server, &token.text, "/live/cam1/");
    for uri in uris {
        let file = resolve(&url, &uri);
        assert!(file.starts_with(&prefix), "{uri:?} resolves to {file}");
        get_ok(&file);
    }
    let clock = mpd
        .utc_timings
        .first()
        .and_then(|t| t.get("value"))
        .expect("UTCTiming");
    get_ok(clock);
}

/// Sends hostile paths over a raw socket, bare and under `/p/{token}`.
fn check_path_attacks(server: &Server, token: &str) {
    let long = "a".repeat(300);
    // Just under the 65534-byte URI limit of the `http` crate, so the router
    // sees it; longer URIs are checked below.
    let huge = "a".repeat(65_000);
    let paths = [
        "/live/../live/cam1/master.m3u8".to_string(),
        "/live/cam1/../../../../etc/passwd".to_string(),
        "/live/cam1/source/../../../secrets.json".to_string(),
        "/live/%2e%2e/%2e%2e/etc/passwd".to_string(),
        "/live/cam1/%2e%2e/%2e%2e/secrets.json".to_string(),
        "/live/cam1%2fmaster.m3u8".to_string(),
        "/live/cam1/source%2f0.m4s".to_string(),
        "//live/cam1/master.m3u8".to_string(),
        "/live//cam1/master.m3u8".to_string(),
        "/live/cam1//master.m3u8".to_string(),
        "/live\\cam1\\master.m3u8".to_string(),
        "/live/cam1/..\\..\\secrets.json".to_string(),
        "/live/cam1%00/master.m3u8".to_string(),
        "/live/cam1/master.m3u8%00.jpg".to_string(),
        "/live/CAM1/master.m3u8".to_string(),
        "/LIVE/cam1/master.m3u8".to_string(),
        "/live/cam1/SOURCE/index.m3u8".to_string(),
        format!("/live/{long}/master.m3u8"),
        format!("/live/cam1/{long}/index.m3u8"),
        format!("/live/cam1/source/{long}.m4s"),
        format!("/live/{huge}/master.m3u8"),
    ];
    let upper = token.to_ascii_uppercase();
    let prefixed = [
        format!("/p/{upper}/live/cam1/master.m3u8"),
        format!("/p/{token}%2e/live/cam1/master.m3u8"),
        format!("/p/..%2f{token}/live/cam1/master.m3u8"),
        "/p/../live/cam1/master.m3u8".to_string(),
        "/p//live/cam1/master.m3u8".to_string(),
        format!("/p/{long}/live/cam1/master.m3u8"),
        format!("/p/{huge}/live/cam1/master.m3u8"),
        format!("/p/{token}"),
        format!("/p/{token}/healthz"),
    ];
    let mut answers = Vec::new();
    for path in paths
        .iter()
        .flat_map(|p| [p.clone(), format!("/p/{token}{p}")])
    {
        answers.push((path.clone(), raw_get(server.http_addr, &path)));
    }
    for path in prefixed {
        answers.push((path.clone(), raw_get(server.http_addr, &path)));
    }
    let mut wrong = Vec::new();
    for (path, answer) in answers {
        let shown = if path.len() > 120 {
            format!("{}...({} bytes)", &path[..100], path.len())
        } else {
            path.clone()
        };
        match answer {
            Ok((status, body)) => {
                let code = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|json| json["code"].as_str().map(str::to_string));
                if !matches!(status, 400 | 404) || code.is_none() {
                    wrong.push(format!(
                        "{shown} -> {status} {:?}",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    ));
                }
            }
            Err(e) => wrong.push(format!("{shown} -> no answer: {e:#}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "hostile paths not refused with a 400 or 404 JSON error:\n{}",
        wrong.join("\n")
    );

    // hyper answers these itself, before any route: 400 for a raw NUL and
    // 414 for a URI over 65534 bytes, both with an empty body. A JSON 400 or
    // 404 from the router would be as good.
    let over = "a".repeat(64 * 1024);
    let before_routing = [
        ("/live/cam1\0/master.m3u8".to_string(), 400),
        (format!("/live/{over}/master.m3u8"), 414),
        (format!("/p/{token}/live/{over}/master.m3u8"), 414),
        (format!("/p/{over}/live/cam1/master.m3u8"), 414),
    ];
    for (path, hyper_status) in before_routing {
        let (status, body) = raw_get(server.http_addr, &path).expect("an answer");
        let json_code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .is_some_and(|json| json["code"].is_string());
        assert!(
            (status == hyper_status && body.is_empty())
                || (matches!(status, 400 | 404) && json_code),
            "{}... ({} bytes) answered {status} {:?}",
            &path[..path.len().min(60)],
            path.len(),
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
    }
}

// ---------------------------------------------------------------------------
// Key rotation and client binding

/// Old URLs keep working while their key is listed, new URLs use the new
/// key, and a retired key's URLs are refused as unknown.
#[test]
fn key_rotation_across_restarts() {
    let data = tempfile::tempdir().expect("tempdir");
    let config = ServerConfig::passthrough_only();
    let both = [("k1", K1_SECRET), ("k2", K2_SECRET)];

    let mut first =
        Server::start_in_data_dir(&config, data.path(), &playback_toml(&both, "k1", ""));
    let old = Token::from_url(
        &first,
        &first.sign("cam1", &["--ttl", "600"]),
        "cam1",
        "master.m3u8",
    );
    assert_eq!(old.key, "k1");
    // Authorised, so the answer is about the stream, not the token.
    assert_refused(
        &fetch(&signed_url(&first, &old.text, "/live/cam1/master.m3u8")),
        404,
        "STREAM_NOT_FOUND",
    );
    first.stop_and_wait();
    drop(first);

    let (mut second, mut publisher) =
        live_signed_server(&config, data.path(), &playback_toml(&both, "k2", ""));
    let new_url = second.sign("cam1", &["--ttl", "600"]);
    let new = Token::from_url(&second, &new_url, "cam1", "master.m3u8");
    assert_eq!(new.key, "k2", "the active key signs new URLs");
    wait_for_master(&new_url, READY_TIMEOUT);
    let old_master = signed_url(&second, &old.text, "/live/cam1/master.m3u8");
    let master = parse_master(&get_ok(&old_master).body).expect("master");
    let media_url = resolve(&old_master, &master.variants[0].uri);
    let playlist = parse_media(&get_ok(&media_url).body).expect("media playlist");
    let segment = playlist.segments.last().expect("a segment");
    get_ok(&resolve(&media_url, &segment.uri));
    publisher.kill();
    second.stop_and_wait();
    drop(second);

    let third =
        Server::start_in_data_dir(&config, data.path(), &playback_toml(&both[1..], "k2", ""));
    assert_refused(
        &fetch(&signed_url(&third, &old.text, "/live/cam1/master.m3u8")),
        403,
        "TOKEN_UNKNOWN_KEY",
    );
    assert_refused(
        &fetch(&signed_url(&third, &new.text, "/live/cam1/master.m3u8")),
        404,
        "STREAM_NOT_FOUND",
    );
    let newest = Token::from_url(&third, &third.sign("cam1", &[]), "cam1", "master.m3u8");
    assert_eq!(newest.key, "k2");
}

/// A URL bound to a client address opens only from that address.
#[test]
fn client_ip_binding() {
    let data = tempfile::tempdir().expect("tempdir");
    let (server, _publisher) = live_signed_server(
        &ServerConfig::passthrough_only(),
        data.path(),
        &playback_toml(&[("k1", K1_SECRET)], "k1", ""),
    );
    wait_for_master(&server.sign("cam1", &[]), READY_TIMEOUT);

    let for_one = server.sign("cam1", &["--client-ip", "127.0.0.1"]);
    let for_two = server.sign("cam1", &["--client-ip", "127.0.0.2"]);
    let one = Token::from_url(&server, &for_one, "cam1", "master.m3u8");
    let two = Token::from_url(&server, &for_two, "cam1", "master.m3u8");
    assert_eq!((one.scope.as_str(), two.scope.as_str()), ("pi", "pi"));

    let master = get_from(LOCALHOST, &for_one).expect("GET");
    assert_eq!(master.status, 200, "{:?}", master.text());
    let first = parse_master(&master.body).expect("master").variants[0]
        .uri
        .clone();
    let media_path = format!("/live/cam1/{first}");
    let media = get_from(LOCALHOST, &signed_url(&server, &one.text, &media_path)).expect("GET");
    assert_eq!(media.status, 200, "{:?}", media.text());

    let check = |from: IpAddr, token: &str, path: &str, status: u16, code: Option<&str>| {
        let response =
            get_from(from, &signed_url(&server, token, path)).unwrap_or_else(|e| panic!("{e:#}"));
        match code {
            Some(code) => assert_refused(&response, status, code),
            None => assert_eq!(
                response.status,
                status,
                "from {from}: {:?}",
                response.text()
            ),
        }
    };
    for path in ["/live/cam1/master.m3u8", media_path.as_str()] {
        check(LOCALHOST, &two.text, path, 403, Some("TOKEN_INVALID"));
        check(OTHER_LOOPBACK, &one.text, path, 403, Some("TOKEN_INVALID"));
        check(OTHER_LOOPBACK, &two.text, path, 200, None);
    }
    let unbound = one.with(&one.key, &one.expires.to_string(), "p", &one.tag, &one.mac);
    check(
        LOCALHOST,
        &unbound,
        "/live/cam1/master.m3u8",
        403,
        Some("TOKEN_INVALID"),
    );
}

// ---------------------------------------------------------------------------
// A browser

/// hls.js in headless Chromium plays from a signed URL, and every playlist
/// it fetches keeps the token.
#[test]
fn hlsjs_plays_a_signed_url() {
    require_browser_tooling();
    let data = tempfile::tempdir().expect("tempdir");
    let (mut server, _publisher) = live_signed_server(
        &ServerConfig::passthrough_only(),
        data.path(),
        &playback_toml(&[("k1", K1_SECRET)], "k1", ""),
    );
    let url = server.sign("cam1", &["--ttl", "120"]);
    let token = Token::from_url(&server, &url, "cam1", "master.m3u8");
    wait_for_master(&url, READY_TIMEOUT);

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("players");
    std::fs::create_dir_all(&dir).expect("create the screenshot folder");
    let report = run_play_mjs("hls", &url, 4, 60, &dir.join("hls-signed.png"));
    server.assert_running();

    let context = format!("report: {report}");
    assert!(report["harnessError"].is_null(), "{context}");
    assert_eq!(
        report["fatalErrors"].as_array().map(Vec::len),
        Some(0),
        "{context}"
    );
    assert_eq!(report["played"].as_bool(), Some(true), "{context}");
    let advanced = report["advancedSecs"].as_f64().unwrap_or_default();
    assert!(advanced >= 4.0, "advanced {advanced} s; {context}");
    assert_eq!(
        report["httpErrors"].as_array().map(Vec::len),
        Some(0),
        "{context}"
    );
    let prefix = signed_url(&server, &token.text, "/live/cam1/");
    let fetched: BTreeSet<&str> = report["manifestFetches"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert!(
        fetched.len() >= 2,
        "playlists fetched {fetched:?}; {context}"
    );
    for url in &fetched {
        assert!(url.starts_with(&prefix), "{url} lost the token; {context}");
    }
    eprintln!(
        "hls.js played {advanced:.1} s after {} ms; playlists {fetched:?}",
        report["startupMs"]
    );
}
