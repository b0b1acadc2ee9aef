//! A small RTMP client for crafted input: the plain handshake, chunks with
//! any header (fmt 0-3, chunk stream id, extended timestamps, lengths,
//! types), AMF0 commands with any values, and FLV audio/video payloads cut
//! from a real H.264 + AAC encode (ffmpeg, made once per test binary).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rml_rtmp::chunk_io::ChunkDeserializer;
use rml_rtmp::rml_amf0::{self, Amf0Value};

/// Timestamp field value that says an extended timestamp follows.
const EXTENDED: u32 = 0xFF_FFFF;

/// RTMP message types.
pub const SET_CHUNK_SIZE: u8 = 1;
pub const AUDIO: u8 = 8;
pub const VIDEO: u8 = 9;
pub const DATA_AMF3: u8 = 15;
pub const DATA_AMF0: u8 = 18;
pub const COMMAND_AMF0: u8 = 20;

/// One chunk as it goes on the wire.
#[derive(Debug, Clone)]
pub struct Chunk<'a> {
    pub fmt: u8,
    pub csid: u32,
    /// Timestamp (fmt 0) or delta (fmt 1, 2); written as an extended
    /// timestamp when it does not fit 24 bits or `extended` is set.
    pub timestamp: u32,
    /// Forces the extended field (for fmt 3 after an extended header).
    pub extended: bool,
    pub length: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: &'a [u8],
}

impl Chunk<'_> {
    /// The chunk's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let fmt = self.fmt << 6;
        match self.csid {
            2..=63 => out.push(fmt | self.csid as u8),
            64..=319 => out.extend([fmt, (self.csid - 64) as u8]),
            _ => {
                let id = self.csid.saturating_sub(64);
                out.extend([fmt | 1, id as u8, (id >> 8) as u8]);
            }
        }
        let extended = self.extended || self.timestamp >= EXTENDED;
        if self.fmt < 3 {
            let field = if extended { EXTENDED } else { self.timestamp };
            out.extend_from_slice(&field.to_be_bytes()[1..]);
        }
        if self.fmt < 2 {
            out.extend_from_slice(&self.length.to_be_bytes()[1..]);
            out.push(self.type_id);
        }
        if self.fmt == 0 {
            out.extend_from_slice(&self.stream_id.to_le_bytes());
        }
        if extended {
            out.extend_from_slice(&self.timestamp.to_be_bytes());
        }
        out.extend_from_slice(self.payload);
        out
    }
}

/// A message the server sent.
#[derive(Debug, Clone)]
pub struct Received {
    pub type_id: u8,
    pub stream_id: u32,
    pub values: Vec<Amf0Value>,
}

impl Received {
    /// The command name of an AMF0 command.
    pub fn command(&self) -> Option<&str> {
        match self.values.first() {
            Some(Amf0Value::Utf8String(name)) => Some(name),
            _ => None,
        }
    }

    /// A string property of the status object (`code`, `level`,
    /// `description`) of `onStatus`/`_error`/`_result`.
    pub fn status(&self, key: &str) -> Option<&str> {
        self.values.iter().find_map(|v| match v {
            Amf0Value::Object(props) => match props.get(key) {
                Some(Amf0Value::Utf8String(s)) => Some(s.as_str()),
                _ => None,
            },
            _ => None,
        })
    }
}

/// A client connection.
pub struct RtmpClient {
    socket: TcpStream,
    /// Chunk size for outgoing messages.
    pub chunk_size: usize,
    reader: ChunkDeserializer,
    /// Everything received so far, in order.
    pub received: Vec<Received>,
    transaction: f64,
    /// Message stream id from `createStream`.
    pub stream_id: u32,
}

