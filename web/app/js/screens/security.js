// Security: the account, the sessions (each with "Sign out"), passkeys (add, name, remove), the
// authenticator app with its recovery codes shown once, the password, and logging out.

import { h, field } from '../dom.js';
import { t, when } from '../i18n.js';
import { get, post, call } from '../api.js';
import * as passkeys from '../passkey.js';

export async function render(ctx) {
  const sessions = h('ul', { class: 'list' });
  const keys = h('ul', { class: 'list', 'aria-label': t('security.passkeys') });
  const tools = h('section', { class: 'stack' });
  const me = (await get('/v1/me')).data;
  ctx.main.append(h('h1', { tabindex: -1 }, t('security.title')),
    h('section', { class: 'card' }, h('h2', {}, t('security.account')), h('p', {}, me.phone), h('p', {}, me.email)),
    h('h2', {}, t('security.sessions')), sessions,
    h('h2', {}, t('security.passkeys')), keys, tools);
  await listSessions(ctx, sessions);
  await listPasskeys(ctx, keys);
  const passkey = h('button', { type: 'button', class: 'secondary' }, t('security.passkey'));
  const totp = h('button', { type: 'button', class: 'secondary' }, t('security.totp'));
  const password = h('button', { type: 'button', class: 'secondary' }, t('security.password'));
  const logout = h('button', { type: 'button', class: 'danger' }, t('security.logout'));
  const panel = h('div', { class: 'stack' });
  passkey.addEventListener('click', () => addPasskey(ctx, panel, keys));
  totp.addEventListener('click', () => setUpTotp(ctx, panel).catch((e) => ctx.warn(e.message)));
  password.addEventListener('click', () => changePassword(ctx, panel));
  logout.addEventListener('click', async () => {
    try {
      await post('/v1/logout', {});
    } catch (e) {
      if (e.status !== 401) return ctx.warn(e.message);
    }
    ctx.signedIn(false);
    ctx.say(t('security.loggedout'));
    ctx.go('login');
  });
  tools.append(passkey, totp, password, panel, logout);
}

async function listSessions(ctx, list) {
  const { data } = await get('/v1/sessions');
  list.replaceChildren();
  for (const s of data.items) {
    const out = h('button', { type: 'button', class: 'secondary small' }, t('security.signout'));
    out.addEventListener('click', async () => {
      try {
        await call('DELETE', `/v1/sessions/${encodeURIComponent(s.id)}`);
        if (s.current) {
          ctx.signedIn(false);
          ctx.say(t('security.loggedout'));
          ctx.go('login');
          return;
        }
        ctx.say(t('security.signedout'));
        await listSessions(ctx, list);
      } catch (e) {
        ctx.warn(e.message);
      }
    });
    const name = s.current ? `${s.device_id} (${t('security.this')})` : s.device_id;
    list.append(h('li', {}, h('span', {}, h('strong', {}, name), h('br'),
      h('span', { class: 'muted' }, t('security.seen', { when: when(s.last_seen_at), ip: [s.ip, s.country].filter(Boolean).join(' ') }))), out));
  }
}

async function listPasskeys(ctx, list) {
  const { data } = await get('/v1/me/passkeys');
  list.replaceChildren();
  if (!data.items.length) list.append(h('li', { class: 'muted' }, t('security.passkeys.none')));
  for (const p of data.items) {
    const remove = h('button', { type: 'button', class: 'secondary small', 'aria-label': t('security.passkey.remove.named', { name: p.name }) },
      t('security.passkey.remove'));
    remove.addEventListener('click', async () => {
      try {
        await call('DELETE', `/v1/me/passkeys/${encodeURIComponent(p.passkey_id)}`);
        ctx.say(t('security.passkey.removed'));
        await listPasskeys(ctx, list);
      } catch (e) {
        ctx.warn(e.message);
      }
    });
    const used = p.disabled_at ? t('security.passkey.disabled')
      : p.last_used_at ? t('security.passkey.used', { when: when(p.last_used_at) }) : t('security.passkey.added', { when: when(p.created_at) });
    list.append(h('li', {}, h('span', {}, h('strong', {}, p.name), h('br'), h('span', { class: 'muted' }, used)), remove));
  }
}

// "Add a passkey" starts the ceremony at once; the name is asked for afterwards.
async function addPasskey(ctx, panel, list) {
  if (!passkeys.supported()) return ctx.warn(t('passkey.unsupported'));
  let credential;
  let started;
  try {
    ({ data: started } = await post('/v1/me/passkeys', {}));
    credential = await passkeys.create(started.options);
  } catch (e) {
    return ctx.warn(passkeys.failure(e, t));
  }
  const name = h('input', { required: false, maxlength: 64, placeholder: t('security.passkey.name.hint') });
  const form = h('form', { class: 'stack card' },
    h('p', {}, t('security.passkey.name.lead')),
    field(t('security.passkey.name'), name), h('button', { type: 'submit' }, t('security.passkey.save')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const body = { credential };
      if (name.value.trim()) body.name = name.value.trim();
      await post(`/v1/me/passkeys/${encodeURIComponent(started.registration_id)}/finish`, body);
      panel.replaceChildren();
      ctx.say(t('security.passkey.done'));
      await listPasskeys(ctx, list);
    } catch (e) {
      ctx.warn(e.message);
    }
  });
  panel.replaceChildren(form);
  name.focus();
}

async function setUpTotp(ctx, panel) {
  const { data } = await post('/v1/me/totp', {});
  const code = h('input', { inputmode: 'numeric', autocomplete: 'one-time-code', required: true, maxlength: 6 });
  const form = h('form', { class: 'stack card' },
    h('p', {}, t('security.totp.lead')),
    // The server draws the QR code (as it draws the payment code's); the key and the link stay
    // for those who cannot scan.
    h('img', { class: 'qr totp-qr', width: 220, height: 220, alt: t('security.totp.qr'),
      src: `data:image/svg+xml;charset=utf-8,${encodeURIComponent(data.otpauth_qr_svg)}` }),
    h('p', {}, t('security.totp.secret'), ': ', h('code', { class: 'secret' }, data.secret)),
    h('p', { class: 'muted small uri' }, h('a', { href: data.otpauth_uri }, data.otpauth_uri)),
    field(t('security.totp.code'), code), h('button', { type: 'submit' }, t('security.totp.confirm')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const { data: done } = await post('/v1/me/totp/confirm', { code: code.value.trim() });
      panel.replaceChildren(h('section', { class: 'card' }, h('h3', {}, t('security.recovery')),
        h('ul', { class: 'codes', 'aria-label': t('security.recovery') }, done.recovery_codes.map((c) => h('li', {}, h('code', {}, c))))));
      ctx.say(t('security.totp.done'));
    } catch (e) {
      ctx.warn(e.message);
    }
  });
  panel.replaceChildren(form);
}

function changePassword(ctx, panel) {
  const current = h('input', { type: 'password', autocomplete: 'current-password', required: true });
  const next = h('input', { type: 'password', autocomplete: 'new-password', required: true });
  const form = h('form', { class: 'stack card' },
    field(t('security.password.current'), current), field(t('security.password.new'), next),
    h('button', { type: 'submit' }, t('security.password.save')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      await post('/v1/me/password', { current_password: current.value, new_password: next.value });
      panel.replaceChildren();
      ctx.say(t('security.password.done'));
    } catch (e) {
      ctx.warn(e.message);
    } finally {
      current.value = '';
      next.value = '';
    }
  });
  panel.replaceChildren(form);
  current.focus();
}
