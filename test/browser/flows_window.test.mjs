// The Flows Window in a real browser: Debian's chromium, driven by playwright-core, against the
// real daemon holding one capture loaded with `ns2flows ingest`. What the page must show is
// worked out here from nfdump's own answer for that capture (its per-flow CSV), not from the
// daemon. NS_SKIP_BROWSER=1 skips it with a message; a missing or broken chromium fails it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import dgram from 'node:dgram';
import os from 'node:os';
import path from 'node:path';

const BIN = process.env.NS_BIN || path.resolve('build/bin');
const FIXTURES = process.env.NS_FIXTURES || path.resolve('../shared/fixtures');
const ARTIFACTS = process.env.NS_ARTIFACTS || path.resolve('build');
const CHROMIUM = process.env.NS_CHROMIUM || '/usr/bin/chromium';
const MULT = Math.max(1, Number(process.env.NS_TEST_TIMEOUT_MULTIPLIER) || 1);
// softflowd's NetFlow v9 export of a short web-browsing capture: the busiest device is a client
// that talks to several servers over TCP, UDP and ICMP, so a wrong order in a table shows
const PCAP = 'generated/softflowd-v9-tcpreplay_test.pcap';
const NFDUMP_CSV = 'generated/softflowd-v9-tcpreplay_test.nfdump.csv';

function freePort(kind) {
  return new Promise((resolve, reject) => {
    if (kind === 'udp') {
      const s = dgram.createSocket('udp4');
      s.bind(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
      s.on('error', reject);
    } else {
      const s = net.createServer();
      s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
      s.on('error', reject);
    }
  });
}

// nfdump -o csv: ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,...
function nfdumpFlows(file) {
  const flows = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const f = line.split(',');
    if (f.length < 13 || !/^\d{4}-\d\d-\d\d /.test(f[0])) continue;
    flows.push({ src: f[3], dst: f[4], proto: f[7].trim(), bytes: Number(f[12]) });
  }
  return flows;
}

// The one largest key of a Map (fails if two share the top: the page could show either).
function top(map, what) {
  const e = [...map.entries()].sort((a, b) => b[1] - a[1]);
  assert.ok(e.length > 0, `no ${what} in the capture`);
  assert.ok(e.length === 1 || e[0][1] > e[1][1], `two ${what} share the top: pick another capture`);
  return e[0][0];
}
function add(map, k, v) { map.set(k, (map.get(k) || 0) + v); }

