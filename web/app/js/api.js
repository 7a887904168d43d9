// The one module that talks to the JSON API. The browser keeps the session in an HttpOnly
// cookie (asked for with `Omamori-Session: cookie`), so no token ever passes through this code.
// It adds the `Idempotency-Key` to money routes, turns a problem's `code` into words, and runs the
// step-up dialog once for every screen when the server asks for it.

import { t, has } from './i18n.js';

/** A refusal or failure, with words for the shopper. */
export class Problem extends Error {
  constructor(status, body) {
    super(words(status, body));
    this.status = status;
    this.code = body?.code ?? 'error';
    this.body = body ?? {};
  }
}

let stepUpHandler = async () => false;
let signedOutHandler = () => {};

/** Who confirms a step-up (the dialog), and what happens when the session has ended. */
export function configure({ stepUp, signedOut }) {
  stepUpHandler = stepUp;
  signedOutHandler = signedOut;
}

/** This browser's device id: not a secret, made once. */
export function deviceId() {
  let id = localStorage.getItem('omamori.device_id');
  if (!id) {
    id = 'web-' + crypto.randomUUID();
    localStorage.setItem('omamori.device_id', id);
  }
  return id;
}

async function send(method, path, body, idempotent) {
  const headers = { Accept: 'application/json', 'Omamori-Session': 'cookie' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  // `idempotent`: true for a fresh key, or the key itself when a request is repeated on purpose.
  if (idempotent) headers['Idempotency-Key'] = typeof idempotent === 'string' ? idempotent : crypto.randomUUID();
  let response;
  try {
    response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin', cache: 'no-store',
    });
  } catch {
    throw new Problem(0, { code: navigator.onLine ? 'network' : 'offline' });
  }
  return parsed(response, await response.text());
}

function parsed(response, text) {
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  return { response, data };
}

/**
 * A GET that boot.js began before the modules loaded (its answer taken once), or else a fresh
 * one; answers as `get` does.
 */
export async function getEarly(path, opts) {
  const early = window.omamoriEarly?.[path];
  if (early) delete window.omamoriEarly[path];
  const answer = early ? await early : null;
  if (!answer) return get(path, opts);
  return finish(parsed(answer.response, answer.text), opts);
}

/**
 * Calls the API; answers `{status, data, headers}` or throws a `Problem`. `auth: false` is for
 * the routes before a session exists (a 401 there is an answer, not a signed-out session).
 */
export async function call(method, path, body, { idempotent = false, auth = true } = {}) {
  let { response, data } = await send(method, path, body, idempotent);
  if (response.status === 403 && data?.code === 'step_up_required' && data.challenge_id) {
    if (!(await stepUpHandler(data.challenge_id, data.methods ?? ['sms']))) {
      throw new Problem(0, { code: 'stepup_cancelled' });
    }
    ({ response, data } = await send(method, path, body, idempotent));
  }
  return finish({ response, data }, { auth });
}

function finish({ response, data }, { auth = true } = {}) {
  if (response.status === 401 && auth) {
    signedOutHandler();
  }
  if (!response.ok) throw new Problem(response.status, data);
  return { status: response.status, data, headers: response.headers };
}

export const get = (path, opts) => call('GET', path, undefined, opts);
export const post = (path, body = {}, opts) => call('POST', path, body, opts);

function plural(secs) {
  const n = Math.max(1, Math.ceil(Number(secs) || 1));
  return n >= 60 ? `${Math.ceil(n / 60)} min` : `${n} s`;
}

/** A problem in words, never as its raw code. */
export function words(status, body) {
  const code = body?.code;
  if (code === 'offline') return t('offline');
  if (code === 'network') return t('err.network');
  if (code === 'stepup_cancelled') return t('stepup.cancelled');
  if (code === 'code_invalid') {
    return body.attempts_left === undefined ? t('err.code_invalid.none') : t('err.code_invalid', { left: body.attempts_left });
  }
  if (code === 'too_many_attempts') return t('err.too_many_attempts', { retry: plural(body.retry_after) });
  if (code === 'weak_password' && body.reason && has(`err.weak_password.${body.reason}`)) {
    return t(`err.weak_password.${body.reason}`);
  }
  if (code && has(`err.${code}`)) return t(`err.${code}`);
  if (status === 503) return t('err.unavailable');
  return t('err.generic');
}
