// The admin console in a real browser: Debian's chromium driven by playwright-core, against
// the real keypool binary (KEYPOOL_BIN) and a fake upstream (a small Node HTTP server), all
// on loopback ports picked at random. Run by ctest / meson test as `ui_browser`; screenshots
// of every view, light and dark, go to KEYPOOL_UI_SHOTS. A missing browser, binary or npm
// package fails the run: nothing here is skipped.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const CHROMIUM = process.env.KEYPOOL_CHROMIUM || '/usr/bin/chromium';
const BIN = process.env.KEYPOOL_BIN || join(here, '../../build/keypool');
const SHOTS = process.env.KEYPOOL_UI_SHOTS || join(here, '../../build/ui-screenshots');
const ADMIN = 'adm_ui_' + randomBytes(12).toString('hex');
const GOOD = 'sk-good-' + randomBytes(10).toString('hex');
const HOT = 'sk-hot-' + randomBytes(10).toString('hex');
const IMPORTED = ['sk-imp1-' + randomBytes(8).toString('hex'), 'sk-imp2-' + randomBytes(8).toString('hex')];
const XSS_KEY = `<img src=x onerror="window.__xss=1">`;
const XSS_TOKEN = `<script>window.__xss=2</script>"'`;
const VIEWS = ['overview', 'services', 'tiers', 'keys', 'tokens', 'audit'];

let upstream, upstreamPort, kp, kpPort, base, dir, browser, context, page;
const hits = { good: 0, hot: 0 };
let hotRefuses = false;
const cspViolations = [];
let teamToken = '';

// ---------------------------------------------------------------- the fake upstream

// OpenAI-shaped: 200 with usage for the good keys; 429 with Retry-After: 3 for the hot key
// while hotRefuses is on (the key then cools and comes back on its own).
function startUpstream() {
  upstream = http.createServer((req, res) => {
    const auth = req.headers.authorization || '';
    req.resume();
    req.on('end', () => {
      if (auth === `Bearer ${HOT}`) hits.hot += 1; else hits.good += 1;
      if (auth === `Bearer ${HOT}` && hotRefuses) {
        res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '3' });
        res.end(JSON.stringify({ error: { message: 'Rate limit reached', type: 'requests' } }));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: 'hi' }, finish_reason: 'stop' }],
        usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 } }));
    });
  });
  upstream.listen(0, '127.0.0.1');
  return once(upstream, 'listening').then(() => { upstreamPort = upstream.address().port; });
}

// ---------------------------------------------------------------- keypool

async function startKeypool() {
  assert.ok(existsSync(BIN), `keypool binary not found at ${BIN} (set KEYPOOL_BIN)`);
  dir = mkdtempSync(join(tmpdir(), 'keypool-ui-'));
  mkdirSync(join(dir, 'services.d'));
  writeFileSync(join(dir, 'services.d/fakeai.yaml'),
    `name: fakeai\ndisplay_name: Fake AI\nbase_url: http://127.0.0.1:${upstreamPort}\nauth_scheme: bearer\n` +
    'health_check: {method: GET, path: /v1/models, expect: [200]}\n');
  kp = spawn(BIN, ['--config', join(here, '../../config/keypool.yaml')], {
    cwd: dir,
    env: { ...process.env, ENCRYPTION_KEY: randomBytes(32).toString('hex'), ADMIN_TOKEN: ADMIN, SERVER_HOST: '127.0.0.1',
      SERVER_PORT: '0', DB_PATH: join(dir, 'pool.db'), SERVICES_DIR: join(dir, 'services.d'), LOG_LEVEL: 'info', LOG_FORMAT: 'json', WORKERS: '2' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  kpPort = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('keypool did not log `listening` in 15 s:\n' + log)), 15000);
    const onData = (chunk) => {
      log += chunk;
      for (const line of log.split('\n')) {
        try { const j = JSON.parse(line); if (j.msg === 'listening' && j.port) { clearTimeout(timer); resolve(j.port); return; } } catch { /* not JSON yet */ }
      }
    };
    kp.stdout.on('data', onData);
    kp.stderr.on('data', onData);
    kp.on('exit', (code) => reject(new Error(`keypool exited (${code}) before listening:\n${log}`)));
  });
  kp.logText = () => log;
  kp.stdout.on('data', (c) => { log += c; });
  kp.stderr.on('data', (c) => { log += c; });
  base = `http://127.0.0.1:${kpPort}`;
}

