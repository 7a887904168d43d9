// Scan: a store's QR (pasted, typed, or read by the camera where the browser has
// `BarcodeDetector`), then the store's name, the amount and a confirmation.

import { h, field } from '../dom.js';
import { t, yen } from '../i18n.js';
import { post } from '../api.js';
import { readStoreQr } from '../emvqr.js';
import { cameraReader } from '../camera.js';

export async function render(ctx) {
  const qr = h('textarea', { rows: 3, required: true, maxlength: 512, spellcheck: 'false', autocapitalize: 'off' });
  const store = h('section', { class: 'card store', hidden: true, 'aria-live': 'polite' });
  const amount = h('input', { type: 'number', inputmode: 'numeric', min: 1, step: 1, required: true });
  const payButton = h('button', { type: 'submit' }, t('scan.pay'));
  const confirm = h('form', { class: 'stack', hidden: true }, field(t('scan.amount'), amount), payButton);
  const camera = cameraControls(ctx, (text) => { qr.value = text; show(); });
  ctx.main.append(h('h1', { tabindex: -1 }, t('scan.title')), camera,
    h('div', { class: 'stack' }, field(t('scan.qr'), qr), h('p', { class: 'hint' }, t('scan.qr.hint'))), store, confirm);

  function show() {
    const read = readStoreQr(qr.value);
    store.replaceChildren();
    store.hidden = !read;
    confirm.hidden = !read;
    if (!read) {
      if (qr.value.trim()) ctx.warn(t('scan.bad'));
      return;
    }
    ctx.say('');
    store.append(h('h2', { class: 'store-name' }, read.name),
      h('p', {}, [read.city, read.category && t('scan.category', { mcc: read.category })].filter(Boolean).join(' · ')));
  }
  qr.addEventListener('input', show);
  confirm.addEventListener('submit', async (event) => {
    event.preventDefault();
    payButton.disabled = true;
    try {
      const { data } = await post('/v1/payments', { store_qr: qr.value.trim(), amount: Number(amount.value) }, { idempotent: true });
      const merchant = data.merchant?.store_name || data.merchant?.name || readStoreQr(qr.value)?.name || '';
      ctx.say(t('scan.paid', { amount: yen(data.amount ?? Number(amount.value)), merchant }));
      confirm.hidden = true;
    } catch (e) {
      ctx.warn(e.message);
    } finally {
      payButton.disabled = false;
    }
  });
}

function cameraControls(ctx, found) {
  const texts = { start: 'scan.camera', stop: 'scan.camera.stop', none: 'scan.camera.none' };
  const reader = cameraReader(ctx, { formats: ['qr_code'], pick: (values) => values[0], texts }, found);
  return reader ?? h('p', { class: 'hint' }, t('scan.camera.none'));
}
