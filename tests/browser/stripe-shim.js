// Appended by tests/api/stripe.rs to localstripe's Stripe.js stand-in, which lacks two calls the
// wallet makes on the real Stripe.js: createPaymentMethod (the card field's values become a
// PaymentMethod, as Stripe.js does) and handleNextAction (the issuer's 3-D Secure, passed at once),
// and Element.clear. Test code only: it never ships with the wallet.
(function () {
  const api = LOCALSTRIPE_BASE_API;
  const make = Stripe;
  Stripe = (key) => {
    const stripe = make(key);
    const elements = stripe.elements;
    stripe.elements = (...args) => {
      const made = elements(...args);
      const create = made.create.bind(made);
      made.create = (...kinds) => {
        const element = create(...kinds);
        element.clear = () => Object.values(element._inputs || {}).forEach((i) => { if (i) i.value = ''; });
        return element;
      };
      return made;
    };
    stripe.createPaymentMethod = async ({ card }) => {
      const c = card.value.card;
      const body = new URLSearchParams({
        type: 'card', 'card[number]': c.number, 'card[exp_month]': c.exp_month,
        'card[exp_year]': c.exp_year, 'card[cvc]': c.cvc, key,
      });
      const r = await fetch(`${api}/v1/payment_methods`, { method: 'POST', body });
      const pm = await r.json();
      return r.ok ? { paymentMethod: pm } : { error: pm.error };
    };
    stripe.handleNextAction = async ({ clientSecret }) => {
      if (clientSecret.startsWith('pi_')) {
        const pi = clientSecret.match(/^(pi_\w+)_secret_/)[1];
        const r = await fetch(`${api}/v1/payment_intents/${pi}/_authenticate?success=true`, {
          method: 'POST', body: JSON.stringify({ key, client_secret: clientSecret }),
        });
        const intent = await r.json();
        return r.ok ? { paymentIntent: intent } : { error: intent.error };
      }
      const seti = clientSecret.match(/^(seti_\w+)_secret_/)[1];
      const r = await fetch(`${api}/v1/setup_intents/${seti}/confirm`, {
        method: 'POST', body: JSON.stringify({ key, use_stripe_sdk: true, client_secret: clientSecret }),
      });
      const si = await r.json();
      return r.ok && si.status === 'succeeded' ? { setupIntent: si } : { error: si.error || { message: 'failed' } };
    };
    return stripe;
  };
})();