async function adminFetch(method, path, body) {
  const r = await fetch(base + path, { method, headers: { Authorization: `Bearer ${ADMIN}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body) });
  return r;
}

async function metricsTotals() {
  const text = await (await adminFetch('GET', '/metrics')).text();
  const sum = (re) => text.split('\n').filter((l) => re.test(l)).reduce((a, l) => a + Number(l.trim().split(' ').pop()), 0);
  return {
    requests: sum(/^keypool_requests_total\{.*route="proxy"/),
    errors: sum(/^keypool_requests_total\{.*route="proxy".*status="5xx"/),
    rate_limited: sum(/^keypool_rate_limited_total\{/),
    failovers: sum(/^keypool_failovers_total\{/),
  };
}

async function proxied() {
  const r = await fetch(`${base}/v1/fakeai/v1/chat/completions`, { method: 'POST',
    headers: { Authorization: `Bearer ${teamToken}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }) });
  const text = await r.text();
  if (r.status !== 200) console.error(`proxied request: ${r.status} ${text}`);
  return r.status;
}

async function cookieHeader() {
  const cookies = await context.cookies(base);
  return cookies.map((c) => `${c.name}=${c.value}`).join('; ');
}

// ---------------------------------------------------------------- browser helpers

async function newPage(colorScheme = 'light', viewport = { width: 1280, height: 900 }) {
  const p = await context.newPage();
  await p.emulateMedia({ colorScheme });
  await p.setViewportSize(viewport);
  p.on('dialog', (d) => d.accept());
  p.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
  p.on('pageerror', (e) => cspViolations.push('page error: ' + e.message));
  return p;
}

async function go(view) {
  await page.goto(`${base}/ui/#/${view}`);
  await page.locator(`#h-${view}`).waitFor();
}

// The first table row whose text contains s.
const row = (s) => page.locator('tbody tr', { hasText: s }).first();

