// Tokens: team tokens. A new (or rotated) token is shown once, with a copy button; the list
// only ever has its prefix. Edit and rotate need PATCH /admin/tokens/{id} and
// POST /admin/tokens/{id}/rotate: on a keypool without them the buttons go away.
import { html } from 'htm/preact';
import { useState } from 'preact/hooks';
import { api, fmtNum, fmtTime, isMissingEndpoint } from './api.js';
import { Field, Message, TableWrap, usePoll } from './widgets.js';

const splitList = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
// datetime-local (no zone, read as local time) -> ISO 8601 UTC, or null.
const toIso = (s) => (s ? new Date(s).toISOString().replace(/\.\d+Z$/, 'Z') : null);

function Reveal({ reveal, onDone }) {
  const [copied, setCopied] = useState(false);
  const copy = async () => {
    try { await navigator.clipboard.writeText(reveal.token); setCopied(true); }
    catch { document.getElementById('new-token').select(); }
  };
  return html`<div class="panel reveal" role="region" aria-labelledby="h-reveal">
    <h2 id="h-reveal">${reveal.title}</h2>
    <p><strong>Copy it now: keypool will not show it again.</strong></p>
    <div class="row">
      <label class="sr-only" for="new-token">New token</label>
      <input id="new-token" class="mono" readonly value=${reveal.token} onFocus=${(e) => e.target.select()} />
      <button type="button" onClick=${copy}>${copied ? 'Copied' : 'Copy'}</button>
      <button type="button" onClick=${onDone}>Done</button>
    </div>
    <p class="sr-only" role="status">${copied ? 'Token copied to the clipboard' : ''}</p>
  </div>`;
}

