package ddl

import (
	"context"
	"fmt"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/sync/job"
)

// Enabled tells whether the job's configuration replicates DDL
// ([general] resharding_ddl = "replicate").
func Enabled(j *job.Job) bool {
	return j.Catalog.Config.General.ReshardingDDL == catalog.DDLReplicate
}

// Prepare installs DDL capture on every source shard of the job, when the
// configuration asks for it: preflight first (a superuser, a publication
// that publishes inserts), on every shard, so a refusal names everything
// to fix and installs nothing.
func Prepare(ctx context.Context, j *job.Job) error {
	if !Enabled(j) {
		return nil
	}
	conns, err := j.ConnectSources(ctx)
	if err != nil {
		return err
	}
	defer conns.Close()
	var problems []string
	for k, c := range conns {
		p, err := Problem(ctx, c, "source "+j.Source.Shards[k].Primary.String(), j.Publication)
		if err != nil {
			return err
		}
		if p != "" {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		return job.Refused("42501", "cannot replicate DDL", problems)
	}
	for k, c := range conns {
		if err := Install(ctx, c, j.Publication); err != nil {
			return fmt.Errorf("source shard %d: %w", k, err)
		}
	}
	j.Logger("ddl").Info("DDL capture installed: the source's schema changes reach the shards through the stream", "source_shards", len(conns))
	return nil
}
