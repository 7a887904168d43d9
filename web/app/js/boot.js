// A classic script that runs as soon as it arrives, before the modules: it asks who is signed in
// at once, so that the answer is on its way while the modules load. main.js takes the answer
// (once) through api.js `adoptEarly`; nothing is kept but the pending request.
'use strict';
window.omamoriEarly = {
  '/v1/me': fetch('/v1/me', {
    headers: { Accept: 'application/json', 'Omamori-Session': 'cookie' },
    credentials: 'same-origin',
    cache: 'no-store',
  }).then(async (response) => ({ response, text: await response.text() }), () => null),
};
