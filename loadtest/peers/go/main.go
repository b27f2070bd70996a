// Command gopeer is the Go net/http peer of greenhttp's load-test comparison: the same routes
// as build/greenhttp (issue 4), written the way a Go programmer would, standard library only,
// so the one-goroutine-per-connection design can be measured against its original.
//
// Routes: /plaintext and /json as TechEmpower specifies them, POST /echo, /sleep?ms=N,
// /blocking?ms=N (a real nanosleep: the goroutine's M blocks in a syscall and sysmon hands its
// P to another M, Go's equivalent of green::blocking), /work?ms=N (CPU loop), /spawn?n=N
// (fan-out joined by a WaitGroup), /static/* (http.FileServer), /healthz, /readyz, /metrics.
//
// SIGTERM/SIGINT: /readyz turns 503 at once, then http.Server.Shutdown stops accepting, lets
// in-flight requests finish and closes idle connections, bounded by --shutdown-timeout.
// --drain-delay keeps accepting (and answering 503 on /readyz) for a while first, so a load
// balancer's health check can take the instance out before connections are refused.
//
// --tls-cert/--tls-key serve HTTPS instead (crypto/tls, Go's defaults: TLS 1.2 and 1.3,
// session tickets with keys Go rotates itself; Go has no server-side session cache), HTTP/1.1
// only: HTTP/2 is turned off, as the HTTPS scenarios measure HTTP/1.1 (issue 15).
// --http2 (with --tls-cert) leaves it on: ServeTLS offers h2 then http/1.1 in ALPN and serves
// h2 with net/http's bundled HTTP/2 server at its defaults (issue 17's h2-tls and h2-1m). Go
// 1.19's standard library has no cleartext HTTP/2 (h2c is in golang.org/x/net only).
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	ready    atomic.Bool
	requests atomic.Int64
	openConn atomic.Int64
)

// queryInt reads a non-negative integer query parameter, capped so a request cannot hold the
// server for long; a missing or bad value gives def.
func queryInt(r *http.Request, name string, def, max int) int {
	v, err := strconv.Atoi(r.URL.Query().Get(name))
	if err != nil || v < 0 {
		return def
	}
	if v > max {
		return max
	}
	return v
}

func plaintext(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["Server"] = []string{"Go"}
	h["Content-Type"] = []string{"text/plain"}
	io.WriteString(w, "Hello, World!")
}

type message struct {
	Message string `json:"message"`
}

func jsonHandler(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["Server"] = []string{"Go"}
	h["Content-Type"] = []string{"application/json"}
	// TechEmpower requires serialising a new object per request.
	b, _ := json.Marshal(&message{Message: "Hello, World!"})
	w.Write(b)
}

func echo(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	w.Header()["Server"] = []string{"Go"}
	w.Header()["Content-Type"] = []string{"application/octet-stream"}
	w.Write(body)
}

func sleepHandler(w http.ResponseWriter, r *http.Request) {
	ms := queryInt(r, "ms", 10, 10000)
	time.Sleep(time.Duration(ms) * time.Millisecond)
	fmt.Fprintf(w, "slept %d ms\n", ms)
}

func blocking(w http.ResponseWriter, r *http.Request) {
	ms := queryInt(r, "ms", 10, 10000)
	ts := syscall.NsecToTimespec(int64(ms) * int64(time.Millisecond))
	for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
	}
	fmt.Fprintf(w, "blocked %d ms\n", ms)
}

func work(w http.ResponseWriter, r *http.Request) {
	ms := queryInt(r, "ms", 10, 10000)
	deadline := time.Now().Add(time.Duration(ms) * time.Millisecond)
	x, n := uint64(88172645463325252), 0
	for time.Now().Before(deadline) {
		for i := 0; i < 1000; i++ { // xorshift: work the compiler cannot remove
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
		}
		n++
	}
	fmt.Fprintf(w, "worked %d ms (%d rounds, %x)\n", ms, n, x&0xff)
}