impl RtmpClient {
    /// Connects and runs the plain handshake (C0+C1, S0+S1+S2, C2).
    pub fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let mut socket = TcpStream::connect(addr)?;
        socket.set_nodelay(true)?;
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut c0c1 = vec![3u8];
        c0c1.extend_from_slice(&[0; 8]);
        c0c1.extend((0..1528u32).map(|i| (i * 7) as u8));
        socket.write_all(&c0c1)?;
        let mut s0s1s2 = vec![0u8; 1 + 1536 * 2];
        socket
            .read_exact(&mut s0s1s2)
            .context("read S0, S1 and S2")?;
        ensure!(s0s1s2[0] == 3, "S0 is version {}", s0s1s2[0]);
        socket.write_all(&s0s1s2[1..1537])?;
        Ok(Self {
            socket,
            chunk_size: 128,
            reader: ChunkDeserializer::new(),
            received: Vec::new(),
            transaction: 1.0,
            stream_id: 0,
        })
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.socket.write_all(bytes)
    }

    /// Writes one chunk.
    pub fn send_chunk(&mut self, chunk: &Chunk) -> std::io::Result<()> {
        self.send_raw(&chunk.encode())
    }

    /// Writes a whole message: a type-0 chunk, then type-3 continuations
    /// (which repeat an extended timestamp, as ffmpeg does).
    pub fn send_message(
        &mut self,
        csid: u32,
        type_id: u8,
        stream_id: u32,
        timestamp: u32,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(payload.len() + 64);
        let mut pieces = payload.chunks(self.chunk_size.max(1));
        let first = pieces.next().unwrap_or_default();
        bytes.extend(
            Chunk {
                fmt: 0,
                csid,
                timestamp,
                extended: false,
                length: payload.len() as u32,
                type_id,
                stream_id,
                payload: first,
            }
            .encode(),
        );
        for piece in pieces {
            bytes.extend(
                Chunk {
                    fmt: 3,
                    csid,
                    timestamp,
                    extended: timestamp >= EXTENDED,
                    length: 0,
                    type_id: 0,
                    stream_id: 0,
                    payload: piece,
                }
                .encode(),
            );
        }
        self.send_raw(&bytes)
    }

    /// Sends Set Chunk Size (any value) and uses it if it is usable.
    pub fn set_chunk_size(&mut self, size: u32) -> std::io::Result<()> {
        self.send_message(2, SET_CHUNK_SIZE, 0, 0, &size.to_be_bytes())?;
        if (1..=0x7FFF_FFFF).contains(&size) {
            self.chunk_size = size as usize;
        }
        Ok(())
    }

    /// Sends an AMF0 command message with any values.
    pub fn send_values(&mut self, stream_id: u32, values: &[Amf0Value]) -> std::io::Result<()> {
        let body = rml_amf0::serialize(&values.to_vec()).expect("serializable AMF0");
        self.send_message(3, COMMAND_AMF0, stream_id, 0, &body)
    }

    /// Sends `name(transaction, object, args...)`; returns the transaction.
    pub fn command(
        &mut self,
        name: &str,
        stream_id: u32,
        object: Amf0Value,
        args: &[Amf0Value],
    ) -> std::io::Result<f64> {
        self.transaction += 1.0;
        let mut values = vec![
            Amf0Value::Utf8String(name.into()),
            Amf0Value::Number(self.transaction),
            object,
        ];
        values.extend_from_slice(args);
        self.send_values(stream_id, &values)?;
        Ok(self.transaction)
    }

    /// `connect` to `app` and waits for its `_result`.
    pub fn connect_app(&mut self, app: &str) -> anyhow::Result<()> {
        let mut props = std::collections::HashMap::new();
        props.insert("app".to_string(), Amf0Value::Utf8String(app.into()));
        props.insert(
            "tcUrl".to_string(),
            Amf0Value::Utf8String(format!("rtmp://127.0.0.1/{app}")),
        );
        self.command("connect", 0, Amf0Value::Object(props), &[])?;
        self.wait_for("connect _result", Duration::from_secs(5), |m| {
            m.command() == Some("_result")
        })?;
        Ok(())
    }

    /// `createStream`; waits for the stream id.
    pub fn create_stream(&mut self) -> anyhow::Result<u32> {
        let tx = self.command("createStream", 0, Amf0Value::Null, &[])?;
        let reply = self.wait_for("createStream _result", Duration::from_secs(5), |m| {
            m.command() == Some("_result")
                && matches!(m.values.get(1), Some(Amf0Value::Number(n)) if *n == tx)
        })?;
        let id = match reply.values.get(3) {
            Some(Amf0Value::Number(n)) => *n as u32,
            other => bail!("createStream answered {other:?}"),
        };
        self.stream_id = id;
        Ok(id)
    }

    /// `publish(key, "live")` on the created stream; returns the first
    /// status (`onStatus` or `_error`) that answers it.
    pub fn publish(&mut self, key: &str) -> anyhow::Result<Received> {
        let args = [
            Amf0Value::Utf8String(key.into()),
            Amf0Value::Utf8String("live".into()),
        ];
        self.command("publish", self.stream_id, Amf0Value::Null, &args)?;
        self.wait_for("publish status", Duration::from_secs(5), |m| {
            matches!(m.command(), Some("onStatus" | "_error"))
        })
    }

    /// Handshake, connect to `live`, createStream, publish `key`; fails
    /// unless the publish starts.
    pub fn publisher(addr: SocketAddr, key: &str) -> anyhow::Result<Self> {
        let mut client = Self::connect(addr)?;
        client.connect_app("live")?;
        client.create_stream()?;
        let status = client.publish(key)?;
        ensure!(
            status.status("code") == Some("NetStream.Publish.Start"),
            "publish answered {status:?}"
        );
        Ok(client)
    }

    /// Reads what has arrived within `timeout`; false once the server has
    /// closed the connection.
    pub fn pump(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        self.socket.set_read_timeout(Some(timeout))?;
        let mut buf = [0u8; 16 * 1024];
        let n = match self.socket.read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(true);
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let mut input = &buf[..n];
        while let Some(payload) = self
            .reader
            .get_next_message(input)
            .map_err(|e| anyhow::anyhow!("server chunks: {e}"))?
        {
            input = &[];
            if payload.type_id == SET_CHUNK_SIZE && payload.data.len() >= 4 {
                let d = &payload.data;
                let size = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
                self.reader
                    .set_max_chunk_size(size as usize)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let values = if payload.type_id == COMMAND_AMF0 {
                let mut cursor = std::io::Cursor::new(payload.data.clone());
                rml_amf0::deserialize(&mut cursor).unwrap_or_default()
            } else {
                Vec::new()
            };
            self.received.push(Received {
                type_id: payload.type_id,
                stream_id: payload.message_stream_id,
                values,
            });
        }
        Ok(true)
    }

    /// Waits for a received message matching `want` (including ones that
    /// arrived earlier and were not taken yet).
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        want: impl Fn(&Received) -> bool,
    ) -> anyhow::Result<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.received.iter().position(&want) {
                return Ok(self.received.remove(i));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            ensure!(
                !left.is_zero(),
                "no {what} within {timeout:?}: {:?}",
                self.received
            );
            if !self.pump(left.min(Duration::from_millis(200)))? {
                if let Some(i) = self.received.iter().position(&want) {
                    return Ok(self.received.remove(i));
                }
                bail!("connection closed before {what}: {:?}", self.received);
            }
        }
    }

    /// Whether the server closes the connection within `timeout` (reading
    /// and dropping what it sends meanwhile).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.pump(Duration::from_millis(100)) {
                Ok(true) => {}
                Ok(false) | Err(_) => return true,
            }
        }
        false
    }

    /// Closes the socket without an RTMP goodbye.
    pub fn shutdown(&self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }

    /// Sends `media` from `from` to `to` (seconds of media, looped),
    /// starting at `start_ms`, with `ts` mapping (track, media time in ms)
    /// to the RTMP timestamp to send, at `speed` times real time. Sends
    /// the sequence headers first when `from` is 0.
    pub fn send_media(
        &mut self,
        media: &TestMedia,
        tracks: Tracks,
        from_ms: u64,
        to_ms: u64,
        speed: f64,
        ts: &dyn Fn(Track, u64) -> u32,
    ) -> std::io::Result<()> {
        let stream = self.stream_id;
        if from_ms == 0 {
            if tracks.video {
                self.send_message(6, VIDEO, stream, ts(Track::Video, 0), &media.video_header())?;
            }
            if tracks.audio {
                self.send_message(4, AUDIO, stream, ts(Track::Audio, 0), &media.audio_header())?;
            }
        }
        let started = Instant::now();
        let events = media.schedule(tracks, from_ms, to_ms);
        for (ms, track, index) in events {
            let due = Duration::from_secs_f64((ms - from_ms) as f64 / 1000.0 / speed);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
            match track {
                Track::Video => {
                    let tag = media.video_tag(index);
                    self.send_message(6, VIDEO, stream, ts(track, ms), &tag)?;
                }
                Track::Audio => {
                    let tag = media.audio_tag(index);
                    self.send_message(4, AUDIO, stream, ts(track, ms), &tag)?;
                }
            }
        }
        Ok(())
    }
}

