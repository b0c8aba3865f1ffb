package config

import (
	"net"
	"strconv"
)

// console checks a console section: an address to listen on, with a
// port. The console is always served over mutual TLS with the process's
// own certificate, so any interface is allowed; only `fedledger demo`
// serves one without.
func (s *source) console(f ConsoleFile) error {
	if f.Addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(f.Addr)
	if err != nil {
		return s.errorf("console.addr", "%q: %v (want host:port, e.g. 127.0.0.1:9470)", f.Addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return s.errorf("console.addr", "%q: port %q is not a port number", f.Addr, port)
	}
	return nil
}
