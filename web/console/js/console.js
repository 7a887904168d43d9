// The operators' console at /console: login (password and authenticator code on one form, or a
// passkey), the language switch, the sections, and the alert watch that runs on every screen.
// The session is an HttpOnly cookie for /v1/admin that this script never sees. The page shows
// only what the operator's role may do; the API refuses the rest anyway.

import { h, field, clear } from '/app/js/dom.js';
import { t, lang, setLang } from '/app/js/i18n.js';
import { configure, get, post } from '/app/js/api.js';
import * as passkeys from '/app/js/passkey.js';
import './texts.js';
import { words, knowOperators } from './ui.js';
import * as alerts from './screens/alerts.js';
import * as switches from './screens/switches.js';
import * as reviews from './screens/reviews.js';
import * as users from './screens/users.js';
import * as audit from './screens/audit.js';
import * as notifications from './screens/notifications.js';
import * as rules from './screens/rules.js';
import * as account from './screens/account.js';

const SCREENS = { alerts, switches, reviews, users, audit, notifications, rules, account };
const ROLES = ['viewer', 'operator', 'admin'];
/** How often alerts are fetched: an alert is on screen at most this long after it was raised. */
const ALERT_POLL_MS = 3000;
/**
 * The alert watch keeps the session in use, so the server's idle timeout alone would never end
 * it: the page logs out after this long without a key or a click (the server's default idle time).
 */
const IDLE_LOGOUT_MS = 15 * 60 * 1000;
let lastActivity = Date.now();

const main = document.getElementById('main');
const statusEl = document.getElementById('status');
const alertEl = document.getElementById('alert');
const newsEl = document.getElementById('news');
const navEl = document.getElementById('nav');
const whoEl = document.getElementById('who');

let me = null;
let screen = null;
let leave = () => {};
let poll = null;
let alertState = { items: [], seen: null, fresh: new Set() };
const pending = {};

function show(el, other, text) {
  other.textContent = '';
  el.textContent = text;
  if (text) el.scrollIntoView({ block: 'nearest' });
}
function say(text) { show(statusEl, alertEl, text); }
function warn(text) { show(alertEl, statusEl, text); }
function quiet() { statusEl.textContent = ''; alertEl.textContent = ''; }

const ctx = {
  main, say, warn, quiet,
  fail: (e) => warn(words(e)),
  get me() { return me; },
  /** Whether the signed-in operator's role is at least `role`. */
  can: (role) => !!me && ROLES.indexOf(me.role) >= ROLES.indexOf(role),
  actor: () => (me ? `operator:${me.operator_id}` : ''),
  /** Opens a section, handing it `params` (the alert path fills the switch form this way). */
  go(name, params) { pending[name] = params; if (location.hash === `#/${name}`) route(); else location.hash = `#/${name}`; },
  take: (name) => { const p = pending[name]; delete pending[name]; return p; },
  onLeave: (fn) => { const before = leave; leave = () => { before(); fn(); }; },
  alerts: () => alertState,
  /** The operator has seen the new alerts: the banner goes. */
  seenNews: () => { newsEl.textContent = ''; },
  rerender: () => route(),
};

function renderChrome() {
  document.documentElement.lang = lang();
  const switcher = document.getElementById('lang');
  switcher.textContent = t('lang.switch');
  switcher.setAttribute('lang', lang() === 'ja' ? 'en' : 'ja');
  document.getElementById('brand').textContent = t('console.name');
  document.title = t('console.name');
  clear(navEl);
  clear(whoEl);
  if (!me) return;
  const links = ['alerts', 'switches', 'reviews', 'users', 'audit', 'notifications', 'rules', 'account']
    .filter((name) => name !== 'users' || ctx.can('operator'));
  navEl.append(h('ul', {}, links.map((name) => h('li', {},
    h('a', { href: `#/${name}`, 'aria-current': name === screen ? 'page' : null }, t(`console.nav.${name}`)),
    name === 'alerts' && alertState.fresh.size ? h('span', { class: 'badge' }, t('console.new', { n: alertState.fresh.size })) : null))));
  const out = h('button', { type: 'button', class: 'small secondary' }, t('console.logout'));
  out.addEventListener('click', logout);
  whoEl.append(h('span', {}, t('console.signedin', { email: me.email, role: t(`console.role.${me.role}`) })), out);
}

