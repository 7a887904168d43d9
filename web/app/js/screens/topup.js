// Top up from a linked card. The server may ask for a step-up first: `api` shows the dialog and
// repeats the request. With Stripe, the card issuer may ask the shopper to authenticate the
// payment (3-D Secure, `authentication_required`): Stripe.js runs it, and the request is repeated
// under the same Idempotency-Key, so the one pending top-up completes and nothing is charged twice.

import { h, field } from '../dom.js';
import { t, yen } from '../i18n.js';
import { get, post } from '../api.js';
import { authenticate } from '../stripe.js';

export async function render(ctx) {
  ctx.main.append(h('h1', { tabindex: -1 }, t('topup.title')));
  const { data } = await get('/v1/cards');
  const active = data.items.filter((c) => c.status === 'active');
  if (!active.length) {
    ctx.main.append(h('p', {}, t('topup.nocards'), ' ', h('a', { href: '#/cards' }, t('home.cards'))));
    return;
  }
  const card = h('select', { required: true }, active.map((c) => h('option', { value: c.card_id }, `${c.brand} •••• ${c.last4}`)));
  const amount = h('input', { type: 'number', inputmode: 'numeric', min: 1, step: 1, required: true, value: 5000 });
  const submit = h('button', { type: 'submit' }, t('topup.submit'));
  const form = h('form', { class: 'stack card' }, field(t('topup.card'), card), field(t('topup.amount'), amount), submit);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      const body = { card_id: card.value, amount: Number(amount.value) };
      const key = crypto.randomUUID();
      let answer;
      try {
        answer = await post('/v1/topups', body, { idempotent: key });
      } catch (e) {
        if (e.code !== 'authentication_required' || !e.body.client_secret) throw e;
        await authenticate(e.body.client_secret);
        answer = await post('/v1/topups', body, { idempotent: key });
      }
      const { status, data: topped } = answer;
      if (status === 201) ctx.say(t('topup.done', { amount: yen(topped.amount), balance: yen(topped.balance) }));
      else ctx.say(t('topup.held'));
    } catch (e) {
      ctx.warn(e.message);
    } finally {
      submit.disabled = false;
    }
  });
  ctx.main.append(form);
}
