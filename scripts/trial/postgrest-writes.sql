-- Writes on the source while the PostgREST trial streams (docs/real-schemas.md):
-- my own SQL. SRIDs of the database's own in PostGIS's spatial_ref_sys
-- added, changed and removed after the copy.
INSERT INTO extensions.spatial_ref_sys (srid, auth_name, auth_srid, srtext, proj4text)
  VALUES (910002, 'reshard-trial', 910002, 'LOCAL_CS["trial 2"]', '+proj=longlat +datum=WGS84 +no_defs'),
         (910003, 'reshard-trial', 910003, 'LOCAL_CS["trial 3"]', '+proj=longlat +datum=WGS84 +no_defs');
UPDATE extensions.spatial_ref_sys SET srtext = 'LOCAL_CS["trial, changed"]' WHERE srid = 910001;
DELETE FROM extensions.spatial_ref_sys WHERE srid = 910003;
