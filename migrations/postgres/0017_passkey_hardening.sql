-- Passkey hardening (issue 10's review). Expired registration ceremonies are purged by expiry.
CREATE INDEX passkey_registrations_expiry ON passkey_registrations (expires_at);
