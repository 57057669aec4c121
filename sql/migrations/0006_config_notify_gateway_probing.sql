-- Hot reload: every change to the routing configuration notifies the companion, which builds,
-- validates and publishes the next snapshot. Statement-level triggers: one notification per
-- statement, however many rows it touched.
CREATE FUNCTION routing.notify_config_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('warp_config', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);
  RETURN NULL;
END $$;

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY[
    'accounts.accounts', 'trunks.trunks', 'trunks.trunk_access_lists', 'trunks.trunk_auth',
    'numbers.number_inventory', 'numbers.number_assignments',
    'routing.providers', 'routing.provider_gateways', 'routing.rates', 'routing.routing_plans',
    'routing.routing_plan_providers', 'routing.blocked_destinations', 'routing.npanxx',
    'billing.rate_plans', 'billing.rate_plan_rates']
  LOOP
    EXECUTE format('CREATE TRIGGER notify_config_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION routing.notify_config_change()', t);
  END LOOP;
END $$;

-- Gateway health probing (SIP OPTIONS from the companion), per gateway.
ALTER TABLE routing.provider_gateways
  ADD COLUMN probe boolean NOT NULL DEFAULT false;
