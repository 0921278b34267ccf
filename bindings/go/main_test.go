package pgq_test

// Test harness: every test talks to a real PostgreSQL server.
//
// PGQ_TEST_DSN names a superuser DSN of a running server (scripts/test.sh passes its
// throwaway cluster's); without it TestMain starts a private throwaway cluster with
// scripts/pg-cluster.sh and stops it at the end. Each test gets a database of its own
// (freshDB), dropped again when the test passed.

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pgq "github.com/libpgq/libpgq/bindings/go"
)

var serverDSN string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	serverDSN = os.Getenv("PGQ_TEST_DSN")
	if serverDSN == "" {
		stop, err := startCluster()
		if err != nil {
			fmt.Fprintln(os.Stderr, "pgq tests: cannot start a throwaway PostgreSQL cluster:", err)
			return 1
		}
		defer stop()
	}
	code := m.Run()
	if code == 0 {
		for _, db := range exampleDBs {
			_, _ = runPSQL(serverDSN, "drop database if exists "+db+" with (force)")
		}
	}
	return code
}

// startCluster starts a throwaway cluster with the repository's script and sets serverDSN.
func startCluster() (stop func(), err error) {
	script, err := filepath.Abs("../../scripts/pg-cluster.sh")
	if err != nil {
		return nil, err
	}
	parent, err := os.MkdirTemp("", "pgq-go-test-")
	if err != nil {
		return nil, err
	}
	// As root the server runs as the postgres user, which must be able to reach the directory.
	if err := os.Chmod(parent, 0o755); err != nil {
		os.RemoveAll(parent)
		return nil, err
	}
	dir := filepath.Join(parent, "cluster")
	cmd := exec.Command(script, "start", dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		os.RemoveAll(parent)
		return nil, fmt.Errorf("%s start: %w", script, err)
	}
	serverDSN = strings.TrimSpace(string(out))
	os.Setenv("PGQ_TEST_DSN", serverDSN)
	return func() {
		cmd := exec.Command(script, "stop", dir)
		cmd.Stderr = os.Stderr
		_ = cmd.Run()
		os.RemoveAll(parent)
	}, nil
}

// withDB returns dsn with its database replaced by db.
func withDB(dsn, db string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			u.Path = "/" + db
			return u.String()
		}
	}
	// key=value: a later key overrides an earlier one.
	return dsn + " dbname=" + db
}

// runPSQL runs SQL through psql and returns its unaligned output.
func runPSQL(dsn, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "psql", dsn, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("psql %q: %w\n%s", sql, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// psql is runPSQL failing the test on error.
func psql(t testing.TB, dsn, sql string) string {
	t.Helper()
	out, err := runPSQL(dsn, sql)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var exampleDBs []string

// exampleDSN creates an empty database for an example (examples cannot use testing.T) and
// returns its DSN; TestMain drops them when everything passed.
func exampleDSN() string {
	db := fmt.Sprintf("pgq_go_%d_%d_example", os.Getpid(), atomic.AddInt64(&dbSeq, 1))
	if _, err := runPSQL(serverDSN, "create database "+db); err != nil {
		panic(err)
	}
	exampleDBs = append(exampleDBs, db)
	return withDB(serverDSN, db)
}

var dbSeq int64

var nonIdent = regexp.MustCompile(`[^a-z0-9]+`)

// freshDB creates an empty database for the test and returns its DSN. The database is
// dropped when the test passed, and kept for inspection when it failed.
func freshDB(t testing.TB) string {
	t.Helper()
	name := nonIdent.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 30 {
		name = name[:30]
	}
	db := fmt.Sprintf("pgq_go_%d_%d_%s", os.Getpid(), atomic.AddInt64(&dbSeq, 1), name)
	psql(t, serverDSN, "create database "+db)
	t.Cleanup(func() {
		if !t.Failed() {
			psql(t, serverDSN, "drop database if exists "+db+" with (force)")
		} else {
			t.Logf("kept database %s", db)
		}
	})
	return withDB(serverDSN, db)
}

// openClient opens a client on a fresh database with pgq installed; closed at cleanup.
func openClient(t testing.TB) (*pgq.Client, string) {
	t.Helper()
	dsn := freshDB(t)
	c, err := pgq.Open(dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Install(); err != nil {
		t.Fatalf("Install: %v", err)
	}
	return c, dsn
}

// setupQueue creates queue with consumer registered.
func setupQueue(t testing.TB, c *pgq.Client, queue, consumer string) {
	t.Helper()
	if _, err := c.CreateQueue(queue); err != nil {
		t.Fatalf("CreateQueue(%q): %v", queue, err)
	}
	if _, err := c.RegisterConsumer(queue, consumer); err != nil {
		t.Fatalf("RegisterConsumer(%q, %q): %v", queue, consumer, err)
	}
}

// tick cuts a batch boundary on queue now.
func tick(t testing.TB, c *pgq.Client, queue string) {
	t.Helper()
	if err := c.ForceTick(queue); err != nil {
		t.Fatalf("ForceTick(%q): %v", queue, err)
	}
	if _, err := c.Tick(); err != nil {
		t.Fatalf("Tick: %v", err)
	}
}

// wantStatus fails the test unless err is a *pgq.Error with the given status.
func wantStatus(t testing.TB, err error, want pgq.Status) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", want)
	}
	var pe *pgq.Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *pgq.Error", err, err)
	}
	if !errors.Is(err, want) || pe.Status != want {
		t.Fatalf("got %v (status %d %v), want status %d %v", err, int(pe.Status), pe.Status, int(want), want)
	}
}

// waitUntil polls cond until it holds, failing the test after the deadline.
func waitUntil(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// consumeAll reads batches until NextBatch(0) finds none, finishing each, and returns the
// events in order.
func consumeAll(t testing.TB, co *pgq.Consumer) []pgq.Event {
	t.Helper()
	var all []pgq.Event
	for i := 0; i < 1000; i++ {
		b, err := co.NextBatch(0)
		if err != nil {
			t.Fatalf("NextBatch: %v", err)
		}
		if b == nil {
			return all
		}
		evs, err := b.Events()
		if err != nil {
			t.Fatalf("Events: %v", err)
		}
		all = append(all, evs...)
		if err := b.Finish(); err != nil {
			t.Fatalf("Finish: %v", err)
		}
	}
	t.Fatal("consumeAll: more than 1000 batches")
	return nil
}