export function Tokens() {
  const [list, setList] = useState(null);
  const [tiers, setTiers] = useState([]);
  const [msg, setMsg] = useState(null);
  const [reveal, setReveal] = useState(null);
  const [can, setCan] = useState({ edit: true, rotate: true });
  const [editing, setEditing] = useState(null);
  const [form, setForm] = useState({ name: '', tier: '', services: '', rpm: '', expires_at: '', allow_key_handout: false });
  const load = async () => {
    const [t, tr] = await Promise.all([api('GET', '/admin/tokens'), api('GET', '/admin/tiers')]);
    setList(t.tokens);
    setTiers(tr.tiers);
  };
  usePoll(async () => { try { await load(); } catch (e) { setMsg({ kind: 'error', text: e.message }); } }, 5000);

  const create = async (ev) => {
    ev.preventDefault();
    const body = { name: form.name.trim(), tier: form.tier || tiers[0]?.name };
    if (form.services.trim()) body.services = splitList(form.services);
    if (form.rpm !== '') body.rpm = Number(form.rpm);
    if (form.expires_at) body.expires_at = toIso(form.expires_at);
    if (form.allow_key_handout) body.allow_key_handout = true;
    try {
      const r = await api('POST', '/admin/tokens', body);
      setReveal({ title: `Token ${r.name} created`, token: r.token });
      setMsg(null);
      setForm({ ...form, name: '', services: '', rpm: '', expires_at: '', allow_key_handout: false });
      await load();
    } catch (e) { setMsg({ kind: 'error', text: e.message }); }
  };
  const revoke = async (t) => {
    if (!confirm(`Revoke token ${t.name}? Callers using it are refused at once.`)) return;
    try { await api('DELETE', `/admin/tokens/${t.id}`); setMsg({ kind: 'ok', text: `Token ${t.name} revoked.` }); await load(); }
    catch (e) { setMsg({ kind: 'error', text: e.message }); }
  };
  const rotate = async (t) => {
    const grace = prompt(`Rotate token ${t.name}: seconds the old token keeps working`, '0');
    if (grace === null) return;
    try {
      const r = await api('POST', `/admin/tokens/${t.id}/rotate`, { grace_s: Number(grace) || 0 });
      setReveal({ title: `Token ${t.name} rotated`, token: r.token });
      await load();
    } catch (e) {
      if (isMissingEndpoint(e)) { setCan({ ...can, rotate: false }); setMsg({ kind: 'info', text: 'This keypool cannot rotate tokens yet; the Rotate buttons are hidden.' }); }
      else setMsg({ kind: 'error', text: e.message });
    }
  };
  const startEdit = (t) => setEditing({ id: t.id, name: t.name, services: (t.services || []).join(', '), rpm: String(t.rpm || 0),
    expires_at: t.expires_at ? t.expires_at.slice(0, 16) : '', allow_key_handout: !!t.allow_key_handout });
  const saveEdit = async (ev) => {
    ev.preventDefault();
    const body = { name: editing.name.trim(), services: splitList(editing.services), rpm: Number(editing.rpm) || 0,
      expires_at: editing.expires_at ? toIso(editing.expires_at) : null, allow_key_handout: editing.allow_key_handout };
    try { await api('PATCH', `/admin/tokens/${editing.id}`, body); setMsg({ kind: 'ok', text: `Token ${body.name} saved.` }); setEditing(null); await load(); }
    catch (e) {
      if (isMissingEndpoint(e)) { setCan({ ...can, edit: false }); setEditing(null); setMsg({ kind: 'info', text: 'This keypool cannot edit tokens yet; the Edit buttons are hidden.' }); }
      else setMsg({ kind: 'error', text: e.message });
    }
  };
  const set = (k) => (ev) => setForm({ ...form, [k]: ev.target.type === 'checkbox' ? ev.target.checked : ev.target.value });
  const setE = (k) => (ev) => setEditing({ ...editing, [k]: ev.target.type === 'checkbox' ? ev.target.checked : ev.target.value });

  return html`<section aria-labelledby="h-tokens">
    <h1 id="h-tokens">Tokens</h1>
    <${Message} msg=${msg} />
    ${reveal ? html`<${Reveal} reveal=${reveal} onDone=${() => setReveal(null)} />` : null}
    ${editing ? html`<form class="inline-form panel" onSubmit=${saveEdit} aria-label="Edit token">
      <${Field} label="Name"><input required value=${editing.name} onInput=${setE('name')} /><//>
      <${Field} label="Services" hint="comma separated; empty = all"><input value=${editing.services} onInput=${setE('services')} /><//>
      <${Field} label="rpm"><input type="number" min="0" value=${editing.rpm} onInput=${setE('rpm')} /><//>
      <${Field} label="Expires (local time)"><input type="datetime-local" value=${editing.expires_at} onInput=${setE('expires_at')} /><//>
      <label class="check"><input type="checkbox" checked=${editing.allow_key_handout} onChange=${setE('allow_key_handout')} /> Allow GET /key</label>
      <button type="submit">Save</button><button type="button" onClick=${() => setEditing(null)}>Cancel</button>
    </form>` : null}
    ${list ? html`<${TableWrap} label="Tokens"><table class="data" id="tokens-table">
      <caption>${list.length} tokens</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Prefix</th><th scope="col">Tier</th><th scope="col">Services</th><th scope="col">rpm</th>
        <th scope="col">Expires</th><th scope="col">Requests</th><th scope="col">Status</th><th scope="col">Actions</th></tr></thead>
      <tbody>${list.map((t) => html`<tr data-token-id=${t.id}>
        <th scope="row">${t.name}</th><td class="mono">${t.prefix}…</td><td>${t.tier}</td><td>${(t.services || []).join(', ') || 'all'}</td>
        <td>${t.rpm || '—'}</td><td>${fmtTime(t.expires_at)}</td><td>${fmtNum(t.requests)}</td>
        <td>${t.revoked ? html`<span class="badge state-disabled">revoked ${fmtTime(t.revoked_at)}</span>` : html`<span class="badge state-active">live</span>`}</td>
        <td class="actions">${t.revoked ? null : html`
          ${can.edit ? html`<button type="button" class="small" onClick=${() => startEdit(t)} aria-label=${'Edit token ' + t.name}>Edit</button>` : null}
          ${can.rotate ? html`<button type="button" class="small" onClick=${() => rotate(t)} aria-label=${'Rotate token ' + t.name}>Rotate</button>` : null}
          <button type="button" class="small danger" onClick=${() => revoke(t)} aria-label=${'Revoke token ' + t.name}>Revoke</button>`}</td>
      </tr>`)}</tbody></table><//>` : html`<p>Loading…</p>`}
    <h2>Create a token</h2>
    <form class="inline-form" onSubmit=${create} aria-label="Create a token">
      <${Field} label="Token name"><input name="token-name" required value=${form.name} onInput=${set('name')} /><//>
      <${Field} label="Tier"><select name="token-tier" value=${form.tier || tiers[0]?.name || ''} onChange=${set('tier')}>${tiers.map((t) => html`<option value=${t.name}>${t.name}</option>`)}</select><//>
      <${Field} label="Services" hint="comma separated; empty = all"><input name="token-services" value=${form.services} onInput=${set('services')} /><//>
      <${Field} label="rpm"><input name="token-rpm" type="number" min="0" value=${form.rpm} onInput=${set('rpm')} /><//>
      <${Field} label="Expires (local time)"><input type="datetime-local" value=${form.expires_at} onInput=${set('expires_at')} /><//>
      <label class="check"><input type="checkbox" checked=${form.allow_key_handout} onChange=${set('allow_key_handout')} /> Allow GET /key</label>
      <button type="submit" disabled=${!tiers.length}>Create token</button>
    </form>
  </section>`;
}
