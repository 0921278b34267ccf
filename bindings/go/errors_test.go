package pgq_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	pgq "github.com/libpgq/libpgq/bindings/go"
)

func TestErrorMatching(t *testing.T) {
	c, _ := openClient(t)
	_, err := c.Send("no_such_queue", pgq.TextEvent("t", "d"))

	// errors.Is with a Status sentinel, and with an *Error of the same status.
	if !errors.Is(err, pgq.ErrNoSuchQueue) {
		t.Fatalf("errors.Is(%v, ErrNoSuchQueue) = false", err)
	}
	if !errors.Is(err, &pgq.Error{Status: pgq.ErrNoSuchQueue}) {
		t.Fatalf("errors.Is(%v, &Error{ErrNoSuchQueue}) = false", err)
	}
	if errors.Is(err, pgq.ErrNotSubscribed) {
		t.Fatalf("errors.Is(%v, ErrNotSubscribed) = true", err)
	}
	// Through wrapping too.
	wrapped := fmt.Errorf("sending order: %w", err)
	var pe *pgq.Error
	if !errors.As(wrapped, &pe) || pe.Status != pgq.ErrNoSuchQueue || !errors.Is(wrapped, pgq.ErrNoSuchQueue) {
		t.Fatalf("errors.As through %%w: %v", wrapped)
	}
	if pe.SQLState != "P0001" {
		t.Fatalf("SQLState = %q, want P0001 (PGQ's raise exception)", pe.SQLState)
	}
	if !strings.Contains(strings.ToLower(pe.Message), "no such queue") || !strings.Contains(err.Error(), "SQLSTATE P0001") {
		t.Fatalf("message %q / Error() %q", pe.Message, err.Error())
	}
	if pgq.ErrNoSuchQueue.String() != "no such queue" || pgq.ErrNoSuchQueue.Error() != "no such queue" {
		t.Fatalf("Status strings: %q %q", pgq.ErrNoSuchQueue.String(), pgq.ErrNoSuchQueue.Error())
	}
}

func TestOpenFailures(t *testing.T) {
	_, err := pgq.Open("host=127.0.0.1 port=1 user=nobody dbname=nothing", pgq.WithConnectTimeout(2*time.Second))
	wantStatus(t, err, pgq.ErrConnect)
	_, err = pgq.Open("this is not a dsn")
	if err == nil {
		t.Fatal("Open of a malformed DSN succeeded")
	}
	_, err = pgq.Open("host=127.0.0.1 dbname=\xff\xfe")
	wantStatus(t, err, pgq.ErrInvalidUTF8)
	_, err = pgq.Open(serverDSN, pgq.WithPoolSize(0))
	wantStatus(t, err, pgq.ErrInvalidInput)
	_, err = pgq.Open(serverDSN, pgq.WithConnectTimeout(-time.Second))
	wantStatus(t, err, pgq.ErrOutOfRange)
}

func TestBadInputLosesNothing(t *testing.T) {
	c, _ := openClient(t)
	setupQueue(t, c, "q", "c")

	_, err := c.CreateQueue("")
	wantStatus(t, err, pgq.ErrInvalidInput)
	_, err = c.CreateQueue("bad\xffname")
	wantStatus(t, err, pgq.ErrInvalidUTF8)
	_, err = c.RegisterConsumer("q", "")
	wantStatus(t, err, pgq.ErrInvalidInput)
	_, err = c.RegisterConsumer("nope", "c")
	wantStatus(t, err, pgq.ErrNoSuchQueue)
	_, err = c.Send("", pgq.TextEvent("t", "d"))
	wantStatus(t, err, pgq.ErrInvalidInput)
	_, err = c.Send("q", pgq.TextEvent("t", "not utf-8: \xc3\x28"))
	wantStatus(t, err, pgq.ErrInvalidUTF8)
	_, err = c.Send("q", pgq.NewEvent{Extra4: pgq.String("\x80")})
	wantStatus(t, err, pgq.ErrInvalidUTF8)
	_, err = c.Send("q", pgq.TextEvent("t", "nul \x00 byte"))
	wantStatus(t, err, pgq.ErrInvalidInput)
	// One bad event in a SendMany rejects all of them.
	err = c.SendMany("q", []pgq.NewEvent{pgq.TextEvent("t", "good"), pgq.TextEvent("t", "\xff")})
	wantStatus(t, err, pgq.ErrInvalidUTF8)
	_, err = c.NewConsumer("q", "")
	wantStatus(t, err, pgq.ErrInvalidInput)
	co, err := c.NewConsumer("nope", "c")
	if err == nil {
		// PGQ checks the subscription first: an unknown queue has no subscribers.
		_, err = co.NextBatch(0)
		co.Close()
	}
	wantStatus(t, err, pgq.ErrNotSubscribed)
	_, err = c.NewConsumer("q", "c", pgq.WithFetchSize(0))
	wantStatus(t, err, pgq.ErrInvalidInput)

	// Nothing of the above reached the queue, and it still works.
	if _, err := c.Send("q", pgq.TextEvent("t", "after")); err != nil {
		t.Fatal(err)
	}
	tick(t, c, "q")
	co, err = c.NewConsumer("q", "c")
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	got := consumeAll(t, co)
	if len(got) != 1 || *got[0].Data != "after" {
		t.Fatalf("queue holds %+v, want only the good event", got)
	}
}

