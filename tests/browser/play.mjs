#!/usr/bin/env node
// Plays a live stream in headless Chromium with hls.js or dash.js and prints
// what happened as ONE JSON line on stdout. tests/players.rs asserts on it.
//
//   node play.mjs --player hls|dash --url URL [--seconds N]
//                 [--screenshot PATH] [--timeout SECS]
//
// PLAY_TRACE=1 in the environment prints every poll, every response and the
// player's debug log on stderr.
//
// Steps: serve page.html + page.js + the player's dist file from a static
// server on 127.0.0.1:0, open it in Chromium (puppeteer-core driving Debian's
// /usr/bin/chromium), start the player on a muted autoplaying <video>, wait
// until currentTime has advanced by N seconds (default 4), take the optional
// screenshot, then force every level in turn and wait until the player
// reports that level, the <video> has that level's size and currentTime has
// advanced one more second.
//
// A player that fails is a result, not a harness error: the JSON says what
// failed (`failure`) and the exit status is 0. Exit status 2 means the
// harness itself broke (bad arguments, no browser, the overall deadline);
// stdout still carries a JSON line with whatever was measured.

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** Read by path: dashjs's package `exports` hide its dist and package.json. */
const MODULES = path.join(HERE, 'node_modules');

/** Debian's chromium (scripts/setup installs it); BIGFOOT_CHROMIUM overrides. */
const CHROMIUM = process.env.BIGFOOT_CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--autoplay-policy=no-user-gesture-required',
  '--mute-audio',
];
/** The npm package and the build of each player, served as /player.js
 * (UMD builds: they set a global, `Hls` or `dashjs`). */
const PLAYERS = {
  hls: { package: 'hls.js', dist: 'dist/hls.min.js' },
  dash: { package: 'dashjs', dist: 'dist/modern/umd/dash.all.min.js' },
};

/** Poll interval of the page state. */
const POLL_MS = 250;
/** From page load to the first frame on screen (currentTime > 0). */
const STARTUP_TIMEOUT_MS = 30_000;
/** Slack on top of the N seconds of playback the first check asks for. */
const PLAY_SLACK_MS = 12_000;
/** From forcing a level to that level playing for LEVEL_PLAY_SECS. */
const LEVEL_TIMEOUT_MS = 15_000;
const LEVEL_PLAY_SECS = 1;
/** Kept back from the overall deadline to print the result and close. */
const REPORT_RESERVE_MS = 4_000;
/** At most this many console, network and page messages are kept. */
const MAX_MESSAGES = 50;

// ---------------------------------------------------------------------------
// Arguments

function parseArgs(argv) {
  const options = { player: null, url: null, seconds: 4, screenshot: null, timeout: 90 };
  for (let i = 0; i < argv.length; i += 1) {
    const name = argv[i];
    const value = argv[i + 1];
    if (value === undefined) {
      throw new Error(`${name} needs a value`);
    }
    i += 1;
    switch (name) {
      case '--player':
        options.player = value;
        break;
      case '--url':
        options.url = value;
        break;
      case '--seconds':
        options.seconds = Number(value);
        break;
      case '--screenshot':
        options.screenshot = path.resolve(value);
        break;
      case '--timeout':
        options.timeout = Number(value);
        break;
      default:
        throw new Error(`unknown argument ${name}`);
    }
  }
  if (!Object.hasOwn(PLAYERS, options.player)) {
    throw new Error('--player must be hls or dash');
  }
  if (!options.url) {
    throw new Error('--url is required');
  }
  if (!(options.seconds > 0) || !(options.timeout > 0)) {
    throw new Error('--seconds and --timeout must be positive numbers');
  }
  return options;
}

// ---------------------------------------------------------------------------
// The page's static server

