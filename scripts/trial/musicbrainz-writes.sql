-- Writes streamed during the MusicBrainz trial (scripts/realschema-trial.sh),
-- sharded by artist: my own SQL against MusicBrainz's tables. New artists
-- (MusicBrainz's triggers add their artist_meta rows on the source), aliases
-- moved to another artist (so between shards), deletes, omni updates.
SET search_path = musicbrainz, public;
INSERT INTO artist (gid, name, sort_name, comment)
  SELECT gen_random_uuid(), 'Trial Artist ' || g, 'Artist, Trial ' || g, 'reshard trial' FROM generate_series(1, 40) g;
INSERT INTO artist_alias (artist, name, sort_name)
  SELECT a.id, a.name || ' (alias)', a.sort_name FROM artist a WHERE a.comment = 'reshard trial';
UPDATE artist_alias SET artist = (SELECT min(id) FROM artist WHERE comment = 'reshard trial') WHERE id % 4 = 0 AND artist <> (SELECT min(id) FROM artist WHERE comment = 'reshard trial');
UPDATE artist SET comment = 'renamed in the trial' WHERE id % 5 = 0 AND comment <> 'reshard trial';
DELETE FROM artist_alias WHERE id % 7 = 0;
UPDATE recording SET comment = 'trial' WHERE id % 3 = 0;
