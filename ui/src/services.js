// Services: what keypool proxies to (services.d files and services added through the API).
import { html } from 'htm/preact';
import { useState } from 'preact/hooks';
import { api } from './api.js';
import { Field, Message, TableWrap, usePoll } from './widgets.js';

const SCHEMES = ['bearer', 'x-api-key', 'xi-api-key', 'authorization-raw', 'authorization-token', 'query-param'];

export function Services() {
  const [list, setList] = useState(null);
  const [msg, setMsg] = useState(null);
  const [form, setForm] = useState({ name: '', base_url: '', auth_scheme: 'bearer', feature: '', rate_limit_rpm: '' });
  const load = async () => setList((await api('GET', '/admin/services')).services);
  usePoll(async () => { try { await load(); } catch (e) { setMsg({ kind: 'error', text: e.message }); } }, 10000);

  const create = async (ev) => {
    ev.preventDefault();
    const body = { name: form.name.trim(), base_url: form.base_url.trim(), auth_scheme: form.auth_scheme };
    if (form.feature.trim()) body.feature = form.feature.trim();
    if (form.rate_limit_rpm !== '') body.rate_limit_rpm = Number(form.rate_limit_rpm);
    try {
      await api('POST', '/admin/services', body);
      setMsg({ kind: 'ok', text: `Service ${body.name} added.` });
      setForm({ ...form, name: '', base_url: '', feature: '', rate_limit_rpm: '' });
      await load();
    } catch (e) { setMsg({ kind: 'error', text: e.message }); }
  };
  const remove = async (name) => {
    if (!confirm(`Delete service ${name}?`)) return;
    try { await api('DELETE', '/admin/services/' + encodeURIComponent(name)); setMsg({ kind: 'ok', text: `Service ${name} deleted.` }); await load(); }
    catch (e) { setMsg({ kind: 'error', text: e.message }); }
  };
  const set = (k) => (ev) => setForm({ ...form, [k]: ev.target.value });

  return html`<section aria-labelledby="h-services">
    <h1 id="h-services">Services</h1>
    <${Message} msg=${msg} />
    ${list ? html`<${TableWrap} label="Services"><table class="data">
      <caption>${list.length} services</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Display name</th><th scope="col">Base URL</th><th scope="col">Auth</th>
        <th scope="col">Feature</th><th scope="col">Key rpm</th><th scope="col">Defined in</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
      <tbody>${list.map((s) => html`<tr>
        <th scope="row">${s.name}</th><td>${s.display_name}</td><td class="mono">${s.base_url}</td><td>${s.auth_scheme}</td>
        <td>${s.feature}</td><td>${s.rate_limit_rpm || '—'}</td><td class="mono">${s.source}</td>
        <td>${s.source === 'admin' ? html`<button type="button" class="danger small" onClick=${() => remove(s.name)} aria-label=${'Delete service ' + s.name}>Delete</button>` : null}</td>
      </tr>`)}</tbody></table><//>` : html`<p>Loading…</p>`}
    <h2>Add a service</h2>
    <form class="inline-form" onSubmit=${create}>
      <${Field} label="Name"><input required value=${form.name} onInput=${set('name')} pattern="[a-z0-9][a-z0-9_\\-]{0,63}" /><//>
      <${Field} label="Base URL"><input required type="url" value=${form.base_url} onInput=${set('base_url')} placeholder="https://api.example.com" /><//>
      <${Field} label="Auth scheme"><select value=${form.auth_scheme} onChange=${set('auth_scheme')}>${SCHEMES.map((s) => html`<option value=${s}>${s}</option>`)}</select><//>
      <${Field} label="Feature (optional)"><input value=${form.feature} onInput=${set('feature')} /><//>
      <${Field} label="Key rpm (optional)"><input type="number" min="0" value=${form.rate_limit_rpm} onInput=${set('rate_limit_rpm')} /><//>
      <button type="submit">Add service</button>
    </form>
  </section>`;
}
