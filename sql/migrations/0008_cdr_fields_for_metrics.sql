-- CDRs: the account's BAN, where the LRN came from, first ringing and post-dial delay, the
-- Q.850 cause (Reason header) and which side ended the call. Each vendor attempt in `attempts`
-- now carries its own times (started, ringing, ended) and PDD.
ALTER TABLE cdr.cdrs
  ADD COLUMN ban text,
  ADD COLUMN lrn_source text,
  ADD COLUMN ringing_at timestamptz,
  ADD COLUMN pdd_ms integer,
  ADD COLUMN q850_cause smallint,
  ADD COLUMN hangup_side text CHECK (hangup_side IN ('caller', 'callee', 'proxy'));
