-- Trunk authentication modes, registration limits, inbound delivery.

ALTER TABLE trunks.trunks
  -- acl: identified by source address only; digest: by SIP credentials only; both: either
  ADD COLUMN auth_mode text NOT NULL DEFAULT 'acl' CHECK (auth_mode IN ('acl', 'digest', 'both')),
  -- where calls to the trunk's DIDs go when it does not register, e.g. sip:203.0.113.5:5060
  ADD COLUMN inbound_uri text CHECK (inbound_uri ~ '^sips?:[^@\s]+$'),
  ADD COLUMN max_contacts integer NOT NULL DEFAULT 5 CHECK (max_contacts BETWEEN 1 AND 100);

-- A trunk's tech prefix is unique wherever it is used to tell shared-IP customers apart.
CREATE UNIQUE INDEX trunks_tech_prefix_unique ON trunks.trunks (tech_prefix)
  WHERE tech_prefix IS NOT NULL AND deleted_at IS NULL;
