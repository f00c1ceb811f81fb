-- Run after PostgREST's test fixtures in a trial (docs/real-schemas.md):
-- my own SQL. The two views that select from themselves cannot be restored
-- from any pg_dump (pg_dump -s | psql fails on them as SCHEMA_SYNC PRE
-- does). An SRID of the database's own in PostGIS's spatial_ref_sys, as
-- users add them: the copy takes it, and leaves the extension's rows to
-- CREATE EXTENSION on the shards.
DROP VIEW test.infinite_recursion;
DROP VIEW test.self_recursive_view;
INSERT INTO extensions.spatial_ref_sys (srid, auth_name, auth_srid, srtext, proj4text)
  VALUES (910001, 'reshard-trial', 910001, 'LOCAL_CS["trial"]', '+proj=longlat +datum=WGS84 +no_defs');
