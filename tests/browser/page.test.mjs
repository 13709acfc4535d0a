// The drawing page in a real browser: Debian's Chromium, driven by
// playwright-core, against a server started here on a free port.
//
//   node tests/browser/page.test.mjs BUILD_DIR     (via tests/browser/run.sh)
//
// Checks the page's HTTP headers (CSP, nosniff, caching, 304), draws the ten
// digits with synthetic pointer strokes on a desktop and on a touch phone
// (>= 9 of 10 right each), uploads through the file input, a drop and a
// paste, shows "This does not look like a digit" for a drawn # (and not
// for digits), shows an API error, switches to the Fashion model, and asserts
// from the browser's own events: no console error, no failed request, no
// request to any other host, no CSP violation. Screenshots go to
// BUILD_DIR/browser/. Output is TAP-like, closed by
// "browser: N passed, M failed"; exit status 1 on any failure.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { DIGITS, hand, raster, smooth } from './digits.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const build = path.resolve(root, process.argv[2] || 'build');
const SERVER = path.join(build, 'mnist-server');
const ART = path.join(build, 'browser');
const CHROMIUM = '/usr/bin/chromium';
const DEADLINE_MS = 300_000;   // the whole suite; it takes ~30 s
// Box units (of 100) between pointer samples: ~12 px on a phone's canvas,
// finer than a finger reports, and each sample is a round trip.
const PEN_STEP = 4;

let n = 0, passed = 0, failed = 0;
function check(cond, name, ...details) {
  n++;
  if (cond) {
    passed++;
    console.log(`ok ${n} - ${name}`);
  } else {
    failed++;
    console.log(`not ok ${n} - ${name}`);
    for (const d of details)
      for (const line of String(d).split('\n'))
        console.log(`# ${line}`);
  }
  return cond;
}
function finish(code) {
  console.log(`browser: ${passed} passed, ${failed} failed`);
  process.exit(code ?? (failed ? 1 : 0));
}

// ---- the server -------------------------------------------------------------

