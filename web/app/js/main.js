// The wallet's shell: the language switch, the messages (role status and alert), the offline
// notice, the step-up dialog, and a router from `#/screen` to one module per screen.

import { h, clear } from './dom.js';
import { t, lang, setLang } from './i18n.js';
import { configure, getEarly } from './api.js';
import { stepUpDialog } from './challenge.js';
import * as welcome from './screens/welcome.js';
import * as reset from './screens/reset.js';

// The screens behind the login are fetched when first shown, so that the login form, the first
// thing most visits need, waits only for the few modules it uses (index.html preloads those).
const screens = {
  home: () => import('./screens/home.js'),
  pay: () => import('./screens/pay.js'),
  scan: () => import('./screens/scan.js'),
  topup: () => import('./screens/topup.js'),
  cards: () => import('./screens/cards.js'),
  history: () => import('./screens/history.js'),
  limits: () => import('./screens/limits.js'),
  notices: () => import('./screens/notices.js'),
  security: () => import('./screens/security.js'),
};
const publicScreens = { login: welcome, signup: welcome, reset };

const main = document.getElementById('main');
const statusEl = document.getElementById('status');
const alertEl = document.getElementById('alert');
const offlineEl = document.getElementById('offline');
let leave = () => {};
let signedIn = false;
// Counts renders: one overtaken while its screen's module was loading draws nothing.
let renders = 0;
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
  if (!(signedIn ? Object.hasOwn(screens, name) : Object.hasOwn(publicScreens, name))) {
    go(signedIn ? 'home' : 'login');
    return;
  }
  const mine = ++renders;
  let screen;
  try {
    screen = signedIn ? await screens[name]() : publicScreens[name];
  } catch {
    warn(navigator.onLine ? t('err.network') : t('offline'));
    return;
  }
  if (mine !== renders) return;
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
    await getEarly('/v1/me', { auth: false });
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