func spawn(w http.ResponseWriter, r *http.Request) {
	n := queryInt(r, "n", 100, 100000)
	var wg sync.WaitGroup
	var sum atomic.Int64
	wg.Add(n)
	for i := 0; i < n; i++ {
		go func(i int) {
			sum.Add(int64(i))
			wg.Done()
		}(i)
	}
	wg.Wait()
	fmt.Fprintf(w, "spawned %d sum %d\n", n, sum.Load())
}

func healthz(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") }

func readyz(w http.ResponseWriter, r *http.Request) {
	if !ready.Load() {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ready\n")
}

func metrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "http_requests_total %d\nhttp_open_connections %d\ngo_goroutines %d\n",
		requests.Load(), openConn.Load(), runtime.NumGoroutine())
}

func main() {
	listen := flag.String("listen", "0.0.0.0:8080", "HOST:PORT to listen on")
	threads := flag.Int("threads", 0, "GOMAXPROCS (0: leave it to $GOMAXPROCS or the CPU count)")
	staticDir := flag.String("static-dir", "", "directory served under /static/")
	shutdownTimeout := flag.Duration("shutdown-timeout", 30*time.Second, "drain deadline on SIGTERM")
	drainDelay := flag.Duration("drain-delay", 0, "keep accepting this long after SIGTERM with /readyz 503")
	idleTimeout := flag.Duration("idle-timeout", 60*time.Second, "keep-alive idle timeout")
	readHeaderTimeout := flag.Duration("read-header-timeout", 10*time.Second, "header read timeout")
	tlsCert := flag.String("tls-cert", "", "PEM certificate chain: serve HTTPS (with --tls-key)")
	tlsKey := flag.String("tls-key", "", "PEM private key of --tls-cert")
	http2 := flag.Bool("http2", false, "with --tls-cert: offer h2 in ALPN (net/http's HTTP/2)")
	flag.String("access-log", "off", "accepted for flag compatibility with greenhttp; ignored")
	flag.Parse()
	if *threads > 0 {
		runtime.GOMAXPROCS(*threads)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/plaintext", plaintext)
	mux.HandleFunc("/json", jsonHandler)
	mux.HandleFunc("/echo", echo)
	mux.HandleFunc("/sleep", sleepHandler)
	mux.HandleFunc("/blocking", blocking)
	mux.HandleFunc("/work", work)
	mux.HandleFunc("/spawn", spawn)
	mux.HandleFunc("/healthz", healthz)
	mux.HandleFunc("/readyz", readyz)
	mux.HandleFunc("/metrics", metrics)
	if *staticDir != "" {
		mux.Handle("/static/", http.StripPrefix("/static/", http.FileServer(http.Dir(*staticDir))))
	}
	counted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		mux.ServeHTTP(w, r)
	})

	srv := &http.Server{
		Handler:           counted,
		IdleTimeout:       *idleTimeout,
		ReadHeaderTimeout: *readHeaderTimeout,
		ErrorLog:          log.New(io.Discard, "", 0),
		ConnState: func(c net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				openConn.Add(1)
			case http.StateClosed, http.StateHijacked:
				openConn.Add(-1)
			}
		},
	}
	if *tlsCert != "" && !*http2 {
		// A non-nil empty map turns off the automatic HTTP/2 of ServeTLS.
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gopeer:", err)
		os.Exit(2)
	}
	ready.Store(true)

	done := make(chan struct{})
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		ready.Store(false)
		time.Sleep(*drainDelay)
		ctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "gopeer: shutdown:", err)
		}
		close(done)
	}()
	fmt.Fprintf(os.Stderr, "gopeer: %s GOMAXPROCS=%d listening on %s\n",
		runtime.Version(), runtime.GOMAXPROCS(0), ln.Addr())
	serve := func() error { return srv.Serve(ln) }
	if *tlsCert != "" {
		serve = func() error { return srv.ServeTLS(ln, *tlsCert, *tlsKey) }
	}
	if err := serve(); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "gopeer:", err)
		os.Exit(1)
	}
	<-done
}
