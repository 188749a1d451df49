// Overview: the last hour's traffic as charts with a data table, and pool health per service.
import { html } from 'htm/preact';
import { useState } from 'preact/hooks';
import { api, fmtNum } from './api.js';
import { BarChart } from './charts.js';
import { Message, TableWrap, usePoll, StateBadge } from './widgets.js';

const SERIES = [
  ['requests', 'Requests', 'blue'],
  ['errors', 'Errors (5xx)', 'red'],
  ['rate_limited', '429s from keypool', 'amber'],
  ['failovers', 'Failovers', 'purple'],
];
export const KNOWN_STATES = ['active', 'cooling', 'suspended', 'disabled', 'expired'];

function minuteLabel(ms) {
  return new Date(ms).toISOString().slice(11, 16) + 'Z';
}

// keys -> { service: { state: count } }, keeping whatever state names the API returns.
export function healthByService(keys) {
  const out = new Map();
  for (const k of keys) {
    const svc = k.service || `(any service, tier ${k.tier})`;
    if (!out.has(svc)) out.set(svc, {});
    const row = out.get(svc);
    const st = k.state || 'unknown';
    row[st] = (row[st] || 0) + 1;
  }
  return [...out.entries()].sort((a, b) => a[0].localeCompare(b[0]));
}

export function Overview() {
  const [stats, setStats] = useState(null);
  const [keys, setKeys] = useState(null);
  const [msg, setMsg] = useState(null);
  usePoll(async () => {
    try {
      const [s, k] = await Promise.all([api('GET', '/admin/stats'), api('GET', '/admin/keys')]);
      setStats(s);
      setKeys(k.keys);
      setMsg(null);
    } catch (e) {
      setMsg({ kind: 'error', text: e.message });
    }
  }, 2000);

  const health = keys ? healthByService(keys) : [];
  const extra = [...new Set(health.flatMap(([, r]) => Object.keys(r)).filter((s) => !KNOWN_STATES.includes(s)))].sort();
  const busy = stats ? stats.minutes.filter((m) => SERIES.some(([f]) => m[f] > 0)) : [];

  return html`<section aria-labelledby="h-overview">
    <h1 id="h-overview">Overview</h1>
    <${Message} msg=${msg} />
    <h2>Last hour</h2>
    ${stats ? html`
      <div class="charts">
        ${SERIES.map(([field, title, color]) => html`<${BarChart} title=${title} color=${color}
          series=${stats.minutes.map((m) => ({ label: minuteLabel(m.at_ms), value: m[field] }))} />`)}
      </div>
      <${TableWrap} label="Totals">
        <table class="data" id="totals">
          <caption>Since keypool started (the same counters as /metrics)</caption>
          <thead><tr>${SERIES.map(([f, t]) => html`<th scope="col">${t}</th>`)}</tr></thead>
          <tbody><tr>${SERIES.map(([f]) => html`<td data-series=${f}>${fmtNum(stats.totals[f])}</td>`)}</tr></tbody>
        </table>
      <//>
      <details class="datatable">
        <summary>Per-minute data table (${busy.length} minute${busy.length === 1 ? '' : 's'} with traffic)</summary>
        <${TableWrap} label="Per-minute data">
          <table class="data">
            <caption>Per minute, last hour (UTC); minutes without traffic left out</caption>
            <thead><tr><th scope="col">Minute</th>${SERIES.map(([, t]) => html`<th scope="col">${t}</th>`)}</tr></thead>
            <tbody>${busy.map((m) => html`<tr><th scope="row">${minuteLabel(m.at_ms)}</th>${SERIES.map(([f]) => html`<td>${m[f]}</td>`)}</tr>`)}</tbody>
          </table>
        <//>
      </details>` : html`<p>Loading…</p>`}
    <h2>Pool health</h2>
    ${keys ? html`<${TableWrap} label="Pool health per service">
      <table class="data" id="health">
        <caption>Keys per service by state</caption>
        <thead><tr><th scope="col">Service</th>${KNOWN_STATES.map((s) => html`<th scope="col"><${StateBadge} state=${s} /></th>`)}
          ${extra.map((s) => html`<th scope="col"><${StateBadge} state=${s} /></th>`)}<th scope="col">Total</th></tr></thead>
        <tbody>${health.length === 0 ? html`<tr><td colspan=${KNOWN_STATES.length + extra.length + 2}>No keys yet.</td></tr>` : null}
          ${health.map(([svc, row]) => html`<tr>
            <th scope="row">${svc}</th>
            ${KNOWN_STATES.map((s) => html`<td data-state=${s}>${row[s] || 0}</td>`)}
            ${extra.map((s) => html`<td data-state=${s}>${row[s] || 0}</td>`)}
            <td>${Object.values(row).reduce((a, b) => a + b, 0)}</td></tr>`)}</tbody>
      </table><//>` : html`<p>Loading…</p>`}
  </section>`;
}
