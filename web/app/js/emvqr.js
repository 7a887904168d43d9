// Reads what a shopper needs to see from a store's EMVCo merchant-presented QR payload (tag,
// two-digit length, value; lengths count characters): the name (59), the city (60) and the
// category (52). The server checks the payload itself, its CRC included, when paying.

export function readStoreQr(payload) {
  const chars = Array.from(payload.trim());
  const fields = {};
  let i = 0;
  while (i + 4 <= chars.length) {
    const tag = chars.slice(i, i + 2).join('');
    const len = Number(chars.slice(i + 2, i + 4).join(''));
    if (!/^\d\d$/.test(tag) || !Number.isInteger(len) || i + 4 + len > chars.length) return null;
    fields[tag] = chars.slice(i + 4, i + 4 + len).join('');
    i += 4 + len;
  }
  if (i !== chars.length || !fields['59']) return null;
  return { name: fields['59'], city: fields['60'] ?? '', category: fields['52'] ?? '' };
}
