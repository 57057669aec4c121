-- Vendor billing as decks have it: each vendor rate row says how the vendor bills it — first and
-- next increments (60/60, 6/6, 30/6...), a minimum duration and a connection fee (due on answered
-- calls only). Rows that existed before keep the per-second billing they were costed with (1/1,
-- no minimum, no fee).
--
-- Rates follow each other by effective date: a later row of the same vendor (or price list) and
-- prefix supersedes the earlier one from its effective_at on, no ends_at needed. The existing
-- UNIQUE (owner, prefix, effective_at) keys already refuse the one true conflict.
ALTER TABLE routing.rates
  ADD COLUMN initial_increment integer NOT NULL DEFAULT 1 CHECK (initial_increment > 0),
  ADD COLUMN subsequent_increment integer NOT NULL DEFAULT 1 CHECK (subsequent_increment > 0),
  ADD COLUMN min_duration_s integer NOT NULL DEFAULT 0 CHECK (min_duration_s >= 0),
  ADD COLUMN connection_fee numeric(12, 6) NOT NULL DEFAULT 0 CHECK (connection_fee >= 0);
