package preflight

import (
	"strings"
	"testing"

	"github.com/reshard/reshard/sharding"
	"github.com/reshard/reshard/sync/copier"
)

func table(t *testing.T, name, column string, typ sharding.DataType, mapped bool) *copier.Table {
	t.Helper()
	rt := sharding.Table{Omni: column == "", Type: typ, Shards: 2}
	r, err := sharding.NewRouter(rt)
	if err != nil {
		t.Fatal(err)
	}
	return &copier.Table{Schema: "public", Name: name, Omni: column == "", ShardColumn: column, Router: r, Mapped: mapped}
}

// crossShard tells a foreign key that can point at a row on another shard
// from one that cannot, as Chinook, Northwind and Pagila have them.
func TestCrossShard(t *testing.T) {
	customer := table(t, "customer", "customer_id", sharding.Integer, false)
	invoice := table(t, "invoice", "customer_id", sharding.BigInt, false)
	invoiceLine := table(t, "invoice_line", "", 0, false)
	country := table(t, "country", "", 0, false)
	byUUID := table(t, "device", "customer_id", sharding.UUID, false)
	mapped := table(t, "region_orders", "customer_id", sharding.BigInt, true)
	for _, c := range []struct {
		name     string
		fk       foreignKey
		from, to *copier.Table
		want     string // "" when the key cannot cross shards
	}{
		{"co-located, integer widths hash alike", foreignKey{cols: []string{"customer_id"}, refCols: []string{"customer_id"}}, invoice, customer, ""},
		{"composite key carrying the sharding column", foreignKey{cols: []string{"invoice_id", "customer_id"}, refCols: []string{"invoice_id", "customer_id"}}, invoice, invoice, ""},
		{"to an omni table", foreignKey{cols: []string{"country_id"}, refCols: []string{"id"}}, customer, country, ""},
		{"omni to omni", foreignKey{cols: []string{"country_id"}, refCols: []string{"id"}}, invoiceLine, country, ""},
		{"omni to sharded (Chinook invoice_line)", foreignKey{cols: []string{"invoice_id"}, refCols: []string{"invoice_id"}}, invoiceLine, invoice, "the omni table public.invoice_line is whole on every shard"},
		{"the key lacks the sharding column (Pagila payment.rental_id)", foreignKey{cols: []string{"rental_id"}, refCols: []string{"rental_id"}}, invoice, customer, "both are sharded by customer_id, which the foreign key does not carry"},
		{"the sharding column at another position", foreignKey{cols: []string{"customer_id", "x"}, refCols: []string{"x", "customer_id"}}, invoice, customer, "does not carry"},
		{"hashed as different types", foreignKey{cols: []string{"customer_id"}, refCols: []string{"customer_id"}}, byUUID, customer, "hashed as different types"},
		{"list or range mappings", foreignKey{cols: []string{"customer_id"}, refCols: []string{"customer_id"}}, mapped, customer, "mappings place them"},
	} {
		got := crossShard(c.fk, c.from, c.to)
		if (got == "") != (c.want == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: crossShard = %q, want %q", c.name, got, c.want)
		}
	}
}
