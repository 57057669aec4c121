-- LCR: plan strategies and failover, blocked destinations, number translation, LRN and
-- NPA-NXX (jurisdiction) data.

-- Routing plans: strategy and failover rules live with the plan.
ALTER TABLE routing.routing_plans
  ADD COLUMN failover_codes integer[] NOT NULL DEFAULT '{408,500,502,503,504}',
  ADD COLUMN max_attempts integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 10),
  ADD COLUMN attempt_timeout_ms integer CHECK (attempt_timeout_ms BETWEEN 200 AND 60000),
  ADD CONSTRAINT routing_plans_strategy_known
    CHECK (strategy IN ('least_cost', 'priority', 'weighted', 'quality'));

-- An account-wide plan for trunks that do not name their own.
ALTER TABLE accounts.accounts ADD COLUMN routing_plan_id uuid REFERENCES routing.routing_plans (id);

-- Vendor-side number translation, applied after the vendor is chosen.
ALTER TABLE routing.providers
  ADD COLUMN number_format text NOT NULL DEFAULT 'e164'
    CHECK (number_format IN ('e164', 'e164_plus', 'national')),
  ADD COLUMN strip_digits integer NOT NULL DEFAULT 0 CHECK (strip_digits BETWEEN 0 AND 15),
  ADD COLUMN add_prefix text NOT NULL DEFAULT '' CHECK (add_prefix ~ '^[0-9+*#]*$'),
  ADD COLUMN tech_prefix text NOT NULL DEFAULT '' CHECK (tech_prefix ~ '^[0-9*#]*$'),
  ADD COLUMN translate_caller boolean NOT NULL DEFAULT false,
  ADD COLUMN send_lrn boolean NOT NULL DEFAULT false;

-- Trunk-side translation of what the customer dials, applied before the number is read.
ALTER TABLE trunks.trunks
  ADD COLUMN strip_digits integer NOT NULL DEFAULT 0 CHECK (strip_digits BETWEEN 0 AND 15),
  ADD COLUMN add_prefix text NOT NULL DEFAULT '' CHECK (add_prefix ~ '^[0-9+]*$');

-- NANP rate rows may carry an indeterminate rate of their own (else `rate` is used).
ALTER TABLE routing.rates ADD COLUMN indeterminate_rate numeric(12, 6) CHECK (indeterminate_rate >= 0);

-- Destinations a vendor or a plan must not carry (E.164 digit prefix).
CREATE TABLE routing.blocked_destinations (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  provider_id     uuid REFERENCES routing.providers (id),
  routing_plan_id uuid REFERENCES routing.routing_plans (id),
  prefix          text NOT NULL CHECK (prefix ~ '^[0-9]{1,15}$'),
  reason          text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  CHECK ((provider_id IS NULL) <> (routing_plan_id IS NULL))
);
CREATE INDEX ON routing.blocked_destinations (provider_id);
CREATE INDEX ON routing.blocked_destinations (routing_plan_id);
CREATE TRIGGER touch_updated_at BEFORE UPDATE ON routing.blocked_destinations
  FOR EACH ROW EXECUTE FUNCTION audit.touch_updated_at();

-- Local number portability: ported NANP numbers and their LRN (bulk-loaded with COPY).
CREATE TABLE routing.lnp (
  tn          text PRIMARY KEY CHECK (tn ~ '^1[2-9][0-9]{9}$'),   -- E.164 digits, NANP
  lrn         text NOT NULL CHECK (lrn ~ '^1[2-9][0-9]{9}$'),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- NPA-NXX data (LERG-like): where a NANP block is homed.
CREATE TABLE routing.npanxx (
  npanxx      text PRIMARY KEY CHECK (npanxx ~ '^[2-9][0-9]{2}[2-9][0-9]{2}$'),
  country     char(2) NOT NULL DEFAULT 'US',
  state       text NOT NULL,                 -- state or province
  lata        text,
  ocn         text,
  rate_center text,
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- CDRs carry the LRN, the jurisdiction and every vendor attempt.
ALTER TABLE cdr.cdrs
  ADD COLUMN lrn text,
  ADD COLUMN jurisdiction text,
  ADD COLUMN attempts jsonb;
