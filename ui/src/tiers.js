// Tiers: which features a group of keys serves, and each key's requests per minute there.
import { html } from 'htm/preact';
import { useState } from 'preact/hooks';
import { api } from './api.js';
import { Field, Message, TableWrap, usePoll } from './widgets.js';

// "openai=60, groq=30" -> {openai: 60, groq: 30}
export function parseFeatures(text) {
  const out = {};
  for (const part of text.split(/[,\n]/)) {
    const p = part.trim();
    if (!p) continue;
    const m = p.match(/^([^=:\s]+)\s*[=:]\s*(\d+)$/);
    if (!m) throw new Error(`"${p}" is not feature=rpm`);
    out[m[1]] = Number(m[2]);
  }
  return out;
}

export function Tiers() {
  const [list, setList] = useState(null);
  const [msg, setMsg] = useState(null);
  const [form, setForm] = useState({ name: '', features: '', max_wait_ms: '' });
  const load = async () => setList((await api('GET', '/admin/tiers')).tiers);
  usePoll(async () => { try { await load(); } catch (e) { setMsg({ kind: 'error', text: e.message }); } }, 10000);

  const create = async (ev) => {
    ev.preventDefault();
    try {
      const body = { name: form.name.trim(), features: parseFeatures(form.features) };
      if (form.max_wait_ms !== '') body.max_wait_ms = Number(form.max_wait_ms);
      await api('POST', '/admin/tiers', body);
      setMsg({ kind: 'ok', text: `Tier ${body.name} created.` });
      setForm({ name: '', features: '', max_wait_ms: '' });
      await load();
    } catch (e) { setMsg({ kind: 'error', text: e.message }); }
  };
  const remove = async (name) => {
    if (!confirm(`Delete tier ${name}?`)) return;
    try { await api('DELETE', '/admin/tiers/' + encodeURIComponent(name)); setMsg({ kind: 'ok', text: `Tier ${name} deleted.` }); await load(); }
    catch (e) { setMsg({ kind: 'error', text: e.message }); }
  };
  const set = (k) => (ev) => setForm({ ...form, [k]: ev.target.value });

  return html`<section aria-labelledby="h-tiers">
    <h1 id="h-tiers">Tiers</h1>
    <${Message} msg=${msg} />
    ${list ? html`<${TableWrap} label="Tiers"><table class="data" id="tiers-table">
      <caption>${list.length} tiers</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Features (requests per minute per key)</th><th scope="col">Max wait</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
      <tbody>${list.map((t) => html`<tr>
        <th scope="row">${t.name}</th>
        <td>${Object.entries(t.features || {}).map(([f, r]) => html`<span class="chip">${f}: ${r}</span> `)}</td>
        <td>${t.max_wait_ms ? t.max_wait_ms + ' ms' : '—'}</td>
        <td><button type="button" class="danger small" onClick=${() => remove(t.name)} aria-label=${'Delete tier ' + t.name}>Delete</button></td>
      </tr>`)}</tbody></table><//>` : html`<p>Loading…</p>`}
    <h2>Create a tier</h2>
    <form class="inline-form" onSubmit=${create} aria-label="Create a tier">
      <${Field} label="Tier name"><input name="tier-name" required value=${form.name} onInput=${set('name')} /><//>
      <${Field} label="Features" hint="feature=rpm, comma separated"><input name="tier-features" required value=${form.features} onInput=${set('features')} placeholder="openai=60, groq=30" /><//>
      <${Field} label="Max wait (ms)"><input name="tier-wait" type="number" min="0" max="60000" value=${form.max_wait_ms} onInput=${set('max_wait_ms')} /><//>
      <button type="submit">Create tier</button>
    </form>
  </section>`;
}
