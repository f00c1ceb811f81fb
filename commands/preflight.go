package commands

import (
	"context"

	"github.com/reshard/reshard/sync/preflight"
)

// preflight runs the checks of a command that starts a task, synchronously
// and before anything is created: a refusal is the command's answer (an
// ErrorResponse listing everything to fix) and no task, slot, schema or
// state exists afterwards. The findings that do not stop the command come
// back as notices (sent to the admin client as NOTICEs, and logged).
func (e *Executor) preflight(ctx context.Context, r Route, req preflight.Request) ([]string, error) {
	j, err := e.newJob(r, "")
	if err != nil {
		return nil, engineError(err)
	}
	rep, err := preflight.Run(ctx, j, req)
	if err != nil {
		return nil, engineError(err)
	}
	for _, n := range rep.Notices {
		e.Logger.Warn("preflight", "command", string(req.Command), "notice", n)
	}
	return rep.Notices, nil
}