const servers = [];
async function startServer(args = [], env = {}) {
  const child = spawn(SERVER, ['--host', '127.0.0.1', '--port', '0', '--models-dir', 'models',
                               '--threads', '2', ...args],
                      { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  servers.push(child);
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  const t0 = Date.now();
  let base = null;
  while (Date.now() - t0 < 30_000) {
    if (child.exitCode !== null)
      throw new Error(`server exited (${child.exitCode}):\n${log}`);
    const m = /listening on http:\/\/[^ \n]*:(\d+)\n/.exec(log);
    if (m && !base)
      base = `http://127.0.0.1:${m[1]}`;
    if (base) {
      try {
        if ((await fetch(base + '/readyz', { signal: AbortSignal.timeout(2000) })).status === 200)
          return { base, child, log: () => log };
      } catch (_) { /* not accepting yet */ }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`server not ready within 30 s:\n${log}`);
}

function stopServers() {
  for (const c of servers)
    if (c.exitCode === null)
      c.kill('SIGTERM');
}

// ---- HTTP: headers of the page ----------------------------------------------

async function httpChecks(base) {
  const res = await fetch(base + '/');
  const html = await res.text();
  const h = (k) => res.headers.get(k) || '';
  check(res.status === 200 && h('content-type') === 'text/html; charset=utf-8',
        'GET / answers 200 text/html; charset=utf-8', `${res.status} ${h('content-type')}`);
  const csp = h('content-security-policy');
  const dirs = Object.fromEntries(csp.split(';').map((d) => d.trim().split(/\s+/))
                                     .filter((d) => d[0]).map((d) => [d[0], d.slice(1)]));
  const strict = dirs['default-src']?.join(' ') === "'none'" &&
                 dirs['script-src']?.join(' ') === "'self'" &&
                 dirs['connect-src']?.join(' ') === "'self'" &&
                 dirs['style-src']?.join(' ') === "'self'" &&
                 !/unsafe-inline|unsafe-eval|\*/.test(csp);
  check(strict, "CSP: default-src 'none', script/style/connect only 'self', nothing unsafe", csp);
  check(h('x-content-type-options') === 'nosniff', 'X-Content-Type-Options: nosniff');
  check(/^(no-referrer|same-origin|strict-origin)/.test(h('referrer-policy')),
        'Referrer-Policy is set', h('referrer-policy'));
  check(/^"[0-9a-f]{20}"$/.test(h('etag')) && h('cache-control') !== '',
        'a strong ETag and Cache-Control', `${h('etag')} / ${h('cache-control')}`);
  check(!/<script(?![^>]*\bsrc=)[^>]*>|<style|\sstyle=|\son[a-z]+=/i.test(html),
        'index.html has no inline script, style or event handler');

  for (const [p, ct] of [['/app.js', 'text/javascript; charset=utf-8'],
                         ['/app.css', 'text/css; charset=utf-8'],
                         ['/favicon.svg', 'image/svg+xml; charset=utf-8']]) {
    const r = await fetch(base + p);
    const body = await r.arrayBuffer();
    const etag = r.headers.get('etag');
    const again = await fetch(base + p, { headers: { 'If-None-Match': `"other", W/${etag}` } });
    const again_body = await again.arrayBuffer();
    check(r.status === 200 && r.headers.get('content-type') === ct && body.byteLength > 0 &&
          r.headers.get('x-content-type-options') === 'nosniff' &&
          again.status === 304 && again.headers.get('etag') === etag &&
          again.headers.get('cache-control') === r.headers.get('cache-control') &&
          again_body.byteLength === 0,
          `${p}: ${ct}, and 304 with the ETag on If-None-Match`,
          `${r.status} ${r.headers.get('content-type')}; then ${again.status} etag ${again.headers.get('etag')}`);
  }
  const stale = await fetch(base + '/', { headers: { 'If-None-Match': '"0000"' } });
  check(stale.status === 200 && (await stale.text()) === html, 'a stale ETag gets the page again');
  const head = await fetch(base + '/', { method: 'HEAD' });
  check(head.status === 200 && head.headers.get('etag') === h('etag'), 'HEAD / answers like GET');
  const post = await fetch(base + '/', { method: 'POST', body: 'x' });
  const pj = await post.json().catch(() => null);
  check(post.status === 405 && pj?.error?.code === 'method_not_allowed', 'POST / is 405 in the error envelope',
        `${post.status} ${JSON.stringify(pj)}`);
  const missing = await fetch(base + '/nope.js');
  check(missing.status === 404, 'a file the page does not have is 404');

  // The API side of "what the model sees".
  const seven = raster(DIGITS[7]);
  const pr = await fetch(base + '/predict?include=preprocessed',
                         { method: 'POST', headers: { 'Content-Type': 'image/png' }, body: seven });
  const pjs = await pr.json();
  const png = Buffer.from(pjs.preprocessed?.png || '', 'base64');
  const wh = png.length > 24 ? [png.readUInt32BE(16), png.readUInt32BE(20)] : [];
  check(pr.status === 200 && pjs.label === '7' && pjs.preprocessed.width === 28 &&
        wh[0] === 28 && wh[1] === 28 && png.subarray(1, 4).toString() === 'PNG',
        'POST /predict?include=preprocessed adds the 28x28 PNG the model saw',
        JSON.stringify(pjs).slice(0, 300));
  const plain = await (await fetch(base + '/predict', {
    method: 'POST', headers: { 'Content-Type': 'image/png' }, body: seven })).json();
  check(!('preprocessed' in plain) &&
        JSON.stringify(plain.probabilities) === JSON.stringify(pjs.probabilities),
        'without include= there is no image, and the probabilities are the same');
  const bad = await fetch(base + '/predict?include=heatmap',
                          { method: 'POST', headers: { 'Content-Type': 'image/png' }, body: seven });
  const bj = await bad.json().catch(() => null);
  check(bad.status === 400 && bj?.error?.code === 'bad_request', 'include=heatmap is 400 bad_request',
        `${bad.status} ${JSON.stringify(bj)}`);
}

// ---- the browser ---------------------------------------------------------------

// Everything a page does that a user would call broken, from its own events.
function watch(page, base, name) {
  // expect400: how many 400 answers from /predict a step is about to cause
  // (each shows once as a response and once on the console).
  const w = { console: [], failed: [], foreign: [], bad: [], expect400: { console: 0, response: 0 }, name };
  const origin = new URL(base).origin;
  page.on('console', (m) => {
    if (m.type() !== 'error')
      return;
    const text = m.text();
    // Chromium reports a fetch answered 400 on the console; only the
    // deliberately invalid upload may cause that.
    if (w.expect400.console > 0 && /status of 400/.test(text) && /\/predict/.test(m.location().url || '')) {
      w.expect400.console--;
      return;
    }
    w.console.push(text);
  });
  page.on('pageerror', (e) => w.console.push('uncaught: ' + e.message));
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith('data:') && !u.startsWith('blob:') && new URL(u).origin !== origin)
      w.foreign.push(u);
  });
  page.on('requestfailed', (r) => w.failed.push(`${r.url()}: ${r.failure()?.errorText}`));
  page.on('response', (r) => {
    if (r.status() === 400 && w.expect400.response > 0 && /\/predict\?/.test(r.url()))
      w.expect400.response--;
    else if (r.status() >= 400)
      w.bad.push(`${r.status()} ${r.url()}`);
  });
  return w;
}

