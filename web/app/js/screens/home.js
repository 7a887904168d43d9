// Home: the balance, this month's spending against the limits, and the way to every screen.

import { h } from '../dom.js';
import { t, yen } from '../i18n.js';
import { get } from '../api.js';

const LINKS = ['pay', 'scan', 'topup', 'cards', 'history', 'limits', 'notices', 'security'];

export async function render(ctx) {
  const balance = h('p', { class: 'balance', role: 'group', 'aria-label': t('home.balance') }, '…');
  const spent = h('p', { class: 'hint' });
  ctx.main.append(
    h('h1', { tabindex: -1, class: 'visually-hidden' }, t('app.name')),
    h('section', { class: 'card balance-card' }, h('h2', { class: 'label' }, t('home.balance')), balance, spent),
    h('nav', { 'aria-label': t('app.name') },
      h('ul', { class: 'tiles' }, LINKS.map((name) => h('li', {}, h('a', { href: `#/${name}`, class: `tile tile-${name}` }, t(`home.${name}`)))))));
  const { data } = await get('/v1/wallet');
  balance.textContent = yen(data.balance);
  spent.textContent = t('home.spent', {
    today: yen(data.spent.today), daily: yen(data.limits.daily),
    month: yen(data.spent.this_month), monthly: yen(data.limits.monthly),
  });
}
