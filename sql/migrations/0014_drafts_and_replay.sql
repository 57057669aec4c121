-- What-if: drafts of routing and price edits, kept apart from the live tables, and the index a
-- replay reads CDRs by.
--
-- A draft is a named, ordered list of row edits (drafts.edits). The live tables never hold a
-- draft's rows: a preview applies the edits inside a transaction that is rolled back (so no
-- notification reaches the publisher and no other session sees them); publishing applies the
-- same edits in one transaction that commits, with its audit row.
CREATE SCHEMA IF NOT EXISTS drafts;

CREATE TABLE drafts.drafts (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name              text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
  description       text,
  created_by        text NOT NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  published_at      timestamptz,
  published_by      text,
  published_version text                                   -- the snapshot version it produced
);
-- one open draft per name; a published draft keeps its name in the history
CREATE UNIQUE INDEX drafts_open_name ON drafts.drafts (name) WHERE published_at IS NULL;

CREATE TABLE drafts.edits (
  draft_id   uuid NOT NULL REFERENCES drafts.drafts (id) ON DELETE CASCADE,
  seq        integer NOT NULL,
  target     text NOT NULL,                                -- vendor_rate, customer_rate, plan_vendor, plan, vendor
  key        jsonb NOT NULL,                               -- which row: names or ids, prefix, effective_at
  "values"   jsonb,                                        -- columns to set; NULL with remove
  remove     boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (draft_id, seq),
  CHECK (remove = ("values" IS NULL))
);

-- A replay pages through a period's CDRs in (invite_at, cdr_id) order.
CREATE INDEX cdrs_invite_at_cdr_id ON cdr.cdrs (invite_at, cdr_id);
