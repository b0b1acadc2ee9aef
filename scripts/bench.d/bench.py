#!/usr/bin/env python3
"""Benchmarks bigfoot against nginx-rtmp, nginx and ffmpeg on this machine.

Run through scripts/bench, which installs the peers and builds the binaries.
Every server binds 127.0.0.1 on a free port, every load is bounded in count
and time, and every process started here is stopped by its own pid (or the
process group it leads) when the run ends, also on Ctrl-C or an error.

The figures (B1..B7) are described in the README's "Performance" section.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIGFOOT = os.path.join(TARGET, "release", "bigfoot")
LOADGEN = os.path.join(TARGET, "bench-tools", "release", "bigfoot-loadgen")
MEDIA = os.path.join(TARGET, "bench-media")
RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SEGMENT_SECS = 2.0
WINDOW_SEGMENTS = 6

# Windows (seconds) and load levels per mode. Quick stays under 5 minutes.
MODES = {
    "quick": dict(
        b1_warmup=6, b1_window=10, b1_reps=1, b2_reps=2, b3_secs=2,
        b3_objects=("playlist", "375k", "1.5m"), b4_levels=(8,), b4_warmup=4, b4_window=6,
        b5_levels=(200, 1000), b5_secs=10, b6_secs=10, b6_subscribers=1000,
    ),
    "full": dict(
        b1_warmup=10, b1_window=30, b1_reps=2, b2_reps=5, b3_secs=8,
        b3_objects=("playlist", "375k", "1.5m"), b4_levels=(4, 12, 24), b4_warmup=6, b4_window=12,
        b5_levels=(250, 500, 1000, 2000, 3000, 4000), b5_secs=20, b6_secs=20, b6_subscribers=1000,
    ),
    # Checks the harness itself in about two minutes; its figures mean little.
    "smoke": dict(
        b1_warmup=3, b1_window=3, b1_reps=1, b2_reps=1, b3_secs=1, b3_objects=("playlist", "1.5m"),
        b4_levels=(2,), b4_warmup=3, b4_window=3,
        b5_levels=(10,), b5_secs=5, b6_secs=5, b6_subscribers=20,
    ),
}


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Processes

class Processes:
    """Every child started by the run; each leads its own process group."""

    def __init__(self):
        self.children = []

    def start(self, args, log_path, env=None):
        with open(log_path, "ab") as out:
            child = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=env,
            )
        self.children.append(child)
        return child

    def stop(self, child, grace=5.0):
        if child.poll() is None:
            try:
                os.killpg(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                child.wait()
        if child in self.children:
            self.children.remove(child)

    def stop_all(self):
        for child in list(reversed(self.children)):
            self.stop(child, grace=3.0)


PROCS = Processes()


def proc_tree(pid):
    """pid and all its descendants."""
    pids = [pid]
    i = 0
    while i < len(pids):
        try:
            for task in os.listdir(f"/proc/{pids[i]}/task"):
                with open(f"/proc/{pids[i]}/task/{task}/children") as f:
                    pids.extend(int(p) for p in f.read().split())
        except OSError:
            pass
        i += 1
    return pids


def cpu_seconds(pids):
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError):
            pass
    return total


def pss_mib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5.0, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def segment_uris(playlist_text):
    return [l.strip() for l in playlist_text.splitlines() if l.strip() and not l.startswith("#")]


def join_url(playlist_url, uri):
    if uri.startswith("http://"):
        return uri
    return playlist_url.rsplit("/", 1)[0] + "/" + uri


# ---------------------------------------------------------------------------
# Media

def make_media():
    """The 1080p30 source and three pre-encoded rungs, cached under target/."""
    os.makedirs(MEDIA, exist_ok=True)
    source = os.path.join(MEDIA, "src1080.mp4")
    common = ["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2", "-movflags", "+faststart"]
    if not os.path.exists(source):
        log("generating the 1080p30 source (20 s testsrc2 + noise + sine, 6 Mbit/s)")
        run_checked([
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-filter_complex", "[0:v]noise=alls=12:allf=t+u[v]", "-map", "[v]", "-map", "1:a",
            "-t", "20", "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high",
            "-pix_fmt", "yuv420p", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
            "-b:v", "6000k", "-maxrate", "6000k", "-bufsize", "6000k", *common,
            source + ".tmp.mp4",
        ])
        os.rename(source + ".tmp.mp4", source)
    rungs = {}
    for name, height, kbps in (("720p", 720, 3000), ("480p", 480, 1400), ("360p", 360, 800)):
        path = os.path.join(MEDIA, f"rung{name}.mp4")
        if not os.path.exists(path):
            log(f"pre-encoding the {name} rung from the source")
            run_checked([
                "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", source,
                "-vf", f"scale=-2:{height}", "-c:v", "libx264", "-preset", "veryfast",
                "-profile:v", "high", "-pix_fmt", "yuv420p", "-g", "60", "-keyint_min", "60",
                "-sc_threshold", "0", "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k",
                "-bufsize", f"{kbps}k", *common, path + ".tmp.mp4",
            ])
            os.rename(path + ".tmp.mp4", path)
        rungs[name] = path
    return source, rungs


def run_checked(args):
    result = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {result.stderr[-2000:]}")
    return result.stdout


def bitrate_bps(path):
    out = run_checked(["ffprobe", "-v", "error", "-show_entries", "format=bit_rate",
                       "-of", "default=nw=1:nk=1", path])
    return float(out.strip())


def publish(path, url, log_path, loop=True, seconds=None):
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re"]
    if loop:
        args += ["-stream_loop", "-1"]
    args += ["-i", path]
    if seconds is not None:
        args += ["-t", str(seconds)]
    args += ["-c", "copy", "-f", "flv", url]
    return PROCS.start(args, log_path)


# ---------------------------------------------------------------------------
# bigfoot

class Bigfoot:
    def __init__(self, workdir, name, streams, ladder="default", passthrough=True,
                 signed=True, grace=30, extra=""):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.config = os.path.join(self.dir, "bigfoot.toml")
        self.log_path = os.path.join(self.dir, "server.log")
        if ladder == "default":
            ladder = ('[{ name = "720p", height = 720, video_kbps = 3000 }, '
                      '{ name = "480p", height = 480, video_kbps = 1400 }, '
                      '{ name = "360p", height = 360, video_kbps = 800 }]')
        text = f"""[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "{self.dir}/data"

[ingest]
reconnect_grace_secs = {grace}
max_connections = 1024

[transcode]
encoder = "x264"
pipelines_dir = "{ROOT}/pipelines"
x264_preset = "veryfast"
segment_secs = {SEGMENT_SECS}
passthrough = {str(passthrough).lower()}
ladder = {ladder}

[package]
window_segments = {WINDOW_SEGMENTS}

[playback]
require_signed_urls = {str(signed).lower()}

[api]
rate_limit_per_minute = 1000000
{extra}
"""
        for stream in streams:
            text += f'\n[[streams]]\nname = "{stream}"\nkey = "{stream}-key"\n'
        with open(self.config, "w") as f:
            f.write(text)
        env = dict(os.environ, NO_COLOR="1", RUST_LOG="bigfoot=info")
        self.child = PROCS.start([BIGFOOT, "serve", "--config", self.config], self.log_path, env)
        self.pid = self.child.pid
        self.rtmp = self.http = None
        deadline = time.time() + 30
        while time.time() < deadline and not (self.rtmp and self.http):
            if self.child.poll() is not None:
                raise RuntimeError(f"bigfoot exited: {tail(self.log_path)}")
            text = strip_ansi(open(self.log_path, errors="replace").read())
            m = re.search(r"RTMP listening on (\S+)", text)
            self.rtmp = m and m.group(1)
            m = re.search(r"HTTP listening on (\S+)", text)
            self.http = m and m.group(1)
            time.sleep(0.1)
        if not (self.rtmp and self.http):
            raise RuntimeError(f"bigfoot did not listen within 30 s: {tail(self.log_path)}")

    def publish_url(self, stream):
        return f"rtmp://{self.rtmp}/live/{stream}-key"

    def stream_base(self, stream):
        """The signed (or plain) URL of the stream folder, ending in '/'."""
        out = run_checked([BIGFOOT, "sign", "--config", self.config, "--stream", stream,
                           "--ttl", "14400", "--base-url", f"http://{self.http}"])
        return out.strip().rsplit("/", 1)[0] + "/"

    def token(self, role):
        return run_checked([BIGFOOT, "token", "--config", self.config, "--role", role,
                            "--ttl", "3600", "--subject", "bench"]).strip()

    def pids(self):
        return [self.pid]

    def stop(self):
        PROCS.stop(self.child, grace=8.0)


def strip_ansi(text):
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def tail(path, lines=15):
    try:
        return "\n".join(strip_ansi(open(path, errors="replace").read()).splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------
# nginx and nginx-rtmp

class Nginx:
    def __init__(self, workdir, name, rtmp=True, workers=1):
        self.dir = os.path.join(workdir, name)
        self.www = os.path.join(self.dir, "www")
        self.hls = os.path.join(self.dir, "hls")
        for d in (self.www, self.hls, os.path.join(self.dir, "tmp")):
            os.makedirs(d, exist_ok=True)
        self.http_port = free_port()
        self.rtmp_port = free_port() if rtmp else None
        self.config = os.path.join(self.dir, "nginx.conf")
        rtmp_block = ""
        load = ""
        if rtmp:
            load = f"load_module {RTMP_MODULE};"
            push = f"rtmp_auto_push on;\nrtmp_socket_dir {self.dir}/tmp;" if workers > 1 else ""
            rtmp_block = f"""
{push}
rtmp {{
  server {{
    listen 127.0.0.1:{self.rtmp_port};
    chunk_size 4096;
    application live {{
      live on;
      record off;
      hls on;
      hls_path {self.hls};
      hls_nested on;
      hls_fragment {int(SEGMENT_SECS)}s;
      hls_playlist_length {int(SEGMENT_SECS * WINDOW_SEGMENTS)}s;
    }}
  }}
}}"""
        text = f"""{load}
user root root;
worker_processes {workers};
worker_rlimit_nofile 65536;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 16384; }}
{rtmp_block}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  keepalive_timeout 65;
  client_body_temp_path {self.dir}/tmp/body;
  proxy_temp_path {self.dir}/tmp/proxy;
  fastcgi_temp_path {self.dir}/tmp/fastcgi;
  uwsgi_temp_path {self.dir}/tmp/uwsgi;
  scgi_temp_path {self.dir}/tmp/scgi;
  types {{
    application/vnd.apple.mpegurl m3u8;
    video/mp2t ts;
    video/mp4 mp4 m4s;
  }}
  server {{
    listen 127.0.0.1:{self.http_port} backlog=4096;
    root {self.www};
    location /hls/ {{
      alias {self.hls}/;
      add_header Cache-Control no-cache;
    }}
  }}
}}
"""
        with open(self.config, "w") as f:
            f.write(text)
        self.child = PROCS.start(["nginx", "-c", self.config, "-p", self.dir,
                                  "-g", "daemon off;"], os.path.join(self.dir, "nginx.log"))
        self.pid = self.child.pid
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.child.poll() is not None:
                raise RuntimeError(f"nginx exited: {tail(os.path.join(self.dir, 'nginx.log'))}"
                                   f"{tail(os.path.join(self.dir, 'error.log'))}")
            status, _ = http_get(f"http://127.0.0.1:{self.http_port}/", timeout=1)
            if status:
                break
            time.sleep(0.1)

    def publish_url(self, stream):
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{stream}"

    def playlist(self, stream):
        return f"http://127.0.0.1:{self.http_port}/hls/{stream}/index.m3u8"

    def pids(self):
        return proc_tree(self.pid)

    def stop(self):
        # nginx's master stops its workers on SIGTERM; the group kill in
        # Processes.stop reaches them too.
        PROCS.stop(self.child, grace=5.0)


# ---------------------------------------------------------------------------
# Tools

def loadgen(args, timeout):
    result = subprocess.run([LOADGEN, *args], capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"loadgen failed: {result.stderr[-1000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def loadgen_background(args, out_path):
    return PROCS.start([LOADGEN, *args], out_path)


def read_json_output(path):
    with open(path) as f:
        lines = [l for l in f.read().splitlines() if l.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def wrk(url, connections, secs):
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{secs}s", "--timeout", "10s",
         "--latency", url],
        capture_output=True, text=True, timeout=secs + 30, stdin=subprocess.DEVNULL,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    scale = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}
    # wrk prints binary units (1 MB = 1024^2 bytes).
    bscale = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3}
    gbps = float(transfer.group(1)) * bscale.get(transfer.group(2), scale.get(transfer.group(2), 1)) / 1e9
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return dict(rps=rps, gbps=gbps, p99_ms=p99_ms, non2xx=int(non2xx.group(1)) if non2xx else 0,
                socket_errors=errors.group(0) if errors else "")


def wait_until(predicate, timeout, interval=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def playlist_segments(url, timeout=2):
    status, body = http_get(url, timeout=timeout)
    if status != 200:
        return []
    return segment_uris(body.decode(errors="replace"))


def cpu_over(pids_fn, seconds):
    """Cores used by the processes pids_fn() returns, over `seconds`."""
    pids = pids_fn()
    start, t0 = cpu_seconds(pids), time.monotonic()
    time.sleep(seconds)
    end, t1 = cpu_seconds(pids_fn()), time.monotonic()
    return (end - start) / (t1 - t0)


# ---------------------------------------------------------------------------
# B1: transcode CPU

def b1(cfg, workdir, source, results):
    """Bigfoot and the ffmpeg ladder take turns (A B A B ...) so that load from
    other work on the box falls on both; each list keeps every sample."""
    for rep in range(cfg["b1_reps"]):
        b1_bigfoot(cfg, workdir, source, results, rep)
        b1_ffmpeg(cfg, workdir, source, results, rep)


def b1_bigfoot(cfg, workdir, source, results, rep):
    log("B1: bigfoot ladder CPU")
    server = Bigfoot(workdir, f"b1-bigfoot-{rep}", ["b1"])
    time.sleep(2)
    results["b7_idle_bigfoot"] = pss_mib(server.pids())
    pub = publish(source, server.publish_url("b1"), os.path.join(workdir, "b1-pub.log"))
    base = server.stream_base("b1")
    if not wait_until(lambda: http_get(base + "master.m3u8")[0] == 200, 30):
        raise RuntimeError(f"B1: no master playlist: {tail(server.log_path)}")
    time.sleep(cfg["b1_warmup"])
    cores = cpu_over(server.pids, cfg["b1_window"])
    results.setdefault("b1_bigfoot", []).append(cores)
    results["b7_stream_bigfoot"] = pss_mib(server.pids()) - results["b7_idle_bigfoot"]
    PROCS.stop(pub)
    server.stop()


def b1_ffmpeg(cfg, workdir, source, results, rep):
    log("B1: ffmpeg ladder CPU")
    out = os.path.join(workdir, f"b1-ffmpeg-{rep}")
    os.makedirs(out, exist_ok=True)
    ladder = (("720p", 720, 3000), ("480p", 480, 1400), ("360p", 360, 800))
    split = f"[0:v]split={len(ladder)}" + "".join(f"[s{i}]" for i in range(len(ladder))) + ";"
    split += ";".join(f"[s{i}]scale=-2:{h}[v{i}]" for i, (_, h, _) in enumerate(ladder))
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re",
            "-stream_loop", "-1", "-i", source, "-filter_complex", split]
    hls = ["-f", "hls", "-hls_time", str(int(SEGMENT_SECS)), "-hls_list_size", str(WINDOW_SEGMENTS),
           "-hls_flags", "delete_segments", "-hls_segment_type", "fmp4"]
    for i, (name, _, kbps) in enumerate(ladder):
        args += ["-map", f"[v{i}]", "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
                 "-profile:v", "high", "-bf", "0", "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k",
                 "-bufsize", f"{kbps}k", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
                 "-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT_SECS})", *hls,
                 "-hls_segment_filename", f"{out}/{name}-%d.m4s", f"{out}/{name}.m3u8"]
    args += ["-map", "0:v", "-c", "copy", *hls, "-hls_segment_filename", f"{out}/source-%d.m4s",
             f"{out}/source.m3u8"]
    args += ["-map", "0:a", "-c", "copy", *hls, "-hls_segment_filename", f"{out}/audio-%d.m4s",
             f"{out}/audio.m3u8"]
    ffmpeg = PROCS.start(args, os.path.join(workdir, "b1-ffmpeg.log"))
    time.sleep(cfg["b1_warmup"])
    if ffmpeg.poll() is not None:
        raise RuntimeError(f"B1: ffmpeg ladder exited: {tail(os.path.join(workdir, 'b1-ffmpeg.log'))}")
    results.setdefault("b1_ffmpeg", []).append(cpu_over(lambda: [ffmpeg.pid], cfg["b1_window"]))
    results["b7_stream_ffmpeg"] = pss_mib([ffmpeg.pid])
    PROCS.stop(ffmpeg)


# ---------------------------------------------------------------------------
# B2: time to first playlist and first segment

def first_times(pub_start, playlist_url, media_playlist_url, timeout=30.0):
    """Seconds from pub_start to the first 200 on playlist_url and to the first
    complete segment listed in media_playlist_url."""
    t_playlist = t_segment = None
    deadline = pub_start + timeout
    while time.monotonic() < deadline and (t_playlist is None or t_segment is None):
        if t_playlist is None and http_get(playlist_url, timeout=2)[0] == 200:
            t_playlist = time.monotonic() - pub_start
        if t_segment is None:
            # bigfoot holds a request for a starting stream's playlist until
            # its first segment exists: a timeout longer than that.
            uris = playlist_segments(media_playlist_url, timeout=10)
            if uris:
                status, body = http_get(join_url(media_playlist_url, uris[0]), timeout=5)
                if status == 200 and body:
                    t_segment = time.monotonic() - pub_start
        time.sleep(0.05)
    return t_playlist, t_segment


def b2(cfg, workdir, source, results):
    reps = cfg["b2_reps"]
    names = [f"b2r{i}" for i in range(reps)]
    log("B2: bigfoot time to first playlist / segment")
    server = Bigfoot(workdir, "b2-bigfoot", names)
    samples = []
    for name in names:
        base = server.stream_base(name)
        time.sleep(1)
        start = time.monotonic()
        pub = publish(source, server.publish_url(name), os.path.join(workdir, f"{name}.log"))
        samples.append(first_times(start, base + "master.m3u8", base + "source/index.m3u8"))
        PROCS.stop(pub)
    server.stop()
    results["b2_bigfoot"] = samples

    log("B2: nginx-rtmp time to first playlist / segment")
    nginx = Nginx(workdir, "b2-nginx")
    samples = []
    for name in names:
        time.sleep(1)
        start = time.monotonic()
        pub = publish(source, nginx.publish_url(name), os.path.join(workdir, f"{name}-nginx.log"))
        url = nginx.playlist(name)
        samples.append(first_times(start, url, url))
        PROCS.stop(pub)
    nginx.stop()
    results["b2_nginx"] = samples


# ---------------------------------------------------------------------------
# B3: serving the same bytes through signed URLs

def b3(cfg, workdir, source, results):
    log("B3: preparing segments in bigfoot (publish 14 s, then keep the ended stream)")
    ladder = '[{ name = "r375k", height = 720, video_kbps = 1500 }]'
    server = Bigfoot(workdir, "b3-bigfoot", ["b3"], ladder=ladder, grace=3600)
    base = server.stream_base("b3")
    pub = publish(source, server.publish_url("b3"), os.path.join(workdir, "b3-pub.log"),
                  loop=False, seconds=14)
    try:
        pub.wait(timeout=40)
    except subprocess.TimeoutExpired:
        PROCS.stop(pub)
    time.sleep(2)
    objects = {}
    source_list = base + "source/index.m3u8"
    small_list = base + "r375k/index.m3u8"
    src_uris = playlist_segments(source_list)
    small_uris = playlist_segments(small_list)
    if len(src_uris) < 2 or len(small_uris) < 2:
        raise RuntimeError(f"B3: too few segments: {tail(server.log_path)}")
    objects["playlist"] = source_list
    objects["375k"] = join_url(small_list, small_uris[len(small_uris) // 2])
    objects["1.5m"] = join_url(source_list, src_uris[len(src_uris) // 2])

    nginx = Nginx(workdir, "b3-nginx", rtmp=False, workers=2)
    sizes = {}
    nginx_urls = {}
    prefix = f"http://{server.http}"
    for key, url in objects.items():
        status, body = http_get(url)
        if status != 200:
            raise RuntimeError(f"B3: {url} answered {status}")
        sizes[key] = len(body)
        path = url[len(prefix):]
        local = os.path.join(nginx.www, path.lstrip("/"))
        os.makedirs(os.path.dirname(local), exist_ok=True)
        with open(local, "wb") as f:
            f.write(body)
        nginx_urls[key] = f"http://127.0.0.1:{nginx.http_port}{path}"
    results["b3_sizes"] = sizes
    runs = {}
    for key in cfg["b3_objects"]:
        for connections in (50, 256):
            log(f"B3: {key} at {connections} connections")
            runs[f"{key}@{connections}"] = dict(
                bigfoot=wrk(objects[key], connections, cfg["b3_secs"]),
                nginx=wrk(nginx_urls[key], connections, cfg["b3_secs"]),
            )
    results["b3"] = runs
    nginx.stop()
    server.stop()


# ---------------------------------------------------------------------------
# B4: passthrough publishers per core

def publishers_level(server, count, cfg, workdir, path, tag):
    pubs = [publish(path, server.publish_url(f"p{i}"), os.path.join(workdir, f"{tag}-{i}.log"))
            for i in range(count)]
    time.sleep(cfg["b4_warmup"])
    alive = sum(1 for p in pubs if p.poll() is None)
    cores = cpu_over(server.pids, cfg["b4_window"])
    memory = pss_mib(server.pids())
    for p in pubs:
        PROCS.stop(p, grace=2.0)
    return dict(publishers=count, alive=alive, cores=cores, pss_mib=memory)


def b4(cfg, workdir, rungs, results):
    path = rungs["720p"]
    levels = cfg["b4_levels"]
    streams = [f"p{i}" for i in range(max(levels))]
    no_thumbs = "[thumbnails]\nenabled = false\n"
    for peer in ("bigfoot", "bigfoot_nothumbs", "nginx"):
        log(f"B4: {peer} passthrough publishers {levels}")
        if peer.startswith("bigfoot"):
            extra = no_thumbs if peer == "bigfoot_nothumbs" else ""
            server = Bigfoot(workdir, f"b4-{peer}", streams, ladder="[]", grace=1, extra=extra)
        else:
            server = Nginx(workdir, "b4-nginx")
        time.sleep(2)
        idle = pss_mib(server.pids())
        measured = []
        for count in levels:
            measured.append(publishers_level(server, count, cfg, workdir, path, f"b4-{peer}"))
            time.sleep(3)
        server.stop()
        results[f"b4_{peer}"] = dict(idle_pss_mib=idle, levels=measured)
    results["b4_window_mib"] = bitrate_bps(path) / 8 * SEGMENT_SECS * WINDOW_SEGMENTS / 2 ** 20


# ---------------------------------------------------------------------------
# B5, B6, B7: viewers, control plane, memory

def viewers_run(playlists, count, secs, server_pids_fn=None):
    args = ["viewers", "--viewers", str(count), "--secs", str(secs),
            "--segment-secs", str(SEGMENT_SECS)]
    for p in playlists:
        args += ["--playlist", p]
    if server_pids_fn is None:
        return loadgen(args, timeout=secs + 60), None
    out = os.path.join(tempfile.gettempdir(), f"bench-viewers-{os.getpid()}-{count}.json")
    if os.path.exists(out):
        os.remove(out)
    child = loadgen_background(args, out)
    time.sleep(secs * 0.6)
    memory = pss_mib(server_pids_fn())
    try:
        child.wait(timeout=secs + 60)
    except subprocess.TimeoutExpired:
        PROCS.stop(child)
    PROCS.stop(child)
    report = read_json_output(out)
    os.remove(out)
    return report, memory


def passes(report):
    return (report is not None and report["not_found"] == 0
            and report["ok_viewers"] >= 0.95 * report["viewers"])


def capacity_search(playlists, levels, secs, pids_fn):
    """Steps through the viewer levels until one fails; returns the runs."""
    runs = []
    for count in levels:
        log(f"B5: {count} viewers")
        time.sleep(1)
        before = pss_mib(pids_fn())
        report, during = viewers_run(playlists, count, secs, pids_fn)
        runs.append(dict(report=report, pss_before=before, pss_during=during, passed=passes(report)))
        if not passes(report):
            break
    return runs


def b5_b6(cfg, workdir, rungs, results):
    names = {"720p": "b5hi", "480p": "b5mid", "360p": "b5lo"}
    levels = cfg["b5_levels"]

    log("B5: nginx-rtmp + nginx viewers")
    nginx = Nginx(workdir, "b5-nginx", workers=2)
    time.sleep(1)
    results["b7_idle_nginx"] = pss_mib(nginx.pids())
    pubs = [publish(rungs[r], nginx.publish_url(n), os.path.join(workdir, f"b5n-{n}.log"))
            for r, n in names.items()]
    playlists = [nginx.playlist(n) for n in names.values()]
    if not wait_until(lambda: all(len(playlist_segments(p)) >= WINDOW_SEGMENTS - 1
                                  for p in playlists), 40):
        raise RuntimeError("B5: nginx-rtmp produced no playlists")
    results["b5_nginx"] = capacity_search(playlists, levels, cfg["b5_secs"], nginx.pids)
    for p in pubs:
        PROCS.stop(p)
    nginx.stop()

    log("B5: bigfoot viewers")
    server = Bigfoot(workdir, "b5-bigfoot", list(names.values()), ladder="[]")
    pubs = [publish(rungs[r], server.publish_url(n), os.path.join(workdir, f"b5b-{n}.log"))
            for r, n in names.items()]
    bases = [server.stream_base(n) for n in names.values()]
    playlists = [b + "source/index.m3u8" for b in bases]
    if not wait_until(lambda: all(len(playlist_segments(p)) >= WINDOW_SEGMENTS
                                  for p in playlists), 40):
        raise RuntimeError(f"B5: bigfoot produced no playlists: {tail(server.log_path)}")
    results["b5_bigfoot"] = capacity_search(playlists, levels, cfg["b5_secs"], server.pids)

    passed = [r["report"]["viewers"] for r in results["b5_bigfoot"] if r["passed"]]
    load = int(0.8 * (max(passed) if passed else levels[0]))
    log(f"B6: control plane with {load} viewers running")
    token = server.token("viewer")
    secs = cfg["b6_secs"]
    tmp = os.path.join(workdir, "b6")
    os.makedirs(tmp, exist_ok=True)
    status, _ = http_get(f"http://{server.http}/api/v1/events", headers={
        "Authorization": f"Bearer {token}"})
    ws = None
    if status not in (0, 404):
        ws = loadgen_background(["ws", "--url", f"http://{server.http}/api/v1/events",
                                 "--token", token, "--subscribers", str(cfg["b6_subscribers"]),
                                 "--secs", str(secs + 4)], os.path.join(tmp, "ws.json"))
        time.sleep(2)
    rest = loadgen_background(["rest", "--url", f"http://{server.http}/api/v1/streams",
                               "--token", token, "--rate", "20", "--secs", str(secs)],
                              os.path.join(tmp, "rest.json"))
    viewers, _ = viewers_run(playlists, max(load, 1), secs)
    for child in (rest, ws):
        if child is not None:
            try:
                child.wait(timeout=secs + 30)
            except subprocess.TimeoutExpired:
                pass
            PROCS.stop(child)
    results["b6"] = dict(
        viewers=viewers, events_status=status, rest=read_json_output(os.path.join(tmp, "rest.json")),
        ws=read_json_output(os.path.join(tmp, "ws.json")) if ws else None,
    )
    for p in pubs:
        PROCS.stop(p)
    server.stop()


# ---------------------------------------------------------------------------
# criterion: the pure packaging paths

def criterion(results):
    """`cargo bench --bench package` with short windows; time per operation."""
    log("criterion: cargo bench --bench package")
    out = subprocess.run(
        ["cargo", "bench", "--bench", "package", "--", "--warm-up-time", "1",
         "--measurement-time", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )
    if out.returncode != 0:
        raise RuntimeError(f"cargo bench failed: {out.stderr[-500:]}")
    rows, name = [], None
    for line in out.stdout.splitlines():
        m = re.match(r"^(.*?)\s*time:\s*\[(.*?)\]", line)
        if m:
            rows.append((m.group(1).strip() or name, m.group(2).split()[2:4]))
        elif line.strip() and not line.startswith((" ", "Found", "Benchmarking")):
            name = line.strip()
    results["criterion"] = [(n, " ".join(t)) for n, t in rows]


# ---------------------------------------------------------------------------
# Report

def fmt(value, digits=2):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def verdict(ok):
    if ok is None:
        return "n/a"
    return "pass" if ok else "**miss**"


def capacity(runs):
    passed = [r["report"]["viewers"] for r in runs if r["passed"]]
    top = max(passed) if passed else 0
    capped = bool(runs) and runs[-1]["passed"]
    return top, capped


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def b4_capacity(data):
    """Publishers at 0.9 core, linear in the cost per publisher at the largest
    level that stayed within 0.9 core (a level beyond it may have saturated
    the box, which understates the cost); memory per publisher at the top."""
    levels = data["levels"]
    within = [l for l in levels if l["cores"] <= 0.9]
    basis = within[-1] if within else levels[0]
    per = basis["cores"] / basis["publishers"] if basis["publishers"] else None
    est = 0.9 / per if per else None
    top = levels[-1]
    memory = (top["pss_mib"] - data["idle_pss_mib"]) / top["publishers"]
    return est, within[-1]["publishers"] if within else 0, per, memory, basis["publishers"]


def machine():
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src"],
                           capture_output=True, text=True).stdout.strip()
    return dict(uname=" ".join(platform.uname()), cpu=model, cores=os.cpu_count(),
                commit=commit + (" (src/ has uncommitted changes)" if dirty else ""),
                nginx=subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
                ffmpeg=run_checked(["ffmpeg", "-version"]).splitlines()[0])


def report(mode, r, info, started, load_start, load_end, skipped, elapsed=None):
    rows = []

    def row(fig, what, big, peer, rat, target, ok):
        rows.append(f"| {fig} | {what} | {big} | {peer} | {rat} | {target} | {verdict(ok)} |")

    if "b1_ffmpeg" in r:
        big, peer = median(r["b1_bigfoot"]), median(r["b1_ffmpeg"])
        rat = ratio(big, peer)
        samples = lambda xs: "" if len(xs) < 2 else " (" + ", ".join(f"{x:.2f}" for x in xs) + ")"
        row("B1", "CPU-s per media-s, 1080p30 → 720p/480p/360p x264 veryfast + passthrough + audio"
            + (f", median of {len(r['b1_bigfoot'])}" if len(r["b1_bigfoot"]) > 1 else ""),
            fmt(big) + samples(r["b1_bigfoot"]),
            f"{fmt(peer)}{samples(r['b1_ffmpeg'])} (ffmpeg CLI)", f"{fmt(rat)}×",
            "≤ 0.9× ffmpeg", rat is not None and rat <= 0.9)
    if "b2_bigfoot" in r:
        for i, what in ((0, "publish → first 200 on the master playlist (s)"),
                        (1, "publish → first complete segment (s)")):
            big = median([s[i] for s in r["b2_bigfoot"]])
            peer = median([s[i] for s in r["b2_nginx"]])
            rat = ratio(big, peer)
            ok = big is not None and rat is not None and rat <= 0.5 and big <= SEGMENT_SECS + 0.5
            row("B2", what + f", median of {len(r['b2_bigfoot'])}", fmt(big), f"{fmt(peer)} (nginx-rtmp)",
                f"{fmt(rat)}×", "≤ 0.5× and ≤ 2.5 s", ok)
    if "b3" in r:
        sizes = r["b3_sizes"]
        for key, run in r["b3"].items():
            obj, conns = key.split("@")
            b, n = run["bigfoot"], run["nginx"]
            rat_t = ratio(b["rps"], n["rps"])
            rat_p = ratio(b["p99_ms"], n["p99_ms"])
            errs = b["non2xx"] + n["non2xx"]
            cell = lambda x: f"{x['rps']:.0f} req/s, {x['gbps']:.2f} GB/s, p99 {x['p99_ms']:.1f} ms"
            row("B3", f"{obj} ({sizes[obj] / 1000:.0f} kB), signed URL, wrk {conns} conns"
                + (f" ({errs} non-2xx)" if errs else ""),
                cell(b), cell(n) + " (nginx static)", f"{fmt(rat_t)}× req/s, {fmt(rat_p)}× p99",
                "≥ 1.2× req/s, p99 ≤ 1×", rat_t is not None and rat_t >= 1.2 and rat_p <= 1.0)
    for variant, label in (("bigfoot", "shipped config (thumbnails on)"),
                           ("bigfoot_nothumbs", "thumbnails off")):
        if f"b4_{variant}" not in r or "b4_nginx" not in r:
            continue
        be, bw, bper, bmem, bbasis = b4_capacity(r[f"b4_{variant}"])
        ne, nw, nper, nmem, nbasis = b4_capacity(r["b4_nginx"])
        rat = ratio(be, ne)
        tried = ", ".join(str(l["publishers"]) for l in r["b4_nginx"]["levels"])
        row("B4", f"passthrough 720p publishers at ≤ 0.9 core, {label} (levels {tried}; "
            f"largest level within 0.9 core: bigfoot {bw}, nginx-rtmp {nw}; extrapolated "
            f"from the cost per publisher there, bigfoot at {bbasis}, nginx-rtmp at {nbasis})",
            f"{fmt(be, 0)} ({fmt(bper * 100 if bper else None, 1)}% core each)",
            f"{fmt(ne, 0)} ({fmt(nper * 100 if nper else None, 1)}% core each, nginx-rtmp hls)",
            f"{fmt(rat)}×", "≥ 1.5×", rat is not None and rat >= 1.5)
        window = r["b4_window_mib"]
        beyond = bmem - window
        row("B4", f"memory per publisher beyond its segment window, {label} "
            f"({window:.1f} MiB window in RAM; nginx-rtmp keeps it on disk)",
            f"{fmt(beyond, 1)} MiB (total {fmt(bmem, 1)})",
            f"{fmt(nmem, 1)} MiB", f"{fmt(ratio(beyond, nmem))}×", "≤ nginx-rtmp",
            beyond <= nmem if nmem else None)
    if "b5_bigfoot" in r:
        bc, bcap = capacity(r["b5_bigfoot"])
        nc, ncap = capacity(r["b5_nginx"])
        rat = ratio(bc, nc)
        def desc(runs):
            return "; ".join(
                f"{x['report']['viewers']}: p99 {fmt(x['report']['segment_p99_ms'], 0)} ms, "
                f"{x['report']['ok_viewers']} ok, {x['report']['not_found']}×404"
                for x in runs if x["report"])
        row("B5", "HLS viewers (3 renditions, poll every 1 s) with p99 segment fetch < 1 s "
            "and no 404 for ≥ 95% of viewers; levels tried: " + ", ".join(map(str, MODES[mode]["b5_levels"])),
            f"{'≥ ' if bcap else ''}{bc} ({desc(r['b5_bigfoot'])})",
            f"{'≥ ' if ncap else ''}{nc} ({desc(r['b5_nginx'])})", f"{fmt(rat)}×"
            + (" (both at the top level: a lower bound)" if bcap and ncap else ""),
            "≥ 1.0×", rat is not None and rat >= 1.0)
    if "b6" in r:
        b6 = r["b6"]
        rest = b6["rest"] or {}
        viewers = b6["viewers"] or {}
        statuses = ", ".join(f"{n}× {code}" for code, n in rest.get("statuses", {}).items())
        row("B6", f"REST GET /api/v1/streams p99, 20 req/s, with {viewers.get('viewers')} viewers "
            f"running ({rest.get('requests')} requests: {statuses}; {rest.get('errors')} errors)", f"{fmt(rest.get('p99_ms'), 1)} ms", "—", "—", "< 20 ms",
            rest.get("p99_ms") is not None and rest["p99_ms"] < 20)
        ws = b6["ws"]
        if ws is None:
            row("B6", "event → 1000 WebSocket subscribers p99",
                f"not measured: endpoint missing (`/api/v1/events` answered {b6['events_status']})",
                "—", "—", "< 50 ms", None)
        else:
            row("B6", f"event → WebSocket subscribers p99 ({ws['connected']}/{ws['subscribers']} "
                f"connected, {ws['events']} deliveries, refused {ws['refused']})",
                f"{fmt(ws['p99_ms'], 1)} ms", "—", "—", "< 50 ms",
                ws["p99_ms"] is not None and ws["p99_ms"] < 50 and ws["events"] > 0)
    if "b7_idle_bigfoot" in r:
        row("B7", "memory (PSS) of an idle server", f"{fmt(r['b7_idle_bigfoot'], 1)} MiB",
            f"{fmt(r.get('b7_idle_nginx'), 1)} MiB (nginx-rtmp, 2 workers)", "—", "report", None)
        row("B7", "memory per live transcoded stream (B1 ladder)",
            f"{fmt(r['b7_stream_bigfoot'], 1)} MiB",
            f"{fmt(r.get('b7_stream_ffmpeg'), 1)} MiB (the ffmpeg ladder process)", "—", "report", None)
    if "b5_bigfoot" in r:
        def per_thousand(runs):
            good = [x for x in runs if x["pss_during"] is not None and x["report"]]
            if not good:
                return None, 0
            top = good[-1]
            return (top["pss_during"] - top["pss_before"]) * 1000 / top["report"]["viewers"], \
                top["report"]["viewers"]
        b, bn = per_thousand(r["b5_bigfoot"])
        n, nn = per_thousand(r["b5_nginx"])
        row("B7", f"memory per 1000 viewer connections (from {bn} and {nn} viewers)",
            f"{fmt(b, 1)} MiB", f"{fmt(n, 1)} MiB (nginx)", "—", "report", None)

    extra = []
    if r.get("criterion"):
        extra = ["", "`cargo bench --bench package` (criterion, median time per operation):", "",
                 "| operation | time |", "|---|---|",
                 *[f"| {n} | {t} |" for n, t in r["criterion"]]]

    if elapsed is None:
        elapsed = time.time() - started
    date = datetime.datetime.fromtimestamp(started).astimezone().isoformat(timespec="seconds")
    lines = [
        f"# bigfoot benchmarks: {mode} mode",
        "",
        f"- date: {date} (start)",
        f"- commit: {info['commit']}",
        f"- machine: {info['uname']}",
        f"- CPU: {info['cpu']}, {info['cores']} cores",
        f"- peers: {info['nginx']} with libnginx-mod-rtmp; {info['ffmpeg']}",
        f"- load average (1 min) at start {load_start:.2f}, at end {load_end:.2f}"
        + (" — other work was running: absolute figures are noisy, ratios less so"
           if max(load_start, load_end) > 1.0 else ""),
        f"- run time: {elapsed:.0f} s" + (f"; skipped: {', '.join(skipped)}" if skipped else ""),
        "",
        "| # | figure | bigfoot | peer (same run) | ratio | target | result |",
        "|---|---|---|---|---|---|---|",
        *rows,
        *extra,
        "",
    ]
    return "\n".join(lines)


def render(json_path):
    """Rewrites {run}.md from {run}.json (after a change to how figures are
    derived or shown; the measurements stay as they were)."""
    with open(json_path) as f:
        run = json.load(f)
    text = report(run["mode"], run["results"], run["machine"], run["started"],
                  run["load_start"], run["load_end"], run["skipped"], elapsed=run["elapsed"])
    with open(json_path[:-5] + ".md", "w") as f:
        f.write(text)
    print(text)
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--only", default="", help="comma-separated figures, e.g. b1,b3")
    parser.add_argument("--out", default=os.path.join(ROOT, "benches", "results"))
    parser.add_argument("--render", metavar="JSON",
                        help="rewrite the table of an earlier run from its .json")
    args = parser.parse_args()
    if args.render:
        return render(args.render)
    cfg = MODES[args.mode]
    only = {x.strip().lower() for x in args.only.split(",") if x.strip()}
    want = lambda fig: not only or fig in only

    started = time.time()
    load_start = os.getloadavg()[0]
    info = machine()
    workdir = tempfile.mkdtemp(prefix="bigfoot-bench-")
    os.chmod(workdir, 0o755)
    results = {}
    skipped = []

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        source, rungs = make_media()
        steps = (("b1", lambda: b1(cfg, workdir, source, results)),
                 ("b2", lambda: b2(cfg, workdir, source, results)),
                 ("b3", lambda: b3(cfg, workdir, source, results)),
                 ("b4", lambda: b4(cfg, workdir, rungs, results)),
                 ("b5", lambda: b5_b6(cfg, workdir, rungs, results)))
        if args.mode == "full":
            steps += (("criterion", lambda: criterion(results)),)
        for name, step in steps:
            if not want(name):
                continue
            t = time.time()
            try:
                step()
            except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError,
                    AttributeError, KeyError, TypeError) as e:
                log(f"{name} failed: {e}")
                skipped.append(f"{name} ({str(e).splitlines()[0][:120]})")
                PROCS.stop_all()
            log(f"{name} took {time.time() - t:.0f} s")
    finally:
        PROCS.stop_all()
        keep = os.environ.get("BENCH_KEEP_WORKDIR")
        if keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    run = dict(mode=args.mode, started=started, load_start=load_start,
               load_end=os.getloadavg()[0], skipped=skipped)
    text = report(args.mode, results, info, started, load_start, run["load_end"], skipped)
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    suffix = "" if not only else "-" + "-".join(sorted(only))
    path = os.path.join(args.out, f"{stamp}-{args.mode}{suffix}.md")
    with open(path, "w") as f:
        f.write(text)
    with open(path[:-3] + ".json", "w") as f:
        json.dump(dict(run, machine=info, results=results, elapsed=time.time() - started),
                  f, indent=1, default=str)
    print(text)
    log(f"wrote {path}")
    return 0 if not skipped else 1


if __name__ == "__main__":
    sys.exit(main())
