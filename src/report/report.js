// poolparty report: draws the page from the JSON in #poolparty-data.
// Recorded text (ids, values, logs) only ever becomes DOM text nodes, never HTML.
// When drawing is done, the body element gets data-status="ok" and counts that tests read back;
// any uncaught error sets data-status="error".
(function () {
  'use strict';
  var body = document.body;
  window.onerror = function (msg, src, line, col) {
    body.setAttribute('data-status', 'error');
    body.setAttribute('data-error', String(msg) + ' at ' + line + ':' + col);
  };
  var D = JSON.parse(document.getElementById('poolparty-data').textContent);
  var NAMES = ['succeeded', 'failed', 'signaled', 'could not start', 'timed out', 'lost', 'interrupted', 'not run', 'output lost'];
  var COLORS = ['#2f8f5b', '#d1495b', '#a4237a', '#7a4e9c', '#e07a1f', '#5b6573', '#e0a21f', '#adb5bd', '#8c2d19'];
  var SVGNS = 'http://www.w3.org/2000/svg';
  var app = document.getElementById('app');
  var drawn = { bars: 0, binned: 0, failures: 0, stages: 0, tails: 0 };

  function el(tag, attrs) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) { if (attrs[k] !== undefined && attrs[k] !== null) e.setAttribute(k, attrs[k]); }
    for (var i = 2; i < arguments.length; i++) add(e, arguments[i]);
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    for (var i = 2; i < arguments.length; i++) add(e, arguments[i]);
    return e;
  }
  function add(parent, child) {
    if (child === undefined || child === null || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { add(parent, c); }); return; }
    parent.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
  }
  function dur(s) {
    if (s === null || s === undefined || isNaN(s)) return '–';
    if (s < 1) return (s * 1000).toFixed(0) + ' ms';
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + Math.round(s % 60) + ' s';
    return Math.floor(s / 3600) + ' h ' + Math.round((s % 3600) / 60) + ' min';
  }
  function when(t) {
    if (!t) return '–';
    return new Date(t * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  }
  function plural(n, w) { return n + ' ' + w + (n === 1 ? '' : 's'); }
  function td(v, cls) { return el('td', cls ? { 'class': cls } : null, v); }

  // ---- header
  var wall = D.ended ? D.ended - D.started : null;
  var verdictText = { succeeded: 'succeeded', jobs_failed: 'jobs failed', interrupted: 'interrupted' }[D.verdict] || D.verdict;
  app.appendChild(el('section', { id: 'summary' },
    el('h2', null, 'Run ', el('code', null, D.run), ' ', el('span', { 'class': 'badge ' + D.verdict }, verdictText)),
    D.note ? el('p', { 'class': 'note', id: 'run-note' }, D.note) : null,
    el('dl', { 'class': 'facts' },
      el('dt', null, 'workflow'), el('dd', null, D.workflow),
      el('dt', null, 'exit code'), el('dd', null, String(D.exit_code)),
      el('dt', null, 'started'), el('dd', null, when(D.started)),
      el('dt', null, 'ended'), el('dd', null, D.ended ? when(D.ended) : 'not recorded (in progress or killed)'),
      el('dt', null, 'wall time'), el('dd', null, dur(wall)),
      el('dt', null, 'poolparty'), el('dd', null, D.poolparty_version),
      el('dt', null, 'manifest'), el('dd', null, el('code', null, D.manifest)),
      el('dt', null, 'manifest sha256'), el('dd', null, el('code', null, D.manifest_sha256.slice(0, 16) + '…')),
      el('dt', null, 'runs recorded'), el('dd', null, String(D.runs.length)),
      el('dt', null, 'report written'), el('dd', null, when(D.generated)))));

  // ---- failures at a glance
  var failing = D.stages.filter(function (s) { return s.failed_total > 0; });
  if (failing.length) {
    app.appendChild(el('section', { 'class': 'alert', id: 'failures-at-a-glance' },
      el('h2', null, 'Failures'),
      el('ul', null, failing.map(function (s) {
        var i = D.stages.indexOf(s);
        return el('li', null, el('a', { href: '#failed-' + i }, 'stage ' + s.name), ': ',
          plural(s.failed_total, 'job'), ' did not succeed');
      }))));
  }

  // ---- stage graph (layered) and table
  function stageGraph() {
    var layers = [];
    D.stages.forEach(function (s, i) { (layers[s.layer] = layers[s.layer] || []).push(i); });
    var W = 170, H = 46, GX = 70, GY = 18;
    var pos = [];
    var maxRows = 0;
    layers.forEach(function (l, x) {
      maxRows = Math.max(maxRows, l.length);
      l.forEach(function (i, y) { pos[i] = { x: 10 + x * (W + GX), y: 10 + y * (H + GY) }; });
    });
    var width = 20 + layers.length * (W + GX) - GX, height = 20 + maxRows * (H + GY) - GY;
    var g = svg('svg', { width: width, height: height, viewBox: '0 0 ' + width + ' ' + height, role: 'img', 'aria-label': 'stage graph', id: 'stage-graph' });
    g.appendChild(svg('defs', null, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto' },
      svg('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#8a93a3' }))));
    D.stages.forEach(function (s, i) {
      s.needs.forEach(function (n) {
        var a = pos[n], b = pos[i];
        var x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
        g.appendChild(svg('path', { d: 'M' + x1 + ',' + y1 + ' C' + (x1 + GX / 2) + ',' + y1 + ' ' + (x2 - GX / 2) + ',' + y2 + ' ' + x2 + ',' + y2,
          fill: 'none', stroke: '#8a93a3', 'stroke-width': 1.5, 'marker-end': 'url(#arrow)' }));
      });
    });
    D.stages.forEach(function (s, i) {
      var c = s.counts, p = pos[i];
      var bad = c.total - c.succeeded - c.not_run;
      var color = s.not_started ? '#adb5bd' : bad > 0 ? COLORS[1] : c.succeeded === c.total ? COLORS[0] : COLORS[6];
      var a = svg('a', { href: '#stage-' + i });
      a.appendChild(svg('rect', { x: p.x, y: p.y, width: W, height: H, rx: 7, fill: '#fff', stroke: color, 'stroke-width': 2.5 }));
      var frac = c.total ? c.succeeded / c.total : 0;
      a.appendChild(svg('rect', { x: p.x + 8, y: p.y + H - 10, width: (W - 16), height: 4, rx: 2, fill: '#e3e6eb' }));
      a.appendChild(svg('rect', { x: p.x + 8, y: p.y + H - 10, width: (W - 16) * frac, height: 4, rx: 2, fill: COLORS[0] }));
      if (c.total && bad) a.appendChild(svg('rect', { x: p.x + 8 + (W - 16) * frac, y: p.y + H - 10, width: (W - 16) * bad / c.total, height: 4, fill: COLORS[1] }));
      var name = s.name.length > 22 ? s.name.slice(0, 21) + '…' : s.name;
      a.appendChild(svg('text', { x: p.x + 10, y: p.y + 17, 'font-weight': 600 }, name));
      a.appendChild(svg('text', { x: p.x + 10, y: p.y + 31 }, c.succeeded + '/' + c.total + ' ok' + (bad ? ', ' + bad + ' not' : '')));
      g.appendChild(a);
    });
    return g;
  }
  var cols = [['backend'], ['jobs', 'total'], ['succeeded', 'succeeded'], ['reused', 'reused'], ['failed', 'failed'],
    ['signaled', 'signaled'], ['timed out', 'timed_out'], ['lost', 'lost'], ['interrupted', 'interrupted'],
    ['not run', 'not_run'], ['attempts', 'attempts'], ['retried', 'retried'], ['wall']];
  var table = el('table', { id: 'stage-table' },
    el('thead', null, el('tr', null, el('th', null, 'stage'), cols.map(function (c) { return el('th', { 'class': c[1] || c[0] === 'wall' ? 'n' : null }, c[0]); }))),
    el('tbody', null, D.stages.map(function (s, i) {
      var w = s.first_ms !== null && s.last_ms !== null ? (s.last_ms - s.first_ms) / 1000 : null;
      return el('tr', null, el('td', null, el('a', { href: '#stage-' + i }, s.name)),
        cols.map(function (c) {
          if (c[0] === 'backend') return td(s.backend);
          if (c[0] === 'wall') return td(dur(w), 'n');
          var v = s.counts[c[1]];
          var bad = v > 0 && ['failed', 'signaled', 'timed_out', 'lost', 'interrupted', 'exec_failed'].indexOf(c[1]) >= 0;
          return td(String(v), bad ? 'n bad' : 'n');
        }));
    })));
  app.appendChild(el('section', { id: 'stages' }, el('h2', null, 'Stages'), el('div', { style: 'overflow-x:auto' }, stageGraph()), table,
    el('p', { 'class': 'note' }, 'Counts are each job\'s final outcome as of the end of this run; "reused" jobs succeeded in an earlier run and were not run again. Wall time runs from the first submit or start to the last end of the stage\'s attempts in this run.')));

  // ---- per-stage drawings
  function axis(ctx, x0, w, y, from, len) {
    ctx.fillStyle = '#6b7380'; ctx.font = '11px system-ui, sans-serif';
    ctx.strokeStyle = '#e3e6eb';
    for (var k = 0; k <= 5; k++) {
      var x = x0 + w * k / 5;
      ctx.beginPath(); ctx.moveTo(x + 0.5, 0); ctx.lineTo(x + 0.5, y); ctx.stroke();
      var label = dur((from + len * k / 5) / 1000);
      ctx.textAlign = k === 0 ? 'left' : k === 5 ? 'right' : 'center';
      ctx.fillText(label, x, y + 13);
    }
  }
  function canvasFor(container, height) {
    var w = Math.max(600, Math.min(1120, container.clientWidth || 1120));
    var c = el('canvas', { width: w, height: height });
    return c;
  }
  function barsTimeline(s, i, box) {
    var T = s.timeline, n = T.start.length;
    var order = [];
    for (var k = 0; k < n; k++) order.push(k);
    var begin = function (k) { return T.submit[k] >= 0 ? Math.min(T.submit[k], T.start[k]) : T.start[k]; };
    order.sort(function (a, b) { return begin(a) - begin(b) || T.index[a] - T.index[b]; });
    // Greedy lane packing: each lane holds attempts that do not overlap.
    var laneEnd = [], lane = new Array(n), lanes = [];
    order.forEach(function (k) {
      var b = begin(k), l = 0;
      while (l < laneEnd.length && laneEnd[l] > b) l++;
      laneEnd[l] = T.end[k]; lane[k] = l;
      (lanes[l] = lanes[l] || []).push(k);
    });
    var L = laneEnd.length;
    var lh = L <= 40 ? 14 : L <= 150 ? 5 : 2;
    if (L * lh > 700) lh = Math.max(1, Math.floor(700 / L));
    var from = s.first_ms, len = Math.max(1, s.last_ms - s.first_ms);
    var c = canvasFor(box, L * lh + 22), ctx = c.getContext('2d');
    var W = c.width - 2, x = function (t) { return 1 + (t - from) / len * W; };
    axis(ctx, 1, W, L * lh + 2, 0, len);
    order.forEach(function (k) {
      var y = lane[k] * lh, h = Math.max(1, lh - (lh > 3 ? 2 : 0));
      if (T.submit[k] >= 0 && T.submit[k] < T.start[k]) {
        ctx.fillStyle = '#c9ced6';
        ctx.fillRect(x(T.submit[k]), y, Math.max(1, x(T.start[k]) - x(T.submit[k])), h);
      }
      ctx.fillStyle = COLORS[T.outcome[k]];
      var bw = x(T.end[k]) - x(T.start[k]);
      ctx.fillRect(x(T.start[k]), y, Math.max(1, bw > 4 ? bw - 1 : bw), h);
      if (T.attempt[k] > 1 && lh > 3) { ctx.fillStyle = '#1d2430'; ctx.fillRect(x(T.start[k]), y, 2, h); }
    });
    drawn.bars += n;
    c.setAttribute('data-bars', String(n));
    c.setAttribute('data-lanes', String(L));
    var tip = el('div', { 'class': 'tip' });
    c.addEventListener('mousemove', function (ev) {
      var r = c.getBoundingClientRect();
      var px = (ev.clientX - r.left) * c.width / r.width, py = (ev.clientY - r.top) * c.height / r.height;
      var l = Math.floor(py / lh), t = from + (px - 1) / W * len, slack = 3 * len / W, hit = -1;
      (lanes[l] || []).forEach(function (k) { if (begin(k) - slack <= t && t <= T.end[k] + slack) hit = k; });
      if (hit < 0) { tip.style.display = 'none'; return; }
      var lines = ['job ' + T.index[hit] + ' ' + T.id[hit] + ' (attempt ' + T.attempt[hit] + ')',
        NAMES[T.outcome[hit]] + ', ran ' + dur((T.end[hit] - T.start[hit]) / 1000)];
      if (T.submit[hit] >= 0) lines.push('queued ' + dur(Math.max(0, T.start[hit] - T.submit[hit]) / 1000));
      tip.textContent = lines.join('\n');
      tip.style.display = 'block';
      tip.style.left = (ev.clientX - r.left + 12) + 'px'; tip.style.top = (ev.clientY - r.top + 12) + 'px';
    });
    c.addEventListener('mouseleave', function () { tip.style.display = 'none'; });
    var wrap = el('div', { 'class': 'timeline', id: 'timeline-' + i }, c, tip);
    var used = {};
    T.outcome.forEach(function (o) { used[o] = true; });
    var legend = el('div', { 'class': 'legend' }, Object.keys(used).map(function (o) {
      return el('span', null, el('i', { style: 'background:' + COLORS[o] }), NAMES[o]);
    }), s.queue_known ? el('span', null, el('i', { style: 'background:#c9ced6' }), 'queued (submit → start)') : null,
    T.attempt.some(function (a) { return a > 1; }) ? el('span', null, el('i', { style: 'background:#1d2430' }), 'retry (attempt > 1)') : null);
    return [wrap, legend, el('p', { 'class': 'note' }, 'One bar per attempt (' + plural(n, 'attempt') + ', packed into ' + plural(L, 'lane') + ': a lane runs one attempt at a time). ' +
      (s.queue_known ? 'Grey is the wait in the scheduler\'s queue, from the array\'s submission to the job\'s start.' : 'Queue wait is not recorded for this stage (local jobs start as soon as a slot is free).'))];
  }
  function binnedTimeline(s, i, box) {
    var T = s.timeline;
    var rh = Math.max(3, Math.min(10, Math.floor(480 / T.buckets)));
    var c = canvasFor(box, T.buckets * rh + 22), ctx = c.getContext('2d');
    var W = c.width - 2, cw = W / T.bins;
    var max = 1;
    for (var k = 0; k < T.running.length; k++) max = Math.max(max, T.running[k]);
    axis(ctx, 1, W, T.buckets * rh + 2, T.from_ms - s.first_ms, T.bins * T.bin_ms);
    for (var r = 0; r < T.buckets; r++) {
      for (var b = 0; b < T.bins; b++) {
        var v = T.running[r * T.bins + b], f = T.failed[r * T.bins + b];
        if (!v && !f) continue;
        ctx.fillStyle = f ? 'rgba(209,73,91,' + (0.45 + 0.55 * Math.min(1, f / Math.max(1, v))) + ')' : 'rgba(47,143,91,' + (0.15 + 0.85 * v / max) + ')';
        ctx.fillRect(1 + b * cw, r * rh, Math.max(1, cw), rh - (rh > 4 ? 1 : 0));
      }
    }
    drawn.binned += T.attempts;
    c.setAttribute('data-binned', String(T.attempts));
    return [el('div', { 'class': 'timeline', id: 'timeline-' + i }, c),
      el('p', { 'class': 'note aggregated' }, 'Aggregated: ' + plural(T.attempts, 'attempt') + ' are more than ' + D.limits.max_bars +
        ', so instead of one bar per attempt each row is a band of ' + plural(T.per_bucket, 'job') + ' (by index) and each column ' + dur(T.bin_ms / 1000) +
        '. Green shade: attempts running in the cell (darkest ' + max + '); red: attempts that ended without success there.')];
  }
  function histogram(s) {
    var H = s.histogram, n = H.ok.length, W = 520, HH = 120;
    var max = 1;
    for (var k = 0; k < n; k++) max = Math.max(max, H.ok[k] + H.bad[k]);
    var g = svg('svg', { width: W, height: HH + 30, viewBox: '0 0 ' + W + ' ' + (HH + 30), 'class': 'histogram' });
    var bw = (W - 40) / n;
    for (k = 0; k < n; k++) {
      var ho = HH * H.ok[k] / max, hb = HH * H.bad[k] / max;
      if (ho) g.appendChild(svg('rect', { x: 36 + k * bw, y: HH - ho, width: Math.max(1, bw - 1), height: ho, fill: COLORS[0] }, svg('title', null, H.ok[k] + ' succeeded, ' + dur(H.lo + k * H.width) + '–' + dur(H.lo + (k + 1) * H.width))));
      if (hb) g.appendChild(svg('rect', { x: 36 + k * bw, y: HH - ho - hb, width: Math.max(1, bw - 1), height: hb, fill: COLORS[1] }, svg('title', null, H.bad[k] + ' not succeeded, ' + dur(H.lo + k * H.width) + '–' + dur(H.lo + (k + 1) * H.width))));
    }
    g.appendChild(svg('line', { x1: 36, y1: HH + 0.5, x2: W - 4, y2: HH + 0.5, stroke: '#8a93a3' }));
    g.appendChild(svg('text', { x: 32, y: 10, 'text-anchor': 'end' }, String(max)));
    g.appendChild(svg('text', { x: 32, y: HH, 'text-anchor': 'end' }, '0'));
    g.appendChild(svg('text', { x: 36, y: HH + 14 }, H.lo ? dur(H.lo) : '0'));
    g.appendChild(svg('text', { x: W - 4, y: HH + 14, 'text-anchor': 'end' }, dur(H.lo + n * H.width)));
    g.appendChild(svg('text', { x: W / 2, y: HH + 27, 'text-anchor': 'middle' }, 'attempt run time'));
    return g;
  }
  function concurrency(s) {
    var C = s.concurrency, n = C.running.length, W = 520, HH = 120;
    var max = Math.max(1, C.peak);
    C.queued.forEach(function (q) { max = Math.max(max, q); });
    var g = svg('svg', { width: W, height: HH + 30, viewBox: '0 0 ' + W + ' ' + (HH + 30), 'class': 'concurrency' });
    function line(vals, color) {
      var d = '', bw = (W - 40) / n;
      vals.forEach(function (v, k) {
        var y = HH - HH * v / max;
        d += (k ? 'L' : 'M') + (36 + k * bw).toFixed(1) + ',' + y.toFixed(1) + 'L' + (36 + (k + 1) * bw).toFixed(1) + ',' + y.toFixed(1);
      });
      g.appendChild(svg('path', { d: d, fill: 'none', stroke: color, 'stroke-width': 1.6 }));
    }
    if (C.queued.length) line(C.queued, '#8a93a3');
    line(C.running, COLORS[0]);
    g.appendChild(svg('line', { x1: 36, y1: HH + 0.5, x2: W - 4, y2: HH + 0.5, stroke: '#8a93a3' }));
    g.appendChild(svg('text', { x: 32, y: 10, 'text-anchor': 'end' }, String(max)));
    g.appendChild(svg('text', { x: 32, y: HH, 'text-anchor': 'end' }, '0'));
    g.appendChild(svg('text', { x: 36, y: HH + 14 }, '0'));
    g.appendChild(svg('text', { x: W - 4, y: HH + 14, 'text-anchor': 'end' }, dur(n * C.bin_ms / 1000)));
    g.setAttribute('data-peak', String(C.peak));
    g.appendChild(svg('text', { x: W / 2, y: HH + 27, 'text-anchor': 'middle' }, 'running' + (C.queued.length ? ' (green) and queued (grey)' : '') + ', peak ' + C.peak));
    return g;
  }
  function attemptTable(rows) {
    return el('table', null, el('thead', null, el('tr', null, el('th', { 'class': 'n' }, 'index'), el('th', null, 'id'), el('th', { 'class': 'n' }, 'attempt'), el('th', null, 'outcome'), el('th', { 'class': 'n' }, 'run time'))),
      el('tbody', null, rows.map(function (r) {
        return el('tr', null, td(String(r.index), 'n'), td(el('code', null, r.id)), td(String(r.attempt), 'n'), td(NAMES[r.outcome], r.outcome ? 'bad' : null), td(dur(r.seconds), 'n'));
      })));
  }
  function failure(f) {
    drawn.failures++;
    var head = ['job ' + f.index + ' ', el('code', null, f.id), ': ', el('strong', null, f.describe),
      f.exit_code !== null && f.outcome !== 1 ? ' (exit code ' + f.exit_code + ')' : '', ' after ' + plural(f.attempts, 'attempt')];
    var parts = [el('summary', null, head), el('div', { 'class': 'note' }, 'value: ', el('code', null, f.value))];
    if (f.stderr_log) parts.push(el('div', { 'class': 'note' }, 'stderr: ', el('code', null, f.stderr_log)));
    if (f.stderr_tail) { drawn.tails++; parts.push(el('pre', { 'class': 'tail stderr' }, f.stderr_tail)); }
    if (f.stdout_log) parts.push(el('div', { 'class': 'note' }, 'stdout: ', el('code', null, f.stdout_log)));
    if (f.stdout_tail) parts.push(el('pre', { 'class': 'tail stdout' }, f.stdout_tail));
    return el('details', { 'class': 'failure', open: drawn.failures <= 20 ? '' : null }, parts);
  }

  D.stages.forEach(function (s, i) {
    drawn.stages++;
    var c = s.counts;
    var sec = el('section', { id: 'stage-' + i, 'class': 'stage' });
    app.appendChild(sec);
    var needs = s.needs.map(function (n) { return D.stages[n].name; });
    add(sec, el('h2', null, 'Stage ', el('code', null, s.name)));
    add(sec, el('p', { 'class': 'note' }, s.backend + ' backend; ' + plural(c.total, 'job') + ', ' + plural(c.attempts, 'attempt') + ' in this run' +
      (needs.length ? '; needs ' + needs.join(', ') : '') +
      (s.durations ? '; run time min ' + dur(s.durations[0]) + ', median ' + dur(s.durations[1]) + ', p90 ' + dur(s.durations[2]) + ', max ' + dur(s.durations[3]) : '') +
      (s.queue_wait ? '; queue wait median ' + dur(s.queue_wait[1]) + ', max ' + dur(s.queue_wait[3]) : '')));
    if (s.not_started) add(sec, el('p', { 'class': 'note' }, 'Not started: ' + s.not_started));
    if (c.attempts === 0 && !s.not_started) add(sec, el('p', { 'class': 'note' }, 'No attempt in this run' + (c.reused ? ' (' + plural(c.reused, 'job') + ' reused from earlier runs)' : '') + '.'));
    if (s.untimed) add(sec, el('p', { 'class': 'note' }, plural(s.untimed, 'attempt') + ' without a recorded start and end are not drawn.'));
    if (s.timeline.kind !== 'empty') {
      add(sec, el('h3', null, 'Timeline'));
      var box = el('div');
      sec.appendChild(box);
      add(box, s.timeline.kind === 'bars' ? barsTimeline(s, i, sec) : binnedTimeline(s, i, sec));
    }
    if (s.histogram || s.concurrency) {
      add(sec, el('div', { 'class': 'row' },
        s.histogram ? el('div', null, el('h3', null, 'Run time of attempts'), histogram(s)) : null,
        s.concurrency ? el('div', null, el('h3', null, 'Concurrency over time'), concurrency(s)) : null));
    }
    if (s.slowest.length) add(sec, [el('h3', null, 'Slowest attempts'), attemptTable(s.slowest)]);
    if (c.retried) {
      add(sec, [el('h3', null, 'Retries (' + plural(c.retried, 'job') + ')'),
        el('ul', { 'class': 'retries' }, s.retried.map(function (r) {
          return el('li', null, 'job ' + r.index + ' ', el('code', null, r.id), ': ' + r.attempts.join(' → '));
        })),
        c.retried > s.retried.length ? el('p', { 'class': 'note' }, 'First ' + s.retried.length + ' of ' + c.retried + ' listed.') : null]);
    }
    if (c.lost_attempts) add(sec, [el('h3', null, 'Lost attempts (' + c.lost_attempts + ')'), attemptTable(s.lost)]);
    if (s.failed_total) {
      var fs = el('div', { id: 'failed-' + i, 'class': 'failures' }, el('h3', null, 'Failed jobs (' + s.failed_total + ')'), s.failed.map(failure));
      if (s.failed_total > s.failed.length) add(fs, el('p', { 'class': 'note' }, 'First ' + s.failed.length + ' of ' + s.failed_total + ' listed; `poolparty status` lists them all.'));
      if (s.failed.length > D.limits.max_tails) add(fs, el('p', { 'class': 'note' }, 'Log tails are embedded for the first ' + D.limits.max_tails + ' failed jobs.'));
      add(sec, fs);
    }
  });

  body.setAttribute('data-stages', String(drawn.stages));
  body.setAttribute('data-bars', String(drawn.bars));
  body.setAttribute('data-binned', String(drawn.binned));
  body.setAttribute('data-failures', String(drawn.failures));
  body.setAttribute('data-tails', String(drawn.tails));
  body.setAttribute('data-draw-ms', String(Math.round(performance.now())));
  if (body.getAttribute('data-status') === 'loading') body.setAttribute('data-status', 'ok');
})();