async function axeCheck(p, label) {
  await p.evaluate(readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8'));  // via CDP: the CSP does not apply
  const result = await p.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).slice(0, 3).join(', ')}`), [],
    `axe found serious/critical violations on ${label}`);
}

// ---------------------------------------------------------------- setup

before(async () => {
  assert.ok(existsSync(CHROMIUM), `chromium not found at ${CHROMIUM}: apt-get install chromium (packaging/install-deps.sh --test)`);
  mkdirSync(SHOTS, { recursive: true });
  await startUpstream();
  await startKeypool();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  context = await browser.newContext();
  page = await newPage();
});

after(async () => {
  await browser?.close().catch(() => {});
  if (kp && kp.exitCode === null) { kp.kill('SIGTERM'); await once(kp, 'exit').catch(() => {}); }
  upstream?.close();
  // No key value or token may reach keypool's log.
  if (kp) for (const s of [ADMIN, GOOD, HOT, ...IMPORTED, teamToken].filter(Boolean)) assert.ok(!kp.logText().includes(s), 'a secret reached the log');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------- tests

test('assets carry the security headers, an ETag that answers 304, and gzip', async () => {
  const r = await fetch(`${base}/ui/`, { headers: { 'Accept-Encoding': 'gzip' } });
  assert.equal(r.status, 200);
  const csp = r.headers.get('content-security-policy');
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
  assert.equal(r.headers.get('referrer-policy'), 'no-referrer');
  const etag = r.headers.get('etag');
  assert.ok(etag);
  const again = await fetch(`${base}/ui/`, { headers: { 'If-None-Match': etag, 'Accept-Encoding': 'gzip' } });
  assert.equal(again.status, 304);
  const js = await new Promise((resolve) => http.get(`${base}/ui/app.js`, { headers: { 'Accept-Encoding': 'gzip' } }, resolve));
  js.resume();
  assert.equal(js.headers['content-encoding'], 'gzip');
});

test('login: a wrong token is refused, the admin token opens a session, logout ends it', async () => {
  await page.goto(`${base}/ui/`);
  await page.locator('#admin-token').fill('not-the-token-at-all');
  await page.keyboard.press('Enter');
  await page.getByText('That is not the admin token.').waitFor();
  await page.locator('#admin-token').fill(ADMIN);
  await page.keyboard.press('Enter');
  await page.locator('#h-overview').waitFor();
  const cookie = await cookieHeader();
  assert.match(cookie, /kp_session=/);
  // Log out, then the old cookie no longer opens anything.
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.locator('#admin-token').waitFor();
  const r = await fetch(`${base}/admin/keys`, { headers: { Cookie: cookie } });
  assert.equal(r.status, 401);
  // In again for the rest of the tests.
  await page.locator('#admin-token').fill(ADMIN);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#h-overview').waitFor();
});

test('the session cookie is HttpOnly and SameSite=Strict: page script cannot read it', async () => {
  const [c] = (await context.cookies(base)).filter((x) => x.name === 'kp_session');
  assert.ok(c, 'no session cookie');
  assert.equal(c.httpOnly, true);
  assert.equal(c.sameSite, 'Strict');
  assert.equal(c.path, '/');
  const seen = await page.evaluate(() => document.cookie);
  assert.ok(!seen.includes('kp_session') && !seen.includes(c.value));
});

test('creating a tier, adding keys (one by one and by bulk import) shows hints, never values', async () => {
  await go('tiers');
  await page.getByLabel('Tier name').fill('gold');
  await page.getByLabel('Features').fill('fakeai=1000');
  await page.getByRole('button', { name: 'Create tier' }).click();
  await row('gold').waitFor();

  await go('keys');
  for (const [name, value] of [['good-key', GOOD], ['hot-key', HOT], [XSS_KEY, 'sk-xss-' + randomBytes(6).toString('hex')]]) {
    await page.getByLabel('Key name').fill(name);
    await page.getByLabel('Key value').fill(value);
    await page.getByLabel('Service (optional)').fill('fakeai');
    await page.getByRole('button', { name: 'Add key' }).click();
    await page.locator(`tr[data-key-name="${name.replace(/"/g, '\\"')}"]`).waitFor();
  }
  await page.getByLabel('Keys, one per line').fill(IMPORTED.map((v, i) => `imported-${i + 1},${v},gold,fakeai`).join('\n'));
  await page.getByRole('button', { name: 'Import' }).click();
  await page.getByText('Imported 2 of 2 keys.').waitFor();
  await row('imported-2').waitFor();
  const htmlText = await page.content();
  for (const v of [GOOD, HOT, ...IMPORTED]) assert.ok(!htmlText.includes(v), 'a key value reached the page');
  assert.ok(htmlText.includes(GOOD.slice(-4)), 'the hint shows the last characters');
});

test('a new token is shown once, with a copy button', async () => {
  await go('tokens');
  await page.getByLabel('Token name').fill('team-a');
  await page.getByRole('button', { name: 'Create token' }).click();
  const input = page.locator('#new-token');
  await input.waitFor();
  teamToken = await input.inputValue();
  assert.match(teamToken, /^kp_/);
  await page.getByRole('button', { name: 'Copy' }).waitFor();
  await page.getByRole('button', { name: 'Done' }).click();
  await row('team-a').waitFor();
  assert.ok(!(await page.content()).includes(teamToken), 'the token is still on the page after Done');
  await page.reload();
  await row('team-a').waitFor();
  assert.ok(!(await page.content()).includes(teamToken), 'the token came back after a reload');
  // It works: a proxied request with it reaches the upstream.
  assert.equal(await proxied(), 200);
});

test('names holding <script>, <img onerror> and quotes stay inert text', async () => {
  await go('tokens');
  await page.getByLabel('Token name').fill(XSS_TOKEN);
  await page.getByRole('button', { name: 'Create token' }).click();
  await page.locator('#new-token').waitFor();
  await page.getByRole('button', { name: 'Done' }).click();
  await row('window.__xss=2').waitFor();
  assert.equal(await row('window.__xss=2').locator('th').textContent(), XSS_TOKEN);
  await go('keys');
  const cell = page.locator('tr', { hasText: 'onerror' }).locator('.key-name');
  assert.equal(await cell.textContent(), XSS_KEY);
  assert.equal(await page.locator('main img').count(), 0);
  await go('audit');
  await row('token.create').waitFor();
  assert.equal(await page.evaluate(() => window.__xss), undefined);
  assert.equal(await page.locator('main script').count(), 0);
});

