// The console's only door to keypool: the same /admin/* API curl and the CLI use, with the
// session cookie (sent by the browser, unreadable here) and the session's CSRF token.
let csrf = '';
let onUnauthorized = () => {};

export function setCsrf(token) { csrf = token || ''; }
export function setOnUnauthorized(fn) { onUnauthorized = fn; }

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrf;
  const res = await fetch(path, {
    method, headers, credentials: 'same-origin', cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) {
    const err = new ApiError(res.status, data?.error?.code || 'http_' + res.status,
      data?.error?.message || `${method} ${path}: HTTP ${res.status}`);
    if (res.status === 401 && !path.startsWith('/ui/')) onUnauthorized(err);
    throw err;
  }
  return data;
}

// 404/405 from an endpoint this keypool does not have yet (a newer console on an older
// server): the caller hides the feature instead of failing.
export function isMissingEndpoint(err) {
  return err instanceof ApiError && (err.status === 405 || (err.status === 404 && /no such admin endpoint|no route/i.test(err.message)));
}

export const login = (token) => api('POST', '/ui/login', { token });
export const logout = () => api('POST', '/ui/logout');
export const currentSession = () => api('GET', '/ui/session');

export function fmtTime(iso) {
  if (!iso) return '—';
  const d = typeof iso === 'number' ? new Date(iso) : new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

export function fmtNum(n) {
  if (n === undefined || n === null) return '—';
  return typeof n === 'number' ? n.toLocaleString('en-US', { maximumFractionDigits: 4 }) : String(n);
}