async function waitHttp(port, ms) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/api/v1/status`);
      if (r.ok) return;
    } catch (e) { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('the daemon did not answer HTTP');
}

test('the Flows Window shows the busiest device, its top peer and protocol, and a chart',
  { timeout: 120e3 * MULT, skip: process.env.NS_SKIP_BROWSER === '1' && 'NS_SKIP_BROWSER=1' },
  async () => {
    assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: make deps-browser installs it (or set NS_SKIP_BROWSER=1 to skip this test)`);
    const { chromium } = await import('playwright-core');

    // what nfdump says about the capture
    const flows = nfdumpFlows(path.join(FIXTURES, NFDUMP_CSV));
    assert.ok(flows.length > 10, 'nfdump CSV read');
    // the busiest device: the most bytes sent and received
    const byDev = new Map();
    for (const f of flows) {
      add(byDev, f.src, f.bytes);
      if (f.dst !== f.src) add(byDev, f.dst, f.bytes);
    }
    const busiest = top(byDev, 'busiest devices');
    const peers = new Map(), protos = new Map();
    let pairFlows = 0;
    for (const f of flows) {
      if (f.src !== busiest && f.dst !== busiest) continue;
      add(peers, f.src === busiest ? f.dst : f.src, f.bytes);
      add(protos, f.proto, f.bytes);
    }
    const peer = top(peers, 'peers');
    const proto = top(protos, 'protocols');
    for (const f of flows)
      if ((f.src === busiest && f.dst === peer) || (f.src === peer && f.dst === busiest)) pairFlows++;

    // the daemon, on a database holding the capture
    const db = fs.mkdtempSync(path.join(os.tmpdir(), 'ns2flows-it-browser-'));
    const ing = spawnSync(path.join(BIN, 'ns2flows'), ['ingest', '--db', db, path.join(FIXTURES, PCAP)], { encoding: 'utf8' });
    assert.equal(ing.status, 0, `ingest failed: ${ing.stdout} ${ing.stderr}`);
    const [http, udp, sflow] = [await freePort('tcp'), await freePort('udp'), await freePort('udp')];
    const log = fs.openSync(db + '.stderr', 'w');
    const daemon = spawn(path.join(BIN, 'ns2flows'), ['-f', '--db', db, '--listen', `127.0.0.1:${udp}`,
      '--listen-sflow', `127.0.0.1:${sflow}`, '--http', `127.0.0.1:${http}`], { stdio: ['ignore', log, log] });
    let browser = null;
    try {
      await waitHttp(http, 10e3 * MULT);
      try {
        browser = await chromium.launch({ executablePath: CHROMIUM, headless: true,
          args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
      } catch (e) {
        throw new Error(`chromium did not start (set NS_SKIP_BROWSER=1 to skip this test): ${e.message}`);
      }
      const page = await browser.newPage({ viewport: { width: 1400, height: 1400 } });
      const problems = [];
      page.on('pageerror', (e) => problems.push('page error: ' + e.message));
      // HTTP errors are judged by their URL below; the console's copy of them is not
      page.on('console', (m) => {
        if (m.type() === 'error' && !m.text().startsWith('Failed to load resource'))
          problems.push('console: ' + m.text());
      });
      // the one expected refusal: the page asks once whether /top takes several keys
      page.on('response', (r) => {
        if (r.status() >= 400 && !/\/api\/v1\/top\?by=srcaddr%2Cdstaddr/.test(r.url()))
          problems.push(`HTTP ${r.status()}: ${r.url()}`);
      });
      page.on('requestfailed', (r) => problems.push('request failed: ' + r.url()));
      page.setDefaultTimeout(15e3 * MULT);

      await page.goto(`http://127.0.0.1:${http}/#range=all`);
      // the busiest list is the daemon's answer; its first row must be nfdump's busiest source
      const first = page.locator('#busiest tbody tr[data-addr]').first();
      await first.waitFor();
      assert.equal(await first.getAttribute('data-addr'), busiest, 'busiest device listed first');
      await first.click();

      await page.waitForFunction((a) => document.querySelector('#devname').textContent === a, busiest);
      const peerCell = page.locator('#peers tbody tr:first-child td.addr');
      await peerCell.waitFor();
      assert.equal((await peerCell.textContent()).trim(), peer, 'top peer');
      const protoCell = page.locator('#protocols tbody tr:first-child td').first();
      assert.equal((await protoCell.textContent()).trim(), proto, 'top protocol');

      // the chart has drawn: areas with real extent
      await page.waitForFunction(() => document.querySelector('#chart').getAttribute('data-layers') === 'protocol' &&
        Number(document.querySelector('#chart').getAttribute('data-points')) > 0);
      const areas = page.locator('#chart path.area');
      assert.ok(await areas.count() > 0, 'chart areas drawn');
      const box = await areas.first().boundingBox();
      assert.ok(box && box.width > 10 && box.height > 1, `chart area has size: ${JSON.stringify(box)}`);
      assert.ok((await page.locator('#legend').textContent()).includes(proto), 'legend names the protocol');

      // the URL reproduces the view
      const url = page.url();
      assert.match(url, new RegExp('dev=' + encodeURIComponent(busiest).replace(/\./g, '\\.')));

      // drill-down: the peer's row opens that conversation's flows
      await page.locator('#peers tbody tr:first-child').click();
      await page.waitForFunction(() => !document.querySelector('#drill').hidden);
      await page.waitForFunction(() => document.querySelector('#drilltitle').textContent.includes('Flows between') &&
        document.querySelectorAll('#drillflows tbody tr').length > 0);
      assert.equal(await page.locator('#drillflows tbody tr').count(), pairFlows, 'flows of the pair');
      assert.match(page.url(), /drill=peer%3A/);

      // the raw flows table has rows
      assert.ok(await page.locator('#flows tbody tr').count() > 0, 'raw flows listed');
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      const shot = path.join(ARTIFACTS, 'flows-window.png');
      await page.screenshot({ path: shot, fullPage: true });

      // drag across the middle of the chart: the view zooms to that span, in the URL too
      const cb = await page.locator('#chart').boundingBox();
      await page.mouse.move(cb.x + cb.width * 0.3, cb.y + cb.height / 2);
      await page.mouse.down();
      await page.mouse.move(cb.x + cb.width * 0.6, cb.y + cb.height / 2, { steps: 5 });
      await page.mouse.up();
      await page.waitForFunction(() => /[#&]from=\d+&to=\d+/.test(location.hash));
      const zoom = new URLSearchParams(new URL(page.url()).hash.slice(1));
      assert.ok(!zoom.has('range') && Number(zoom.get('to')) > Number(zoom.get('from')), page.url());
      await page.waitForFunction((f) => document.querySelector('#range').textContent.length > 0 &&
        document.querySelector('#chart').getAttribute('data-layers') !== null, Number(zoom.get('from')));

      // the same URL in a fresh page shows the same device and drill-down
      const again = await browser.newPage();
      await again.goto(url.replace(/&drill=[^&]*/, '') + '&drill=peer%3A' + encodeURIComponent(peer));
      await again.locator('#peers tbody tr:first-child td.addr').waitFor();
      assert.equal((await again.locator('#devname').textContent()), busiest);
      await again.waitForFunction(() => !document.querySelector('#drill').hidden);
      assert.deepEqual(problems, [], 'no errors in the page');
      console.log(`# busiest ${busiest}, top peer ${peer}, top protocol ${proto}; screenshot ${shot}`);
    } finally {
      if (browser) await browser.close();
      daemon.kill('SIGTERM');
      await new Promise((r) => (daemon.exitCode !== null ? r() : daemon.on('exit', r)));
      fs.rmSync(db, { recursive: true, force: true });
      fs.rmSync(db + '.stderr', { force: true });
    }
  });
