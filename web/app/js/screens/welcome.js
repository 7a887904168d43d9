// Log in (password, then the second step) and sign up (both codes).

import { h, field } from '../dom.js';
import { t } from '../i18n.js';
import { post, deviceId } from '../api.js';
import { secondStep } from '../challenge.js';
import * as passkeys from '../passkey.js';

export async function render(ctx, name) {
  ctx.main.append(h('h1', { tabindex: -1 }, name === 'signup' ? t('signup.title') : t('login.title')));
  if (name === 'signup') signup(ctx);
  else login(ctx);
}

let rememberedLogin = '';

/** The login to offer on the login screen next (after a sign-up or a reset). */
export function remember(login) {
  rememberedLogin = login;
}

function login(ctx) {
  const who = h('input', { autocomplete: 'username', required: true, value: rememberedLogin, maxlength: 254 });
  const password = h('input', { type: 'password', autocomplete: 'current-password', required: true, maxlength: 256 });
  const form = h('form', { class: 'stack card' },
    field(t('login.login'), who),
    field(t('login.password'), password),
    h('button', { type: 'submit' }, t('login.submit')));
  const passkey = h('button', { type: 'button', class: 'secondary' }, t('login.passkey'));
  // No login name and no password: the browser offers the passkeys it holds for this site.
  passkey.addEventListener('click', async () => {
    try {
      const { data: started } = await post('/v1/login/passkey', { device_id: deviceId() }, { auth: false });
      const credential = await passkeys.get(started.options);
      const path = `/v1/challenges/${encodeURIComponent(started.challenge_id)}/verify`;
      await post(path, { method: 'passkey', credential }, { auth: false });
      signedIn(ctx);
    } catch (e) {
      ctx.warn(passkeys.failure(e, t));
    }
  });
  const second = h('section', { class: 'stack', hidden: true, 'aria-labelledby': 'second-title' });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    rememberedLogin = who.value.trim();
    try {
      const { data } = await post('/v1/login', { login: rememberedLogin, password: password.value, device_id: deviceId() }, { auth: false });
      password.value = '';
      if (data.challenge_id) {
        form.hidden = true;
        passkey.hidden = true;
        second.hidden = false;
        second.append(h('h2', { id: 'second-title' }, t('second.title')), h('p', {}, t('second.lead')));
        secondStep(second, { id: data.challenge_id, methods: data.methods ?? [], onVerified: () => signedIn(ctx), say: ctx.say, warn: ctx.warn });
        second.querySelector('button:not([hidden])')?.focus();
      } else {
        signedIn(ctx);
      }
    } catch (e) {
      ctx.warn(e.message);
    }
  });
  ctx.main.append(form, h('p', {}, h('a', { href: '#/reset' }, t('login.forgot'))), passkey, second,
    h('p', { class: 'aside' }, t('login.new'), ' ', h('a', { href: '#/signup' }, t('login.create'))));
}

function signedIn(ctx) {
  ctx.signedIn(true);
  ctx.say(t('login.done'));
  ctx.go('home');
}

function signup(ctx) {
  const phone = h('input', { type: 'tel', autocomplete: 'tel', required: true, placeholder: '+819012345678', maxlength: 20 });
  const email = h('input', { type: 'email', autocomplete: 'email', required: true, maxlength: 254 });
  const password = h('input', { type: 'password', autocomplete: 'new-password', required: true, maxlength: 256 });
  const form = h('form', { class: 'stack card' },
    field(t('signup.phone'), phone), h('p', { class: 'hint' }, t('signup.phone.hint')),
    field(t('signup.email'), email),
    field(t('signup.password'), password), h('p', { class: 'hint' }, t('signup.password.hint')),
    h('button', { type: 'submit' }, t('signup.submit')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const { data } = await post('/v1/signup', { phone: phone.value.trim(), email: email.value.trim(), password: password.value }, { auth: false });
      password.value = '';
      form.hidden = true;
      ctx.say(t('signup.sent'));
      codes(ctx, data.signup_id, phone.value.trim());
    } catch (e) {
      ctx.warn(e.message);
    }
  });
  ctx.main.append(form, h('p', { class: 'aside' }, t('login.have'), ' ', h('a', { href: '#/login' }, t('login.title'))));
}

function codes(ctx, id, phone) {
  const sms = h('input', { inputmode: 'numeric', autocomplete: 'one-time-code', required: true, maxlength: 12 });
  const mail = h('input', { inputmode: 'numeric', required: true, maxlength: 12 });
  const form = h('form', { class: 'stack card' },
    field(t('signup.sms'), sms), field(t('signup.emailcode'), mail), h('button', { type: 'submit' }, t('signup.verify')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      await post(`/v1/signup/${encodeURIComponent(id)}/verify`, { phone_code: sms.value.trim(), email_code: mail.value.trim() }, { auth: false });
      rememberedLogin = phone;
      ctx.say(t('signup.done'));
      ctx.go('login');
    } catch (e) {
      ctx.warn(e.message);
    }
  });
  ctx.main.querySelector('form').after(form);
  sms.focus();
}