/// Which tracks to send.
#[derive(Debug, Clone, Copy)]
pub struct Tracks {
    pub video: bool,
    pub audio: bool,
}

impl Tracks {
    pub const BOTH: Self = Self {
        video: true,
        audio: true,
    };
    pub const VIDEO: Self = Self {
        video: true,
        audio: false,
    };
    pub const AUDIO: Self = Self {
        video: false,
        audio: true,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Video,
    Audio,
}

/// Frames of a real encode: H.264 320x240 at 30 fps with a keyframe every
/// second and no B-frames, and AAC-LC 48 kHz stereo.
pub struct TestMedia {
    /// `avcC` record.
    pub avcc: Vec<u8>,
    /// Access units as 4-byte length-prefixed NAL units, with key flags.
    pub frames: Frames,
    /// AudioSpecificConfig.
    pub asc: Vec<u8>,
    /// Raw AAC frames (1024 samples each).
    pub aac: Vec<Vec<u8>>,
}

/// Milliseconds per video frame (30 fps, rounded as RTMP would).
fn video_ms(index: u64) -> u64 {
    index * 1000 / 30
}

/// Milliseconds of AAC frame `index` at 48 kHz.
fn audio_ms(index: u64) -> u64 {
    index * 1024 * 1000 / 48_000
}

impl TestMedia {
    /// The encode, made once per test binary.
    pub fn get() -> &'static TestMedia {
        static MEDIA: OnceLock<TestMedia> = OnceLock::new();
        MEDIA.get_or_init(|| Self::encode().unwrap_or_else(|e| panic!("test media: {e:#}")))
    }

