-- A settlement's lines may be reversals too: a payment reversed after its day closed lands in the
-- next settlement as a line of what it gave back.
ALTER TABLE settlement_lines DROP CONSTRAINT settlement_lines_kind_check;
ALTER TABLE settlement_lines ADD CONSTRAINT settlement_lines_kind_check CHECK (kind IN ('payment', 'refund', 'reversal'));
