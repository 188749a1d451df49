// keypool's admin console: login, then six views over the /admin API. Hash routing
// (#/keys) keeps every view on the one /ui/ page keypool serves.
import { html } from 'htm/preact';
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { currentSession, login, logout, setCsrf, setOnUnauthorized } from './api.js';
import { Audit } from './audit.js';
import { Keys } from './keys.js';
import { Overview } from './overview.js';
import { Services } from './services.js';
import { Tiers } from './tiers.js';
import { Tokens } from './tokens.js';
import { Message } from './widgets.js';

const VIEWS = [
  ['overview', 'Overview', Overview],
  ['services', 'Services', Services],
  ['tiers', 'Tiers', Tiers],
  ['keys', 'Keys', Keys],
  ['tokens', 'Tokens', Tokens],
  ['audit', 'Audit', Audit],
];

function currentView() {
  const name = location.hash.replace(/^#\/?/, '');
  return VIEWS.find(([n]) => n === name) ? name : 'overview';
}

function Login({ onIn, note }) {
  const [token, setToken] = useState('');
  const [msg, setMsg] = useState(note ? { kind: 'info', text: note } : null);
  const submit = async (ev) => {
    ev.preventDefault();
    try {
      const s = await login(token);
      setToken('');
      onIn(s.csrf);
    } catch (e) {
      setMsg({ kind: 'error', text: e.status === 401 ? 'That is not the admin token.' : e.message });
    }
  };
  return html`<main id="main" class="login">
    <h1>keypool console</h1>
    <form class="stack panel" onSubmit=${submit} aria-label="Log in">
      <${Message} msg=${msg} />
      <label class="field"><span class="label">Admin token</span>
        <input id="admin-token" type="password" autocomplete="current-password" required value=${token} onInput=${(e) => setToken(e.target.value)} /></label>
      <button type="submit">Log in</button>
      <p class="sub">The token is exchanged for a session cookie; it is not stored in this browser.</p>
    </form>
  </main>`;
}

function Shell({ onOut }) {
  const [view, setView] = useState(currentView());
  const heading = useRef(null);
  useEffect(() => {
    const on = () => setView(currentView());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  // Moving to another view moves focus to its content, as a page load would for a screen
  // reader; the first view leaves focus alone, so the first Tab still finds the skip link.
  const first = useRef(true);
  useEffect(() => {
    document.title = `${VIEWS.find(([n]) => n === view)[1]} · keypool`;
    if (first.current) first.current = false;
    else heading.current?.focus();
  }, [view]);
  const View = VIEWS.find(([n]) => n === view)[2];
  return html`
    <a class="skip" href="#main" onClick=${(e) => { e.preventDefault(); heading.current?.focus(); }}>Skip to content</a>
    <header class="top">
      <span class="brand">keypool</span>
      <nav aria-label="Views"><ul>
        ${VIEWS.map(([n, label]) => html`<li><a href=${'#/' + n} aria-current=${n === view ? 'page' : undefined}>${label}</a></li>`)}
      </ul></nav>
      <button type="button" class="logout" onClick=${onOut}>Log out</button>
    </header>
    <main id="main" tabindex="-1" ref=${heading}><${View} key=${view} /></main>`;
}

function App() {
  const [state, setState] = useState({ phase: 'checking' });
  useEffect(() => {
    setOnUnauthorized(() => setState({ phase: 'out', note: 'Your session ended; log in again.' }));
    currentSession().then((s) => { setCsrf(s.csrf); setState({ phase: 'in' }); })
      .catch(() => setState({ phase: 'out' }));
  }, []);
  const out = async () => {
    try { await logout(); } catch { /* the session is gone either way */ }
    setCsrf('');
    setState({ phase: 'out', note: 'Logged out.' });
  };
  if (state.phase === 'checking') return html`<main id="main"><p>Loading…</p></main>`;
  if (state.phase === 'out') return html`<${Login} note=${state.note} onIn=${(csrf) => { setCsrf(csrf); setState({ phase: 'in' }); }} />`;
  return html`<${Shell} onOut=${out} />`;
}

render(html`<${App} />`, document.getElementById('app'));
