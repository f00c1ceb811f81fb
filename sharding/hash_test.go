package sharding

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// TestDesignVectors checks DESIGN §8's table. Its "hash" column is the row
// hash: the type's extended hash with HashPartitionSeed folded by
// HashCombine64(0, h), which is what the shard is taken modulo of.
func TestDesignVectors(t *testing.T) {
	u := [16]byte{0x55, 0x0e, 0x84, 0x00, 0xe2, 0x9b, 0x41, 0xd4, 0xa7, 0x16, 0x44, 0x66, 0x55, 0x44, 0x00, 0x00}
	tests := []struct {
		name   string
		typ    DataType
		key    string // text form
		hash   uint64
		shards [4]int // for n = 2, 3, 4, 7
	}{
		{"bigint 42", BigInt, "42", 12669485132091644514, [4]int{0, 0, 2, 0}},
		{"bigint 1", BigInt, "1", 11274504255086170040, [4]int{0, 2, 0, 5}},
		{"text hello", Text, "hello", 2670230039693765524, [4]int{0, 1, 0, 3}},
		{"uuid", UUID, "550e8400-e29b-41d4-a716-446655440000", 1837617939103458761, [4]int{1, 2, 1, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := Hash(tt.typ, FormatText, []byte(tt.key))
			if err != nil {
				t.Fatal(err)
			}
			if h != tt.hash {
				t.Fatalf("row hash %d, want %d", h, tt.hash)
			}
			for i, n := range []int{2, 3, 4, 7} {
				f, err := NewFunction(tt.typ, n, nil, DefaultAuto)
				if err != nil {
					t.Fatal(err)
				}
				got, err := f.Shard(FormatText, []byte(tt.key), false)
				if err != nil {
					t.Fatal(err)
				}
				if got != tt.shards[i] || ShardOfHash(h, n) != tt.shards[i] {
					t.Errorf("n=%d: shard %d (ShardOfHash %d), want %d", n, got, ShardOfHash(h, n), tt.shards[i])
				}
			}
		})
	}
	// The typed entry points agree.
	if HashInt(42) != 12669485132091644514 || HashText([]byte("hello")) != 2670230039693765524 || HashUUID(u) != 1837617939103458761 {
		t.Fatal("typed hashes disagree with the vectors")
	}
	// The table's hash is the combined one, not the raw extended hash.
	if raw := HashInt8Extended(42, HashPartitionSeed); raw == 12669485132091644514 || HashCombine64(0, raw) != 12669485132091644514 {
		t.Fatalf("raw hash %d: the vectors are expected to be hash_combine64(0, raw)", raw)
	}
}

