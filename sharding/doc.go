// Package sharding decides where each row lives and moves rows of COPY
// streams to their shards.
//
// Placement is PostgreSQL's own: a row belongs to shard k of n exactly when
// satisfies_hash_partition(parent, n, k, key) is true for a parent table
// partitioned BY HASH on the sharding column. The key's extended hash with
// seed HashPartitionSeed is folded into a row hash with
// HashCombine64(0, h), and the shard is that row hash modulo n (unsigned).
// A NULL key lands on shard 0. Integer keys of every width hash as int8;
// text and varchar hash their UTF-8 bytes; uuid hashes its 16 bytes.
//
// Tables may instead (or in addition) list values or ranges of values per
// shard (Mapping). An exact list match wins, then the first range that holds
// the key, then the table's Default: the hash, or none, in which case a key
// that matches nothing is an error for that row, never a copy to every
// shard.
//
// A Router applies a table's rule to a sharding key given in PostgreSQL's
// text or binary representation, as COPY and pgoutput carry it; an omni
// table's router answers AllShards.
//
// The COPY codecs read a COPY ... TO STDOUT stream in text or binary format
// row by row without allocating per row (BinaryReader, TextReader), and
// frame rows into a COPY ... FROM STDIN stream (BinaryWriter, TextWriter),
// widening int2 and int4 fields to int8 in flight where the destination
// column is wider. A Splitter ties them together: it reads one source
// stream, routes every row by its key and writes it to the stream of its
// shard, with memory bounded by its buffers.
package sharding
