-- WARP routing core: first schema. Domains follow the seed (one Postgres schema per domain).
-- Conventions: UUID keys (gen_random_uuid, built into Postgres 13+), created_at/updated_at on
-- every table, account_id on every tenant-owned row, deleted_at where rows are soft-deleted.

CREATE SCHEMA IF NOT EXISTS accounts;
CREATE SCHEMA IF NOT EXISTS trunks;
CREATE SCHEMA IF NOT EXISTS numbers;
CREATE SCHEMA IF NOT EXISTS routing;
CREATE SCHEMA IF NOT EXISTS billing;
CREATE SCHEMA IF NOT EXISTS audit;
CREATE SCHEMA IF NOT EXISTS cdr;

-- Keeps updated_at honest without every writer remembering it.
CREATE FUNCTION audit.touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END $$;

----------------------------------------------------------------------------- accounts
CREATE TABLE accounts.accounts (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  ban           text NOT NULL UNIQUE,                    -- Billing Account Number
  name          text NOT NULL,
  status        text NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'suspended', 'testing', 'closed')),
  status_reason text,
  billing_type  text NOT NULL DEFAULT 'postpaid' CHECK (billing_type IN ('prepaid', 'postpaid')),
  credit_limit  numeric(14, 4) NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
  currency      char(3) NOT NULL DEFAULT 'USD',
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  deleted_at    timestamptz
);

----------------------------------------------------------------------------- routing
CREATE TABLE routing.providers (                          -- vendors (carriers we buy from)
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name        text NOT NULL UNIQUE,
  enabled     boolean NOT NULL DEFAULT true,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  deleted_at  timestamptz
);

CREATE TABLE routing.provider_gateways (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  provider_id uuid NOT NULL REFERENCES routing.providers (id),
  name        text NOT NULL,
  host        text NOT NULL,                               -- IP address or DNS name
  port        integer NOT NULL DEFAULT 5060 CHECK (port BETWEEN 1 AND 65535),
  transport   text NOT NULL DEFAULT 'udp' CHECK (transport IN ('udp', 'tcp', 'tls')),
  priority    integer NOT NULL DEFAULT 0,                  -- lower is tried first
  enabled     boolean NOT NULL DEFAULT true,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  deleted_at  timestamptz,
  UNIQUE (provider_id, name)
);
CREATE INDEX ON routing.provider_gateways (provider_id);

-- A vendor rate deck. prefix holds E.164 digits without '+': a country/area prefix for
-- international rows ('44', '4420'), NPA-NXX with its country code for NANP rows ('1201555').
-- rate is the per-minute price when no jurisdiction-specific column applies (international,
-- toll-free, and the NANP "indeterminate" rate); interstate/intrastate are NANP-only.
CREATE TABLE routing.rates (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  provider_id      uuid NOT NULL REFERENCES routing.providers (id),
  prefix           text NOT NULL CHECK (prefix ~ '^[0-9]{1,15}$'),
  description      text,
  rate             numeric(12, 6) NOT NULL CHECK (rate >= 0),
  interstate_rate  numeric(12, 6) CHECK (interstate_rate >= 0),
  intrastate_rate  numeric(12, 6) CHECK (intrastate_rate >= 0),
  effective_at     timestamptz NOT NULL DEFAULT '1970-01-01T00:00:00Z',
  ends_at          timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  CHECK (ends_at IS NULL OR ends_at > effective_at),
  UNIQUE (provider_id, prefix, effective_at)
);
CREATE INDEX ON routing.rates (provider_id, prefix);

CREATE TABLE routing.routing_plans (                      -- partitions
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name        text NOT NULL UNIQUE,
  strategy    text NOT NULL DEFAULT 'least_cost',
  description text,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  deleted_at  timestamptz
);

CREATE TABLE routing.routing_plan_providers (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  routing_plan_id uuid NOT NULL REFERENCES routing.routing_plans (id),
  provider_id     uuid NOT NULL REFERENCES routing.providers (id),
  priority        integer NOT NULL DEFAULT 0,
  weight          integer NOT NULL DEFAULT 1 CHECK (weight >= 0),
  enabled         boolean NOT NULL DEFAULT true,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (routing_plan_id, provider_id)
);

