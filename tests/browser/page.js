// The page side of play.mjs: attaches hls.js or dash.js to the muted
// autoplaying <video> and exposes `window.harness`, which the driver polls.
// Every player is wrapped in the same small interface (levels, current
// level, force a level) so the driver does not care which one is loaded.
'use strict';

/** At most this many player errors are kept (the count is kept apart). */
const MAX_ERRORS = 50;

const video = document.getElementById('video');
const statusLine = document.getElementById('status');

// Keep every SourceBuffer a player creates, so that a snapshot can show
// what each one holds (video.buffered is only their intersection).
const sourceBuffers = [];
if (window.MediaSource) {
  const addSourceBuffer = MediaSource.prototype.addSourceBuffer;
  MediaSource.prototype.addSourceBuffer = function trackSourceBuffer(mime) {
    const buffer = addSourceBuffer.call(this, mime);
    sourceBuffers.push({ mime, buffer });
    return buffer;
  };
}

function rangesOf(ranges) {
  const list = [];
  for (let i = 0; i < ranges.length; i += 1) {
    list.push([ranges.start(i), ranges.end(i)]);
  }
  return list;
}

function sourceBufferRanges() {
  return sourceBuffers.map(({ mime, buffer }) => {
    try {
      return { mime, buffered: rangesOf(buffer.buffered) };
    } catch {
      return { mime, buffered: null };
    }
  });
}

const state = {
  player: null,
  version: null,
  errors: [],
  errorCount: 0,
  switches: [],
  events: [],
};

function recordError(error) {
  state.errorCount += 1;
  if (state.errors.length < MAX_ERRORS) {
    state.errors.push({ atMs: Math.round(performance.now()), ...error });
  }
}

function recordEvent(name, detail) {
  if (state.events.length < 200) {
    state.events.push({ atMs: Math.round(performance.now()), name, ...detail });
  }
}

