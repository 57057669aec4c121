-- One money path: a refund is a balance change of its own kind (a credit for a charge that
-- should not have been made), beside top-ups, call charges and adjustments (rerating posts
-- adjustments). Every kind still arrives through the live balance's ledger stream, and
-- (kind, reference) stays unique: a change posted twice is stored once.
ALTER TABLE billing.balance_updates DROP CONSTRAINT balance_updates_kind_check;
ALTER TABLE billing.balance_updates ADD CONSTRAINT balance_updates_kind_check
  CHECK (kind IN ('topup', 'call_charge', 'adjustment', 'refund'));
CREATE INDEX ON billing.balance_updates (reference text_pattern_ops) WHERE kind = 'adjustment';
