// Command goproxy is the Go peer of greenhttp's `proxy` load-test scenario: the standard
// library's httputil.ReverseProxy in front of one upstream, configured as a Go programmer
// would for a proxy (not as a benchmark special): the default Director (which sets
// X-Forwarded-For) plus X-Forwarded-Proto and -Host, as greenhttp's proxy and the nginx peer
// set them, and a Transport whose idle pool per host is raised from Go's default of 2 to 64
// per GOMAXPROCS: the nginx peer's `keepalive 64` is per worker, one worker per core, so this
// is the same number of idle upstream connections for the process. With one pool of 64 for
// the whole process, c=100 overflows it: every response past the 64th idle connection closes
// its connection and the next request dials again (measured: ~500 TIME_WAITs a second at
// c=100 on 2 cores, ~20% fewer requests/s), which would measure Go's default, not its proxy.
// And a BufferPool (ReverseProxy's documented hook), without which every request allocates a
// fresh 32 KiB copy buffer: ~40% more requests/s with it on 2 cores. Both make Go stronger.
//
// Usage: goproxy --listen 127.0.0.1:PORT --upstream http://127.0.0.1:BACKEND
// GOMAXPROCS sets its threads, as for the other Go peer. SIGTERM/SIGINT: a graceful Shutdown.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// bufferPool recycles the 32 KiB buffers ReverseProxy copies bodies through, which it would
// otherwise allocate once per request (a garbage-collector cost nginx's fixed proxy_buffers
// do not have).
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { return make([]byte, 32*1024) }}

func (bufferPool) Get() []byte  { return buffers.Get().([]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(b) }

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "HOST:PORT to serve on")
	upstream := flag.String("upstream", "", "http://HOST:PORT to proxy to")
	flag.Parse()
	target, err := url.Parse(*upstream)
	if err != nil || target.Scheme != "http" || target.Host == "" {
		log.Fatalf("goproxy: --upstream takes http://HOST:PORT (got %q)", *upstream)
	}

	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 64 * runtime.GOMAXPROCS(0)
	transport.MaxIdleConns = transport.MaxIdleConnsPerHost
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = transport
	proxy.BufferPool = bufferPool{}
	director := proxy.Director
	proxy.Director = func(r *http.Request) {
		host := r.Host
		director(r) // URL, X-Forwarded-For
		r.Header.Set("X-Forwarded-Proto", "http")
		r.Header.Set("X-Forwarded-Host", host)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("goproxy: %v", err)
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("listening on %s", ln.Addr())
	done := make(chan struct{})
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		close(done)
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		log.Fatalf("goproxy: %v", err)
	}
	<-done
}
