package pgq_test

// Through a real PgBouncer in transaction pooling mode (the repository's
// scripts/pgbouncer.sh: pool_mode = transaction, two server connections). Needs pgbouncer
// (scripts/install-deps.sh postgres); without it the test fails.

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pgq "github.com/libpgq/libpgq/bindings/go"
)

// startBouncer runs a PgBouncer in front of the server of dsn (a key=value DSN or URL)
// until the test ends, and returns dsn pointed at it.
func startBouncer(t *testing.T, dsn string) string {
	t.Helper()
	script, err := filepath.Abs("../../scripts/pgbouncer.sh")
	if err != nil {
		t.Fatal(err)
	}
	host, port, user, password := serverParts(t, dsn)
	// Under /tmp: as root the pooler runs as postgres, which must reach the directory.
	parent, err := os.MkdirTemp("/tmp", "pgq-gobouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, "b")
	args := []string{"start", dir, host, port, user}
	if password != "" {
		args = append(args, password)
	}
	cmd := exec.Command(script, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s start: %v (is pgbouncer installed? scripts/install-deps.sh postgres)", script, err)
	}
	t.Cleanup(func() {
		stop := exec.Command(script, "stop", dir)
		stop.Stderr = os.Stderr
		_ = stop.Run()
	})
	// "host=127.0.0.1 port=N": later keys win in a key=value DSN.
	listen := strings.TrimSpace(string(out))
	if strings.Contains(dsn, "://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		lhost, lport, _, _ := serverParts(t, listen)
		u.Host = lhost + ":" + lport
		return u.String()
	}
	return dsn + " " + listen
}

// serverParts takes host, port, user and password out of a DSN (no quoting in key=value
// form: the test DSNs have none).
func serverParts(t *testing.T, dsn string) (host, port, user, password string) {
	host, port = "127.0.0.1", "5432"
	if strings.Contains(dsn, "://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		if h := u.Hostname(); h != "" {
			host = h
		}
		if p := u.Port(); p != "" {
			port = p
		}
		user = u.User.Username()
		password, _ = u.User.Password()
		return
	}
	for _, kv := range strings.Fields(dsn) {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "host":
			host = v
		case "port":
			port = v
		case "user":
			user = v
		case "password":
			password = v
		}
	}
	if user == "" {
		user = os.Getenv("USER")
	}
	return
}

func TestTransactionPoolingBehindPgBouncer(t *testing.T) {
	direct, dsn := openClient(t) // installs the schema directly
	pooled, err := pgq.Open(startBouncer(t, dsn), pgq.WithPoolSize(4), pgq.WithTransactionPooling(true))
	if err != nil {
		t.Fatalf("Open through pgbouncer: %v", err)
	}
	defer pooled.Close()
	setupQueue(t, pooled, "q", "c")

	// The ticker needs a direct connection: refused on the pooled client, run on the other.
	_, err = pooled.StartTicker()
	wantStatus(t, err, pgq.ErrInvalidInput)
	startTicker(t, direct)

	var got seen
	w, err := pooled.StartWorker("q", "c", func(b *pgq.Batch) error {
		evs, err := b.Events()
		if err != nil {
			return err
		}
		got.add(evs)
		return nil
	}, pgq.WithWorkerPollInterval(20*time.Millisecond))
	if err != nil {
		t.Fatalf("StartWorker: %v", err)
	}
	defer w.Close()

	// Three goroutines produce at once: four client connections over two server connections.
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				if _, err := pooled.Send("q", pgq.TextEvent("t", fmt.Sprintf("%d-%d", g, i))); err != nil {
					errs <- err
					return
				}
			}
			tx, err := pooled.Begin()
			if err == nil {
				if _, err = tx.Send("q", pgq.TextEvent("t", fmt.Sprintf("%d-tx", g))); err == nil {
					err = tx.Commit()
				} else {
					_ = tx.Rollback()
				}
			}
			if err != nil {
				errs <- err
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("produce through pgbouncer: %v", err)
	}
	const n = 33
	waitUntil(t, "the worker to handle every event", 20*time.Second, func() bool { return got.count() >= n })
	st, err := w.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.DBErrors != 0 || st.Listening || st.Threads != 1 {
		t.Fatalf("worker stats %+v: want no database errors and no listener", st)
	}
	if len(got.ids) != n || got.count() != n {
		t.Fatalf("%d distinct events in %d deliveries, want %d once each", len(got.ids), got.count(), n)
	}
}