/** `.../360p/index.m3u8` -> `360p`. */
function renditionOfUrl(url) {
  const parts = String(url || '').split(/[?#]/)[0].split('/');
  return parts.length >= 2 ? parts[parts.length - 2] : '';
}

video.addEventListener('error', () => {
  const error = video.error;
  recordError({
    source: 'video',
    fatal: true,
    code: error ? error.code : null,
    message: error ? error.message : 'video element error',
  });
});
for (const name of ['playing', 'waiting', 'stalled', 'ended', 'resize']) {
  video.addEventListener(name, () => {
    recordEvent(name, {
      currentTime: video.currentTime,
      videoWidth: video.videoWidth,
      videoHeight: video.videoHeight,
    });
  });
}

// ---------------------------------------------------------------------------
// hls.js

function startHls(url, debug) {
  const Hls = window.Hls;
  if (!Hls || !Hls.isSupported()) {
    throw new Error('hls.js is not loaded or MSE is not supported');
  }
  const hls = new Hls({ debug: Boolean(debug) });
  state.version = Hls.version;

  hls.on(Hls.Events.ERROR, (_event, data) => {
    const response = data.response || {};
    recordError({
      source: 'hls.js',
      fatal: Boolean(data.fatal),
      type: data.type,
      details: data.details,
      reason: data.reason || (data.error && data.error.message) || null,
      url: data.url || (data.frag && data.frag.url) || (data.context && data.context.url) || null,
      status: response.code || null,
    });
  });
  hls.on(Hls.Events.LEVEL_SWITCHED, (_event, data) => {
    state.switches.push({ atMs: Math.round(performance.now()), level: data.level });
  });
  // Play once the manifest is in, as hls.js documents. (dash.js plays by
  // itself: a play() before it attaches hides the `play` event it waits
  // for to start refreshing the MPD.)
  hls.on(Hls.Events.MANIFEST_PARSED, () => {
    video.play().catch((error) => {
      recordEvent('play-rejected', { message: String(error) });
    });
  });
  hls.loadSource(url);
  hls.attachMedia(video);

  return {
    levels() {
      return hls.levels.map((level, index) => ({
        index,
        name: level.name || renditionOfUrl(level.url && level.url[0]),
        width: level.width,
        height: level.height,
        bitrate: level.bitrate,
        averageBitrate: level.averageBitrate || null,
        frameRate: level.frameRate || null,
        codecs: [level.videoCodec, level.audioCodec].filter(Boolean).join(','),
      }));
    },
    audioTracks() {
      return hls.audioTracks.map((track) => ({
        name: track.name,
        groupId: track.groupId,
        url: track.url,
      }));
    },
    currentLevel() {
      return hls.currentLevel;
    },
    forceLevel(index) {
      hls.currentLevel = index;
    },
  };
}

// ---------------------------------------------------------------------------
// dash.js

function startDash(url, debug) {
  const dashjs = window.dashjs;
  if (!dashjs) {
    throw new Error('dash.js is not loaded');
  }
  const player = dashjs.MediaPlayer().create();
  state.version = player.getVersion();
  const events = dashjs.MediaPlayer.events;
  let initialized = false;

  player.updateSettings({
    debug: {
      logLevel: debug ? dashjs.Debug.LOG_LEVEL_DEBUG : dashjs.Debug.LOG_LEVEL_WARNING,
    },
  });
  player.on(events.ERROR, (event) => {
    const error = event.error || {};
    recordError({
      source: 'dash.js',
      fatal: true,
      event: 'error',
      code: error.code === undefined ? null : error.code,
      message: error.message || String(error),
      data: error.data ? JSON.stringify(error.data).slice(0, 500) : null,
    });
  });
  player.on(events.PLAYBACK_ERROR, (event) => {
    const error = event.error || {};
    recordError({
      source: 'dash.js',
      fatal: true,
      event: 'playbackError',
      code: error.code === undefined ? null : error.code,
      message: error.message || String(error),
    });
  });
  player.on(events.STREAM_INITIALIZED, () => {
    initialized = true;
  });
  player.on(events.QUALITY_CHANGE_RENDERED, (event) => {
    if (event.mediaType === 'video' && event.newRepresentation) {
      state.switches.push({
        atMs: Math.round(performance.now()),
        level: event.newRepresentation.id,
      });
    }
  });
  player.initialize(video, url, true);

  const representations = () =>
    initialized ? player.getRepresentationsByType('video') : [];

  return {
    levels() {
      return representations().map((rep, index) => ({
        index,
        name: rep.id,
        width: rep.width,
        height: rep.height,
        bitrate: rep.bandwidth,
        averageBitrate: null,
        frameRate: rep.frameRate || null,
        codecs: rep.codecs,
      }));
    },
    audioTracks() {
      if (!initialized) {
        return [];
      }
      return player.getTracksFor('audio').map((track) => ({
        name: track.id,
        groupId: null,
        url: null,
        codec: track.codec,
      }));
    },
    currentLevel() {
      if (!initialized) {
        return -1;
      }
      const current = player.getCurrentRepresentationForType('video');
      if (!current) {
        return -1;
      }
      return representations().findIndex((rep) => rep.id === current.id);
    },
    forceLevel(index) {
      player.updateSettings({
        streaming: { abr: { autoSwitchBitrate: { video: false } } },
      });
      player.setRepresentationForTypeByIndex('video', index, true);
    },
  };
}

// ---------------------------------------------------------------------------
// What the driver calls

let adapter = null;

window.harness = {
  start(kind, url, debug) {
    state.player = kind;
    try {
      adapter = kind === 'hls' ? startHls(url, debug) : startDash(url, debug);
    } catch (error) {
      recordError({ source: 'harness', fatal: true, message: String(error) });
    }
  },

  forceLevel(index) {
    adapter.forceLevel(index);
  },

  snapshot() {
    const quality = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    const snap = {
      player: state.player,
      version: state.version,
      currentTime: video.currentTime,
      paused: video.paused,
      readyState: video.readyState,
      videoWidth: video.videoWidth,
      videoHeight: video.videoHeight,
      buffered: rangesOf(video.buffered),
      sourceBuffers: sourceBufferRanges(),
      droppedFrames: quality ? quality.droppedVideoFrames : null,
      totalFrames: quality ? quality.totalVideoFrames : null,
      levels: adapter ? adapter.levels() : [],
      audioTracks: adapter ? adapter.audioTracks() : [],
      currentLevel: adapter ? adapter.currentLevel() : -1,
      switches: state.switches.slice(),
      errors: state.errors.slice(),
      errorCount: state.errorCount,
    };
    statusLine.textContent =
      `${state.player} ${state.version || ''}  t=${snap.currentTime.toFixed(2)}  ` +
      `${snap.videoWidth}x${snap.videoHeight}  level ${snap.currentLevel}  ` +
      `errors ${snap.errorCount}`;
    return snap;
  },

  events() {
    return state.events.slice();
  },

  mseSupport() {
    const types = [
      'video/mp4; codecs="avc1.42E01E"',
      'video/mp4; codecs="avc1.64001F"',
      'audio/mp4; codecs="mp4a.40.2"',
    ];
    const support = {};
    for (const type of types) {
      support[type] = window.MediaSource ? MediaSource.isTypeSupported(type) : false;
    }
    return support;
  },
};
