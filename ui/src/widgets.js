// Small shared pieces: status messages, scrollable tables, polling, forms.
import { html } from 'htm/preact';
import { useEffect, useRef } from 'preact/hooks';

export function Message({ msg }) {
  if (!msg) return null;
  return html`<p class=${'msg ' + (msg.kind || 'info')} role=${msg.kind === 'error' ? 'alert' : 'status'}>${msg.text}</p>`;
}

// A table that may scroll sideways on a phone: the region is focusable so the keyboard can scroll it.
export function TableWrap({ label, children }) {
  return html`<div class="table-wrap" role="region" aria-label=${label} tabindex="0">${children}</div>`;
}

// Calls fn now and every ms while mounted (and while the tab is visible); the next call
// starts only after the previous one ended, so a slow server never piles requests up.
export function usePoll(fn, ms, deps = []) {
  const saved = useRef(fn);
  saved.current = fn;
  useEffect(() => {
    let alive = true;
    let timer = 0;
    const tick = async () => {
      if (document.visibilityState !== 'hidden') {
        try { await saved.current(); } catch { /* shown by the view */ }
      }
      if (alive) timer = setTimeout(tick, ms);
    };
    tick();
    return () => { alive = false; clearTimeout(timer); };
  }, deps);
}

export function Field({ label, children, hint }) {
  return html`<label class="field"><span class="label">${label}</span>${children}${hint ? html`<span class="hint">${hint}</span>` : null}</label>`;
}

export function StateBadge({ state }) {
  const known = ['active', 'cooling', 'suspended', 'disabled', 'expired'];
  const cls = known.includes(state) ? state : 'other';
  return html`<span class=${'badge state-' + cls}>${state || 'unknown'}</span>`;
}