    fn encode() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let h264 = dir.path().join("video.h264");
        let adts = dir.path().join("audio.aac");
        let status = Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-loglevel", "error"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", "4", "-map", "0:v"])
            .args("-c:v libx264 -preset ultrafast -bf 0 -g 30 -keyint_min 30".split(' '))
            .args("-x264-params scenecut=0 -pix_fmt yuv420p -f h264".split(' '))
            .arg(&h264)
            .args([
                "-t", "4", "-map", "1:a", "-c:a", "aac", "-b:a", "64k", "-ac", "2",
            ])
            .args(["-f", "adts"])
            .arg(&adts)
            .stdin(Stdio::null())
            .status()
            .context("run ffmpeg")?;
        ensure!(status.success(), "ffmpeg failed: {status}");
        let (avcc, frames) = split_h264(&read(&h264)?)?;
        let (asc, aac) = split_adts(&read(&adts)?)?;
        Ok(Self {
            avcc,
            frames,
            asc,
            aac,
        })
    }

    /// The media's length in ms (one loop).
    pub fn loop_ms(&self) -> u64 {
        video_ms(self.frames.len() as u64)
    }

    /// (media ms, track, frame index) of every frame in `from..to`, in
    /// send order. The media loops; each loop starts on a keyframe.
    pub fn schedule(&self, tracks: Tracks, from_ms: u64, to_ms: u64) -> Vec<(u64, Track, usize)> {
        let mut events = Vec::new();
        if tracks.video {
            for i in 0.. {
                let ms = video_ms(i);
                if ms >= to_ms {
                    break;
                }
                if ms >= from_ms {
                    events.push((ms, Track::Video, i as usize % self.frames.len()));
                }
            }
        }
        if tracks.audio {
            for i in 0.. {
                let ms = audio_ms(i);
                if ms >= to_ms {
                    break;
                }
                if ms >= from_ms {
                    events.push((ms, Track::Audio, i as usize % self.aac.len()));
                }
            }
        }
        events.sort_by_key(|&(ms, track, _)| (ms, track == Track::Audio));
        events
    }

    /// FLV video tag body: AVC sequence header.
    pub fn video_header(&self) -> Vec<u8> {
        let mut tag = vec![0x17, 0, 0, 0, 0];
        tag.extend_from_slice(&self.avcc);
        tag
    }

    /// FLV video tag body of frame `index`.
    pub fn video_tag(&self, index: usize) -> Vec<u8> {
        let (key, data) = &self.frames[index];
        let mut tag = vec![if *key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
        tag.extend_from_slice(data);
        tag
    }

    /// FLV audio tag body: AAC sequence header.
    pub fn audio_header(&self) -> Vec<u8> {
        let mut tag = vec![0xaf, 0];
        tag.extend_from_slice(&self.asc);
        tag
    }

    /// FLV audio tag body of AAC frame `index`.
    pub fn audio_tag(&self, index: usize) -> Vec<u8> {
        let mut tag = vec![0xaf, 1];
        tag.extend_from_slice(&self.aac[index]);
        tag
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("read {}", path.display()))
}