test('a key that gets a 429 upstream turns cooling within 2 s, then comes back', async () => {
  await go('keys');
  const hot = page.locator('tr[data-key-name="hot-key"]');
  assert.equal(await hot.getAttribute('data-state'), 'active');
  hotRefuses = true;
  const before = hits.hot;
  // Requests go round the pool: within a few of them the hot key is tried, refuses, cools,
  // and the request fails over to another key.
  for (let i = 0; i < 20 && hits.hot === before; i += 1) assert.equal(await proxied(), 200);
  assert.ok(hits.hot > before, 'the hot key was never tried');
  const t0 = Date.now();
  await page.locator('tr[data-key-name="hot-key"][data-state="cooling"]').waitFor({ timeout: 2500 });
  assert.ok(Date.now() - t0 <= 2500, 'the cooling state showed too late');
  await hot.getByText(/until /).waitFor();
  hotRefuses = false;
  await page.locator('tr[data-key-name="hot-key"][data-state="active"]').waitFor({ timeout: 10000 });
});

test('the overview charts and totals match /metrics', async () => {
  await go('overview');
  const want = await metricsTotals();
  assert.ok(want.requests >= 2 && want.failovers >= 1, JSON.stringify(want));
  for (const [series, n] of Object.entries(want))
    await page.locator(`#totals td[data-series="${series}"]`, { hasText: new RegExp(`^${n.toLocaleString('en-US')}$`) }).waitFor({ timeout: 5000 });
  // The chart says the same as the table, and the per-minute table adds up to it.
  const chartTotal = await page.locator('figure.chart', { hasText: 'Requests' }).locator('.chart-total').textContent();
  assert.equal(Number(chartTotal.replace(/,/g, '')), want.requests);
  await page.getByText('Per-minute data table').click();
  const perMinute = await page.locator('details.datatable tbody tr td:nth-of-type(1)').allTextContents();
  assert.equal(perMinute.reduce((a, s) => a + Number(s), 0), want.requests);
  // Pool health per service: every fakeai key is active again by now.
  await page.locator('#health tr', { hasText: 'fakeai' }).locator('td[data-state="active"]', { hasText: /^5$/ }).waitFor();
});

test('disable and enable from the Keys view, and the audit view shows both', async () => {
  await go('keys');
  const good = page.locator('tr[data-key-name="good-key"]');
  const id = await good.getAttribute('data-key-id');
  await good.getByRole('button', { name: 'Disable key good-key' }).click();
  await page.locator('tr[data-key-name="good-key"][data-state="disabled"]').waitFor();
  await good.getByText('disabled by admin').waitFor();
  await good.getByRole('button', { name: 'Enable key good-key' }).click();
  await page.locator('tr[data-key-name="good-key"][data-state="active"]').waitFor();

  await go('audit');
  await page.getByLabel('Target').fill(id);
  await page.locator(`tr[data-action="key.disable"][data-target="${id}"]`).waitFor();
  await page.locator(`tr[data-action="key.enable"][data-target="${id}"]`).waitFor();
  // Filtering by action leaves only that action.
  await page.getByLabel('Action').fill('key.disable');
  await page.getByLabel('Action').press('Enter');
  await page.locator(`tr[data-action="key.enable"]`).waitFor({ state: 'detached' });
  assert.ok(await page.locator(`tr[data-action="key.disable"][data-target="${id}"]`).isVisible());
  // And by time: from a minute in the future, nothing.
  const future = new Date(Date.now() + 120000);
  const local = new Date(future.getTime() - future.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  await page.getByLabel('From (local time)').fill(local);
  await page.locator('#audit-table caption', { hasText: /^0 entries/ }).waitFor();
});

test('a write without the CSRF header is refused with 403, and so is a cross-origin request', async () => {
  const noCsrf = await page.evaluate(async () => {
    const r = await fetch('/admin/tiers', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'sneaky', features: { fakeai: 1 } }) });
    return { status: r.status, body: await r.json() };
  });
  assert.equal(noCsrf.status, 403);
  assert.equal(noCsrf.body.error.code, 'forbidden');
  const cookie = await cookieHeader();
  const wrong = await fetch(`${base}/admin/tiers`, { method: 'POST', headers: { Cookie: cookie, 'X-CSRF-Token': 'guess', 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'sneaky', features: { fakeai: 1 } }) });
  assert.equal(wrong.status, 403);
  const cross = await fetch(`${base}/admin/keys`, { headers: { Cookie: cookie, Origin: 'http://evil.example', 'Sec-Fetch-Site': 'cross-site' } });
  assert.equal(cross.status, 403);
  const sameSite = await fetch(`${base}/admin/keys`, { headers: { Cookie: cookie, 'Sec-Fetch-Site': 'same-site' } });
  assert.equal(sameSite.status, 403);
  const tiers = await (await adminFetch('GET', '/admin/tiers')).json();
  assert.ok(!tiers.tiers.some((t) => t.name === 'sneaky'));
});

