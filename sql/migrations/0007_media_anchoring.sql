-- Media anchoring through rtpengine, per customer trunk, and the media statistics of a call.
--
-- media_anchor:  never  — SDP passes untouched, media flows end to end (what every trunk did
--                         before this migration, so existing trunks keep their behaviour);
--                always — both legs through rtpengine;
--                nat    — anchored only when the trunk's signalling shows it is behind NAT
--                         (source address/port differ from its Via or Contact).
-- media_codecs:  codecs the trunk may use (rtpengine encoding names, e.g. PCMU, PCMA, G729,
--                telephone-event); others are stripped from the SDP. Empty: all allowed.
--                Only applies to anchored calls (the SDP is rewritten by rtpengine).
-- media_failure: what an anchored call does when rtpengine cannot be reached or refuses it:
--                carry  — the call proceeds unanchored with the endpoints' own SDP;
--                refuse — 503 to the customer, no vendor is tried.
ALTER TABLE trunks.trunks
  ADD COLUMN media_anchor text NOT NULL DEFAULT 'never' CHECK (media_anchor IN ('always', 'never', 'nat')),
  ADD COLUMN media_codecs text[] NOT NULL DEFAULT '{}'
    CHECK (array_position(media_codecs, NULL) IS NULL),
  ADD COLUMN media_failure text NOT NULL DEFAULT 'carry' CHECK (media_failure IN ('carry', 'refuse'));

-- What the media relay saw of the call (JSON: anchored or why not, packets, bytes, loss, MOS).
ALTER TABLE cdr.cdrs
  ADD COLUMN media jsonb;
