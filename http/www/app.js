/* ns2flows Flows Window: plain JavaScript and SVG, no libraries, nothing from outside the
 * daemon. The view lives in the URL hash (#dev=ADDR&range=1h&mode=both&drill=...), so a link
 * reproduces it; every fetch goes to the daemon's own /api/v1. */
'use strict';

const PRESETS = { '15m': 15 * 60e3, '1h': 3600e3, '24h': 24 * 3600e3, '7d': 7 * 24 * 3600e3 };
const PROTO = { 1: 'ICMP', 2: 'IGMP', 4: 'IPIP', 6: 'TCP', 17: 'UDP', 41: 'IPv6', 47: 'GRE',
  50: 'ESP', 51: 'AH', 58: 'ICMPv6', 89: 'OSPF', 103: 'PIM', 112: 'VRRP', 132: 'SCTP' };
const APPS = { 20: 'ftp-data', 21: 'ftp', 22: 'ssh', 23: 'telnet', 25: 'smtp', 53: 'dns',
  67: 'dhcp', 68: 'dhcp', 69: 'tftp', 80: 'http', 88: 'kerberos', 110: 'pop3', 119: 'nntp',
  123: 'ntp', 137: 'netbios', 138: 'netbios', 139: 'netbios', 143: 'imap', 161: 'snmp',
  162: 'snmp-trap', 179: 'bgp', 389: 'ldap', 443: 'https', 445: 'smb', 465: 'smtps',
  514: 'syslog', 546: 'dhcpv6', 547: 'dhcpv6', 587: 'submission', 636: 'ldaps', 853: 'dns-tls',
  873: 'rsync', 993: 'imaps', 995: 'pop3s', 1194: 'openvpn', 1433: 'mssql', 1723: 'pptp',
  1812: 'radius', 1813: 'radius-acct', 1900: 'ssdp', 2055: 'netflow', 3306: 'mysql',
  3389: 'rdp', 3478: 'stun', 4500: 'ipsec-nat', 4789: 'vxlan', 5060: 'sip', 5061: 'sips',
  5353: 'mdns', 5432: 'postgres', 5900: 'vnc', 6343: 'sflow', 6379: 'redis', 8080: 'http-alt',
  8443: 'https-alt', 9000: 'http-alt', 9100: 'prometheus', 9200: 'elastic', 27017: 'mongodb' };
const COLORS = ['#1f6feb', '#f79009', '#12b76a', '#9e77ed', '#f04438', '#0ba5ec', '#ee46bc',
  '#667085'];
const LIST_LIMIT = 50;   /* rows asked per list; merged lists ("both") stay exact below this */
const SHOW_ROWS = 10;    /* rows shown per table */
const REFRESH_MS = 30e3;

const $ = (sel) => document.querySelector(sel);
const state = { dev: '', range: '1h', from: null, to: null, mode: 'both', drill: '',
  refresh: false };
let view = null;          /* what the last load resolved: window, device answer, series */
let loadSeq = 0;          /* a newer load makes an older one's answers stale */
let refreshTimer = null;
let flowsCursor = null;
let multiKeyTop = null;   /* does /api/v1/top take several keys? null: not asked yet */

/* ---------------------------------------------------------------------------------------- */
/* formatting */

function fmtBytes(n) {
  const u = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0) : String(Math.round(n))) + ' ' + u[i];
}
function fmtRate(bps) {
  const u = ['b/s', 'kb/s', 'Mb/s', 'Gb/s', 'Tb/s'];
  let i = 0;
  bps = Math.abs(bps);
  while (bps >= 1000 && i < u.length - 1) { bps /= 1000; i++; }
  return (bps < 10 && i ? bps.toFixed(1) : String(Math.round(bps))) + ' ' + u[i];
}
function fmtCount(n) { return Number(n).toLocaleString('en-US'); }
function pad2(n) { return String(n).padStart(2, '0'); }
function fmtTime(ms, withDate) {
  const d = new Date(ms);
  const t = pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
  if (!withDate) return t;
  return d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate()) + ' ' + t;
}
function protoName(p) { return PROTO[p] || 'proto ' + p; }
function appName(port, proto) {
  if (proto === 1 || proto === 58) return 'type ' + (port >> 8) + ' code ' + (port & 255);
  return APPS[port] || '';
}
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function svgEl(tag, attrs) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  return e;
}

/* ---------------------------------------------------------------------------------------- */
/* the URL hash holds the view */

