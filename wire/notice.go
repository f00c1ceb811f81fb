package wire

import (
	"context"

	"github.com/jeroenrinzema/psql-wire/pkg/buffer"
	"github.com/jeroenrinzema/psql-wire/pkg/types"
)

// sendNotice writes a NoticeResponse (severity NOTICE, SQLSTATE 00000)
// on the connection: psql prints it as "NOTICE:  msg", drivers hand it to
// their notice handler. psql-wire has no API for notices, so it goes
// through the connection's writer kept in the context at login.
func sendNotice(ctx context.Context, msg string) error {
	w, _ := ctx.Value(writerCtx{}).(*buffer.Writer)
	if w == nil {
		return nil
	}
	w.Start(types.ServerNoticeResponse)
	for _, f := range [][2]string{{"S", "NOTICE"}, {"V", "NOTICE"}, {"C", "00000"}, {"M", msg}} {
		w.AddByte(f[0][0])
		w.AddString(f[1])
		w.AddNullTerminate()
	}
	w.AddByte(0)
	return w.End()
}
