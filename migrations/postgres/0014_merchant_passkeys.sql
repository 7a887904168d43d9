-- Passkeys for merchant staff: passkeys and registration ceremonies gain a third owner, and
-- exactly one owner column is set. Challenges gain a merchant-user owner (a step-up of the
-- dashboard) and the `merchant_login` purpose (a passkey login of the dashboard).
ALTER TABLE passkeys ADD COLUMN merchant_user_id TEXT;
ALTER TABLE passkeys ADD CONSTRAINT passkeys_one_owner CHECK (
    (user_id IS NOT NULL AND operator_id IS NULL AND merchant_user_id IS NULL)
    OR (user_id IS NULL AND operator_id IS NOT NULL AND merchant_user_id IS NULL)
    OR (user_id IS NULL AND operator_id IS NULL AND merchant_user_id IS NOT NULL));
CREATE INDEX passkeys_merchant_user ON passkeys (merchant_user_id);

ALTER TABLE passkey_registrations ADD COLUMN merchant_user_id TEXT;
ALTER TABLE passkey_registrations ADD CONSTRAINT passkey_registrations_one_owner CHECK (
    (user_id IS NOT NULL AND operator_id IS NULL AND merchant_user_id IS NULL)
    OR (user_id IS NULL AND operator_id IS NOT NULL AND merchant_user_id IS NULL)
    OR (user_id IS NULL AND operator_id IS NULL AND merchant_user_id IS NOT NULL));

ALTER TABLE challenges DROP CONSTRAINT challenges_purpose_check;
ALTER TABLE challenges ADD CONSTRAINT challenges_purpose_check
    CHECK (purpose IN ('login', 'step_up', 'operator_login', 'card', 'merchant_login'));
ALTER TABLE challenges ADD COLUMN merchant_user_id TEXT;