// A browser of its own with a fresh profile directory, per device: the
// context options (viewport, touch, colour scheme) are fixed at launch.
async function launch(options) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'mnist-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    ...options,
  });
  // Before any page script: count CSP violations and pointer types.
  await context.addInitScript(() => {
    window.__csp = [];
    window.__pointers = new Set();
    document.addEventListener('securitypolicyviolation',
                              (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
    window.addEventListener('pointerdown', (e) => window.__pointers.add(e.pointerType), true);
  });
  const page = context.pages()[0] || await context.newPage();
  const close = async () => {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  };
  return { context, page, close };
}

// Waits until the result panel shows the canvas's current state.
async function settled(page) {
  await page.waitForFunction(() => {
    const pad = document.getElementById('pad'), res = document.getElementById('result');
    return res.dataset.version === pad.dataset.version && !res.hasAttribute('aria-busy');
  }, null, { timeout: 15_000 });
}

async function shown(page) {
  return page.evaluate(() => ({
    label: document.getElementById('label').textContent,
    error: document.getElementById('error').hidden ? '' : document.getElementById('error').textContent,
    notDigit: document.getElementById('ood').hidden ? '' : document.getElementById('ood').textContent,
  }));
}

// Client coordinates of box units (0..100) over the canvas.
async function padMapper(page) {
  const box = await page.locator('#pad').boundingBox();
  return ([x, y]) => [box.x + x / 100 * box.width, box.y + y / 100 * box.height];
}

async function drawMouse(page, strokes) {
  const at = await padMapper(page);
  for (const s of strokes) {
    const pts = smooth(s, PEN_STEP).map(at);
    await page.mouse.move(...pts[0]);
    await page.mouse.down();
    for (const p of pts.slice(1))
      await page.mouse.move(...p);
    await page.mouse.up();
  }
}

async function drawTouch(page, cdp, strokes) {
  const at = await padMapper(page);
  for (const s of strokes) {
    const pts = smooth(s, PEN_STEP).map(at);
    const tp = ([x, y]) => [{ x, y, radiusX: 2, radiusY: 2, force: 1, id: 1 }];
    await cdp.send('Input.dispatchTouchEvent', { type: 'touchStart', touchPoints: tp(pts[0]) });
    for (const p of pts.slice(1))
      await cdp.send('Input.dispatchTouchEvent', { type: 'touchMove', touchPoints: tp(p) });
    await cdp.send('Input.dispatchTouchEvent', { type: 'touchEnd', touchPoints: [] });
  }
}

// Draws 0..9, returns the labels shown; a miss leaves BUILD/browser/
// NAME-miss-D.png, the canvas beside what the model saw.
// A finger's tap: down, a short hold, up (a tap with no hold at all is not
// always taken for one).
async function tap(page, cdp, locator) {
  const b = await locator.boundingBox();
  const tp = [{ x: b.x + b.width / 2, y: b.y + b.height / 2, radiusX: 4, radiusY: 4, force: 1, id: 2 }];
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchStart', touchPoints: tp });
  await page.waitForTimeout(60);
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchEnd', touchPoints: [] });
}

async function drawAllDigits(page, name, draw, clear, style, notDigit = []) {
  const got = [], conf = [];
  for (let d = 0; d < 10; d++) {
    await clear(d);
    await draw(hand(DIGITS[d], style));
    await settled(page);
    const s = await shown(page);
    got.push(s.label);
    if (s.notDigit)
      notDigit.push(d);
    conf.push(await page.locator('#confidence').textContent());
    if (got[d] !== String(d)) {
      fs.mkdirSync(ART, { recursive: true });
      await page.locator('.layout').screenshot({ path: path.join(ART, `${name}-miss-${d}.png`) });
    }
  }
  console.log(`# shown: ${got.map((l, d) => `${d}->${l} (${conf[d].split(' ')[0]})`).join(', ')}`);
  return got;
}

function noTrouble(w) {
  check(w.expect400.console === 0 && w.expect400.response === 0,
        `${w.name}: each rejected upload was one 400 answer`, JSON.stringify(w.expect400));
  check(w.console.length === 0, `${w.name}: no console errors`, ...w.console);
  check(w.failed.length === 0 && w.bad.length === 0, `${w.name}: no failed requests`,
        ...w.failed, ...w.bad);
  check(w.foreign.length === 0, `${w.name}: no request to any host but the server`, ...w.foreign);
}

async function desktop(base, models) {
  const { page, close } = await launch({ viewport: { width: 1280, height: 800 } });
  const w = watch(page, base, 'desktop');
  await page.goto(base + '/');
  await page.waitForFunction(() => !document.getElementById('model').disabled);

  // Labels a screen reader announces, found the way one would.
  const named = await Promise.all([
    page.getByRole('img', { name: /Drawing area/ }).count(),
    page.getByRole('button', { name: 'Clear' }).count(),
    page.getByRole('button', { name: 'Undo' }).count(),
    page.getByLabel('Upload PNG').count(),
    page.getByLabel('Model').count(),
    page.getByRole('list', { name: /Probability/ }).count(),
  ]);
  check(named.every((c) => c === 1), 'canvas, buttons, upload, model picker and bars have accessible names',
        JSON.stringify(named));
  const def = models.models.find((m) => m.name === models.default);
  check(await page.locator('#model').inputValue() === models.default &&
        await page.locator('#model option').count() === models.models.length,
        'the model picker lists /v1/models with the default chosen');

  const notDigit = [];
  const got = await drawAllDigits(page, 'desktop', (s) => drawMouse(page, s), async (d) => {
    if (d % 2)
      await page.getByRole('button', { name: 'Clear' }).click();
    else
      await page.keyboard.press('Escape');
  }, { scale: 1 }, notDigit);
  const right = got.filter((l, d) => l === String(d)).length;
  check(right >= 9, `desktop: ${right}/10 digits drawn with the mouse recognised (need 9)`,
        `shown: ${got.join(' ')}`);
  check(notDigit.length === 0, 'desktop: no drawn digit is called "not a digit"',
        `shown for: ${notDigit.join(' ')}`);

  // The last digit (9) is on the canvas: bars, timing and the 28x28 view.
  const view = await page.evaluate(() => {
    const img = document.getElementById('seen');
    const r = img.getBoundingClientRect();
    const bars = [...document.querySelectorAll('#bars li')];
    return {
      natural: [img.naturalWidth, img.naturalHeight], shown: [r.width, r.height], hidden: img.hidden,
      png: img.src.startsWith('data:image/png;base64,'), bars: bars.length,
      top: bars.findIndex((li) => li.classList.contains('best')),
      names: bars.map((li) => li.querySelector('.name').textContent),
      timing: document.getElementById('timing').textContent,
      confidence: document.getElementById('confidence').textContent,
    };
  });
  check(!view.hidden && view.png && view.natural[0] === 28 && view.natural[1] === 28 &&
        view.shown[0] >= 112, '"what the model sees" is a 28x28 PNG shown enlarged',
        JSON.stringify(view));
  check(view.bars === def.labels.length && view.names.join() === def.labels.join() &&
        view.top === Number(got[9]) && /%/.test(view.confidence),
        'one bar per class, named by the model\'s labels, the top one highlighted', JSON.stringify(view));
  check(/Server \d+\.\d+ ms .*inference/.test(view.timing), 'the server\'s timing is shown', view.timing);
  fs.mkdirSync(ART, { recursive: true });
  await page.screenshot({ path: path.join(ART, 'desktop.png'), animations: 'disabled' });

  // A hash sign (#) is no digit: the default model's out-of-distribution
  // score puts it far past its threshold, so
  // the answer says in_distribution: false. The page says so and keeps the
  // guess, stepped back; a new drawing takes the message away.
  const answers = [];
  const onAnswer = async (r) => {
    if (new URL(r.url()).pathname === '/predict' && r.request().method() === 'POST')
      answers.push(await r.json().catch(() => null));
  };
  page.on('response', onAnswer);
  await page.keyboard.press('Escape');
  await drawMouse(page, [[[35, 10], [35, 90]], [[65, 10], [65, 90]], [[10, 35], [90, 35]],
                         [[10, 65], [90, 65]]]);
  await settled(page);
  page.off('response', onAnswer);
  const last = answers.filter(Boolean).pop() || {};
  const hash = await shown(page);
  const faded = await page.evaluate(() =>
    Number(getComputedStyle(document.getElementById('label')).opacity));
  check(last.in_distribution === false, 'a drawn # is answered in_distribution: false',
        JSON.stringify({ ood_score: last.ood_score, in_distribution: last.in_distribution }));
  check(hash.notDigit === 'This does not look like a digit' && /^[0-9]$/.test(hash.label) &&
        faded > 0 && faded < 1,
        'the page says "This does not look like a digit" and keeps the guess, faded',
        JSON.stringify({ ...hash, opacity: faded }));
  check(/does not look like a digit/.test(await page.locator('#announce').textContent()),
        'screen readers hear it too');
  await page.screenshot({ path: path.join(ART, 'desktop-not-digit.png'), animations: 'disabled' });
  await page.keyboard.press('Escape');
  await settled(page);
  await drawMouse(page, DIGITS[1]);
  await settled(page);
  const one = await shown(page);
  check(one.notDigit === '' && one.label === '1', 'the message goes with the next drawing (a 1)',
        JSON.stringify(one));

  // Undo takes the last stroke away: 4's stem gone, 4 with it; Ctrl+Z too.
  await page.keyboard.press('Escape');
  await drawMouse(page, DIGITS[7]);
  await settled(page);
  const before = (await shown(page)).label;
  await drawMouse(page, [[[20, 50], [50, 52], [80, 50]]]);   // a crossbar
  await settled(page);
  await page.getByRole('button', { name: 'Undo' }).click();
  await settled(page);
  const undone = (await shown(page)).label;
  await drawMouse(page, [[[20, 50], [50, 52], [80, 50]]]);
  await settled(page);
  await page.locator('#pad').focus();
  await page.keyboard.press('Control+z');
  await settled(page);
  check(before === '7' && undone === '7' && (await shown(page)).label === '7',
        'Undo (button and Ctrl+Z) removes the last stroke', `${before} ${undone}`);
  await page.keyboard.press('Escape');
  await settled(page);
  await page.waitForFunction(() => document.getElementById('clear').disabled, null, { timeout: 5000 })
    .catch(() => {});
  const cleared = await page.evaluate(() => ({
    label: document.getElementById('label').textContent,
    clear: document.getElementById('clear').disabled,
    seen: document.getElementById('seen').hidden,
  }));
  check(cleared.label === '–' && cleared.clear && cleared.seen, 'Escape clears the canvas and the result',
        JSON.stringify(cleared));

  // Keyboard: Tab reaches the picker, the canvas and the upload.
  await page.locator('body').focus();
  const order = [];
  for (let i = 0; i < 8; i++) {
    await page.keyboard.press('Tab');
    order.push(await page.evaluate(() => document.activeElement.id || document.activeElement.tagName));
  }
  check(['model', 'pad', 'file'].every((id) => order.includes(id)), 'Tab reaches the model picker, the canvas and the upload',
        order.join(' '));

  // Uploads: the file input, a drop, a paste.
  await page.locator('#file').setInputFiles({ name: 'three.png', mimeType: 'image/png', buffer: raster(DIGITS[3]) });
  await settled(page);
  check((await shown(page)).label === '3', 'a PNG chosen in the file input is classified', JSON.stringify(await shown(page)));

  const dropped = raster(DIGITS[5]).toString('base64');
  await page.evaluate((b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], 'five.png', { type: 'image/png' }));
    const zone = document.getElementById('drop-zone');
    for (const type of ['dragenter', 'dragover', 'drop'])
      zone.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, dropped);
  await settled(page);
  check((await shown(page)).label === '5', 'a PNG dropped on the drawing area is classified', JSON.stringify(await shown(page)));

  const pasted = raster(DIGITS[2]).toString('base64');
  await page.evaluate((b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], 'two.png', { type: 'image/png' }));
    document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
  }, pasted);
  await settled(page);
  check((await shown(page)).label === '2', 'a PNG pasted from the clipboard is classified', JSON.stringify(await shown(page)));

  // An invalid file: the API's own error message is shown.
  w.expect400 = { console: 1, response: 1 };
  await page.locator('#file').setInputFiles({ name: 'notes.png', mimeType: 'image/png',
                                               buffer: Buffer.from('these are notes, not a picture\n') });
  await settled(page);
  const err = await shown(page);
  check(/not a PNG/i.test(err.error) && /not_png/.test(err.error) && err.label === '?',
        'an invalid upload shows the API error message and code', JSON.stringify(err));
  await page.keyboard.press('Escape');   // else the next model gets it too
  await settled(page);

  // The Fashion model: its class names label the bars and the answer.
  const fashion = models.models.find((m) => m.dataset === 'fashion-mnist');
  await page.locator('#model').selectOption(fashion.name);
  await page.locator('#file').setInputFiles({ name: 'three.png', mimeType: 'image/png', buffer: raster(DIGITS[1]) });
  await settled(page);
  const fv = await page.evaluate(() => ({
    label: document.getElementById('label').textContent,
    names: [...document.querySelectorAll('#bars .name')].map((e) => e.textContent),
  }));
  check(fv.names.join() === fashion.labels.join() && fashion.labels.includes(fv.label) &&
        fv.names.includes('Sneaker'), `the ${fashion.name} model shows its class names (it says "${fv.label}")`,
        JSON.stringify(fv));
  await page.screenshot({ path: path.join(ART, 'desktop-fashion.png'), animations: 'disabled' });

  const csp = await page.evaluate(() => window.__csp);
  check(csp.length === 0, 'desktop: no CSP violation while working', ...csp);
  noTrouble(w);

  // The policy is enforced, not just sent: an injected inline script is
  // refused (after the checks above: the refusal is a console error).
  await page.evaluate(() => {
    const s = document.createElement('script');
    s.textContent = 'window.__inline = 1';
    document.body.appendChild(s);
  });
  await page.waitForFunction(() => window.__csp.length > 0, null, { timeout: 5000 }).catch(() => {});
  const r = await page.evaluate(() => ({ ran: window.__inline === 1, csp: window.__csp }));
  check(!r.ran && r.csp.some((v) => v.startsWith('script-src')), 'the CSP blocks an injected inline script',
        JSON.stringify(r));
  await close();
}

