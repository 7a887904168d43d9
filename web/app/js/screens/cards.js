// Cards: the linked cards (each with "Remove") and a form to add one, through the step-up and,
// when the issuer asks, its own code. With the Stripe processor the number is typed into Stripe's
// own card field (Stripe.js, in its frame): the wallet sends Omamori only the PaymentMethod id,
// and runs the issuer's 3-D Secure with Stripe.js when the answer asks for it.

import { h, field } from '../dom.js';
import { t } from '../i18n.js';
import { get, post, call } from '../api.js';
import { stepUpDialog } from '../challenge.js';
import { authenticate, processorConfig, stripeClient } from '../stripe.js';

export async function render(ctx) {
  const list = h('ul', { class: 'list' });
  const form = await cardForm(ctx, () => refresh(ctx, list));
  ctx.main.append(h('h1', { tabindex: -1 }, t('cards.title')), list, form);
  await refresh(ctx, list);
}

/** The form that fits the processor: the sandbox's own fields, or Stripe's. */
async function cardForm(ctx, added) {
  const config = await processorConfig();
  return config.processor === 'stripe' ? stripeForm(ctx, added) : addForm(ctx, added);
}

function stripeForm(ctx, added) {
  const mount = h('div', { class: 'stripe-card', role: 'group', 'aria-label': t('cards.number') });
  const submit = h('button', { type: 'submit', disabled: true }, t('cards.add'));
  const form = h('form', { class: 'stack card' }, mount, submit);
  let stripe;
  let card;
  stripeClient().then((client) => {
    stripe = client;
    card = stripe.elements().create('card');
    card.mount(mount);
    submit.disabled = false;
  }).catch((e) => ctx.warn(e.message));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      const made = await stripe.createPaymentMethod({ type: 'card', card });
      if (made.error) throw new Error(made.error.message);
      const { data } = await post('/v1/cards', { processor_token: made.paymentMethod.id });
      if (data.status === 'pending_challenge' && data.client_secret) {
        // The issuer's 3-D Secure, in Stripe's frame (the SetupIntent was confirmed by Omamori
        // with use_stripe_sdk); then Omamori asks Stripe how it went.
        await authenticate(data.client_secret);
        await post(`/v1/challenges/${encodeURIComponent(data.challenge_id)}/verify`, { method: 'three_d_secure' });
      }
      card.clear();
      const last4 = data.last4 ?? made.paymentMethod.card?.last4 ?? '';
      ctx.say(data.status === 'held' ? t('cards.status.held') : t('cards.added', { last4 }));
      await added();
    } catch (e) {
      ctx.warn(e.message);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

async function refresh(ctx, list) {
  const { data } = await get('/v1/cards');
  list.replaceChildren();
  if (!data.items.length) list.append(h('li', { class: 'empty' }, t('cards.none')));
  for (const c of data.items) {
    const remove = h('button', { type: 'button', class: 'secondary small', 'aria-label': t('cards.remove.label', { last4: c.last4 ?? '' }) }, t('cards.remove'));
    remove.addEventListener('click', async () => {
      try {
        await call('DELETE', `/v1/cards/${encodeURIComponent(c.card_id)}`);
        ctx.say(t('cards.removed'));
        await refresh(ctx, list);
      } catch (e) {
        ctx.warn(e.message);
      }
    });
    const status = t(`cards.status.${c.status}`);
    list.append(h('li', {}, h('span', {}, `${c.brand ?? ''} •••• ${c.last4 ?? ''}`), h('span', { class: 'muted' }, status), remove));
  }
}

function addForm(ctx, added) {
  const number = h('input', { inputmode: 'numeric', autocomplete: 'cc-number', required: true, maxlength: 23 });
  const month = h('input', { type: 'number', inputmode: 'numeric', autocomplete: 'cc-exp-month', min: 1, max: 12, required: true });
  const year = h('input', { type: 'number', inputmode: 'numeric', autocomplete: 'cc-exp-year', min: 2024, max: 2100, required: true });
  const cvc = h('input', { inputmode: 'numeric', autocomplete: 'cc-csc', required: true, maxlength: 4 });
  const submit = h('button', { type: 'submit' }, t('cards.add'));
  const form = h('form', { class: 'stack card' },
    field(t('cards.number'), number),
    h('div', { class: 'row' }, field(t('cards.month'), month), field(t('cards.year'), year)),
    field(t('cards.cvc'), cvc), submit);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    const body = { number: number.value.replace(/[\s-]/g, ''), exp_month: Number(month.value), exp_year: Number(year.value), cvc: cvc.value.trim() };
    try {
      const { data } = await post('/v1/cards', body);
      let last4 = data.last4 ?? body.number.slice(-4);
      if (data.status === 'pending_challenge' && data.challenge_id) {
        const ok = await stepUpDialog(data.challenge_id, ['sms'], { say: ctx.say, title: t('cards.issuer'), lead: '' });
        if (!ok) throw new Error(t('stepup.cancelled'));
        last4 = body.number.slice(-4);
      }
      form.reset();
      ctx.say(data.status === 'held' ? t('cards.status.held') : t('cards.added', { last4 }));
      await added();
    } catch (e) {
      ctx.warn(e.message);
    } finally {
      cvc.value = '';
      submit.disabled = false;
    }
  });
  return form;
}
