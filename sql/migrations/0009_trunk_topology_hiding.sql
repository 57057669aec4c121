-- Topology hiding per trunk: on (the default), the trunk's calls pass through Kamailio's topos
-- module, so the customer sees only our address and vendors never see the customer's Via,
-- Record-Route or Contact. Off: the trunk's calls are relayed with their routing headers as
-- they are, both ways (a customer that needs its own Contact seen by the far end).
ALTER TABLE trunks.trunks
  ADD COLUMN topology_hiding boolean NOT NULL DEFAULT true;
