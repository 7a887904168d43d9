-- Passkey hardening (issue 10's review). A passkey whose signature counter did not go up (a
-- copied key) is disabled, not deleted: it answers no ceremony any more, its owner still sees it
-- (and removes it), and the alert names it. Expired registration ceremonies are purged by expiry.
ALTER TABLE passkeys ADD COLUMN disabled_at BIGINT;
CREATE INDEX passkey_registrations_expiry ON passkey_registrations (expires_at);