// pgTextHashes are PostgreSQL 15's hashtextextended(s, 0) and
// hashtextextended(s, HASH_PARTITION_SEED) for the prefixes of one
// sentence: every tail length of lookup3 and several 12-byte blocks.
var pgTextHashes = []struct {
	s              string
	seed0, seedHPS int64
}{
	{"", -6939563903564495251, -5700645584453517373},
	{"T", -1338225982912146468, -5744778375200340036},
	{"Th", 5593687159563776749, -3898278563181308333},
	{"The", -7897229297791927534, 3515404771647576006},
	{"The ", 1214481609633084541, -2252019373604324759},
	{"The q", -985326184270896746, -5703651373769001236},
	{"The qu", 3470145380339167397, -949884056120241652},
	{"The qui", -2752675330521770124, 2490044116434112174},
	{"The quic", -1544529330263215465, 8197177666979083362},
	{"The quick", -3165377590426475634, 1128990387745890170},
	{"The quick ", 6613948839295992241, -7249906615326372176},
	{"The quick b", 2869438648668390509, -5235799857860941163},
	{"The quick br", -9210305663925663560, -5372500833392535518},
	{"The quick bro", -3863872140344080773, 3994320958599819571},
	{"The quick brow", -2703303883130605159, -5863929275387938153},
	{"The quick brown", 130785500723762325, 3195964990734746365},
	{"The quick brown ", -7818762430148052278, -6590194492130876340},
	{"The quick brown f", 3451059601990827723, 7392068388824108558},
	{"The quick brown fo", 1859349653040336744, -1431726267575042354},
	{"The quick brown fox", 6377859067987231983, -799676844905196895},
	{"The quick brown fox ", 1395817125874287870, -2006078361498342426},
	{"The quick brown fox j", 4382656982158088131, -5520832946600929388},
	{"The quick brown fox ju", -8173415927686238050, 1104219756816140633},
	{"The quick brown fox jum", -6349138520123274615, -126307401200583330},
	{"The quick brown fox jump", 8360766130984247540, -6607058234038157299},
	{"The quick brown fox jumps", -6568008242738964476, 5652438115739902581},
	{"The quick brown fox jumps ", -8510399028364357311, 1201374509327364659},
	{"The quick brown fox jumps o", -5983171337440081292, 1093108374719870778},
	{"The quick brown fox jumps ov", 4650743464175597606, 2679886066821309172},
	{"The quick brown fox jumps ove", 4922972945882926808, -1453668621564831766},
	{"The quick brown fox jumps over", -2952746244513659538, -23054996183676132},
	{"The quick brown fox jumps over ", 240566037469194709, 6095676194959125135},
	{"The quick brown fox jumps over t", 936837974110797635, -4311473421285960088},
	{"The quick brown fox jumps over th", -3200491468863373810, -6121453733211832554},
	{"The quick brown fox jumps over the", -6696201807748526001, 8383156270552832646},
	{"The quick brown fox jumps over the ", -5603389817488540983, 6179957028112146251},
	{"The quick brown fox jumps over the l", 5172465187460571644, 442266231356727434},
	{"The quick brown fox jumps over the la", -6341692122201812976, 7921285396333654282},
	{"The quick brown fox jumps over the laz", -1165991950917522782, 8814142132011124817},
	{"The quick brown fox jumps over the lazy", 7590948603917656586, -4181597190049050940},
	{"The quick brown fox jumps over the lazy ", -4847668724781447815, -1052878663215084783},
}

func TestHashBytesExtendedMatchesPostgres(t *testing.T) {
	for _, tt := range pgTextHashes {
		if got := HashBytesExtended([]byte(tt.s), 0); got != uint64(tt.seed0) {
			t.Errorf("%q seed 0: %d, want %d", tt.s, int64(got), tt.seed0)
		}
		if got := HashBytesExtended([]byte(tt.s), HashPartitionSeed); got != uint64(tt.seedHPS) {
			t.Errorf("%q partition seed: %d, want %d", tt.s, int64(got), tt.seedHPS)
		}
		if got := HashText([]byte(tt.s)); got != HashCombine64(0, uint64(tt.seedHPS)) {
			t.Errorf("%q row hash %d", tt.s, got)
		}
	}
}

// pgInt8Hashes are PostgreSQL 15's hashint8extended(v, HASH_PARTITION_SEED)
// and hashint8extended(v, 0).
var pgInt8Hashes = []struct {
	v              int64
	seedHPS, seed0 int64
}{
	{0, -4403592609991167795, 4154612158245552303},
	{1, 5968994663651403477, -3670598878359251130},
	{-1, -5017072347659237694, -1888257769727981238},
	{42, 7363975540656877951, 8010225493015854792},
	{2147483647, -6050265599104649060, -9109110466470504941},
	{-2147483648, 4938542303000433043, 1977219185673256887},
	{4294967296, 5968994663651403477, -3670598878359251130},
	{-4294967297, 2147707635919668551, 495194309054116481},
	{math.MaxInt64, 4938542303000433043, 1977219185673256887},
	{math.MinInt64, -6050265599104649060, -9109110466470504941},
}

func TestHashInt8ExtendedMatchesPostgres(t *testing.T) {
	for _, tt := range pgInt8Hashes {
		if got := HashInt8Extended(tt.v, HashPartitionSeed); got != uint64(tt.seedHPS) {
			t.Errorf("%d partition seed: %d, want %d", tt.v, int64(got), tt.seedHPS)
		}
		if got := HashInt8Extended(tt.v, 0); got != uint64(tt.seed0) {
			t.Errorf("%d seed 0: %d, want %d", tt.v, int64(got), tt.seed0)
		}
	}
}