func TestUseAfterClose(t *testing.T) {
	c, _ := openClient(t)
	setupQueue(t, c, "q", "c")
	co, err := c.NewConsumer("q", "c")
	if err != nil {
		t.Fatal(err)
	}
	tx, err := c.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err = c.Send("q", pgq.TextEvent("t", "d"))
	wantStatus(t, err, pgq.ErrInvalidState)
	_, err = c.Queues()
	wantStatus(t, err, pgq.ErrInvalidState)
	_, err = c.Begin()
	wantStatus(t, err, pgq.ErrInvalidState)
	_, err = c.NewConsumer("q", "c")
	wantStatus(t, err, pgq.ErrInvalidState)

	// What was made from the client outlives it.
	if _, err := tx.Send("q", pgq.TextEvent("t", "from tx")); err != nil {
		t.Fatalf("Tx.Send after Client.Close: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("Tx.Commit after Client.Close: %v", err)
	}
	if _, err := co.NextBatch(0); err != nil {
		t.Fatalf("NextBatch after Client.Close: %v", err)
	}
	if err := co.Close(); err != nil {
		t.Fatal(err)
	}
	if err := co.Close(); err != nil {
		t.Fatalf("second Consumer.Close: %v", err)
	}
	_, err = co.NextBatch(0)
	wantStatus(t, err, pgq.ErrInvalidState)
	_, err = co.Register()
	wantStatus(t, err, pgq.ErrInvalidState)
}

func TestClientConcurrentUse(t *testing.T) {
	c, _ := openClient(t)
	setupQueue(t, c, "q", "c")
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := c.Send("q", pgq.TextEvent("w", fmt.Sprintf("%d/%d", w, i))); err != nil {
					errs <- err
					return
				}
				if i%5 == 0 {
					if _, err := c.QueueInfo("q"); err != nil {
						errs <- err
						return
					}
					tx, err := c.Begin()
					if err != nil {
						errs <- err
						return
					}
					if _, err := tx.Send("q", pgq.TextEvent("tx", fmt.Sprintf("%d/%d", w, i))); err != nil {
						errs <- err
						tx.Rollback()
						return
					}
					if err := tx.Commit(); err != nil {
						errs <- err
						return
					}
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent call failed: %v", err)
	}
	tick(t, c, "q")
	co, err := c.NewConsumer("q", "c")
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	got := consumeAll(t, co)
	want := workers * (each + each/5)
	seen := map[string]bool{}
	for _, ev := range got {
		k := *ev.Type + " " + *ev.Data
		if seen[k] {
			t.Fatalf("event %s delivered twice", k)
		}
		seen[k] = true
	}
	if len(got) != want || len(seen) != want {
		t.Fatalf("consumed %d events (%d distinct), want %d", len(got), len(seen), want)
	}
}

func TestCloseWhileInUse(t *testing.T) {
	// Close racing with calls on other goroutines: every call either works or reports
	// ErrInvalidState; nothing crashes (run with -race).
	c, _ := openClient(t)
	setupQueue(t, c, "q", "c")
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				_, err := c.Send("q", pgq.TextEvent("t", "d"))
				if err != nil {
					if !errors.Is(err, pgq.ErrInvalidState) {
						t.Errorf("Send: %v", err)
					}
					return
				}
			}
		}()
	}
	waitUntil(t, "some events sent", 10*time.Second, func() bool {
		info, err := c.QueueInfo("q")
		if err != nil {
			t.Fatal(err)
		}
		return info.NewEvents > 0
	})
	c.Close()
	wg.Wait()
}
