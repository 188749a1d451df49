// Keys: every upstream key's state, usage and counters (hints only: no value ever comes
// back from the API), with add, bulk import, test, enable/disable, rotate and delete.
import { html } from 'htm/preact';
import { useState } from 'preact/hooks';
import { api, fmtNum, fmtTime, isMissingEndpoint } from './api.js';
import { KNOWN_STATES } from './overview.js';
import { Field, Message, StateBadge, TableWrap, usePoll } from './widgets.js';

// One key per line: "value", "name,value" or "name,value,tier[,service]". Blank lines and
// lines starting with # are skipped. Returns [{name, key, tier, service}] or throws.
export function parseImport(text, defaultTier, prefix) {
  const out = [];
  let n = 0;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    n += 1;
    const parts = line.split(',').map((s) => s.trim());
    let [name, key, tier, service] = parts.length === 1 ? [`${prefix}-${n}`, parts[0]] : parts;
    tier = tier || defaultTier;
    if (!key) throw new Error(`line ${n}: no key value`);
    if (!tier) throw new Error(`line ${n}: no tier (choose one above or write name,key,tier)`);
    out.push({ name, key, tier, ...(service ? { service } : {}) });
  }
  return out;
}

function StateCell({ k }) {
  return html`<div class="state-cell">
    <${StateBadge} state=${k.state || (k.enabled ? 'active' : 'disabled')} />
    ${k.disabled_reason ? html`<div class="sub">${k.disabled_reason}</div>` : null}
    ${k.disabled_at ? html`<div class="sub">since ${fmtTime(k.disabled_at)}</div>` : null}
    ${k.cooling_until ? html`<div class="sub">until ${fmtTime(k.cooling_until)}</div>` : null}
    ${k.suspended_reason ? html`<div class="sub">suspended: ${k.suspended_reason}</div>` : null}
    ${k.suspended_at ? html`<div class="sub">since ${fmtTime(k.suspended_at)}</div>` : null}
    ${k.next_probe_at ? html`<div class="sub">next probe ${fmtTime(k.next_probe_at)}</div>` : null}
  </div>`;
}

function UsageCell({ usage }) {
  if (!usage || usage.length === 0) return html`<span class="sub">—</span>`;
  return html`<ul class="plain">${usage.map((u) => html`<li>${u.feature}: ${u.used}/${u.limit || '∞'} <span class="sub">(resets in ${u.reset_in_s}s)</span></li>`)}</ul>`;
}

function CountersCell({ c }) {
  if (!c) return html`<span class="sub">—</span>`;
  return html`<ul class="plain">
    <li>${fmtNum(c.requests)} req, ${fmtNum(c.errors)} err</li>
    <li class="sub">${fmtNum(c.input_tokens)} in / ${fmtNum(c.output_tokens)} out tokens</li>
    <li class="sub">last used ${fmtTime(c.last_used_at)}</li>
    ${c.last_error ? html`<li class="sub">last error: ${c.last_error}</li>` : null}
  </ul>`;
}

function balanceText(k) {
  if (k.balance_total === undefined) return '—';
  const left = k.balance_left !== undefined ? `${fmtNum(k.balance_left)} of ` : '';
  return `${left}${fmtNum(k.balance_total)} ${k.balance_unit || ''}`.trim();
}

