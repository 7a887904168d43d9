// The wallet's service worker: it keeps the shell (the page, its scripts, styles and icons) for
// offline use, and nothing else. API answers, the payment-code drawings and anything personal
// always go to the network and are never stored.

const VERSION = 'omamori-shell-5';
const SHELL = [
  '/app', '/app/style.css', '/app/manifest.webmanifest', '/app/icon.svg', '/app/icon-192.png', '/app/icon-512.png',
  '/app/js/boot.js', '/app/js/main.js', '/app/js/api.js', '/app/js/dom.js', '/app/js/i18n.js', '/app/js/code128.js', '/app/js/emvqr.js', '/app/js/camera.js',
  '/app/js/challenge.js', '/app/js/passkey.js', '/app/js/stripe.js', '/app/js/screens/welcome.js', '/app/js/screens/reset.js', '/app/js/screens/home.js', '/app/js/screens/pay.js',
  '/app/js/screens/scan.js', '/app/js/screens/topup.js', '/app/js/screens/cards.js', '/app/js/screens/history.js',
  '/app/js/screens/limits.js', '/app/js/screens/notices.js', '/app/js/screens/security.js',
];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(VERSION).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k !== VERSION).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  const path = url.pathname === '/app/' || url.pathname === '/app/index.html' ? '/app' : url.pathname;
  if (event.request.method !== 'GET' || url.origin !== self.location.origin || !SHELL.includes(path)) return;
  // The network first, so that a new version shows at once; the kept shell when offline.
  event.respondWith(fetch(event.request).catch(() => caches.match(path)));
});
