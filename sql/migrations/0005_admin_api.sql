-- Admin API: API keys, the request behind each audit row, CDR search by number.

CREATE SCHEMA IF NOT EXISTS auth;

-- A key is shown once when it is made; only its SHA-256 is kept. A key with an account_id is
-- customer-scoped: it sees and changes only that account's rows (never as admin).
CREATE TABLE auth.api_keys (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name         text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
  key_prefix   text NOT NULL,                 -- first characters of the key, to tell keys apart
  key_sha256   text NOT NULL UNIQUE CHECK (key_sha256 ~ '^[0-9a-f]{64}$'),
  role         text NOT NULL CHECK (role IN ('admin', 'operator', 'read-only')),
  account_id   uuid REFERENCES accounts.accounts (id),
  created_by   text NOT NULL,
  expires_at   timestamptz,
  last_used_at timestamptz,
  revoked_at   timestamptz,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  CHECK (account_id IS NULL OR role <> 'admin')
);
CREATE TRIGGER touch_updated_at BEFORE UPDATE ON auth.api_keys
  FOR EACH ROW EXECUTE FUNCTION audit.touch_updated_at();

-- Which API request made a change (the request_id of the response envelope).
ALTER TABLE audit.audit_log ADD COLUMN request_id text;
CREATE INDEX ON audit.audit_log (created_at);

-- CDR search by calling or called number within a time range.
CREATE INDEX ON cdr.cdrs (to_e164, invite_at);
CREATE INDEX ON cdr.cdrs (from_e164, invite_at);
