// The cashier's till at /pos: pairing with a terminal key (answered as an HttpOnly cookie that
// this script never sees), the language switch, and the till itself (`charge.js`). The key is
// typed into a field, sent once to `POST /v1/pos/pair` and the field is emptied: nothing keeps it.

import { h, field, clear } from '/app/js/dom.js';
import { t, lang, setLang } from '/app/js/i18n.js';
import './texts.js';
import { request, tillWords } from './charge.js';
import * as till from './charge.js';

const main = document.getElementById('main');
const statusEl = document.getElementById('status');
const alertEl = document.getElementById('alert');
const storeEl = document.getElementById('store');
let terminal = null;
let leave = () => {};

function say(text, { big = false } = {}) {
  alertEl.textContent = '';
  statusEl.textContent = text;
  statusEl.classList.toggle('big', big);
}

function warn(text, { big = false } = {}) {
  statusEl.textContent = '';
  alertEl.textContent = text;
  alertEl.classList.toggle('big', big);
}

function quiet() {
  statusEl.textContent = '';
  alertEl.textContent = '';
}

const ctx = {
  main, say, warn, quiet, unpaired,
  onLeave: (fn) => { const before = leave; leave = () => { before(); fn(); }; },
};

function renderChrome() {
  document.documentElement.lang = lang();
  const switcher = document.getElementById('lang');
  switcher.textContent = t('lang.switch');
  switcher.setAttribute('lang', lang() === 'ja' ? 'en' : 'ja');
  document.getElementById('brand').textContent = t('till.name');
  document.title = t('till.name');
  storeEl.textContent = terminal ? terminal.store_name : '';
}

function render() {
  leave();
  leave = () => {};
  clear(main);
  renderChrome();
  if (terminal) till.render(ctx, terminal);
  else renderPairing();
}

function renderPairing() {
  const key = h('input', {
    type: 'password', required: true, autocomplete: 'off', spellcheck: 'false', autocapitalize: 'off', maxlength: 100,
  });
  const button = h('button', { type: 'submit' }, t('till.pair.submit'));
  const form = h('form', { class: 'stack card pair' },
    h('h1', { tabindex: -1 }, t('till.pair.title')),
    h('p', { class: 'hint' }, t('till.pair.lead')),
    field(t('till.pair.key'), key), button);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    button.disabled = true;
    const typed = key.value.trim();
    key.value = '';
    try {
      const r = await request('POST', '/v1/pos/pair', { key: typed });
      if (r.ok) {
        terminal = r.data;
        render();
        say(t('till.pair.done', { store: terminal.store_name }));
        return;
      }
      warn(r.status === 401 ? t('till.pair.bad') : tillWords(r.status, r.data));
    } finally {
      button.disabled = false;
    }
  });
  main.append(form);
  key.focus();
}

/** The terminal's key stopped working (revoked) or the cashier unpaired: back to pairing. */
async function unpaired({ byCashier = false } = {}) {
  if (byCashier) await request('POST', '/v1/pos/unpair', {});
  terminal = null;
  render();
  if (byCashier) say(t('till.unpaired'));
  else warn(t('till.err.unauthenticated'));
}

async function start() {
  document.getElementById('lang').addEventListener('click', () => {
    setLang(lang() === 'ja' ? 'en' : 'ja');
    quiet();
    render();
  });
  const r = await request('GET', '/v1/pos/terminal');
  terminal = r.ok ? r.data : null;
  render();
  if (!r.ok && r.status !== 401) warn(tillWords(r.status, r.data));
}

start();