/** Serves the test page, its script and the player on 127.0.0.1:0. */
async function startPageServer(player) {
  const files = {
    '/': { file: path.join(HERE, 'page.html'), type: 'text/html; charset=utf-8' },
    '/page.js': { file: path.join(HERE, 'page.js'), type: 'text/javascript' },
    '/player.js': {
      file: path.join(MODULES, PLAYERS[player].package, PLAYERS[player].dist),
      type: 'text/javascript',
    },
  };
  const server = http.createServer(async (request, response) => {
    const pathname = new URL(request.url, 'http://page').pathname;
    const entry = files[pathname];
    if (pathname === '/favicon.ico') {
      // Answered so that no 404 shows up among the console errors.
      response.writeHead(204).end();
      return;
    }
    if (!entry) {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    try {
      const body = await readFile(entry.file);
      response.writeHead(200, { 'content-type': entry.type, 'cache-control': 'no-store' });
      response.end(body);
    } catch (error) {
      response.writeHead(500, { 'content-type': 'text/plain' }).end(String(error));
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return server;
}

async function playerVersion(player) {
  const file = path.join(MODULES, PLAYERS[player].package, 'package.json');
  const manifest = JSON.parse(await readFile(file, 'utf8'));
  return manifest.version;
}

// ---------------------------------------------------------------------------
// Measuring

/** `PLAY_TRACE=1` prints every poll on stderr, for debugging a player. */
const TRACE = Boolean(process.env.PLAY_TRACE);

function trace(snap) {
  if (!TRACE) {
    return;
  }
  const round = (ranges) => (ranges || []).map(([a, b]) => `${a.toFixed(2)}-${b.toFixed(2)}`);
  const buffers = snap.sourceBuffers
    .map(({ mime, buffered }) => `${mime.split(';')[0]}[${round(buffered)}]`)
    .join(' ');
  process.stderr.write(
    `${new Date().toISOString()} t=${snap.currentTime.toFixed(3)} ` +
    `level=${snap.currentLevel} ${snap.videoWidth}x${snap.videoHeight} ` +
    `ready=${snap.readyState} errors=${snap.errorCount} ${buffers}\n`,
  );
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Polls the page until `done(snapshot)` is true or `timeoutMs` passes.
 * Returns `{ ok, snap, waitedMs }` with the last snapshot either way.
 */
async function pollUntil(page, timeoutMs, done) {
  const started = Date.now();
  let snap = await page.evaluate(() => window.harness.snapshot());
  trace(snap);
  while (!done(snap)) {
    if (Date.now() - started >= timeoutMs) {
      return { ok: false, snap, waitedMs: Date.now() - started };
    }
    await sleep(POLL_MS);
    snap = await page.evaluate(() => window.harness.snapshot());
    trace(snap);
  }
  return { ok: true, snap, waitedMs: Date.now() - started };
}

const hasFatal = (snap) => snap.errors.some((error) => error.fatal);

/** Forces each level in turn and checks that it plays at its size. */
async function checkLevels(page, levels, remainingMs) {
  const results = [];
  for (const level of levels) {
    const result = {
      index: level.index,
      name: level.name,
      width: level.width,
      height: level.height,
      bitrate: level.bitrate,
      reached: false,
      played: false,
      ok: false,
      switchMs: null,
      advancedSecs: 0,
      videoWidth: 0,
      videoHeight: 0,
      currentLevel: -1,
    };
    results.push(result);
    const budget = Math.min(LEVEL_TIMEOUT_MS, remainingMs());
    const started = Date.now();
    if (TRACE) {
      process.stderr.write(`forcing level ${level.index} (${level.name})\n`);
    }
    await page.evaluate((index) => window.harness.forceLevel(index), level.index);

    const reached = await pollUntil(page, budget, (snap) =>
      hasFatal(snap) ||
      (snap.currentLevel === level.index &&
        snap.videoWidth === level.width &&
        snap.videoHeight === level.height));
    Object.assign(result, {
      videoWidth: reached.snap.videoWidth,
      videoHeight: reached.snap.videoHeight,
      currentLevel: reached.snap.currentLevel,
    });
    if (!reached.ok || hasFatal(reached.snap)) {
      result.failure = `level ${level.name} (${level.width}x${level.height}) not on screen ` +
        `after ${reached.waitedMs} ms: player at level ${reached.snap.currentLevel}, ` +
        `video ${reached.snap.videoWidth}x${reached.snap.videoHeight}`;
      continue;
    }
    result.reached = true;
    result.switchMs = Date.now() - started;

    const from = reached.snap.currentTime;
    const played = await pollUntil(
      page,
      Math.max(0, budget - (Date.now() - started)),
      (snap) => hasFatal(snap) || snap.currentTime - from >= LEVEL_PLAY_SECS,
    );
    Object.assign(result, {
      advancedSecs: played.snap.currentTime - from,
      videoWidth: played.snap.videoWidth,
      videoHeight: played.snap.videoHeight,
      currentLevel: played.snap.currentLevel,
    });
    result.played = played.ok && !hasFatal(played.snap);
    result.ok = result.played &&
      played.snap.currentLevel === level.index &&
      played.snap.videoWidth === level.width &&
      played.snap.videoHeight === level.height;
    if (!result.ok) {
      result.failure = `level ${level.name} stopped after ${result.advancedSecs.toFixed(2)} s ` +
        `at level ${played.snap.currentLevel}, ` +
        `video ${played.snap.videoWidth}x${played.snap.videoHeight}`;
    }
  }
  return results;
}

/** Runs every step, filling `report` as it goes. */
async function measure(options, report, browserHolder, deadline) {
  const remainingMs = () => Math.max(0, deadline - REPORT_RESERVE_MS - Date.now());

  const pageServer = await startPageServer(options.player);
  browserHolder.pageServer = pageServer;
  const pageUrl = `http://127.0.0.1:${pageServer.address().port}/`;

  const { default: puppeteer } = await import('puppeteer-core');
  browserHolder.userDataDir = await mkdtemp(path.join(os.tmpdir(), 'bigfoot-chromium-'));
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: browserHolder.userDataDir,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
    protocolTimeout: 30_000,
    handleSIGINT: true,
    handleSIGTERM: true,
    handleSIGHUP: true,
  });
  browserHolder.browser = browser;
  report.browser = await browser.version();

  const page = await browser.newPage();
  await page.setViewport({ width: 960, height: 580 });
  watchPage(page, report, pageUrl);

  await page.goto(pageUrl, { waitUntil: 'load', timeout: 15_000 });
  report.mseSupport = await page.evaluate(() => window.harness.mseSupport());
  const loadedAt = Date.now();
  await page.evaluate(
    (kind, url, debug) => window.harness.start(kind, url, debug),
    options.player,
    options.url,
    TRACE,
  );

  // First frame: currentTime moves.
  const startup = await pollUntil(page, Math.min(STARTUP_TIMEOUT_MS, remainingMs()),
    (snap) => hasFatal(snap) || snap.currentTime > 0);
  report.snapshot = startup.snap;
  if (!startup.ok || hasFatal(startup.snap)) {
    report.failure = hasFatal(startup.snap)
      ? 'fatal player error before the first frame'
      : `no playback within ${startup.waitedMs} ms (currentTime stayed 0)`;
    return;
  }
  report.startupMs = Date.now() - loadedAt;
  report.startTime = startup.snap.currentTime;

  // N seconds of playback.
  const from = startup.snap.currentTime;
  const play = await pollUntil(page, Math.min(options.seconds * 1000 + PLAY_SLACK_MS, remainingMs()),
    (snap) => hasFatal(snap) || snap.currentTime - from >= options.seconds);
  report.snapshot = play.snap;
  report.advancedSecs = play.snap.currentTime - from;
  report.levels = play.snap.levels;
  report.audioTracks = play.snap.audioTracks;
  report.played = play.ok && !hasFatal(play.snap);
  if (!report.played) {
    report.failure = hasFatal(play.snap)
      ? 'fatal player error during playback'
      : `currentTime advanced only ${report.advancedSecs.toFixed(2)} s ` +
        `in ${play.waitedMs} ms (wanted ${options.seconds} s)`;
    return;
  }

  if (options.screenshot) {
    await page.screenshot({ path: options.screenshot });
    report.screenshot = options.screenshot;
  }

  report.levelResults = await checkLevels(page, report.levels, remainingMs);
  const failed = report.levelResults.find((result) => !result.ok);
  if (failed) {
    report.failure = failed.failure;
  }
  report.snapshot = await page.evaluate(() => window.harness.snapshot());
}

/** Collects console errors, page errors and failed requests into `report`. */
function watchPage(page, report, pageUrl) {
  const keep = (list, item) => {
    if (list.length < MAX_MESSAGES) {
      list.push(item);
    }
  };
  page.on('console', (message) => {
    const type = message.type();
    if (TRACE) {
      process.stderr.write(`console.${type}: ${message.text()}\n`);
    }
    if (type === 'error') {
      keep(report.consoleErrors, message.text());
    } else if (type === 'warn' || type === 'warning') {
      keep(report.consoleWarnings, message.text());
    }
  });
  page.on('pageerror', (error) => keep(report.pageErrors, String(error)));
  page.on('requestfailed', (request) => {
    const failure = request.failure();
    keep(report.requestFailures, {
      url: request.url(),
      error: failure ? failure.errorText : 'failed',
    });
  });
  page.on('response', (response) => {
    if (TRACE) {
      process.stderr.write(`${new Date().toISOString()} ${response.status()} ${response.url()}\n`);
    }
    const url = response.url();
    if (/\.(m3u8|mpd)$/.test(new URL(url).pathname)) {
      report.manifestFetches[url] = (report.manifestFetches[url] || 0) + 1;
    }
    if (response.status() >= 400 && !url.startsWith(pageUrl)) {
      keep(report.httpErrors, { url, status: response.status() });
    }
  });
}

// ---------------------------------------------------------------------------
// Main

function emptyReport(options) {
  return {
    player: options.player,
    url: options.url,
    playerVersion: null,
    browser: null,
    mseSupport: null,
    startupMs: null,
    startTime: null,
    advancedSecs: 0,
    played: false,
    levels: [],
    audioTracks: [],
    levelResults: [],
    fatalErrors: [],
    errors: [],
    errorCount: 0,
    consoleErrors: [],
    consoleWarnings: [],
    pageErrors: [],
    requestFailures: [],
    httpErrors: [],
    manifestFetches: {},
    events: [],
    snapshot: null,
    screenshot: null,
    failure: null,
    harnessError: null,
    elapsedMs: 0,
  };
}

async function closeAll(holder) {
  if (holder.browser) {
    await Promise.race([holder.browser.close().catch(() => {}), sleep(5_000)]);
    const chromium = holder.browser.process();
    if (chromium && chromium.exitCode === null) {
      chromium.kill('SIGKILL');
    }
  }
  if (holder.pageServer) {
    holder.pageServer.closeAllConnections();
    holder.pageServer.close();
  }
  if (holder.userDataDir) {
    await rm(holder.userDataDir, { recursive: true, force: true }).catch(() => {});
  }
}

async function finishReport(report, holder, started) {
  const page = holder.browser
    ? (await holder.browser.pages().catch(() => [])).find((p) => p.url().startsWith('http'))
    : null;
  if (page) {
    try {
      const snap = await page.evaluate(() => window.harness.snapshot());
      report.snapshot = snap;
      report.events = await page.evaluate(() => window.harness.events());
    } catch {
      // The page is gone; keep the last snapshot taken.
    }
  }
  if (report.snapshot) {
    report.errors = report.snapshot.errors;
    report.errorCount = report.snapshot.errorCount;
    report.fatalErrors = report.snapshot.errors.filter((error) => error.fatal);
    if (report.levels.length === 0) {
      report.levels = report.snapshot.levels;
    }
  }
  report.elapsedMs = Date.now() - started;
}

async function main() {
  const started = Date.now();
  let options;
  try {
    options = parseArgs(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`play.mjs: ${error.message}\n`);
    process.stdout.write(`${JSON.stringify({ harnessError: error.message })}\n`);
    process.exit(2);
  }
  const report = emptyReport(options);
  const holder = {};
  const deadline = started + options.timeout * 1000;
  let exitCode = 0;
  let printed = false;
  const print = () => {
    if (!printed) {
      printed = true;
      process.stdout.write(`${JSON.stringify(report)}\n`);
    }
  };

  // The overall deadline: if a step hangs past its own limit (a stuck
  // browser), report what there is and leave.
  const watchdog = setTimeout(() => {
    report.harnessError = `overall deadline of ${options.timeout} s passed`;
    report.elapsedMs = Date.now() - started;
    process.stderr.write(`play.mjs: ${report.harnessError}\n`);
    print();
    closeAll(holder).finally(() => process.exit(2));
  }, options.timeout * 1000);

  try {
    report.playerVersion = await playerVersion(options.player);
    await measure(options, report, holder, deadline);
  } catch (error) {
    report.harnessError = error.stack || String(error);
    process.stderr.write(`play.mjs: ${report.harnessError}\n`);
    exitCode = 2;
  }
  await finishReport(report, holder, started);
  clearTimeout(watchdog);
  print();
  await closeAll(holder);
  process.exit(exitCode);
}

main();