function route() {
  leave();
  leave = () => {};
  const wanted = (location.hash.match(/^#\/(\w+)/) ?? [])[1];
  screen = me ? (SCREENS[wanted] && (wanted !== 'users' || ctx.can('operator')) ? wanted : 'alerts') : null;
  clear(main);
  renderChrome();
  if (!me) { renderLogin(); return; }
  SCREENS[screen].render(ctx);
}

function renderLogin() {
  const email = h('input', { type: 'email', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', autocomplete: 'current-password', required: true });
  const code = h('input', { inputmode: 'numeric', autocomplete: 'one-time-code', required: true, pattern: '[0-9]{6}', maxlength: 6 });
  const button = h('button', { type: 'submit' }, t('console.login.submit'));
  const form = h('form', { class: 'stack card login' },
    h('h1', { tabindex: -1 }, t('console.login.title')),
    h('p', { class: 'hint' }, t('console.login.lead')),
    field(t('console.login.email'), email), field(t('console.login.password'), password),
    field(t('console.login.code'), code), button);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    button.disabled = true;
    try {
      const { data } = await post('/v1/admin/login', { email: email.value.trim(), password: password.value }, { auth: false });
      await post(`/v1/challenges/${encodeURIComponent(data.challenge_id)}/verify`,
        { method: 'totp', code: code.value.trim() }, { auth: false });
      password.value = '';
      await signedIn();
    } catch (e) {
      code.value = '';
      ctx.fail(e);
    } finally {
      button.disabled = false;
    }
  });
  const passkey = h('button', { type: 'button', class: 'secondary' }, t('console.login.passkey'));
  passkey.hidden = !passkeys.supported();
  passkey.addEventListener('click', async () => {
    try {
      const { data } = await post('/v1/admin/login/passkey', {}, { auth: false });
      const credential = await passkeys.get(data.options);
      await post(`/v1/challenges/${encodeURIComponent(data.challenge_id)}/verify`, { method: 'passkey', credential }, { auth: false });
      await signedIn();
    } catch (e) {
      warn(e?.status !== undefined ? words(e) : passkeys.failure(e, t));
    }
  });
  main.append(h('div', { class: 'login-wrap' }, form, passkey));
  email.focus();
}

async function signedIn() {
  await loadMe();
  if (!me) return;
  route();
  say(t('console.login.done', { email: me.email, role: t(`console.role.${me.role}`) }));
}

async function loadMe() {
  try {
    me = (await get('/v1/admin/me', { auth: false })).data;
  } catch {
    me = null;
  }
  if (!me) return;
  get('/v1/admin/operators').then(({ data }) => knowOperators(data.items)).catch(() => {});
  alertState = { items: [], seen: null, fresh: new Set() };
  startPolling();
}

async function logout() {
  try { await post('/v1/admin/logout', {}); } catch { /* the session may have ended already */ }
  signedOut();
  say(t('console.loggedout'));
}

function signedOut() {
  stopPolling();
  me = null;
  route();
}

/** Fetches alerts; the first answer is what was there before the page opened, later ones are news. */
async function checkAlerts() {
  let items;
  try {
    items = (await get('/v1/admin/alerts')).data.items;
  } catch {
    return;
  }
  const firstLoad = alertState.seen === null;
  const seen = alertState.seen ?? new Set();
  const arrived = items.filter((a) => !seen.has(a.id));
  arrived.forEach((a) => seen.add(a.id));
  alertState.seen = seen;
  alertState.items = items;
  if (!firstLoad && arrived.length) {
    arrived.forEach((a) => alertState.fresh.add(a.id));
    const a = arrived[0];
    newsEl.textContent = t('console.news', { detector: t(`console.detector.${a.kind}`), detail: a.detail });
  }
  if (firstLoad || arrived.length) {
    renderChrome();
    if (screen === 'alerts') alerts.refresh(ctx);
  }
}

function startPolling() {
  stopPolling();
  lastActivity = Date.now();
  checkAlerts();
  poll = setInterval(() => {
    if (Date.now() - lastActivity > IDLE_LOGOUT_MS) {
      logout().then(() => say(t('console.idle', { min: IDLE_LOGOUT_MS / 60000 })));
      return;
    }
    checkAlerts();
  }, ALERT_POLL_MS);
}

function stopPolling() {
  if (poll) clearInterval(poll);
  poll = null;
}

async function start() {
  document.getElementById('lang').addEventListener('click', () => {
    setLang(lang() === 'ja' ? 'en' : 'ja');
    quiet();
    route();
  });
  window.addEventListener('hashchange', () => { quiet(); route(); });
  for (const kind of ['keydown', 'pointerdown']) {
    window.addEventListener(kind, () => { lastActivity = Date.now(); }, { capture: true, passive: true });
  }
  configure({ stepUp: async () => false, signedOut: () => { if (me) { signedOut(); warn(t('console.err.unauthenticated')); } } });
  await loadMe();
  route();
}

start();