// Key test, token edit and token rotate come with newer servers: the console uses them when
// they answer, and hides their buttons when the server says 404/405.
test('key test, token edit and token rotate work, or hide themselves on a server without them', async () => {
  await go('keys');
  await page.getByRole('button', { name: 'Test key good-key' }).click();
  // The fake upstream answers the service's health check (GET /v1/models) with 200.
  await page.locator('.msg', { hasText: 'Key good-key: works (upstream 200)' }).waitFor();

  await go('tokens');
  await page.getByRole('button', { name: 'Edit token team-a' }).click();
  await page.getByLabel('rpm').first().fill('7');
  await page.getByRole('button', { name: 'Save' }).click();
  const edited = page.locator('.msg', { hasText: /cannot edit tokens yet|Token team-a saved/ });
  await edited.waitFor();
  if (/cannot edit/.test(await edited.textContent())) assert.equal(await page.getByRole('button', { name: /^Edit token/ }).count(), 0);
  else await row('team-a').getByText('7', { exact: true }).waitFor();

  await page.getByRole('button', { name: 'Rotate token team-a' }).click();
  const rotated = page.locator('.msg, #new-token', { hasText: /cannot rotate tokens yet/ }).or(page.locator('#new-token'));
  await rotated.first().waitFor();
  if (await page.locator('#new-token').count()) {
    teamToken = await page.locator('#new-token').inputValue();
    await page.getByRole('button', { name: 'Done' }).click();
  } else {
    assert.equal(await page.getByRole('button', { name: /^Rotate token/ }).count(), 0);
  }
});

test('keyboard: skip link, then every view by Tab and Enter', async () => {
  await go('overview');
  await page.reload();
  await page.locator('#h-overview').waitFor();
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
  for (const view of VIEWS.slice(1)) {
    await page.locator(`nav a[href="#/${view}"]`).focus();
    await page.keyboard.press('Enter');
    await page.locator(`#h-${view}`).waitFor();
    // Focus moves to the view's content (after the render, so wait for it).
    await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'main', null, { timeout: 2000 });
  }
});

test('axe: no serious or critical violations on any view, light and dark; phone width fits; screenshots', async () => {
  for (const scheme of ['light', 'dark']) {
    const p = await newPage(scheme);
    for (const view of VIEWS) {
      await p.goto(`${base}/ui/#/${view}`);
      await p.locator(`#h-${view}`).waitFor();
      await p.locator('main table, main p:has-text("No")').first().waitFor();
      await axeCheck(p, `${view} (${scheme})`);
      await p.screenshot({ path: join(SHOTS, `${view}-${scheme}.png`), fullPage: true });
    }
    await p.close();
  }
  // The login form too, from a fresh context with no session.
  const anon = await browser.newContext();
  const lp = await anon.newPage();
  await lp.goto(`${base}/ui/`);
  await lp.locator('#admin-token').waitFor();
  await axeCheck(lp, 'login');
  await lp.screenshot({ path: join(SHOTS, 'login-light.png') });
  await anon.close();
  // A phone: no view is wider than the screen (wide tables scroll inside their own box).
  const phone = await newPage('light', { width: 390, height: 844 });
  for (const view of VIEWS) {
    await phone.goto(`${base}/ui/#/${view}`);
    await phone.locator(`#h-${view}`).waitFor();
    const [sw, w] = await phone.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    assert.ok(sw <= w, `${view} is ${sw}px wide on a ${w}px screen`);
  }
  await phone.screenshot({ path: join(SHOTS, 'keys-phone.png'), fullPage: false });
  await phone.close();
});

test('the console ran under its CSP without a violation or a script error', () => {
  assert.deepEqual(cspViolations, []);
});