async function phone(base) {
  const { context, page, close } = await launch({
    viewport: { width: 360, height: 740 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
    colorScheme: 'dark',
  });
  const w = watch(page, base, 'phone');
  const cdp = await context.newCDPSession(page);
  await page.goto(base + '/');
  await page.waitForFunction(() => !document.getElementById('model').disabled);
  const fit = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    pad: document.getElementById('pad').getBoundingClientRect().width,
    bg: getComputedStyle(document.body).backgroundColor,
  }));
  check(fit.scroll <= 360 && fit.pad >= 250, 'phone: the page fits 360 px with a canvas of 250+ px',
        JSON.stringify(fit));
  check(fit.bg !== 'rgb(244, 245, 247)', 'phone: prefers-color-scheme dark gives the dark theme', fit.bg);

  let cleared = 0;
  const got = await drawAllDigits(page, 'phone', (s) => drawTouch(page, cdp, s), async (d) => {
    if (d === 0)
      return;
    await tap(page, cdp, page.getByRole('button', { name: 'Clear' }));
    if (await page.waitForFunction(() => document.getElementById('clear').disabled, null, { timeout: 3000 })
          .then(() => true, () => false))
      cleared++;
  }, { scale: 0.85, slant: 0.12, dx: 3, dy: 2 });
  const right = got.filter((l, d) => l === String(d)).length;
  check(right >= 9, `phone: ${right}/10 digits drawn by touch recognised (need 9)`, `shown: ${got.join(' ')}`);
  check(cleared === 9, `phone: a tap on Clear cleared the canvas each time (${cleared}/9)`);
  const kinds = await page.evaluate(() => [...window.__pointers]);
  check(kinds.includes('touch') && !kinds.includes('mouse'), 'phone: the strokes arrived as touch pointers',
        kinds.join());
  await page.screenshot({ path: path.join(ART, 'phone.png'), fullPage: true, animations: 'disabled' });
  const csp = await page.evaluate(() => window.__csp);
  check(csp.length === 0, 'phone: no CSP violation while working', ...csp);
  noTrouble(w);
  await close();
}

