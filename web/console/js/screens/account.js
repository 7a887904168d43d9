// The signed-in operator's own account: passkeys (a passkey login needs neither password nor
// code) and logging out.

import { h, clear } from '/app/js/dom.js';
import { t } from '/app/js/i18n.js';
import { get, post } from '/app/js/api.js';
import * as passkeys from '/app/js/passkey.js';
import { at } from '../ui.js';

export function render(ctx) {
  const list = h('ul', { class: 'list' });
  const add = h('button', { type: 'button' }, t('console.account.passkey'));
  add.hidden = !passkeys.supported();
  add.addEventListener('click', async () => {
    try {
      const { data } = await post('/v1/admin/me/passkeys', {});
      const credential = await passkeys.create(data.options);
      await post(`/v1/admin/me/passkeys/${encodeURIComponent(data.registration_id)}/finish`, { credential, name: 'Console' });
      ctx.say(t('console.account.passkey.done'));
      load(ctx, list);
    } catch (e) {
      if (e?.status !== undefined) ctx.fail(e);
      else ctx.warn(passkeys.failure(e, t));
    }
  });
  ctx.main.append(h('h1', { tabindex: -1 }, t('console.account.title')),
    h('p', {}, t('console.signedin', { email: ctx.me.email, role: t(`console.role.${ctx.me.role}`) })),
    h('h2', {}, t('console.account.passkeys')), list, add);
  load(ctx, list);
}

async function load(ctx, list) {
  try {
    const { data } = await get('/v1/admin/me/passkeys');
    clear(list).append(...(data.items.length
      ? data.items.map((p) => h('li', {}, h('span', {}, p.name), h('span', { class: 'muted' }, at(p.created_at))))
      : [h('li', { class: 'empty' }, t('console.account.passkeys.none'))]));
  } catch (e) {
    ctx.fail(e);
  }
}
