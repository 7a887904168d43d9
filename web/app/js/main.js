// The wallet's shell: the language switch, the messages (role status and alert), the offline
// notice, the step-up dialog, and a router from `#/screen` to one module per screen.

import { h, clear } from './dom.js';
import { t, lang, setLang } from './i18n.js';
import { configure, get } from './api.js';
import { stepUpDialog } from './challenge.js';
import * as welcome from './screens/welcome.js';
import * as home from './screens/home.js';
import * as pay from './screens/pay.js';
import * as scan from './screens/scan.js';
import * as topup from './screens/topup.js';
import * as cards from './screens/cards.js';
import * as history from './screens/history.js';
import * as limits from './screens/limits.js';
import * as notices from './screens/notices.js';
import * as security from './screens/security.js';

const screens = { home, pay, scan, topup, cards, history, limits, notices, security };
const publicScreens = { login: welcome, signup: welcome };

const main = document.getElementById('main');
const statusEl = document.getElementById('status');
const alertEl = document.getElementById('alert');
const offlineEl = document.getElementById('offline');
let leave = () => {};
let signedIn = false;
// Set by `go`: the screen we leave has just said something that the next one must keep showing.
let keepNext = false;

function say(text) {
  alertEl.textContent = '';
  statusEl.textContent = text;
}

function warn(text) {
  statusEl.textContent = '';
  alertEl.textContent = text;
}

function go(screen) {
  keepNext = true;
  if (location.hash === `#/${screen}`) render();
  else location.hash = `#/${screen}`;
}

const ctx = { main, say, warn, go, onLeave: (fn) => { leave = fn; }, signedIn: (yes) => { signedIn = yes; } };

async function render({ keepMessages = false } = {}) {
  leave();
  leave = () => {};
  // A message given by the screen that sent us here stays; an old one goes.
  const keep = keepMessages && keepNext;
  keepNext = false;
  if (!keep) {
    statusEl.textContent = '';
    alertEl.textContent = '';
  }
  const name = location.hash.replace(/^#\/?/, '') || (signedIn ? 'home' : 'login');
  const screen = signedIn ? screens[name] : publicScreens[name];
  if (!screen) {
    go(signedIn ? 'home' : 'login');
    return;
  }
  clear(main);
  document.title = name === 'home' ? t('app.name') : `${t(`${name}.title`)} · ${t('app.name')}`;
  if (signedIn && name !== 'home') {
    main.append(h('p', { class: 'back' }, h('a', { href: '#/home' }, `← ${t('nav.home')}`)));
  }
  try {
    await screen.render(ctx, name);
  } catch (e) {
    warn(e.message);
  }
  main.querySelector('h1')?.focus();
}

function renderChrome() {
  document.documentElement.lang = lang();
  const switcher = document.getElementById('lang');
  switcher.textContent = t('lang.switch');
  switcher.setAttribute('lang', lang() === 'ja' ? 'en' : 'ja');
  document.getElementById('brand').textContent = t('app.name');
  offlineEl.textContent = t('offline');
}

function showOffline() {
  offlineEl.hidden = navigator.onLine;
}

async function start() {
  renderChrome();
  configure({
    stepUp: (id, methods) => stepUpDialog(id, methods, { say, warn }),
    signedOut: () => {
      if (!signedIn) return;
      signedIn = false;
      warn(t('err.unauthenticated'));
      go('login');
    },
  });
  document.getElementById('lang').addEventListener('click', () => {
    setLang(lang() === 'ja' ? 'en' : 'ja');
    renderChrome();
    render({ keepMessages: false });
  });
  window.addEventListener('hashchange', () => render({ keepMessages: true }));
  window.addEventListener('online', showOffline);
  window.addEventListener('offline', showOffline);
  showOffline();
  try {
    await get('/v1/me', { auth: false });
    signedIn = true;
  } catch (e) {
    signedIn = false;
    if (e.status !== 401) warn(e.message);
  }
  keepNext = true;
  await render({ keepMessages: true });
  if ('serviceWorker' in navigator) {
    navigator.serviceWorker.register('/app/sw.js', { scope: '/app' }).catch(() => {});
  }
}

start();
