package sharding

import "testing"

func TestRouter(t *testing.T) {
	r, err := NewRouter(Table{Column: 2, Type: Text, Shards: 3})
	if err != nil {
		t.Fatal(err)
	}
	if r.Omni() || r.Column() != 2 || r.Shards() != 3 || r.Function() == nil {
		t.Fatalf("router %+v", r)
	}
	got, err := r.Shard(FormatText, []byte("hello"), false)
	if err != nil || got != ShardOfHash(HashText([]byte("hello")), 3) {
		t.Fatalf("hello: %d, %v", got, err)
	}

	omni, err := NewRouter(Table{Omni: true, Shards: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !omni.Omni() || omni.Column() != -1 || omni.Function() != nil {
		t.Fatalf("omni router %+v", omni)
	}
	if got, err := omni.Shard(FormatBinary, []byte{1}, false); err != nil || got != AllShards {
		t.Fatalf("omni: %d, %v", got, err)
	}

	for _, bad := range []Table{
		{Column: 0, Type: BigInt, Shards: 0},
		{Column: -1, Type: BigInt, Shards: 2},
		{Column: 0, Type: 0, Shards: 2},
		{Omni: true, Shards: 0},
	} {
		if _, err := NewRouter(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// A character(n) key hashes as PostgreSQL's text of it, without its
// trailing blanks, in both formats (hashbpchar ignores them, and col::text
// drops them): 'AB   ' goes where 'AB' goes, leading blanks still count.
func TestRouterBlankPadded(t *testing.T) {
	plain, err := NewRouter(Table{Column: 0, Type: Varchar, Shards: 7})
	if err != nil {
		t.Fatal(err)
	}
	padded, err := NewRouter(Table{Column: 0, Type: Varchar, Shards: 7, BlankPadded: true})
	if err != nil {
		t.Fatal(err)
	}
	differ := false
	for _, k := range []string{"AB", "ALFKI", "x", "ü", " lead", ""} {
		want, err := plain.Shard(FormatText, []byte(k), false)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []Format{FormatText, FormatBinary} {
			got, err := padded.Shard(f, []byte(k+"     "), false)
			if err != nil || got != want {
				t.Errorf("%q padded, %v: shard %d (%v), want %d as unpadded", k, f, got, err, want)
			}
		}
		if p, _ := plain.Shard(FormatText, []byte(k+"     "), false); p != want {
			differ = true
		}
	}
	if !differ {
		t.Error("no padded key hashed elsewhere than unpadded without BlankPadded: the test shows nothing")
	}
	if s, err := padded.Shard(FormatText, nil, true); err != nil || s != 0 {
		t.Errorf("NULL key: shard %d, %v, want 0", s, err)
	}
	if _, err := NewRouter(Table{Column: 0, Type: BigInt, Shards: 2, BlankPadded: true}); err == nil {
		t.Error("a character(n) key with data_type bigint was accepted")
	}
}
