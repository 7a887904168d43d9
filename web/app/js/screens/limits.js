// Limits: lowering takes effect at once; raising goes through the step-up (the server asks).

import { h, field } from '../dom.js';
import { t } from '../i18n.js';
import { get, call } from '../api.js';

const NAMES = ['per_payment', 'daily', 'monthly'];

export async function render(ctx) {
  const { data } = await get('/v1/wallet');
  const inputs = Object.fromEntries(NAMES.map((n) => [n, h('input', { type: 'number', inputmode: 'numeric', min: 1, step: 1, required: true, value: data.limits[n] })]));
  const submit = h('button', { type: 'submit' }, t('limits.save'));
  const form = h('form', { class: 'stack card' }, NAMES.map((n) => field(t(`limits.${n}`), inputs[n])), submit);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = Object.fromEntries(NAMES.map((n) => [n, Number(inputs[n].value)]));
    try {
      await call('PUT', '/v1/wallet/limits', body);
      ctx.say(t('limits.saved'));
    } catch (e) {
      ctx.warn(e.message);
    }
  });
  ctx.main.append(h('h1', { tabindex: -1 }, t('limits.title')), form);
}
