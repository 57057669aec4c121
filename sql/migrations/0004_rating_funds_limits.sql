-- Rating, funds and limits: customer rate plans on accounts/trunks, margin rules on routing
-- plans, call limits, and the money fields of a CDR.

ALTER TABLE billing.rate_plan_rates
  ADD COLUMN indeterminate_rate numeric(12, 6) CHECK (indeterminate_rate >= 0),
  ADD COLUMN min_duration_s integer NOT NULL DEFAULT 0 CHECK (min_duration_s >= 0);

ALTER TABLE accounts.accounts
  ADD COLUMN rate_plan_id uuid REFERENCES billing.rate_plans (id),
  ADD COLUMN cps_limit integer CHECK (cps_limit > 0),          -- NULL: no limit
  ADD COLUMN max_concurrent integer CHECK (max_concurrent > 0);

ALTER TABLE trunks.trunks
  ADD COLUMN rate_plan_id uuid REFERENCES billing.rate_plans (id),  -- NULL: the account's
  ADD COLUMN cps_limit integer CHECK (cps_limit > 0),
  ADD COLUMN max_concurrent integer CHECK (max_concurrent > 0);

-- Margin protection: a vendor must cost at most the customer's price minus min_margin
-- (per minute), unless the plan allows negative margin.
ALTER TABLE routing.routing_plans
  ADD COLUMN min_margin numeric(12, 6) NOT NULL DEFAULT 0,
  ADD COLUMN allow_negative_margin boolean NOT NULL DEFAULT false;

-- The ledger's running balance per account (the durable truth behind the live Redis balance).
CREATE VIEW billing.account_balances AS
  SELECT a.id AS account_id, a.ban, a.billing_type, a.credit_limit,
         COALESCE(sum(b.amount), 0)::numeric(14, 6) AS balance
  FROM accounts.accounts a LEFT JOIN billing.balance_updates b ON b.account_id = a.id
  GROUP BY a.id;

ALTER TABLE cdr.cdrs
  ADD COLUMN billable_s integer NOT NULL DEFAULT 0,
  ADD COLUMN customer_rate numeric(12, 6),
  ADD COLUMN customer_price numeric(14, 6),
  ADD COLUMN vendor_cost numeric(14, 6),
  ADD COLUMN margin numeric(14, 6);
