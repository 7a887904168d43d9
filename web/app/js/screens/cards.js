// Cards: the linked cards (each with "Remove") and a form to add one, through the step-up and,
// when the issuer asks, its own code.

import { h, field } from '../dom.js';
import { t } from '../i18n.js';
import { get, post, call } from '../api.js';
import { stepUpDialog } from '../challenge.js';

export async function render(ctx) {
  const list = h('ul', { class: 'list' });
  ctx.main.append(h('h1', { tabindex: -1 }, t('cards.title')), list, addForm(ctx, () => refresh(ctx, list)));
  await refresh(ctx, list);
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