function readHash() {
  const p = new URLSearchParams(location.hash.replace(/^#/, ''));
  state.dev = (p.get('dev') || '').trim();
  state.range = p.get('range') || (p.get('from') ? '' : '1h');
  state.from = p.get('from') ? Number(p.get('from')) : null;
  state.to = p.get('to') ? Number(p.get('to')) : null;
  state.mode = ['both', 'talker', 'listener'].includes(p.get('mode')) ? p.get('mode') : 'both';
  state.drill = p.get('drill') || '';
  state.refresh = p.get('refresh') === '1';
}
function writeHash() {
  const p = new URLSearchParams();
  if (state.dev) p.set('dev', state.dev);
  if (state.range) p.set('range', state.range);
  else { p.set('from', String(state.from)); p.set('to', String(state.to)); }
  if (state.mode !== 'both') p.set('mode', state.mode);
  if (state.drill) p.set('drill', state.drill);
  if (state.refresh) p.set('refresh', '1');
  const h = '#' + p.toString();
  if (location.hash !== h) location.hash = h; /* hashchange loads the view */
  else load();
}

/* ---------------------------------------------------------------------------------------- */
/* fetching */

async function api(path, params) {
  const q = new URLSearchParams(params || {}).toString();
  const r = await fetch('/api/v1/' + path + (q ? '?' + q : ''), { headers: { Accept: 'application/json' } });
  let body;
  try { body = await r.json(); } catch (e) { body = { error: 'not JSON (HTTP ' + r.status + ')' }; }
  if (!r.ok) {
    const err = new Error(body && body.error ? body.error : 'HTTP ' + r.status);
    err.status = r.status;
    throw err;
  }
  return body;
}
const secs = (ms) => (ms / 1000).toFixed(3);

/* The window [from, to] in ms. Presets end now, unless the newest flow held is older than the
 * preset reaches back (a store of old captures): then they end at the newest flow. */
function resolveWindow(status) {
  const db = status.database || {};
  const newest = db.newest != null ? db.newest * 1000 : null;
  const oldest = db.oldest != null ? db.oldest * 1000 : null;
  const now = Date.now();
  if (!state.range) return { from: state.from * 1000, to: state.to * 1000, note: '' };
  if (state.range === 'all') {
    if (newest == null) return { from: now - 3600e3, to: now, note: 'The database is empty.' };
    return { from: oldest, to: Math.max(newest, oldest + 1000), note: '' };
  }
  const span = PRESETS[state.range] || PRESETS['1h'];
  if (newest != null && newest < now - span) {
    return { from: newest - span, to: newest,
      note: 'No flows in the last ' + state.range + ': showing the ' + state.range +
        ' up to the newest flow held (' + fmtTime(newest, true) + ').' };
  }
  return { from: now - span, to: now, note: '' };
}

function showNotice(text, isError) {
  const n = $('#notice');
  n.hidden = !text;
  n.textContent = text || '';
  n.classList.toggle('error', !!isError);
}

/* ---------------------------------------------------------------------------------------- */
/* loading a view */

async function load() {
  const seq = ++loadSeq;
  const stale = () => seq !== loadSeq;
  syncControls();
  let status;
  try {
    status = await api('status');
  } catch (e) {
    showNotice('Cannot reach the daemon: ' + e.message, true);
    return;
  }
  if (stale()) return;
  const win = resolveWindow(status);
  const range = { from: secs(win.from), to: secs(win.to) };
  showNotice(win.note, false);
  $('#status').textContent = 'ns2flows ' + status.version + ' · database ' +
    fmtCount(status.database.flows_stored) + ' flows stored this run, ' +
    status.database.segments + ' segments · updated ' + fmtTime(Date.now(), false) +
    ' (times are local)';
  loadSide(range, stale);
  if (!state.dev) {
    $('#empty').hidden = false;
    $('#device').hidden = true;
    return;
  }
  $('#empty').hidden = true;
  $('#device').hidden = false;
  $('#devname').textContent = state.dev;
  $('#search').value = state.dev;
  try {
    const dev = await api('devices/' + encodeURIComponent(state.dev),
      Object.assign({ limit: String(LIST_LIMIT) }, range));
    if (stale()) return;
    /* list rows come shaped like /api/v1/top's ({key: {...}, flows, ...}): lift the key */
    for (const side of [dev.talker, dev.listener])
      for (const name of Object.keys(side || {}))
        for (const r of side[name]) Object.assign(r, r.key);
    view = { win, range, dev, series: null };
    $('#range').textContent = fmtTime(dev.from * 1000, true) + ' — ' +
      fmtTime(dev.to * 1000, true) + ' · step ' + dev.series.step + ' s';
    renderTotals(dev);
    renderTables();
    /* the totals chart at once; the protocol layers, conversations and flows as they come */
    view.series = totalsSeries(dev);
    drawChart();
    flowsCursor = null;
    await Promise.all([loadChart(dev, stale), loadConversations(range, stale),
      loadFlows(false, stale), loadDrill(stale)]);
  } catch (e) {
    if (stale()) return;
    showNotice(e.message, true);
  }
}

async function loadSide(range, stale) {
  try {
    /* busiest: bytes sent plus bytes received, from the top sources and the top
     * destinations (exact for every device in both lists; the head of the list in practice) */
    const [srcs, dsts, ex] = await Promise.all([
      api('top', Object.assign({ by: 'srcaddr', limit: String(LIST_LIMIT) }, range)),
      api('top', Object.assign({ by: 'dstaddr', limit: String(LIST_LIMIT) }, range)),
      api('exporters')]);
    if (stale()) return;
    const sum = new Map();
    for (const r of srcs.rows) sum.set(r.key.srcaddr, (sum.get(r.key.srcaddr) || 0) + r.bytes);
    for (const r of dsts.rows) sum.set(r.key.dstaddr, (sum.get(r.key.dstaddr) || 0) + r.bytes);
    const top = { rows: [...sum.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      .slice(0, 15).map(([addr, bytes]) => ({ addr, bytes })) };
    const max = top.rows.length ? top.rows[0].bytes : 1;
    const tb = $('#busiest tbody');
    tb.replaceChildren();
    for (const row of top.rows) {
      const a = row.addr;
      const tr = el('tr', { class: 'click' + (a === state.dev ? ' sel' : ''), 'data-addr': a });
      const td = el('td', { class: 'bar addr', title: a });
      const fill = el('span', { class: 'fill' });
      fill.style.width = (100 * row.bytes / max).toFixed(1) + '%';
      td.append(fill, el('span', { class: 'txt' }, a));
      tr.append(td, el('td', { class: 'num' }, fmtBytes(row.bytes)));
      tr.addEventListener('click', () => pickDevice(a));
      tb.append(tr);
    }
    if (!top.rows.length) {
      const tr = el('tr');
      tr.append(el('td', { class: 'note' }, 'no flows in this window'));
      tb.append(tr);
    }
    const eb = $('#exporters tbody');
    eb.replaceChildren();
    for (const x of ex.exporters || []) {
      const tr = el('tr', { class: 'click' + (x.address === state.dev ? ' sel' : ''),
        title: 'v' + x.version + ', ' + fmtCount(x.datagrams) + ' datagrams, last seen ' +
          fmtTime(x.last_seen * 1000, true) });
      tr.append(el('td', { class: 'addr', title: x.address }, x.address),
        el('td', { class: 'num' }, fmtCount(x.flows) + ' flows'));
      tr.addEventListener('click', () => pickDevice(x.address));
      eb.append(tr);
    }
    if (!(ex.exporters || []).length) {
      const tr = el('tr');
      tr.append(el('td', { class: 'note' }, 'none heard from since the daemon started'));
      eb.append(tr);
    }
    const dl = $('#known');
    dl.replaceChildren();
    const seen = new Set();
    for (const a of top.rows.map((r) => r.addr).concat((ex.exporters || []).map((x) => x.address))) {
      if (!seen.has(a)) { seen.add(a); dl.append(el('option', { value: a })); }
    }
  } catch (e) {
    if (!stale()) showNotice(e.message, true);
  }
}

function renderTotals(dev) {
  const t = $('#totals');
  t.replaceChildren();
  const box = (label, v, sub) => {
    const d = el('div');
    d.append(el('span', {}, label), el('b', {}, v), el('span', {}, sub));
    t.append(d);
  };
  const dur = Math.max(1, dev.to - dev.from);
  box('Sent (talker)', fmtBytes(dev.out.bytes), fmtCount(dev.out.flows) + ' flows · avg ' +
    fmtRate(dev.out.bytes * 8 / dur));
  box('Received (listener)', fmtBytes(dev.in.bytes), fmtCount(dev.in.flows) + ' flows · avg ' +
    fmtRate(dev.in.bytes * 8 / dur));
  box('Total', fmtBytes(dev.out.bytes + dev.in.bytes), fmtCount(dev.out.packets + dev.in.packets) + ' packets');
}

/* ---------------------------------------------------------------------------------------- */
/* tables */

/* Merges talker and listener lists by key into rows {key, out, in, bytes, flows, packets}. */
function merged(listName, keyOf) {
  const m = new Map();
  const add = (rows, dir) => {
    for (const r of rows) {
      const k = keyOf(r, dir);
      let e = m.get(k);
      if (!e) { e = { key: k, out: 0, in: 0, bytes: 0, flows: 0, packets: 0, row: r }; m.set(k, e); }
      e[dir] += r.bytes;
      e.bytes += r.bytes;
      e.flows += r.flows;
      e.packets += r.packets;
    }
  };
  if (state.mode !== 'listener') add(view.dev.talker[listName], 'out');
  if (state.mode !== 'talker') add(view.dev.listener[listName], 'in');
  return [...m.values()].sort((a, b) => b.bytes - a.bytes || String(a.key).localeCompare(String(b.key)));
}

function fillTable(table, head, rows, onClick) {
  table.replaceChildren();
  const thead = el('thead');
  const hr = el('tr');
  for (const h of head) hr.append(el('th', { class: h.num ? 'num' : '' }, h.label));
  thead.append(hr);
  const tb = el('tbody');
  for (const r of rows) {
    const tr = el('tr', onClick ? { class: 'click' } : {});
    for (const c of r.cells) tr.append(c);
    if (onClick) tr.addEventListener('click', () => onClick(r));
    if (r.drill && r.drill === state.drill) tr.classList.add('sel');
    tb.append(tr);
  }
  if (!rows.length) {
    const tr = el('tr');
    tr.append(el('td', { colspan: String(head.length), class: 'note' }, 'none in this window'));
    tb.append(tr);
  }
  table.append(thead, tb);
}

function barCell(text, frac, cls) {
  const td = el('td', { class: 'bar ' + (cls || '') });
  const fill = el('span', { class: 'fill' });
  fill.style.width = (100 * Math.max(0, Math.min(1, frac))).toFixed(1) + '%';
  td.append(fill, el('span', { class: 'txt' }, text));
  return td;
}

function dirCols() {
  return state.mode === 'both'
    ? [{ label: 'sent', num: true }, { label: 'received', num: true }]
    : [];
}
function dirCells(e) {
  return state.mode === 'both'
    ? [el('td', { class: 'num' }, fmtBytes(e.out)), el('td', { class: 'num' }, fmtBytes(e.in))]
    : [];
}

function renderTables() {
  const peers = merged('peers', (r) => r.srcaddr || r.dstaddr).slice(0, SHOW_ROWS);
  const pmax = peers.length ? peers[0].bytes : 1;
  fillTable($('#peers'), [{ label: 'peer' }].concat(dirCols(), [{ label: 'bytes', num: true },
    { label: 'flows', num: true }]),
  peers.map((e) => ({ drill: 'peer:' + e.key,
    cells: [barCell(e.key, e.bytes / pmax, 'addr')].concat(dirCells(e),
      [el('td', { class: 'num' }, fmtBytes(e.bytes)), el('td', { class: 'num' }, fmtCount(e.flows))]) })),
  (r) => setDrill(r.drill));

  const protos = merged('protocols', (r) => r.proto).slice(0, SHOW_ROWS);
  const prmax = protos.length ? protos[0].bytes : 1;
  fillTable($('#protocols'), [{ label: 'protocol' }].concat(dirCols(), [{ label: 'bytes', num: true },
    { label: 'flows', num: true }]),
  protos.map((e) => ({ drill: 'proto:' + e.key,
    cells: [barCell(protoName(e.key), e.bytes / prmax)].concat(dirCells(e),
      [el('td', { class: 'num' }, fmtBytes(e.bytes)), el('td', { class: 'num' }, fmtCount(e.flows))]) })),
  (r) => setDrill(r.drill));

  /* ports: as talker the services it uses (their destination port), as listener the ones it
   * offers; the same number from both sides is one service */
  const ports = merged('ports', (r) => r.dstport).slice(0, SHOW_ROWS);
  const pomax = ports.length ? ports[0].bytes : 1;
  fillTable($('#ports'), [{ label: 'port' }, { label: 'app' }].concat(dirCols(),
    [{ label: 'bytes', num: true }, { label: 'flows', num: true }]),
  ports.map((e) => ({ drill: 'port:' + e.key,
    cells: [barCell(String(e.key), e.bytes / pomax), el('td', {}, appName(e.key))].concat(dirCells(e),
      [el('td', { class: 'num' }, fmtBytes(e.bytes)), el('td', { class: 'num' }, fmtCount(e.flows))]) })),
  (r) => setDrill(r.drill));
}

/* Conversations: flows grouped by (source, destination, protocol, service port). Asked of
 * /api/v1/top with several keys where the daemon groups by them; otherwise added up here from
 * the newest flows of the window (the note says so). */
async function loadConversations(range, stale) {
  const dir = state.mode === 'talker' ? 'src ' : state.mode === 'listener' ? 'dst ' : '';
  const filter = dir + 'host ' + state.dev;
  let rows = null, note = '';
  try {
    if (multiKeyTop === false) throw Object.assign(new Error('one key only'), { status: 400 });
    const t = await api('top', Object.assign({ by: 'srcaddr,dstaddr,proto,dstport', limit: String(SHOW_ROWS),
      filter }, range));
    rows = t.rows.map((r) => ({ src: r.key.srcaddr, dst: r.key.dstaddr, proto: r.key.proto,
      port: r.key.dstport, bytes: r.bytes, flows: r.flows }));
    multiKeyTop = true;
  } catch (e) {
    if (e.status !== 400) { if (!stale()) $('#convnote').textContent = e.message; return; }
    multiKeyTop = false; /* asked once per page: this daemon groups by one key */
    const limit = 2000;
    const f = await api('flows', Object.assign({ limit: String(limit), filter }, range));
    if (stale()) return;
    const m = new Map();
    for (const x of f.flows) {
      /* the service side: the lower port when one looks like a service */
      const k = x.src + '|' + x.dst + '|' + x.proto + '|' + x.dstport;
      let e = m.get(k);
      if (!e) { e = { src: x.src, dst: x.dst, proto: x.proto, port: x.dstport, bytes: 0, flows: 0 }; m.set(k, e); }
      e.bytes += x.bytes;
      e.flows++;
    }
    rows = [...m.values()].sort((a, b) => b.bytes - a.bytes).slice(0, SHOW_ROWS);
    note = f.next ? 'From the newest ' + fmtCount(f.flows.length) + ' flows of the window.' : '';
  }
  if (stale()) return;
  const max = rows.length ? rows[0].bytes : 1;
  fillTable($('#convs'), [{ label: 'source' }, { label: 'destination' }, { label: 'proto' },
    { label: 'dst port' }, { label: 'bytes', num: true }, { label: 'flows', num: true }],
  rows.map((c) => ({ drill: 'conv:' + [c.src, c.dst, c.proto, c.port].join(','),
    cells: [barCell(c.src, c.bytes / max, 'addr'), el('td', { class: 'addr' }, c.dst),
      el('td', {}, protoName(c.proto)),
      el('td', {}, c.port + (appName(c.port, c.proto) ? ' ' + appName(c.port, c.proto) : '')),
      el('td', { class: 'num' }, fmtBytes(c.bytes)), el('td', { class: 'num' }, fmtCount(c.flows))] })),
  (r) => setDrill(r.drill));
  $('#convnote').textContent = note;
}

/* ---------------------------------------------------------------------------------------- */
/* flows tables: the device's raw flows, and the drill-down */

const FLOW_HEAD = ['start', 'end', 'source', 'src port', 'destination', 'dst port', 'proto', 'bytes',
  'packets', 'exporter'];
function flowRow(x) {
  const tr = el('tr');
  const mark = (a) => el('td', { class: 'addr' + (a === state.dev ? ' me' : '') }, a);
  tr.append(el('td', {}, fmtTime(x.first * 1000, true)), el('td', {}, fmtTime(x.last * 1000, false)),
    mark(x.src), el('td', { class: 'num' }, String(x.srcport)), mark(x.dst),
    el('td', { class: 'num' }, String(x.dstport)), el('td', {}, protoName(x.proto)),
    el('td', { class: 'num' }, fmtBytes(x.bytes)), el('td', { class: 'num' }, fmtCount(x.packets)),
    el('td', { class: 'addr' }, x.exporter));
  return tr;
}
function flowTable(table, flows, append) {
  if (!append) {
    table.replaceChildren();
    const hr = el('tr');
    for (const h of FLOW_HEAD) hr.append(el('th', {}, h));
    const th = el('thead');
    th.append(hr);
    table.append(th, el('tbody'));
  }
  const tb = table.querySelector('tbody');
  for (const x of flows) tb.append(flowRow(x));
  if (!tb.children.length) {
    const tr = el('tr');
    tr.append(el('td', { colspan: String(FLOW_HEAD.length), class: 'note' }, 'no flows'));
    tb.append(tr);
  }
}

async function loadFlows(more, stale) {
  const dir = state.mode === 'talker' ? 'src ' : state.mode === 'listener' ? 'dst ' : '';
  const params = Object.assign({ limit: '50', filter: dir + 'host ' + state.dev }, view.range);
  if (more && flowsCursor) params.cursor = flowsCursor;
  try {
    const f = await api('flows', params);
    if (stale && stale()) return;
    flowTable($('#flows'), f.flows, more);
    flowsCursor = f.next;
    $('#more').hidden = !f.next;
  } catch (e) {
    showNotice(e.message, true);
  }
}

function drillFilter(d) {
  const [kind, arg] = [d.slice(0, d.indexOf(':')), d.slice(d.indexOf(':') + 1)];
  const me = 'host ' + state.dev;
  if (kind === 'peer') return { title: 'Flows between ' + state.dev + ' and ' + arg, filter: me + ' and host ' + arg };
  if (kind === 'proto') return { title: protoName(Number(arg)) + ' flows of ' + state.dev, filter: me + ' and proto ' + Number(arg) };
  if (kind === 'port') return { title: 'Flows of ' + state.dev + ' on port ' + arg, filter: me + ' and port ' + Number(arg) };
  if (kind === 'conv') {
    const [s, t, p, port] = arg.split(',');
    return { title: 'Flows ' + s + ' → ' + t + ' ' + protoName(Number(p)) + ' port ' + port,
      filter: 'src host ' + s + ' and dst host ' + t + ' and proto ' + Number(p) + ' and dst port ' + Number(port) };
  }
  return null;
}

async function loadDrill(stale) {
  const box = $('#drill');
  const d = state.drill ? drillFilter(state.drill) : null;
  if (!d) { box.hidden = true; return; }
  box.hidden = false;
  $('#drilltitle').textContent = d.title;
  try {
    const f = await api('flows', Object.assign({ limit: '200', filter: d.filter }, view.range));
    if (stale()) return;
    flowTable($('#drillflows'), f.flows, false);
    box.scrollIntoView({ block: 'nearest' });
  } catch (e) {
    showNotice(e.message, true);
  }
}

/* ---------------------------------------------------------------------------------------- */
/* the chart: out stacked upward, in stacked downward, one layer per protocol */

/* The device's own series, one layer each way: drawn before the protocol layers arrive. */
function totalsSeries(dev) {
  const b = dev.series.buckets;
  return { t0: b.length ? b[0].t * 1000 : dev.from * 1000, step: dev.series.step * 1000,
    n: b.length, byProto: false, times: b.map((x) => x.t * 1000),
    layers: [{ name: 'all traffic', color: COLORS[0], out: b.map((x) => x.out_bytes),
      in: b.map((x) => x.in_bytes) }] };
}

async function loadChart(dev, stale) {
  const step = dev.series.step;
  const n = dev.series.buckets.length;
  /* the protocols that carry most of the device's bytes, whichever way */
  const tot = new Map();
  for (const r of dev.talker.protocols.concat(dev.listener.protocols)) tot.set(r.proto, (tot.get(r.proto) || 0) + r.bytes);
  const top = [...tot.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5).map((e) => e[0]);
  const base = { from: secs(dev.from * 1000), to: secs(dev.to * 1000), step: String(step) };
  const ask = (dir, p) => api('series', Object.assign({ filter: dir + ' host ' + state.dev + ' and proto ' + p }, base));
  let answers;
  try {
    answers = await Promise.all(top.flatMap((p) => [ask('src', p), ask('dst', p)]));
  } catch (e) {
    if (!stale()) showNotice('Traffic by protocol: ' + e.message, true);
    return;
  }
  if (stale()) return;
  const layers = top.map((p, i) => ({ name: protoName(p), color: COLORS[i % COLORS.length],
    out: answers[2 * i].buckets.map((b) => b.bytes), in: answers[2 * i + 1].buckets.map((b) => b.bytes) }));
  /* whatever the named protocols leave: the device's totals minus their sum */
  const other = { name: 'other', color: COLORS[COLORS.length - 1], out: new Array(n).fill(0), in: new Array(n).fill(0) };
  dev.series.buckets.forEach((b, i) => {
    let o = b.out_bytes, inb = b.in_bytes;
    for (const l of layers) { o -= l.out[i] || 0; inb -= l.in[i] || 0; }
    other.out[i] = Math.max(0, o);
    other.in[i] = Math.max(0, inb);
  });
  if (other.out.some((v) => v > 0) || other.in.some((v) => v > 0) || !layers.length) layers.push(other);
  view.series = { t0: dev.series.buckets.length ? dev.series.buckets[0].t * 1000 : dev.from * 1000,
    step: step * 1000, n, layers, byProto: true, times: dev.series.buckets.map((b) => b.t * 1000) };
  drawChart();
}

function drawChart() {
  const svg = $('#chart');
  const s = view && view.series;
  svg.replaceChildren();
  if (!s) return;
  const W = Math.max(300, svg.clientWidth || 800), H = 280;
  svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
  const L = 70, R = 12, T = 10, B = 24, mid = T + (H - T - B) / 2;
  const x0 = s.t0, x1 = s.t0 + s.n * s.step;
  const X = (t) => L + (t - x0) / (x1 - x0) * (W - L - R);
  /* rates in bits per second */
  const rate = (bytes) => bytes * 8 / (s.step / 1000);
  let max = 1;
  for (let i = 0; i < s.n; i++) {
    let o = 0, inb = 0;
    for (const l of s.layers) { o += l.out[i] || 0; inb += l.in[i] || 0; }
    max = Math.max(max, rate(o), rate(inb));
  }
  const half = (H - T - B) / 2;
  const Y = (v) => mid - v / max * half; /* v > 0 up (out), v < 0 down (in) */
  for (const f of [1, 0.5, -0.5, -1]) {
    svg.append(svgEl('line', { class: 'grid', x1: L, x2: W - R, y1: Y(f * max), y2: Y(f * max) }));
    const tx = svgEl('text', { x: L - 6, y: Y(f * max) + 4, 'text-anchor': 'end' });
    tx.textContent = (f > 0 ? '↑ ' : '↓ ') + fmtRate(f * max);
    svg.append(tx);
  }
  /* stacked areas: each layer from the running sum below it to the sum including it */
  let points = 0;
  for (const dir of ['out', 'in']) {
    const sign = dir === 'out' ? 1 : -1;
    const acc = new Array(s.n).fill(0);
    for (const l of s.layers) {
      const lo = acc.slice();
      for (let i = 0; i < s.n; i++) acc[i] += rate(l[dir][i] || 0);
      if (!l[dir].some((v) => v > 0)) continue;
      let d = '';
      for (let i = 0; i < s.n; i++) {
        const t = s.t0 + i * s.step;
        d += (i ? 'L' : 'M') + X(t).toFixed(1) + ',' + Y(sign * acc[i]).toFixed(1) +
          'L' + X(t + s.step).toFixed(1) + ',' + Y(sign * acc[i]).toFixed(1);
      }
      for (let i = s.n - 1; i >= 0; i--) {
        const t = s.t0 + i * s.step;
        d += 'L' + X(t + s.step).toFixed(1) + ',' + Y(sign * lo[i]).toFixed(1) +
          'L' + X(t).toFixed(1) + ',' + Y(sign * lo[i]).toFixed(1);
      }
      svg.append(svgEl('path', { class: 'area', d: d + 'Z', fill: l.color, 'fill-opacity': dir === 'out' ? '0.85' : '0.6',
        'data-layer': l.name, 'data-dir': dir }));
      points += s.n;
    }
  }
  svg.setAttribute('data-points', String(points));
  svg.setAttribute('data-layers', s.byProto ? 'protocol' : 'total');
  svg.append(svgEl('line', { class: 'axis', x1: L, x2: W - R, y1: mid, y2: mid }));
  const lo = svgEl('text', { x: L + 4, y: T + 10 });
  lo.textContent = 'out';
  const li = svgEl('text', { x: L + 4, y: H - B - 4 });
  li.textContent = 'in';
  svg.append(lo, li);
  /* time ticks */
  const span = x1 - x0;
  const nice = [1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400]
    .map((v) => v * 1000);
  const tick = nice.find((v) => span / v <= 7) || nice[nice.length - 1];
  const withDate = span > 86400e3;
  for (let t = Math.ceil(x0 / tick) * tick; t <= x1; t += tick) {
    svg.append(svgEl('line', { class: 'grid', x1: X(t), x2: X(t), y1: T, y2: H - B }));
    const anchor = X(t) > W - R - 30 ? 'end' : X(t) < L + 30 ? 'start' : 'middle';
    const tx = svgEl('text', { x: X(t), y: H - 6, 'text-anchor': anchor });
    const d = new Date(t);
    tx.textContent = withDate ? pad2(d.getMonth() + 1) + '-' + pad2(d.getDate()) + ' ' + pad2(d.getHours()) + ':' + pad2(d.getMinutes())
      : fmtTime(t, false).slice(0, tick >= 60e3 ? 5 : 8);
    svg.append(tx);
  }
  const legend = $('#legend');
  legend.replaceChildren();
  for (const l of s.layers) {
    const sp = el('span');
    const sw = el('i');
    sw.style.background = l.color;
    sp.append(sw, document.createTextNode(l.name));
    legend.append(sp);
  }
  view.chart = { X, x0, x1, L, R, W, H, T, B, rate };
}

function chartTime(ev) {
  const svg = $('#chart');
  const c = view && view.chart;
  if (!c) return null;
  const box = svg.getBoundingClientRect();
  const px = (ev.clientX - box.left) / box.width * c.W;
  const f = (px - c.L) / (c.W - c.L - c.R);
  return c.x0 + Math.max(0, Math.min(1, f)) * (c.x1 - c.x0);
}

function setupChartEvents() {
  const svg = $('#chart');
  let dragFrom = null, selRect = null, hover = null;
  svg.addEventListener('mousedown', (ev) => {
    dragFrom = chartTime(ev);
    if (dragFrom == null) return;
    selRect = svgEl('rect', { class: 'sel', y: view.chart.T, height: view.chart.H - view.chart.T - view.chart.B, x: view.chart.X(dragFrom), width: 0 });
    svg.append(selRect);
    ev.preventDefault();
  });
  svg.addEventListener('mousemove', (ev) => {
    const t = chartTime(ev);
    if (t == null) return;
    if (selRect) {
      const a = Math.min(dragFrom, t), b = Math.max(dragFrom, t);
      selRect.setAttribute('x', view.chart.X(a));
      selRect.setAttribute('width', Math.max(0, view.chart.X(b) - view.chart.X(a)));
    }
    const s = view.series;
    const i = Math.floor((t - s.t0) / s.step);
    if (i < 0 || i >= s.n) return;
    if (!hover) { hover = svgEl('line', { class: 'hover' }); }
    hover.setAttribute('x1', view.chart.X(s.t0 + (i + 0.5) * s.step));
    hover.setAttribute('x2', view.chart.X(s.t0 + (i + 0.5) * s.step));
    hover.setAttribute('y1', view.chart.T);
    hover.setAttribute('y2', view.chart.H - view.chart.B);
    svg.append(hover);
    const part = (dir) => s.layers.filter((l) => l[dir][i] > 0).map((l) => l.name + ' ' + fmtRate(view.chart.rate(l[dir][i]))).join(', ');
    const sum = (dir) => s.layers.reduce((a, l) => a + (l[dir][i] || 0), 0);
    $('#readout').textContent = fmtTime(s.t0 + i * s.step, true) + ' · out ' + fmtRate(view.chart.rate(sum('out'))) +
      (part('out') ? ' (' + part('out') + ')' : '') + ' · in ' + fmtRate(view.chart.rate(sum('in'))) +
      (part('in') ? ' (' + part('in') + ')' : '');
  });
  const end = (ev) => {
    if (!selRect) return;
    const t = chartTime(ev);
    const a = Math.min(dragFrom, t), b = Math.max(dragFrom, t);
    selRect.remove();
    selRect = null;
    /* a click is not a zoom; a drag of at least a step is */
    if (t != null && b - a >= Math.max(1000, view.series.step / 2)) {
      state.range = '';
      state.from = Math.floor(a / 1000);
      state.to = Math.ceil(b / 1000);
      writeHash();
    }
  };
  svg.addEventListener('mouseup', end);
  svg.addEventListener('mouseleave', (ev) => { end(ev); if (hover) { hover.remove(); hover = null; } });
}

/* ---------------------------------------------------------------------------------------- */
/* controls */

function syncControls() {
  for (const b of document.querySelectorAll('#presets button')) b.classList.toggle('on', b.dataset.range === state.range);
  for (const b of document.querySelectorAll('#modes button')) b.classList.toggle('on', b.dataset.mode === state.mode);
  $('#autorefresh').checked = state.refresh;
  clearInterval(refreshTimer);
  refreshTimer = state.refresh ? setInterval(load, REFRESH_MS) : null;
}

function pickDevice(a) {
  state.dev = a.trim();
  state.drill = '';
  writeHash();
}
function setDrill(d) {
  state.drill = state.drill === d ? '' : d;
  writeHash();
}

function init() {
  readHash();
  $('#pick').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = $('#search').value.trim();
    if (v) pickDevice(v);
  });
  for (const b of document.querySelectorAll('#presets button')) {
    b.addEventListener('click', () => { state.range = b.dataset.range; state.from = state.to = null; writeHash(); });
  }
  for (const b of document.querySelectorAll('#modes button')) {
    b.addEventListener('click', () => { state.mode = b.dataset.mode; writeHash(); });
  }
  $('#autorefresh').addEventListener('change', (ev) => { state.refresh = ev.target.checked; writeHash(); });
  $('#drillclose').addEventListener('click', () => setDrill(''));
  $('#more').addEventListener('click', () => loadFlows(true, null));
  window.addEventListener('hashchange', () => { readHash(); load(); });
  let resizeTimer = null;
  window.addEventListener('resize', () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(drawChart, 150); });
  setupChartEvents();
  load();
}

document.addEventListener('DOMContentLoaded', init);