export function Keys() {
  const [keys, setKeys] = useState(null);
  const [tiers, setTiers] = useState([]);
  const [msg, setMsg] = useState(null);
  const [selected, setSelected] = useState(new Set());
  const [query, setQuery] = useState('');
  const [stateFilter, setStateFilter] = useState('');
  const [tierFilter, setTierFilter] = useState('');
  const [testable, setTestable] = useState(true);
  const [rotating, setRotating] = useState(null);
  const [rotateValue, setRotateValue] = useState('');
  const [form, setForm] = useState({ name: '', key: '', tier: '', service: '' });
  const [bulk, setBulk] = useState({ text: '', tier: '', prefix: 'imported' });

  const load = async () => {
    const [k, t] = await Promise.all([api('GET', '/admin/keys'), api('GET', '/admin/tiers')]);
    setKeys(k.keys);
    setTiers(t.tiers);
  };
  // Live: states (cooling, disabled) show within two seconds.
  usePoll(async () => { try { await load(); } catch (e) { setMsg({ kind: 'error', text: e.message }); } }, 1500);

  const run = async (what, fn) => {
    try { const text = await fn(); setMsg({ kind: 'ok', text: text || what + ': done' }); await load(); }
    catch (e) {
      if (what === 'test' && isMissingEndpoint(e)) {
        setTestable(false);
        setMsg({ kind: 'info', text: 'This keypool cannot test keys yet (POST /admin/keys/{id}/test is missing); the Test buttons are hidden.' });
      } else setMsg({ kind: 'error', text: e.message });
    }
  };
  const setEnabled = (k, enabled) => run(enabled ? 'enable' : 'disable',
    async () => { await api('PATCH', `/admin/keys/${k.id}`, { enabled }); return `Key ${k.name} ${enabled ? 'enabled' : 'disabled'}.`; });
  const test = (k) => run('test', async () => {
    // {"result": "pass" | "fail" | "error", "upstream_status", "message", "resumed"} (README).
    const r = await api('POST', `/admin/keys/${k.id}/test`);
    const verdict = r.result === 'pass' ? 'works' : r.result === 'fail' ? 'failed' : 'could not be tested';
    return `Key ${k.name}: ${verdict}${r.upstream_status ? ` (upstream ${r.upstream_status})` : ''}` +
      `${r.resumed ? ', suspension lifted' : ''}${r.message ? ': ' + r.message : ''}`;
  });
  const remove = (k) => { if (confirm(`Delete key ${k.name}? This cannot be undone.`)) run('delete', async () => { await api('DELETE', `/admin/keys/${k.id}`); return `Key ${k.name} deleted.`; }); };
  const rotate = async (ev) => {
    ev.preventDefault();
    const k = rotating;
    await run('rotate', async () => { await api('POST', `/admin/keys/${k.id}/rotate`, { key: rotateValue.trim() }); return `Key ${k.name} rotated.`; });
    setRotating(null); setRotateValue('');
  };

  const visible = (keys || []).filter((k) => {
    const q = query.trim().toLowerCase();
    if (q && ![k.name, k.hint, k.tier, k.service || '', String(k.id)].some((s) => s.toLowerCase().includes(q))) return false;
    if (stateFilter && (k.state || '') !== stateFilter) return false;
    if (tierFilter && k.tier !== tierFilter) return false;
    return true;
  });
  const allStates = [...new Set([...KNOWN_STATES, ...(keys || []).map((k) => k.state).filter(Boolean)])];
  const chosen = visible.filter((k) => selected.has(k.id));
  const toggle = (id) => { const s = new Set(selected); s.has(id) ? s.delete(id) : s.add(id); setSelected(s); };
  const toggleAll = () => setSelected(chosen.length === visible.length ? new Set() : new Set(visible.map((k) => k.id)));
  const onMany = (label, fn) => run(label, async () => {
    let ok = 0;
    for (const k of chosen) { await fn(k); ok += 1; }
    setSelected(new Set());
    return `${label}: ${ok} key${ok === 1 ? '' : 's'}.`;
  });

  const add = async (ev) => {
    ev.preventDefault();
    const body = { name: form.name.trim(), key: form.key.trim(), tier: form.tier || tiers[0]?.name };
    if (form.service.trim()) body.service = form.service.trim();
    await run('add', async () => { const r = await api('POST', '/admin/keys', body); setForm({ ...form, name: '', key: '' }); return `Key ${r.name} added (${r.hint}).`; });
  };
  const importKeys = async (ev) => {
    ev.preventDefault();
    let rows;
    try { rows = parseImport(bulk.text, bulk.tier || tiers[0]?.name, bulk.prefix || 'imported'); }
    catch (e) { setMsg({ kind: 'error', text: e.message }); return; }
    let ok = 0; const failed = [];
    for (const r of rows) {
      try { await api('POST', '/admin/keys', r); ok += 1; } catch (e) { failed.push(`${r.name}: ${e.message}`); }
    }
    setBulk({ ...bulk, text: '' });
    setMsg({ kind: failed.length ? 'error' : 'ok', text: `Imported ${ok} of ${rows.length} keys.${failed.length ? ' Failed: ' + failed.join('; ') : ''}` });
    await load();
  };
  const readFile = async (ev) => {
    const f = ev.target.files && ev.target.files[0];
    if (f) setBulk({ ...bulk, text: await f.text() });
  };
  const set = (o, setO, k) => (ev) => setO({ ...o, [k]: ev.target.value });

  return html`<section aria-labelledby="h-keys">
    <h1 id="h-keys">Keys</h1>
    <${Message} msg=${msg} />
    <div class="toolbar" role="search">
      <${Field} label="Search"><input type="search" value=${query} onInput=${(e) => setQuery(e.target.value)} placeholder="name, hint, tier, service" /><//>
      <${Field} label="State"><select value=${stateFilter} onChange=${(e) => setStateFilter(e.target.value)}>
        <option value="">any</option>${allStates.map((s) => html`<option value=${s}>${s}</option>`)}</select><//>
      <${Field} label="Tier"><select value=${tierFilter} onChange=${(e) => setTierFilter(e.target.value)}>
        <option value="">any</option>${tiers.map((t) => html`<option value=${t.name}>${t.name}</option>`)}</select><//>
    </div>
    <div class="toolbar" aria-label="Actions on selected keys" role="group">
      <span class="sub">${chosen.length} selected</span>
      <button type="button" disabled=${!chosen.length} onClick=${() => onMany('Enabled', (k) => api('PATCH', `/admin/keys/${k.id}`, { enabled: true }))}>Enable selected</button>
      <button type="button" disabled=${!chosen.length} onClick=${() => onMany('Disabled', (k) => api('PATCH', `/admin/keys/${k.id}`, { enabled: false }))}>Disable selected</button>
      ${testable ? html`<button type="button" disabled=${!chosen.length} onClick=${() => onMany('test', (k) => api('POST', `/admin/keys/${k.id}/test`))}>Test selected</button>` : null}
      <button type="button" class="danger" disabled=${!chosen.length} onClick=${() => confirm(`Delete ${chosen.length} keys?`) && onMany('Deleted', (k) => api('DELETE', `/admin/keys/${k.id}`))}>Delete selected</button>
    </div>
    ${rotating ? html`<form class="inline-form panel" onSubmit=${rotate} aria-label=${'Rotate key ' + rotating.name}>
      <${Field} label=${`New value for ${rotating.name}`}><input type="password" autocomplete="off" required value=${rotateValue} onInput=${(e) => setRotateValue(e.target.value)} /><//>
      <button type="submit">Rotate</button><button type="button" onClick=${() => { setRotating(null); setRotateValue(''); }}>Cancel</button>
    </form>` : null}
    ${keys ? html`<${TableWrap} label="Keys"><table class="data" id="keys-table">
      <caption>${visible.length} of ${keys.length} keys</caption>
      <thead><tr>
        <th scope="col"><input type="checkbox" aria-label="Select all shown keys" checked=${visible.length > 0 && chosen.length === visible.length} onChange=${toggleAll} /></th>
        <th scope="col">Key</th><th scope="col">State</th><th scope="col">Usage windows</th><th scope="col">Counters</th><th scope="col">Balance</th><th scope="col">Actions</th>
      </tr></thead>
      <tbody>${visible.map((k) => html`<tr data-key-id=${k.id} data-key-name=${k.name} data-state=${k.state || ''}>
        <td><input type="checkbox" aria-label=${'Select key ' + k.name} checked=${selected.has(k.id)} onChange=${() => toggle(k.id)} /></td>
        <th scope="row"><div class="key-name">${k.name}</div><div class="sub mono">${k.hint}</div><div class="sub">${k.tier}${k.service ? ' · ' + k.service : ''} · #${k.id}</div></th>
        <td><${StateCell} k=${k} /></td>
        <td><${UsageCell} usage=${k.usage} /></td>
        <td><${CountersCell} c=${k.counters} /></td>
        <td>${balanceText(k)}</td>
        <td class="actions">
          ${testable ? html`<button type="button" class="small" onClick=${() => test(k)} aria-label=${'Test key ' + k.name}>Test</button>` : null}
          ${k.enabled ? html`<button type="button" class="small" onClick=${() => setEnabled(k, false)} aria-label=${'Disable key ' + k.name}>Disable</button>`
                      : html`<button type="button" class="small" onClick=${() => setEnabled(k, true)} aria-label=${'Enable key ' + k.name}>Enable</button>`}
          <button type="button" class="small" onClick=${() => { setRotating(k); setRotateValue(''); }} aria-label=${'Rotate key ' + k.name}>Rotate</button>
          <button type="button" class="small danger" onClick=${() => remove(k)} aria-label=${'Delete key ' + k.name}>Delete</button>
        </td>
      </tr>`)}</tbody></table><//>` : html`<p>Loading…</p>`}
    <div class="two-col">
      <form class="stack panel" onSubmit=${add} aria-labelledby="h-add-key">
        <h2 id="h-add-key">Add a key</h2>
        <${Field} label="Key name"><input name="key-name" required value=${form.name} onInput=${set(form, setForm, 'name')} /><//>
        <${Field} label="Key value" hint="sent once; keypool shows only a hint afterwards"><input name="key-value" type="password" autocomplete="off" required value=${form.key} onInput=${set(form, setForm, 'key')} /><//>
        <${Field} label="Tier"><select name="key-tier" required value=${form.tier || tiers[0]?.name || ''} onChange=${set(form, setForm, 'tier')}>
          ${tiers.map((t) => html`<option value=${t.name}>${t.name}</option>`)}</select><//>
        <${Field} label="Service (optional)"><input name="key-service" value=${form.service} onInput=${set(form, setForm, 'service')} /><//>
        <button type="submit" disabled=${!tiers.length}>Add key</button>
      </form>
      <form class="stack panel" onSubmit=${importKeys} aria-labelledby="h-import">
        <h2 id="h-import">Bulk import</h2>
        <${Field} label="Keys, one per line" hint="value, or name,value, or name,value,tier,service"><textarea name="import-text" rows="5" value=${bulk.text} onInput=${set(bulk, setBulk, 'text')}></textarea><//>
        <${Field} label="…or a file"><input type="file" accept=".txt,.csv,text/plain,text/csv" onChange=${readFile} /><//>
        <${Field} label="Default tier"><select value=${bulk.tier || tiers[0]?.name || ''} onChange=${set(bulk, setBulk, 'tier')}>${tiers.map((t) => html`<option value=${t.name}>${t.name}</option>`)}</select><//>
        <${Field} label="Name prefix for bare values"><input value=${bulk.prefix} onInput=${set(bulk, setBulk, 'prefix')} /><//>
        <button type="submit" disabled=${!tiers.length || !bulk.text.trim()}>Import</button>
      </form>
    </div>
  </section>`;
}
