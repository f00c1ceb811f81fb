package sharding

import (
	"encoding/binary"
	"math/bits"
)

// HashPartitionSeed is the seed PostgreSQL passes to a type's extended hash
// function when it places a row in a hash partition (HASH_PARTITION_SEED in
// src/include/catalog/partition.h).
const HashPartitionSeed uint64 = 0x7A5B22367996DCFD

// hashCombineConstant is the 64 bits of random data hash_combine64 mixes in.
const hashCombineConstant uint64 = 0x49a0f4dd15e5a8e3

// HashCombine64 is PostgreSQL's hash_combine64 (src/include/common/hashfn.h):
// it folds hash b into the running hash a.
func HashCombine64(a, b uint64) uint64 {
	return a ^ (b + hashCombineConstant + (a << 54) + (a >> 7))
}

// The mix and final steps of Bob Jenkins' lookup3, as in
// src/common/hashfn.c. rot is a left rotation.

func mix(a, b, c uint32) (uint32, uint32, uint32) {
	a -= c
	a ^= bits.RotateLeft32(c, 4)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 6)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 8)
	b += a
	a -= c
	a ^= bits.RotateLeft32(c, 16)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 19)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 4)
	b += a
	return a, b, c
}

func final(a, b, c uint32) (uint32, uint32, uint32) {
	c ^= b
	c -= bits.RotateLeft32(b, 14)
	a ^= c
	a -= bits.RotateLeft32(c, 11)
	b ^= a
	b -= bits.RotateLeft32(a, 25)
	c ^= b
	c -= bits.RotateLeft32(b, 16)
	a ^= c
	a -= bits.RotateLeft32(c, 4)
	b ^= a
	b -= bits.RotateLeft32(a, 14)
	c ^= b
	c -= bits.RotateLeft32(b, 24)
	return a, b, c
}

// HashBytesExtended is PostgreSQL's hash_bytes_extended (hash_any_extended):
// the 64-bit, seeded lookup3 hash of k, with the byte order of a
// little-endian server. (PostgreSQL's aligned and unaligned code paths give
// the same result; this is the byte-wise one.) The result is b<<32 | c of
// the final lookup3 state.
func HashBytesExtended(k []byte, seed uint64) uint64 {
	// PostgreSQL takes the length as an int and keeps it in a uint32.
	a := 0x9e3779b9 + uint32(len(k)) + 3923095
	b, c := a, a
	if seed != 0 {
		// The seed is treated as a 12-byte chunk padded with zeroes.
		a += uint32(seed >> 32)
		b += uint32(seed)
		a, b, c = mix(a, b, c)
	}
	for len(k) >= 12 {
		a += binary.LittleEndian.Uint32(k)
		b += binary.LittleEndian.Uint32(k[4:])
		c += binary.LittleEndian.Uint32(k[8:])
		a, b, c = mix(a, b, c)
		k = k[12:]
	}
	// The last 0 to 11 bytes. The lowest byte of c is reserved for the
	// length, so the tail's bytes 8..10 land in c's bytes 1..3.
	switch len(k) {
	case 11:
		c += uint32(k[10]) << 24
		fallthrough
	case 10:
		c += uint32(k[9]) << 16
		fallthrough
	case 9:
		c += uint32(k[8]) << 8
		fallthrough
	case 8:
		b += uint32(k[7]) << 24
		fallthrough
	case 7:
		b += uint32(k[6]) << 16
		fallthrough
	case 6:
		b += uint32(k[5]) << 8
		fallthrough
	case 5:
		b += uint32(k[4])
		fallthrough
	case 4:
		a += uint32(k[3]) << 24
		fallthrough
	case 3:
		a += uint32(k[2]) << 16
		fallthrough
	case 2:
		a += uint32(k[1]) << 8
		fallthrough
	case 1:
		a += uint32(k[0])
	}
	_, b, c = final(a, b, c)
	return uint64(b)<<32 | uint64(c)
}

// HashUint32Extended is PostgreSQL's hash_bytes_uint32_extended
// (hash_uint32_extended): the seeded lookup3 hash of one 32-bit word.
func HashUint32Extended(k uint32, seed uint64) uint64 {
	a := uint32(0x9e3779b9 + 4 + 3923095)
	b, c := a, a
	if seed != 0 {
		a += uint32(seed >> 32)
		b += uint32(seed)
		a, b, c = mix(a, b, c)
	}
	a += k
	_, b, c = final(a, b, c)
	return uint64(b)<<32 | uint64(c)
}

// HashInt8Extended is PostgreSQL's hashint8extended. hashint2extended and
// hashint4extended give the same value for the same number, so it serves
// every integer width: the high half is folded into the low half (inverted
// for negative numbers, so that -1 and 0 differ only as small values do) and
// the result is hashed as a uint32.
func HashInt8Extended(v int64, seed uint64) uint64 {
	lo := uint32(v)
	hi := uint32(v >> 32)
	if v >= 0 {
		lo ^= hi
	} else {
		lo ^= ^hi
	}
	return HashUint32Extended(lo, seed)
}

// The lookup3 state of hash_bytes_uint32_extended once HashPartitionSeed
// is mixed in. It does not depend on the key, so HashInt starts from it
// (TestSeededState derives it again).
const (
	seededA uint32 = 0xe933553e
	seededB uint32 = 0xc5da07a8
	seededC uint32 = 0xfdfd95ed
)

// HashInt returns the row hash PostgreSQL computes for a hash-partitioned
// table whose single key column (smallint, integer or bigint) holds v:
// HashCombine64(0, HashInt8Extended(v, HashPartitionSeed)). The shard of
// the row among n is HashInt(v) % n (see ShardOfHash).
func HashInt(v int64) uint64 {
	lo := uint32(v)
	hi := uint32(v >> 32)
	if v >= 0 {
		lo ^= hi
	} else {
		lo ^= ^hi
	}
	_, b, c := final(seededA+lo, seededB, seededC)
	return HashCombine64(0, uint64(b)<<32|uint64(c))
}

// HashText returns the row hash of a text or varchar key whose
// server-encoded bytes (UTF-8) are b, as PostgreSQL computes it for a
// hash-partitioned table with a deterministic collation.
func HashText(b []byte) uint64 {
	return HashCombine64(0, HashBytesExtended(b, HashPartitionSeed))
}

// HashUUID returns the row hash of a uuid key (uuid_hash_extended hashes
// the 16 bytes of the value).
func HashUUID(u [16]byte) uint64 {
	return HashCombine64(0, HashBytesExtended(u[:], HashPartitionSeed))
}

// HashNull is the row hash of a NULL key: PostgreSQL skips NULL columns when
// it combines the column hashes, so the row hash stays 0 and a NULL key
// always lands on shard 0.
const HashNull uint64 = 0

// ShardOfHash returns the shard of a row hash among n shards: rowHash modulo
// n, as unsigned 64-bit integers, as satisfies_hash_partition computes it.
// n must be positive.
func ShardOfHash(rowHash uint64, n int) int {
	return int(rowHash % uint64(n))
}
