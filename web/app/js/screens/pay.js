// Pay: a one-time code for the till, as digits, a Code 128 barcode and a QR code, with a
// countdown; a fresh code replaces it in its last 10 seconds.

import { h } from '../dom.js';
import { t } from '../i18n.js';
import { post } from '../api.js';
import { dataUrl, moduleFor } from '../code128.js';

const RENEW_BEFORE_MS = 10_000;

export async function render(ctx) {
  const digits = h('p', { class: 'code-digits', role: 'group', 'aria-label': t('pay.code') });
  const barcode = h('img', { alt: t('pay.barcode'), class: 'barcode' });
  const qr = h('img', { alt: t('pay.qr'), class: 'qr', width: 220, height: 220 });
  const left = h('p', { class: 'countdown' });
  ctx.main.append(h('h1', { tabindex: -1 }, t('pay.title')), h('p', {}, t('pay.lead')),
    h('section', { class: 'card code-card' }, barcode, digits, qr, left),
    h('p', { class: 'hint' }, t('pay.brightness')));
  let expiresAt = 0;
  let renewing = false;
  let first = true;
  const fresh = async () => {
    renewing = true;
    try {
      const { data, headers } = await post('/v1/payment-codes', {});
      // The server's clock decides: count down from its Date, not from this phone's clock.
      const serverNow = Date.parse(headers.get('date') ?? '') || Date.now();
      const ttl = Date.parse(data.expires_at) - serverNow;
      expiresAt = Date.now() + (Number.isFinite(ttl) && ttl > 0 ? ttl : 60_000);
      digits.textContent = data.code;
      const room = barcode.parentElement?.clientWidth || 300;
      barcode.src = dataUrl(data.code, { module: moduleFor(data.code, room - 32, window.devicePixelRatio || 1) });
      qr.src = `/v1/payment-codes/${encodeURIComponent(data.code)}/qr.svg`;
      if (!first) ctx.say(t('pay.renewed'));
      first = false;
    } catch (e) {
      ctx.warn(e.message);
    } finally {
      renewing = false;
      tick();
    }
  };
  const tick = () => {
    const remaining = expiresAt - Date.now();
    left.textContent = t('pay.left', { secs: Math.max(0, Math.ceil(remaining / 1000)) });
    if (remaining <= RENEW_BEFORE_MS && !renewing && expiresAt) fresh();
  };
  const timer = setInterval(tick, 1000);
  ctx.onLeave(() => clearInterval(timer));
  await fresh();
}
