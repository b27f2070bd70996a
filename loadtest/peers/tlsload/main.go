// Command tlsload is the load generator of the load test's full-handshake scenarios: every
// request on a new TLS connection, like `wrk -H "Connection: close"`, but with session
// resumption off unless -resume is given. wrk cannot turn resumption off: it keeps one SSL
// object per connection slot and, on reconnecting, SSL_clear()s it, which keeps the session,
// so its next SSL_connect resumes (wrk's src/ssl.c, ssl_close and ssl_init).
//
// Each of -c goroutines loops for -d: dial, handshake (ALPN http/1.1, no certificate
// verification, as wrk), GET the path with "Connection: close", read the whole response,
// close. It prints one line in the format of loadtest/wrk/report.lua, so the harness reads it
// as a wrk run: "LOADTEST {json}". Latency is the whole connection (dial, handshake, request,
// response), not the request alone as in wrk.
//
// -keepalive is the measured side of the handshake-flood scenario: it opens its -c connections
// first (a handshake and one request each), prints "ESTABLISHED" on stdout, waits -lead (the
// harness starts the flood then), and only then measures keep-alive requests for -d, latency
// per request as in wrk. wrk would open its connections inside the measured run, while the
// flood is under way, and so measure its own handshakes queued behind the flood's rather than
// established connections. Standard library only (built offline).
package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"
)

type counts struct {
	requests, bytes, connect, read, write, status, timeout, resumed int64
	lat                                                             []time.Duration
}

func one(addr, host, path string, cfg *tls.Config, c *counts) {
	start := time.Now()
	raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		c.connect++
		return
	}
	conn := tls.Client(raw, cfg)
	defer conn.Close()
	conn.SetDeadline(start.Add(10 * time.Second))
	if err := conn.Handshake(); err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			c.timeout++
		} else {
			c.connect++
		}
		return
	}
	if conn.ConnectionState().DidResume {
		c.resumed++
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		c.write++
		return
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		c.read++
		return
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		c.read++
		return
	}
	if resp.StatusCode >= 400 {
		c.status++
	}
	c.requests++
	c.bytes += n
	c.lat = append(c.lat, time.Since(start))
}

// keepalive sends GET path on conn, one request after the other, the first one whatever the
// time, until stop.
func keepalive(conn *tls.Conn, host, path string, stop time.Time, c *counts) {
	req := "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
	br := bufio.NewReader(conn)
	for first := true; first || time.Now().Before(stop); first = false {
		start := time.Now()
		conn.SetDeadline(start.Add(10 * time.Second))
		if _, err := io.WriteString(conn, req); err != nil {
			c.write++
			return
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				c.timeout++
			} else {
				c.read++
			}
			return
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			c.read++
			return
		}
		if resp.StatusCode >= 400 {
			c.status++
		}
		c.requests++
		c.bytes += n
		c.lat = append(c.lat, time.Since(start))
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "HOST:PORT of the HTTPS server")
	path := flag.String("path", "/plaintext", "request path")
	conns := flag.Int("c", 100, "connections at once (goroutines)")
	dur := flag.Duration("d", 8*time.Second, "how long to run")
	resume := flag.Bool("resume", false, "resume sessions (a client session cache per goroutine)")
	keep := flag.Bool("keepalive", false, "keep-alive connections opened before measuring")
	lead := flag.Duration("lead", time.Second, "-keepalive: wait after ESTABLISHED")
	flag.Parse()

	host, _, _ := net.SplitHostPort(*addr)
	all := make([]counts, *conns)
	var wg sync.WaitGroup
	if *keep {
		cfg := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"},
			ServerName: host}
		held := make([]*tls.Conn, *conns)
		for i := range held {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", *addr, cfg)
			if err != nil {
				fmt.Fprintln(os.Stderr, "tlsload:", err)
				os.Exit(1)
			}
			var warm counts
			keepalive(conn, host, *path, time.Time{}, &warm)
			if warm.requests != 1 {
				fmt.Fprintln(os.Stderr, "tlsload: the first request on a connection failed")
				os.Exit(1)
			}
			held[i] = conn
		}
		fmt.Println("ESTABLISHED")
		time.Sleep(*lead)
		start := time.Now()
		stop := start.Add(*dur)
		for i := range held {
			wg.Add(1)
			go func(conn *tls.Conn, c *counts) {
				defer wg.Done()
				defer conn.Close()
				keepalive(conn, host, *path, stop, c)
			}(held[i], &all[i])
		}
		wg.Wait()
		report(all, time.Since(start))
		return
	}
	start := time.Now()
	stop := start.Add(*dur)
	for i := range all {
		wg.Add(1)
		go func(c *counts) {
			defer wg.Done()
			cfg := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"},
				ServerName: host}
			if *resume {
				cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
			}
			for time.Now().Before(stop) {
				one(*addr, host, *path, cfg, c)
			}
		}(&all[i])
	}
	wg.Wait()
	report(all, time.Since(start))
}

// report prints the LOADTEST line (loadtest/wrk/report.lua's format) of all the goroutines.
func report(all []counts, elapsed time.Duration) {
	var t counts
	for i := range all {
		c := &all[i]
		t.requests += c.requests
		t.bytes += c.bytes
		t.connect += c.connect
		t.read += c.read
		t.write += c.write
		t.status += c.status
		t.timeout += c.timeout
		t.resumed += c.resumed
		t.lat = append(t.lat, c.lat...)
	}
	sort.Slice(t.lat, func(i, j int) bool { return t.lat[i] < t.lat[j] })
	pct := func(p float64) float64 {
		if len(t.lat) == 0 {
			return 0
		}
		i := int(p / 100 * float64(len(t.lat)))
		if i >= len(t.lat) {
			i = len(t.lat) - 1
		}
		return float64(t.lat[i].Microseconds())
	}
	var sum time.Duration
	for _, d := range t.lat {
		sum += d
	}
	mean := 0.0
	if len(t.lat) > 0 {
		mean = float64(sum.Microseconds()) / float64(len(t.lat))
	}
	out, _ := json.Marshal(map[string]any{
		"requests": t.requests, "duration_us": elapsed.Microseconds(), "bytes": t.bytes,
		"connect": t.connect, "read": t.read, "write": t.write, "status": t.status,
		"timeout": t.timeout, "resumed": t.resumed, "p50_us": pct(50), "p90_us": pct(90),
		"p99_us": pct(99), "p999_us": pct(99.9), "max_us": pct(100), "mean_us": mean,
	})
	fmt.Printf("LOADTEST %s\n", out)
	if t.requests == 0 {
		fmt.Fprintln(os.Stderr, "tlsload: no request completed")
		os.Exit(1)
	}
}
