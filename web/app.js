// The drawing page: draw (Pointer Events) or upload a PNG, POST it to
// /predict?include=preprocessed, show the answer and the 28x28 image the
// model saw. No framework, nothing loaded from elsewhere.
//
// Requests: live while drawing (at most one per LIVE_MS), at once on pen-up,
// never more than one in flight; what changed while one was in flight is
// sent as soon as its answer arrives. The result panel's data-version tells which drawing it shows
// (the canvas carries the current one), so a test can wait for them to meet.
'use strict';

(function () {
  const SIZE = 280;          // drawing coordinates: a 280x280 square
  // MNIST strokes are about 2-3 px wide on a digit fitted into 20 px; a digit
  // drawn across most of the square is ~200 units tall, so ~20 units.
  const PEN = 20;
  const EXPORT = 140;        // the PNG sent: half size, same shape
  const LIVE_MS = 120;

  const $ = (id) => document.getElementById(id);
  const pad = $('pad');
  const ctx = pad.getContext('2d');
  const ui = {
    model: $('model'), modelInfo: $('model-info'), undo: $('undo'),
    clear: $('clear'), file: $('file'), drop: $('drop-zone'),
    empty: $('pad-empty'), result: $('result'), label: $('label'),
    confidence: $('confidence'), error: $('error'), bars: $('bars'),
    timing: $('timing'), seen: $('seen'), announce: $('announce'), ood: $('ood'),
  };

  const state = {
    strokes: [],       // each an array of [x, y] in drawing coordinates
    pointer: null,     // id of the pointer drawing now
    upload: null,      // { blob, bitmap } when showing an uploaded file
    version: 0,        // bumps on every change of what would be sent
    models: [],
    model: null,       // the /v1/models entry in use
    inflight: false,
    again: false,      // something changed while a request was in flight
    timer: 0,
  };

  // ---- drawing --------------------------------------------------------

  function cssColor(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function strokePath(c, strokes, scale) {
    c.lineCap = 'round';
    c.lineJoin = 'round';
    c.lineWidth = PEN * scale;
    for (const s of strokes) {
      c.beginPath();
      c.moveTo(s[0][0] * scale, s[0][1] * scale);
      if (s.length === 1) {
        c.lineTo(s[0][0] * scale + 0.01, s[0][1] * scale);   // a dot
      } else {
        // Through the midpoints: smooth curves from jittery samples.
        for (let i = 1; i < s.length - 1; i++) {
          const mx = (s[i][0] + s[i + 1][0]) / 2, my = (s[i][1] + s[i + 1][1]) / 2;
          c.quadraticCurveTo(s[i][0] * scale, s[i][1] * scale, mx * scale, my * scale);
        }
        const l = s[s.length - 1];
        c.lineTo(l[0] * scale, l[1] * scale);
      }
      c.stroke();
    }
  }

  function render() {
    const px = pad.width;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = cssColor('--paper');
    ctx.fillRect(0, 0, px, px);
    if (state.upload && state.upload.bitmap) {
      const b = state.upload.bitmap;
      const k = Math.min(px / b.width, px / b.height);
      const w = b.width * k, h = b.height * k;
      // A tiny image (a 28x28 digit) shows its pixels; others are smoothed.
      ctx.imageSmoothingEnabled = Math.max(b.width, b.height) > 64;
      ctx.drawImage(b, (px - w) / 2, (px - h) / 2, w, h);
    }
    ctx.strokeStyle = cssColor('--ink');
    strokePath(ctx, state.strokes, px / SIZE);
    ui.empty.hidden = state.strokes.length > 0 || state.upload !== null;
    ui.undo.disabled = state.strokes.length === 0;
    ui.clear.disabled = state.strokes.length === 0 && state.upload === null;
    pad.dataset.version = String(state.version);
  }

  let frame = 0;
  function renderSoon() {
    if (!frame)
      frame = requestAnimationFrame(() => { frame = 0; render(); });
  }

  function resize() {
    const px = Math.round(pad.getBoundingClientRect().width * (window.devicePixelRatio || 1));
    if (px > 0 && pad.width !== px) {
      pad.width = px;
      pad.height = px;
    }
    render();
  }

  function point(e) {
    const r = pad.getBoundingClientRect();
    const x = (e.clientX - r.left) * SIZE / r.width;
    const y = (e.clientY - r.top) * SIZE / r.height;
    return [Math.max(0, Math.min(SIZE, x)), Math.max(0, Math.min(SIZE, y))];
  }

  function changed(now) {
    state.version++;
    pad.dataset.version = String(state.version);
    renderSoon();
    schedule(now);
  }

  pad.addEventListener('pointerdown', (e) => {
    if (e.pointerType === 'mouse' && e.button !== 0)
      return;
    if (state.pointer !== null)
      return;                        // a second finger does not draw
    e.preventDefault();
    pad.focus({ preventScroll: true });
    pad.setPointerCapture(e.pointerId);
    state.pointer = e.pointerId;
    if (state.upload)
      dropUpload();                  // drawing starts a fresh canvas
    state.strokes.push([point(e)]);
    changed(false);
  });

  pad.addEventListener('pointermove', (e) => {
    if (e.pointerId !== state.pointer)
      return;
    const s = state.strokes[state.strokes.length - 1];
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
    for (const ev of events.length ? events : [e])
      s.push(point(ev));
    changed(false);
  });

  // A finger on the canvas only draws: claiming its touches keeps the
  // browser from reading a stroke as a scroll or fling, whose end would
  // swallow the next tap (on Clear, say).
  pad.addEventListener('touchstart', (e) => e.preventDefault(), { passive: false });
  pad.addEventListener('touchmove', (e) => e.preventDefault(), { passive: false });

  function penUp(e) {
    if (e.pointerId !== state.pointer)
      return;
    state.pointer = null;
    changed(true);
  }
  pad.addEventListener('pointerup', penUp);
  pad.addEventListener('pointercancel', penUp);

  function dropUpload() {
    if (state.upload && state.upload.bitmap)
      state.upload.bitmap.close();
    state.upload = null;
  }

  function clearAll() {
    dropUpload();
    state.strokes = [];
    state.pointer = null;
    changed(true);
  }

  function undo() {
    if (!state.strokes.length)
      return;
    state.strokes.pop();
    changed(true);
  }

  ui.clear.addEventListener('click', clearAll);
  ui.undo.addEventListener('click', undo);
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    if (t && (t.tagName === 'SELECT' || t.tagName === 'INPUT'))
      return;
    if (e.key === 'Escape' || (t === pad && (e.key === 'Delete' || e.key === 'Backspace'))) {
      e.preventDefault();
      clearAll();
    } else if ((e.ctrlKey || e.metaKey) && !e.shiftKey && e.key.toLowerCase() === 'z') {
      e.preventDefault();
      undo();
    }
  });

  // ---- uploads: picker, drag and drop, paste ---------------------------

  // The file replaces the drawing at once (and is sent at once); its
  // picture appears when the browser has decoded it.
  function useFile(blob) {
    if (!blob)
      return;
    dropUpload();
    state.strokes = [];
    const upload = { blob, bitmap: null };
    state.upload = upload;
    changed(true);
    createImageBitmap(blob).then((bitmap) => {
      if (state.upload === upload) {
        upload.bitmap = bitmap;
        renderSoon();
      } else {
        bitmap.close();
      }
    }, () => { /* not a picture the browser can show: the server says why */ });
  }

  ui.file.addEventListener('change', () => {
    useFile(ui.file.files[0]);
    ui.file.value = '';              // choosing the same file again works
  });

  let dragDepth = 0;
  ui.drop.addEventListener('dragenter', (e) => {
    e.preventDefault();
    dragDepth++;
    ui.drop.classList.add('dragging');
  });
  ui.drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    if (e.dataTransfer)
      e.dataTransfer.dropEffect = 'copy';
  });
  ui.drop.addEventListener('dragleave', () => {
    if (--dragDepth <= 0) {
      dragDepth = 0;
      ui.drop.classList.remove('dragging');
    }
  });
  ui.drop.addEventListener('drop', (e) => {
    e.preventDefault();
    dragDepth = 0;
    ui.drop.classList.remove('dragging');
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f)
      useFile(f);
  });
  // A file dropped next to the zone must not navigate away from the page.
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => e.preventDefault());

  document.addEventListener('paste', (e) => {
    const items = e.clipboardData ? Array.from(e.clipboardData.items) : [];
    const item = items.find((i) => i.kind === 'file');
    if (item) {
      e.preventDefault();
      useFile(item.getAsFile());
    }
  });

  // ---- requests -------------------------------------------------------

  // now: send at once (pen-up, clear, upload); else at most LIVE_MS after
  // the first change not yet sent, however many follow it.
  function schedule(now) {
    if (now)
      send();
    else if (!state.timer)
      state.timer = setTimeout(send, LIVE_MS);
  }

  // The bytes to send for the current state, or null when there is nothing.
  function body() {
    if (state.upload)
      return Promise.resolve(state.upload.blob);
    if (!state.strokes.length)
      return Promise.resolve(null);
    // Black on white, whatever the page's colours: a plain scan of ink.
    const c = document.createElement('canvas');
    c.width = c.height = EXPORT;
    const g = c.getContext('2d');
    g.fillStyle = '#fff';
    g.fillRect(0, 0, EXPORT, EXPORT);
    g.strokeStyle = '#000';
    strokePath(g, state.strokes, EXPORT / SIZE);
    return new Promise((resolve) => c.toBlob(resolve, 'image/png'));
  }

  async function send() {
    clearTimeout(state.timer);
    state.timer = 0;
    if (state.inflight) {
      state.again = true;
      return;
    }
    if (!state.model)
      return;                         // chooseModel sends once models are known
    // In flight from here: a pen-up during toBlob must not start a second.
    state.inflight = true;
    state.again = false;
    const version = state.version;
    ui.result.setAttribute('aria-busy', 'true');
    try {
      const blob = await body();
      if (!blob) {
        showEmpty(version);
        return;
      }
      const url = '/predict?include=preprocessed&model=' + encodeURIComponent(state.model.name);
      const t0 = performance.now();
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'Content-Type': 'image/png' },
        body: blob,
      });
      const ms = performance.now() - t0;
      let json = null;
      try { json = await res.json(); } catch (_) { /* reported below */ }
      if (res.ok && json && Array.isArray(json.probabilities))
        showResult(json, ms, version);
      else
        showError(json && json.error, res.status, version);
    } catch (err) {
      showError({ code: 'network', message: 'the server did not answer (' + err.message + ')' }, 0, version);
    } finally {
      state.inflight = false;
      if (state.again || state.version !== version)
        send();
      else
        ui.result.removeAttribute('aria-busy');
    }
  }

  // ---- showing results ----------------------------------------------------

  function pct(p) {
    return (100 * p).toFixed(p >= 0.9995 || p < 0.0005 ? 0 : 1) + '%';
  }

  function buildBars() {
    const labels = state.model ? state.model.labels : [];
    ui.bars.textContent = '';
    const longest = labels.reduce((n, l) => Math.max(n, l.length), 1);
    ui.bars.style.setProperty('--name', (longest + 1) + 'ch');
    labels.forEach((name) => {
      const li = document.createElement('li');
      const n = document.createElement('span');
      n.className = 'name';
      n.textContent = name;
      n.title = name;
      const track = document.createElement('span');
      track.className = 'track';
      track.setAttribute('aria-hidden', 'true');
      const fill = document.createElement('span');
      fill.className = 'fill';
      track.appendChild(fill);
      const p = document.createElement('span');
      p.className = 'pct';
      p.textContent = '–';
      li.append(n, track, p);
      ui.bars.appendChild(li);
    });
  }

  function setBars(probs, best) {
    const rows = ui.bars.children;
    for (let i = 0; i < rows.length; i++) {
      const p = probs ? probs[i] || 0 : 0;
      rows[i].classList.toggle('best', probs !== null && i === best);
      rows[i].querySelector('.fill').style.transform = 'scaleX(' + p.toFixed(4) + ')';
      rows[i].querySelector('.pct').textContent = probs ? pct(p) : '–';
    }
  }

  function setLabel(text) {
    ui.label.textContent = text;
    ui.label.classList.toggle('long', text.length > 2);
  }

  function done(version) {
    ui.result.dataset.version = String(version);
  }

  // in_distribution is false when the model's out-of-distribution score
  // rejects the image, true when it passes, null (or absent) for a model
  // without the statistics: only false says anything.
  function setDigitLike(inDistribution) {
    const no = inDistribution === false;
    ui.ood.hidden = !no;
    ui.result.classList.toggle('not-digit', no);
  }

  function showEmpty(version) {
    setLabel('–');
    ui.confidence.textContent = 'Draw a digit to start';
    ui.error.hidden = true;
    ui.timing.textContent = '';
    ui.seen.hidden = true;
    ui.seen.removeAttribute('src');
    setBars(null, -1);
    setDigitLike(null);
    ui.announce.textContent = '';
    done(version);
  }

  function showResult(r, ms, version) {
    ui.error.hidden = true;
    setLabel(String(r.label));
    ui.confidence.textContent = pct(r.confidence) + ' confident';
    setBars(r.probabilities, r.prediction);
    setDigitLike(r.in_distribution);
    const t = r.timing || {};
    const us = (v) => (v / 1000).toFixed(2);
    ui.timing.textContent = 'Server ' + us(t.total_us) + ' ms (decode ' + us(t.decode_us) +
      ', preprocess ' + us(t.preprocess_us) + ', inference ' + us(t.inference_us) +
      ') · round trip ' + ms.toFixed(0) + ' ms · ' + r.model;
    if (r.preprocessed && r.preprocessed.png) {
      ui.seen.src = 'data:image/png;base64,' + r.preprocessed.png;
      ui.seen.hidden = false;
    }
    ui.result.dataset.label = String(r.label);
    if (state.pointer === null)
      ui.announce.textContent = (r.in_distribution === false ? ui.ood.textContent + '. ' : '') +
        'Prediction: ' + r.label + ', ' + pct(r.confidence) + ' confident';
    done(version);
  }

  function showError(e, status, version) {
    const code = e && e.code ? e.code : 'http_' + status;
    const msg = e && e.message ? e.message : 'unexpected answer from the server (HTTP ' + status + ')';
    ui.error.textContent = '';
    const c = document.createElement('code');
    c.textContent = code;
    ui.error.append(msg.charAt(0).toUpperCase() + msg.slice(1) + ' ', c);
    ui.error.hidden = false;
    setLabel('?');
    ui.confidence.textContent = 'No prediction';
    ui.timing.textContent = '';
    ui.seen.hidden = true;
    setBars(null, -1);
    setDigitLike(null);
    delete ui.result.dataset.label;
    done(version);
  }

  // ---- models -------------------------------------------------------------

  function chooseModel(name) {
    state.model = state.models.find((m) => m.name === name) || state.models[0];
    const m = state.model;
    const acc = typeof m.test_accuracy === 'number'
      ? ', test accuracy ' + (100 * m.test_accuracy).toFixed(2) + '%' : '';
    ui.modelInfo.textContent = m.dataset + ' · ' + m.parameters.toLocaleString('en') +
      ' parameters' + (m.members.length > 1 ? ' · ensemble of ' + m.members.length : '') + acc;
    buildBars();
    setBars(null, -1);
    schedule(true);
  }

  async function loadModels() {
    try {
      const res = await fetch('/v1/models');
      const j = await res.json();
      if (!res.ok)
        throw new Error(j && j.error ? j.error.message : 'HTTP ' + res.status);
      state.models = j.models;
      ui.model.textContent = '';
      for (const m of j.models) {
        const o = document.createElement('option');
        o.value = m.name;
        o.textContent = m.name + ' (' + m.dataset + ')' + (m.default ? ', default' : '');
        ui.model.appendChild(o);
      }
      ui.model.value = j.default;
      ui.model.disabled = false;
      chooseModel(j.default);
    } catch (err) {
      showError({ code: 'models', message: 'cannot list the models: ' + err.message }, 0, state.version);
    }
  }

  ui.model.addEventListener('change', () => chooseModel(ui.model.value));

  // ---- start ----------------------------------------------------------------

  if (window.ResizeObserver)
    new ResizeObserver(resize).observe(pad);
  window.addEventListener('resize', resize);
  if (window.matchMedia)
    window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', render);
  resize();
  showEmpty(state.version);
  loadModels();
})();
