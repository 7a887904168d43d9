// The bank account payouts go to (owners only). A change is the classic way to steal a store's
// money, so it needs a fresh authenticator code, every owner and the operators are told, and it
// takes effect only 72 hours later; until then payouts go to the account in effect before.

import { h, field } from '/app/js/dom.js';
import { t } from '/app/js/i18n.js';
import { call } from '/app/js/api.js';
import { at } from '../ui.js';

export function render(ctx) {
  ctx.main.append(h('h1', { tabindex: -1 }, t('merchant.bank.title')), h('p', { class: 'hint' }, t('merchant.bank.lead')));
  if (ctx.me.role !== 'owner') {
    ctx.main.append(h('p', { class: 'hint' }, t('merchant.bank.owneronly')));
    return;
  }
  const digits = (n) => h('input', { inputmode: 'numeric', required: true, pattern: `[0-9]{${n}}`, maxlength: n, autocomplete: 'off' });
  const bank = digits(4);
  const branch = digits(3);
  const type = h('select', {}, h('option', { value: 'ordinary' }, t('merchant.bank.ordinary')), h('option', { value: 'current' }, t('merchant.bank.current')));
  const number = digits(7);
  const holder = h('input', { required: true, maxlength: 48, autocomplete: 'off', lang: 'ja' });
  const code = h('input', { inputmode: 'numeric', autocomplete: 'one-time-code', required: true, pattern: '[0-9]{6}', maxlength: 6 });
  const submit = h('button', { type: 'submit' }, t('merchant.bank.save'));
  const form = h('form', { class: 'stack card narrow-form' },
    field(t('merchant.bank.bank'), bank), field(t('merchant.bank.branch'), branch), field(t('merchant.bank.type'), type),
    field(t('merchant.bank.number'), number), field(t('merchant.bank.holder'), holder),
    h('p', { class: 'hint' }, t('merchant.bank.holder.hint')), field(t('merchant.login.code'), code), submit);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    submit.disabled = true;
    try {
      const { data } = await call('PUT', '/v1/merchant/bank-account', {
        bank_code: bank.value.trim(), branch_code: branch.value.trim(), account_type: type.value,
        account_number: number.value.trim(), holder_kana: holder.value.trim(), totp_code: code.value.trim(),
      });
      ctx.say(t('merchant.bank.saved', { when: at(data.effective_at) }));
      form.reset();
    } catch (err) {
      code.value = '';
      ctx.fail(err);
    } finally {
      submit.disabled = false;
    }
  });
  ctx.main.append(form);
}