async function main() {
  for (const [f, what] of [[SERVER, 'make'], [CHROMIUM, 'make deps-test (Debian chromium)']])
    if (!fs.existsSync(f)) {
      check(false, `${f} exists`, `run ${what}`);
      finish(1);
    }
  const t0 = Date.now();
  const srv = await startServer();
  const models = await (await fetch(srv.base + '/v1/models')).json();
  await httpChecks(srv.base);

  const off = await startServer(['--no-ui']);
  const r = await fetch(off.base + '/');
  const j = await r.json().catch(() => null);
  const js = await fetch(off.base + '/app.js');
  check(r.status === 404 && j?.error?.code === 'not_found' && js.status === 404,
        '--no-ui: GET / and /app.js are 404', `${r.status} ${JSON.stringify(j)}`);
  off.child.kill('SIGTERM');
  console.log(`# servers and HTTP checks: ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  for (const [name, part] of [['desktop', () => desktop(srv.base, models)], ['phone', () => phone(srv.base)]]) {
    const t0 = Date.now();
    await part();
    console.log(`# ${name}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  stopServers();
}

const timer = setTimeout(() => {
  check(false, `the suite finished within ${DEADLINE_MS / 1000} s`);
  stopServers();
  finish(1);
}, DEADLINE_MS);
main().then(() => {
  clearTimeout(timer);
  finish();
}, (e) => {
  check(false, 'the suite ran to the end', e.stack || e);
  stopServers();
  finish(1);
});