/// Access units with their key flags.
type Frames = Vec<(bool, Vec<u8>)>;

/// Splits an Annex B stream into the `avcC` record and access units (one
/// slice per frame, as x264 writes by default).
fn split_h264(stream: &[u8]) -> anyhow::Result<(Vec<u8>, Frames)> {
    let mut nals = Vec::new();
    let mut i = 0;
    let mut start = None;
    while i + 3 <= stream.len() {
        if stream[i..i + 3] == [0, 0, 1] {
            if let Some(s) = start {
                let mut end = i;
                while end > s && stream[end - 1] == 0 {
                    end -= 1;
                }
                nals.push(&stream[s..end]);
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        nals.push(&stream[s..]);
    }
    let sps = nals.iter().find(|n| n[0] & 0x1f == 7).context("no SPS")?;
    let pps = nals.iter().find(|n| n[0] & 0x1f == 8).context("no PPS")?;
    let mut avcc = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    avcc.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(sps);
    avcc.push(1);
    avcc.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(pps);

    let mut frames = Vec::new();
    let mut current = Vec::new();
    for nal in nals {
        let kind = nal[0] & 0x1f;
        if (7..=9).contains(&kind) {
            continue;
        }
        current.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        current.extend_from_slice(nal);
        if matches!(kind, 1 | 5) {
            frames.push((kind == 5, std::mem::take(&mut current)));
        }
    }
    ensure!(
        frames.first().is_some_and(|f| f.0),
        "first frame is not a keyframe"
    );
    Ok((avcc, frames))
}

/// Splits ADTS into the AudioSpecificConfig and raw AAC frames.
fn split_adts(stream: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<Vec<u8>>)> {
    let mut frames = Vec::new();
    let mut asc = Vec::new();
    let mut at = 0;
    while at + 7 <= stream.len() {
        let h = &stream[at..at + 7];
        ensure!(
            h[0] == 0xff && h[1] & 0xf0 == 0xf0,
            "lost ADTS sync at {at}"
        );
        let header_len = if h[1] & 1 == 1 { 7 } else { 9 };
        let profile = u16::from(h[2] >> 6) + 1;
        let rate_index = u16::from((h[2] >> 2) & 0x0f);
        let channels = u16::from(((h[2] & 1) << 2) | (h[3] >> 6));
        let len = (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        ensure!(
            len > header_len && at + len <= stream.len(),
            "bad ADTS length"
        );
        if asc.is_empty() {
            let config = (profile << 11) | (rate_index << 7) | (channels << 3);
            asc = config.to_be_bytes().to_vec();
        }
        frames.push(stream[at + header_len..at + len].to_vec());
        at += len;
    }
    ensure!(!frames.is_empty(), "no AAC frames");
    Ok((asc, frames))
}

/// The resident memory of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    line.split_whitespace()
        .nth(1)
        .context("no VmRSS value")?
        .parse()
        .context("VmRSS value")
}
