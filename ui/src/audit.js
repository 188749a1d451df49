// Audit: who changed what. Action and start time go to the API; target and end time are
// filtered here (the API has no such parameters).
import { html } from 'htm/preact';
import { useState } from 'preact/hooks';
import { api, fmtTime } from './api.js';
import { Field, Message, TableWrap, usePoll } from './widgets.js';

const ACTIONS = ['key.create', 'key.update', 'key.enable', 'key.disable', 'key.rotate', 'key.delete', 'key.handout',
  'token.create', 'token.revoke', 'tier.create', 'tier.delete', 'service.create', 'service.delete'];

export function Audit() {
  const [rows, setRows] = useState(null);
  const [msg, setMsg] = useState(null);
  const [f, setF] = useState({ action: '', target: '', since: '', until: '' });
  const load = async () => {
    const q = new URLSearchParams({ limit: '500' });
    if (f.action.trim()) q.set('action', f.action.trim());
    if (f.since) q.set('since', String(Math.floor(new Date(f.since).getTime() / 1000)));
    setRows((await api('GET', '/admin/audit?' + q.toString())).audit);
  };
  usePoll(async () => { try { await load(); setMsg(null); } catch (e) { setMsg({ kind: 'error', text: e.message }); } }, 5000, [f.action, f.since]);
  const set = (k) => (ev) => setF({ ...f, [k]: ev.target.value });
  const until = f.until ? new Date(f.until).getTime() : Infinity;
  const shown = (rows || []).filter((r) => (!f.target.trim() || String(r.target).includes(f.target.trim())) && r.at_ms <= until);

  return html`<section aria-labelledby="h-audit">
    <h1 id="h-audit">Audit</h1>
    <${Message} msg=${msg} />
    <form class="toolbar" role="search" onSubmit=${(e) => e.preventDefault()}>
      <${Field} label="Action"><input name="audit-action" list="audit-actions" value=${f.action} onChange=${set('action')} /><//>
      <datalist id="audit-actions">${ACTIONS.map((a) => html`<option value=${a} />`)}</datalist>
      <${Field} label="Target"><input name="audit-target" value=${f.target} onInput=${set('target')} placeholder="key id, token id, name" /><//>
      <${Field} label="From (local time)"><input name="audit-since" type="datetime-local" value=${f.since} onChange=${set('since')} /><//>
      <${Field} label="To (local time)"><input name="audit-until" type="datetime-local" value=${f.until} onChange=${set('until')} /><//>
    </form>
    ${rows ? html`<${TableWrap} label="Audit log"><table class="data" id="audit-table">
      <caption>${shown.length} entries, newest first</caption>
      <thead><tr><th scope="col">Time (UTC)</th><th scope="col">Actor</th><th scope="col">Action</th><th scope="col">Target</th><th scope="col">Details</th></tr></thead>
      <tbody>${shown.map((r) => html`<tr data-action=${r.action} data-target=${r.target}>
        <td>${fmtTime(r.at)}</td><td>${r.actor}</td><td>${r.action}</td><td class="mono">${r.target}</td>
        <td class="mono details">${JSON.stringify(r.details)}</td></tr>`)}</tbody></table><//>` : html`<p>Loading…</p>`}
  </section>`;
}
