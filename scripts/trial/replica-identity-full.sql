-- What RESHARD's refusal asks for tables without a primary key or replica
-- identity: REPLICA IDENTITY FULL, so their updates and deletes can be
-- published (MusicBrainz has 18 such tables). Run after the schema's own
-- files in a trial (scripts/realschema-trial.sh).
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT c.oid::regclass AS rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p' AND c.relreplident = 'd'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
      AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
  LOOP
    EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', r.rel);
  END LOOP;
END $$;
