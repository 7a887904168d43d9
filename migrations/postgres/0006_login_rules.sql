-- Risk rules on login too.
ALTER TABLE risk_rules DROP CONSTRAINT risk_rules_event_check;
ALTER TABLE risk_rules ADD CONSTRAINT risk_rules_event_check CHECK (event IN ('login', 'topup', 'payment', 'card_link'));

-- The previous login of a user is its newest session; impossible travel compares with it.
CREATE INDEX sessions_user_created ON sessions (user_id, created_at);
