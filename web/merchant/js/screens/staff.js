// Staff: who can sign in for this merchant, and (owners only) adding a person. The new person's
// password and authenticator key are shown once, here, to hand over in person.

import { h, field, clear } from '/app/js/dom.js';
import { t } from '/app/js/i18n.js';
import { get, post } from '/app/js/api.js';
import { table } from '../ui.js';
import { storeName } from './sales.js';

export function render(ctx) {
  const box = h('div', { 'aria-live': 'polite' });
  ctx.main.append(h('h1', { tabindex: -1 }, t('merchant.staff.title')), box);
  if (ctx.me.role !== 'owner') {
    box.append(h('p', { class: 'hint' }, t('merchant.staff.owneronly')));
    return;
  }
  const created = h('section', { 'aria-live': 'polite' });
  ctx.main.append(addForm(ctx, created, () => load(ctx, box)), created);
  load(ctx, box);
}

async function load(ctx, box) {
  let items;
  try {
    items = (await get('/v1/merchant/users')).data.items;
  } catch (e) {
    ctx.fail(e);
    return;
  }
  clear(box);
  box.append(table([t('merchant.login.email'), t('merchant.col.role'), t('merchant.col.stores')],
    items.map((u) => [u.email, t(`merchant.role.${u.role}`),
      u.role === 'owner' ? t('merchant.allstores') : (u.store_ids ?? []).map((id) => storeName(ctx, id)).join(', ')])));
}

function addForm(ctx, created, reload) {
  const email = h('input', { type: 'email', required: true, autocomplete: 'off', maxlength: 254 });
  const role = h('select', {}, h('option', { value: 'staff' }, t('merchant.role.staff')), h('option', { value: 'owner' }, t('merchant.role.owner')));
  const boxes = (ctx.me.stores ?? []).map((s) => h('input', { type: 'checkbox', value: s.store_id }));
  const stores = h('fieldset', { class: 'stack' }, h('legend', {}, t('merchant.staff.stores')),
    (ctx.me.stores ?? []).map((s, i) => field(s.name, boxes[i])));
  const submit = h('button', { type: 'submit' }, t('merchant.staff.add'));
  const form = h('form', { class: 'stack card narrow-form' }, h('h2', {}, t('merchant.staff.add')),
    field(t('merchant.login.email'), email), field(t('merchant.col.role'), role), stores, submit);
  role.addEventListener('change', () => { stores.hidden = role.value === 'owner'; });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const store_ids = boxes.filter((b) => b.checked).map((b) => b.value);
    if (role.value === 'staff' && !store_ids.length) { ctx.warn(t('merchant.staff.nostore')); return; }
    submit.disabled = true;
    try {
      const body = { email: email.value.trim(), role: role.value, ...(role.value === 'staff' ? { store_ids } : {}) };
      const { data } = await post('/v1/merchant/users', body);
      clear(created).append(h('div', { class: 'card' },
        h('h2', {}, t('merchant.staff.created', { email: body.email })),
        h('p', {}, t('merchant.staff.once')),
        field(t('merchant.login.password'), h('output', { class: 'secret' }, data.password)),
        field(t('merchant.staff.totp'), h('output', { class: 'secret' }, data.totp_secret))));
      ctx.say(t('merchant.staff.created', { email: body.email }));
      form.reset();
      await reload();
    } catch (err) {
      ctx.fail(err);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}