// TestSeededState derives the constants HashInt starts from.
func TestSeededState(t *testing.T) {
	a := uint32(0x9e3779b9 + 4 + 3923095)
	b, c := a, a
	seed := HashPartitionSeed
	a += uint32(seed >> 32)
	b += uint32(seed)
	a, b, c = mix(a, b, c)
	if a != seededA || b != seededB || c != seededC {
		t.Fatalf("seeded state %#x %#x %#x", a, b, c)
	}
}

// TestHashIntIsHashInt8Extended checks the precomputed fast path against
// the plain composition, and that narrower widths hash like int8 as
// PostgreSQL's hashint2extended and hashint4extended do (they hash the
// sign-extended uint32 directly).
func TestHashIntIsHashInt8Extended(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	vals := []int64{0, 1, -1, math.MaxInt64, math.MinInt64, math.MaxInt32, math.MinInt32, math.MaxInt16, math.MinInt16, 1 << 32, -(1 << 32)}
	for range 10000 {
		vals = append(vals, int64(r.Uint64()), int64(int32(r.Uint32())), int64(int16(r.Uint32())))
	}
	for _, v := range vals {
		want := HashCombine64(0, HashInt8Extended(v, HashPartitionSeed))
		if got := HashInt(v); got != want {
			t.Fatalf("HashInt(%d) = %d, want %d", v, got, want)
		}
		if v == int64(int32(v)) {
			if got := HashUint32Extended(uint32(int32(v)), HashPartitionSeed); got != HashInt8Extended(v, HashPartitionSeed) {
				t.Fatalf("int4 hash of %d differs from its int8 hash", v)
			}
		}
	}
}

// alignedHash is hash_bytes_extended's aligned code path as PostgreSQL
// runs it on a little-endian machine: whole words are fetched for the
// 12-byte blocks and for the 4- and 8-byte tails. It must equal the
// byte-wise path for every length.
func alignedHash(k []byte, seed uint64) uint64 {
	word := func(i int) uint32 { return binary.LittleEndian.Uint32(k[4*i:]) }
	a := 0x9e3779b9 + uint32(len(k)) + 3923095
	b, c := a, a
	if seed != 0 {
		a += uint32(seed >> 32)
		b += uint32(seed)
		a, b, c = mix(a, b, c)
	}
	for len(k) >= 12 {
		a += word(0)
		b += word(1)
		c += word(2)
		a, b, c = mix(a, b, c)
		k = k[12:]
	}
	n := len(k)
	if n >= 9 {
		for i := n - 1; i >= 8; i-- {
			c += uint32(k[i]) << (8 * (i - 7))
		}
	}
	switch {
	case n >= 8:
		b += word(1)
		a += word(0)
	case n >= 4:
		for i := n - 1; i >= 4; i-- {
			b += uint32(k[i]) << (8 * (i - 4))
		}
		a += word(0)
	default:
		for i := n - 1; i >= 0; i-- {
			a += uint32(k[i]) << (8 * i)
		}
	}
	_, b, c = final(a, b, c)
	return uint64(b)<<32 | uint64(c)
}

func TestHashBytesAlignedPathAgrees(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for n := range 100 {
		for range 20 {
			k := make([]byte, n)
			for i := range k {
				k[i] = byte(r.Uint32())
			}
			for _, seed := range []uint64{0, HashPartitionSeed, r.Uint64()} {
				if got, want := HashBytesExtended(k, seed), alignedHash(k, seed); got != want {
					t.Fatalf("len %d seed %#x: %#x, aligned path %#x", n, seed, got, want)
				}
			}
		}
	}
}

func TestNullIsShardZero(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 16} {
		if ShardOfHash(HashNull, n) != 0 {
			t.Fatalf("NULL not on shard 0 of %d", n)
		}
	}
}

func TestShardOfHashUnsigned(t *testing.T) {
	// A row hash with the top bit set is taken modulo n as unsigned.
	h := uint64(1<<63 + 5)
	if got, want := ShardOfHash(h, 7), int(h%7); got != want {
		t.Fatalf("got %d, want %d", got, want)
	}
}
