package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// Server answers GET /metrics on [general] host:openmetrics_port.
type Server struct {
	listen net.Listener
	http   *http.Server
	log    hclog.Logger
}

// Listen opens the metrics socket on host:port and prepares to serve r.
// Call Serve next.
func Listen(host string, port int, r *prometheus.Registry, logger hclog.Logger) (*Server, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("openmetrics: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", Handler(r))
	return &Server{listen: l, http: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, log: logger.Named("metrics")}, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.listen.Addr().String() }

// Serve answers scrapes until ctx ends, then shuts down.
func (s *Server) Serve(ctx context.Context) error {
	s.log.Info("serving OpenMetrics", "url", "http://"+s.Addr()+"/metrics")
	done := make(chan error, 1)
	go func() { done <- s.http.Serve(s.listen) }()
	select {
	case err := <-done:
		return fmt.Errorf("openmetrics: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.http.Shutdown(sctx); err != nil {
		return fmt.Errorf("openmetrics: shutdown: %w", err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("openmetrics: %w", err)
	}
	return nil
}
