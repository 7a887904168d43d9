// The store owners' and staff's dashboard at /merchant: login (password and authenticator code
// on one form, or a passkey), the language switch and the sections. The session is an HttpOnly cookie for
// /v1/merchant that this script never sees. A staff member sees only the stores they are given;
// the API refuses the rest anyway.

import { h, field, clear } from '/app/js/dom.js';
import { t, lang, setLang } from '/app/js/i18n.js';
import { configure, get, post } from '/app/js/api.js';
import * as passkeys from '/app/js/passkey.js';
import './texts.js';
import { setToday, words } from './ui.js';
import * as sales from './screens/sales.js';
import * as items from './screens/items.js';
import * as customers from './screens/customers.js';
import * as payments from './screens/payments.js';
import * as settlements from './screens/settlements.js';
import * as staff from './screens/staff.js';
import * as bank from './screens/bank.js';

const SCREENS = { sales, items, customers, payments, settlements, staff, bank };
/** Sections only an owner has: a staff member does not see the links (the API refuses anyway). */
const OWNER_ONLY = new Set(['settlements', 'staff', 'bank']);

const main = document.getElementById('main');
const statusEl = document.getElementById('status');
const alertEl = document.getElementById('alert');
const navEl = document.getElementById('nav');
const whoEl = document.getElementById('who');

let me = null;
let screen = null;

function show(el, other, text) {
  other.textContent = '';
  el.textContent = text;
  if (text) el.scrollIntoView({ block: 'nearest' });
}

const ctx = {
  main,
  say: (text) => show(statusEl, alertEl, text),
  warn: (text) => show(alertEl, statusEl, text),
  quiet: () => { statusEl.textContent = ''; alertEl.textContent = ''; },
  fail: (e) => show(alertEl, statusEl, words(e)),
  get me() { return me; },
};

const allowed = (name) => !!SCREENS[name] && (!OWNER_ONLY.has(name) || me?.role === 'owner');

function renderChrome() {
  document.documentElement.lang = lang();
  const switcher = document.getElementById('lang');
  switcher.textContent = t('lang.switch');
  switcher.setAttribute('lang', lang() === 'ja' ? 'en' : 'ja');
  document.getElementById('brand').textContent = t('merchant.name');
  document.title = t('merchant.name');
  navEl.setAttribute('aria-label', t('merchant.nav'));
  clear(navEl);
  clear(whoEl);
  if (!me) return;
  navEl.append(h('ul', {}, Object.keys(SCREENS).filter(allowed).map((name) => h('li', {},
    h('a', { href: `#/${name}`, 'aria-current': name === screen ? 'page' : null }, t(`merchant.nav.${name}`))))));
  const out = h('button', { type: 'button', class: 'small secondary' }, t('merchant.logout'));
  out.addEventListener('click', logout);
  whoEl.append(h('span', {}, t('merchant.signedin', { name: me.name, role: t(`merchant.role.${me.role}`) })), out);
}

function route() {
  const wanted = (location.hash.match(/^#\/(\w+)/) ?? [])[1];
  screen = me ? (allowed(wanted) ? wanted : 'sales') : null;
  clear(main);
  renderChrome();
  if (!me) { renderLogin(); return; }
  SCREENS[screen].render(ctx);
}

function renderLogin() {
  const email = h('input', { type: 'email', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', autocomplete: 'current-password', required: true });
  const code = h('input', { inputmode: 'numeric', autocomplete: 'one-time-code', required: true, pattern: '[0-9]{6}', maxlength: 6 });
  const button = h('button', { type: 'submit' }, t('merchant.login.submit'));
  const form = h('form', { class: 'stack card login' },
    h('h1', { tabindex: -1 }, t('merchant.login.title')),
    h('p', { class: 'hint' }, t('merchant.login.lead')),
    field(t('merchant.login.email'), email), field(t('merchant.login.password'), password),
    field(t('merchant.login.code'), code), button);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    button.disabled = true;
    try {
      await post('/v1/merchant/login', { email: email.value.trim(), password: password.value, totp_code: code.value.trim() }, { auth: false });
      password.value = '';
      await signedIn();
    } catch (e) {
      code.value = '';
      ctx.fail(e);
    } finally {
      button.disabled = false;
    }
  });
  const passkey = h('button', { type: 'button', class: 'secondary' }, t('merchant.login.passkey'));
  passkey.hidden = !passkeys.supported();
  passkey.addEventListener('click', async () => {
    passkey.disabled = true;
    try {
      const { data } = await post('/v1/merchant/login/passkey', {}, { auth: false });
      const credential = await passkeys.get(data.options);
      await post(`/v1/challenges/${encodeURIComponent(data.challenge_id)}/verify`, { method: 'passkey', credential }, { auth: false });
      await signedIn();
    } catch (e) {
      ctx.warn(e?.status !== undefined ? words(e) : passkeys.failure(e, t));
    } finally {
      passkey.disabled = false;
    }
  });
  main.append(h('div', { class: 'login-wrap' }, form, passkey));
  email.focus();
}

async function signedIn() {
  await loadMe();
  if (!me) return;
  route();
  ctx.say(t('merchant.login.done', { name: me.name }));
}

async function loadMe() {
  try {
    me = (await get('/v1/merchant/me', { auth: false })).data;
  } catch {
    me = null;
  }
  setToday(me?.today);
}

async function logout() {
  try { await post('/v1/merchant/logout', {}); } catch { /* the session may have ended already */ }
  me = null;
  route();
  ctx.say(t('merchant.loggedout'));
}

async function start() {
  document.getElementById('lang').addEventListener('click', () => {
    setLang(lang() === 'ja' ? 'en' : 'ja');
    ctx.quiet();
    route();
  });
  window.addEventListener('hashchange', () => { ctx.quiet(); route(); });
  configure({ stepUp: async () => false, signedOut: () => { if (me) { me = null; route(); ctx.warn(t('merchant.err.unauthenticated')); } } });
  await loadMe();
  route();
}

start();