CREATE TABLE routing.provider_performance (               -- filled by the quality issue
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  provider_id  uuid NOT NULL REFERENCES routing.providers (id),
  prefix       text NOT NULL DEFAULT '',
  window_start timestamptz NOT NULL,
  attempts     integer NOT NULL DEFAULT 0,
  answered     integer NOT NULL DEFAULT 0,
  duration_s   bigint NOT NULL DEFAULT 0,
  pdd_ms_sum   bigint NOT NULL DEFAULT 0,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (provider_id, prefix, window_start)
);

----------------------------------------------------------------------------- trunks
CREATE TABLE trunks.trunks (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id      uuid NOT NULL REFERENCES accounts.accounts (id),
  name            text NOT NULL,
  direction       text NOT NULL DEFAULT 'both' CHECK (direction IN ('inbound', 'outbound', 'both')),
  routing_plan_id uuid REFERENCES routing.routing_plans (id),
  tech_prefix     text CHECK (tech_prefix ~ '^[0-9]{1,8}#?$'),
  enabled         boolean NOT NULL DEFAULT true,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  deleted_at      timestamptz,
  UNIQUE (account_id, name)
);
CREATE INDEX ON trunks.trunks (account_id);

CREATE TABLE trunks.trunk_access_lists (                  -- IP ACL
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id  uuid NOT NULL REFERENCES accounts.accounts (id),
  trunk_id    uuid NOT NULL REFERENCES trunks.trunks (id),
  cidr        cidr NOT NULL,
  port        integer CHECK (port BETWEEN 1 AND 65535),    -- NULL: any source port
  transport   text CHECK (transport IN ('udp', 'tcp', 'tls')), -- NULL: any transport
  description text,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON trunks.trunk_access_lists (trunk_id);

CREATE TABLE trunks.trunk_auth (                          -- SIP digest credentials (HA1 only)
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id  uuid NOT NULL REFERENCES accounts.accounts (id),
  trunk_id    uuid NOT NULL REFERENCES trunks.trunks (id),
  username    text NOT NULL,
  realm       text NOT NULL,
  ha1         text NOT NULL CHECK (ha1 ~ '^[0-9a-f]{32}$'),       -- MD5(user:realm:password)
  ha1_sha256  text CHECK (ha1_sha256 ~ '^[0-9a-f]{64}$'),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  deleted_at  timestamptz,
  UNIQUE (username, realm)
);

CREATE TABLE trunks.trunk_features (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id  uuid NOT NULL REFERENCES accounts.accounts (id),
  trunk_id    uuid NOT NULL REFERENCES trunks.trunks (id),
  feature     text NOT NULL,
  value       jsonb NOT NULL DEFAULT 'true'::jsonb,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (trunk_id, feature)
);

----------------------------------------------------------------------------- numbers
CREATE TABLE numbers.number_inventory (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  e164        text NOT NULL UNIQUE CHECK (e164 ~ '^\+[1-9][0-9]{6,14}$'),
  number_type text NOT NULL DEFAULT 'local' CHECK (number_type IN ('local', 'tollfree', 'mobile')),
  region      text,                                        -- e.g. US state
  status      text NOT NULL DEFAULT 'available'
              CHECK (status IN ('available', 'assigned', 'reserved', 'porting_out', 'retired')),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  deleted_at  timestamptz
);

CREATE TABLE numbers.number_assignments (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  number_id   uuid NOT NULL REFERENCES numbers.number_inventory (id),
  account_id  uuid NOT NULL REFERENCES accounts.accounts (id),
  trunk_id    uuid NOT NULL REFERENCES trunks.trunks (id),
  assigned_at timestamptz NOT NULL DEFAULT now(),
  released_at timestamptz,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
-- A number is assigned to at most one trunk at a time.
CREATE UNIQUE INDEX number_assignments_one_active ON numbers.number_assignments (number_id)
  WHERE released_at IS NULL;

----------------------------------------------------------------------------- billing
CREATE TABLE billing.rate_plans (                         -- customer price lists
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id  uuid REFERENCES accounts.accounts (id),      -- NULL: a shared plan
  name        text NOT NULL UNIQUE,
  currency    char(3) NOT NULL DEFAULT 'USD',
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  deleted_at  timestamptz
);

CREATE TABLE billing.rate_plan_rates (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  rate_plan_id        uuid NOT NULL REFERENCES billing.rate_plans (id),
  prefix              text NOT NULL CHECK (prefix ~ '^[0-9]{1,15}$'),
  description         text,
  rate                numeric(12, 6) NOT NULL CHECK (rate >= 0),
  interstate_rate     numeric(12, 6) CHECK (interstate_rate >= 0),
  intrastate_rate     numeric(12, 6) CHECK (intrastate_rate >= 0),
  initial_increment   integer NOT NULL DEFAULT 60 CHECK (initial_increment > 0),
  subsequent_increment integer NOT NULL DEFAULT 60 CHECK (subsequent_increment > 0),
  connection_fee      numeric(12, 6) NOT NULL DEFAULT 0 CHECK (connection_fee >= 0),
  effective_at        timestamptz NOT NULL DEFAULT '1970-01-01T00:00:00Z',
  ends_at             timestamptz,
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now(),
  CHECK (ends_at IS NULL OR ends_at > effective_at),
  UNIQUE (rate_plan_id, prefix, effective_at)
);

CREATE TABLE billing.balance_updates (                    -- the money ledger, append-only
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id   uuid NOT NULL REFERENCES accounts.accounts (id),
  amount       numeric(14, 6) NOT NULL,                    -- positive: credit, negative: charge
  kind         text NOT NULL CHECK (kind IN ('topup', 'call_charge', 'adjustment')),
  reference    text,                                       -- e.g. the call's CDR id
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (kind, reference)
);
CREATE INDEX ON billing.balance_updates (account_id, created_at);

----------------------------------------------------------------------------- audit
CREATE TABLE audit.audit_log (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id  uuid,
  actor       text NOT NULL,
  action      text NOT NULL,
  entity      text NOT NULL,
  entity_id   text,
  before      jsonb,
  after       jsonb,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON audit.audit_log (entity, entity_id);

----------------------------------------------------------------------------- cdr
-- One row per call attempt. Partitioned by day on invite_at (retention drops whole days);
-- the key is (cdr_id, invite_at) because a partitioned table's key must hold the partition column.
-- The emitter inserts with ON CONFLICT DO NOTHING on that key, so a redelivered record is a no-op.
CREATE TABLE cdr.cdrs (
  cdr_id        uuid NOT NULL,
  call_id       text NOT NULL,
  node          text NOT NULL,
  direction     text NOT NULL DEFAULT 'outbound',
  account_id    uuid,
  trunk_id      uuid,
  provider_id   uuid,
  gateway       text,
  from_raw      text,
  to_raw        text,
  from_e164     text,
  to_e164       text,
  invite_at     timestamptz NOT NULL,
  answer_at     timestamptz,
  end_at        timestamptz,
  duration_s    integer NOT NULL DEFAULT 0,
  sip_code      integer NOT NULL,
  sip_reason    text,
  vendor_rate   numeric(12, 6),
  trace         jsonb,
  inserted_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (cdr_id, invite_at)
) PARTITION BY RANGE (invite_at);
CREATE TABLE cdr.cdrs_default PARTITION OF cdr.cdrs DEFAULT;
CREATE INDEX ON cdr.cdrs (call_id);
CREATE INDEX ON cdr.cdrs (account_id, invite_at);

-- updated_at triggers for every table that has the column.
DO $$
DECLARE t record;
BEGIN
  FOR t IN
    SELECT c.table_schema, c.table_name FROM information_schema.columns c
    JOIN information_schema.tables tb USING (table_schema, table_name)
    WHERE c.column_name = 'updated_at' AND tb.table_type = 'BASE TABLE'
      AND c.table_schema IN ('accounts', 'trunks', 'numbers', 'routing', 'billing', 'audit')
  LOOP
    EXECUTE format('CREATE TRIGGER touch_updated_at BEFORE UPDATE ON %I.%I '
                   'FOR EACH ROW EXECUTE FUNCTION audit.touch_updated_at()',
                   t.table_schema, t.table_name);
  END LOOP;
END $$;
