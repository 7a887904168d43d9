// Password reset: the phone or e-mail first (the server then sends an SMS code and an e-mail code
// to the contacts verified on the account, if there is one), then two of the three proofs (those
// two codes, or the authenticator app's) and the new password. Every outcome is said in words: the
// change and what follows it, a wrong code with the tries left, a reset that is over.

import { h, field } from '../dom.js';
import { t } from '../i18n.js';
import { post } from '../api.js';
import { remember } from './welcome.js';

export async function render(ctx) {
  const panel = h('div', { class: 'stack' });
  ctx.main.append(h('h1', { tabindex: -1 }, t('reset.title')), panel,
    h('p', { class: 'aside' }, h('a', { href: '#/login' }, t('reset.back'))));
  ask(ctx, panel, '');
}

/** The first step: which account. The answer is the same whether or not it exists. */
function ask(ctx, panel, login) {
  const who = h('input', { autocomplete: 'username', required: true, maxlength: 254, value: login });
  const form = h('form', { class: 'stack card' },
    h('p', {}, t('reset.lead')),
    field(t('login.login'), who),
    h('button', { type: 'submit' }, t('reset.send')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const typed = who.value.trim();
    try {
      const { data } = await post('/v1/password-reset', { login: typed }, { auth: false });
      ctx.say(t('reset.sent'));
      proofs(ctx, panel, data.reset_id, typed);
    } catch (e) {
      ctx.warn(e.message);
    }
  });
  panel.replaceChildren(form);
  who.focus();
}

/** The proofs (any two of three) and the new password. */
function proofs(ctx, panel, id, login) {
  const sms = h('input', { inputmode: 'numeric', autocomplete: 'one-time-code', maxlength: 12 });
  const mail = h('input', { inputmode: 'numeric', maxlength: 12 });
  const app = h('input', { inputmode: 'numeric', maxlength: 12 });
  const password = h('input', { type: 'password', autocomplete: 'new-password', required: true, maxlength: 256 });
  const again = h('button', { type: 'button', class: 'secondary', onclick: () => ask(ctx, panel, login) }, t('reset.again'));
  const form = h('form', { class: 'stack card' },
    h('p', {}, t('reset.two')),
    field(t('signup.sms'), sms), field(t('signup.emailcode'), mail), field(t('reset.totp'), app),
    field(t('security.password.new'), password), h('p', { class: 'hint' }, t('signup.password.hint')),
    h('button', { type: 'submit' }, t('reset.submit')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = { new_password: password.value };
    const given = { sms_code: sms.value.trim(), email_code: mail.value.trim(), totp_code: app.value.trim() };
    for (const [name, value] of Object.entries(given)) if (value) body[name] = value;
    // Fewer than two proofs would only spend one of the five tries.
    if (Object.keys(body).length < 3) return ctx.warn(t('reset.need_two'));
    try {
      await post(`/v1/password-reset/${encodeURIComponent(id)}/complete`, body, { auth: false });
      password.value = '';
      remember(login);
      ctx.say(t('reset.done'));
      ctx.go('login');
    } catch (e) {
      refused(ctx, panel, login, e);
    }
  });
  panel.replaceChildren(form, h('p', { class: 'hint' }, t('reset.none')), again);
  sms.focus();
}

/** Words for a refused completion; a reset that is over leaves only "Start again". */
function refused(ctx, panel, login, e) {
  const over = e.code === 'challenge_expired' || (e.code === 'code_invalid' && e.body.attempts_left === 0);
  if (!over) {
    return ctx.warn(e.code === 'code_invalid' && e.body.attempts_left !== undefined
      ? t('reset.wrong', { left: e.body.attempts_left }) : e.message);
  }
  ctx.warn(e.code === 'code_invalid' ? t('reset.fifth') : t('reset.over'));
  const again = h('button', { type: 'button', onclick: () => ask(ctx, panel, login) }, t('reset.again'));
  panel.replaceChildren(again);
  again.focus();
}
