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
