package pgq_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	pgq "github.com/libpgq/libpgq/bindings/go"
)

func TestVersion(t *testing.T) {
	v := pgq.Version()
	if parts := strings.Split(v, "."); len(parts) != 3 {
		t.Fatalf("Version() = %q, want MAJOR.MINOR.PATCH", v)
	}
}

func TestAdminLifecycle(t *testing.T) {
	c, _ := openClient(t)
	if err := c.Install(); err != nil {
		t.Fatalf("second Install: %v", err)
	}

	created, err := c.CreateQueue("orders")
	if err != nil || !created {
		t.Fatalf("CreateQueue = %v, %v; want true, nil", created, err)
	}
	if created, err = c.CreateQueue("orders"); err != nil || created {
		t.Fatalf("CreateQueue again = %v, %v; want false, nil", created, err)
	}
	if _, err := c.CreateQueue("audit"); err != nil {
		t.Fatal(err)
	}

	info, err := c.QueueInfo("orders")
	if err != nil {
		t.Fatalf("QueueInfo: %v", err)
	}
	if info.Name != "orders" || info.NTables < 1 || info.CurTable < 0 || info.CurTable >= info.NTables {
		t.Fatalf("QueueInfo = %+v", info)
	}
	if info.TickerMaxCount != 500 || info.TickerMaxLag != 3*time.Second || info.TickerIdlePeriod != time.Minute ||
		info.RotationPeriod != 2*time.Hour || info.TickerPaused || info.ExternalTicker {
		t.Fatalf("QueueInfo defaults = %+v", info)
	}
	if time.Since(info.SwitchTime) > time.Hour || info.LastTickID < 1 {
		t.Fatalf("QueueInfo switch time / last tick = %+v", info)
	}

	if err := c.SetQueueConfig("orders", "ticker_max_count", "7"); err != nil {
		t.Fatalf("SetQueueConfig: %v", err)
	}
	if err := c.SetQueueConfig("orders", "ticker_paused", "true"); err != nil {
		t.Fatalf("SetQueueConfig: %v", err)
	}
	if info, err = c.QueueInfo("orders"); err != nil || info.TickerMaxCount != 7 || !info.TickerPaused {
		t.Fatalf("after SetQueueConfig: %+v, %v", info, err)
	}
	wantStatus(t, c.SetQueueConfig("orders", "no_such_param", "1"), pgq.ErrInvalidInput)
	wantStatus(t, c.SetQueueConfig("nope", "ticker_max_count", "1"), pgq.ErrNoSuchQueue)

	queues, err := c.Queues()
	if err != nil || len(queues) != 2 || queues[0].Name != "audit" || queues[1].Name != "orders" {
		t.Fatalf("Queues = %+v, %v", queues, err)
	}

	if created, err := c.RegisterConsumer("orders", "mailer"); err != nil || !created {
		t.Fatalf("RegisterConsumer = %v, %v", created, err)
	}
	if created, err := c.RegisterConsumer("orders", "mailer"); err != nil || created {
		t.Fatalf("RegisterConsumer again = %v, %v", created, err)
	}
	co, err := c.NewConsumer("audit", "archiver")
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	if created, err := co.Register(); err != nil || !created {
		t.Fatalf("Consumer.Register = %v, %v", created, err)
	}

	all, err := c.Consumers("")
	if err != nil || len(all) != 2 {
		t.Fatalf("Consumers(\"\") = %+v, %v", all, err)
	}
	cons, err := c.Consumers("orders")
	if err != nil || len(cons) != 1 {
		t.Fatalf("Consumers(orders) = %+v, %v", cons, err)
	}
	ci := cons[0]
	if ci.Queue != "orders" || ci.Name != "mailer" || ci.LastTick < 1 || ci.CurrentBatch != -1 || ci.NextTick != -1 || ci.Lag < 0 {
		t.Fatalf("ConsumerInfo = %+v", ci)
	}
	_, err = c.Consumers("nope")
	if err != nil && !errors.Is(err, pgq.ErrNoSuchQueue) {
		t.Fatalf("Consumers(nope): %v", err)
	}

	wantStatus(t, c.DropQueue("orders", false), pgq.ErrConsumersAttached)
	if err := c.UnregisterConsumer("orders", "mailer"); err != nil {
		t.Fatalf("UnregisterConsumer: %v", err)
	}
	if err := c.UnregisterConsumer("orders", "mailer"); err != nil {
		t.Fatalf("UnregisterConsumer again (idempotent): %v", err)
	}
	if err := c.DropQueue("orders", false); err != nil {
		t.Fatalf("DropQueue: %v", err)
	}
	if err := c.DropQueue("audit", true); err != nil {
		t.Fatalf("DropQueue force: %v", err)
	}
	_, err = c.QueueInfo("orders")
	wantStatus(t, err, pgq.ErrNoSuchQueue)
	wantStatus(t, c.DropQueue("orders", false), pgq.ErrNoSuchQueue)
	if queues, err := c.Queues(); err != nil || len(queues) != 0 {
		t.Fatalf("Queues after dropping all = %+v, %v", queues, err)
	}
}

func TestTickAndRegisterAt(t *testing.T) {
	c, _ := openClient(t)
	setupQueue(t, c, "q", "c")
	if _, err := c.Send("q", pgq.TextEvent("a", "1")); err != nil {
		t.Fatal(err)
	}
	if err := c.ForceTick("q"); err != nil {
		t.Fatal(err)
	}
	id, err := c.TickQueue("q")
	if err != nil || id < 1 {
		t.Fatalf("TickQueue = %d, %v", id, err)
	}
	info, err := c.QueueInfo("q")
	if err != nil || info.LastTickID != id {
		t.Fatalf("QueueInfo.LastTickID = %d (%v), want %d", info.LastTickID, err, id)
	}
	// Nothing new and not idle long: no tick needed.
	if again, err := c.TickQueue("q"); err != nil || again != -1 {
		t.Fatalf("TickQueue without events = %d, %v; want -1", again, err)
	}
	if _, err := c.Tick(); err != nil {
		t.Fatalf("Tick: %v", err)
	}
	if _, err := c.Maintenance(); err != nil {
		t.Fatalf("Maintenance: %v", err)
	}

	// A consumer positioned at the new tick does not see the event before it.
	if created, err := c.RegisterConsumerAt("q", "late", id); err != nil || !created {
		t.Fatalf("RegisterConsumerAt = %v, %v", created, err)
	}
	_, err = c.RegisterConsumerAt("q", "later", 1_000_000)
	wantStatus(t, err, pgq.ErrNoSuchTick)
	if _, err := c.Send("q", pgq.TextEvent("b", "2")); err != nil {
		t.Fatal(err)
	}
	tick(t, c, "q")
	late, err := c.NewConsumer("q", "late")
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	got := consumeAll(t, late)
	if len(got) != 1 || *got[0].Type != "b" {
		t.Fatalf("late consumer got %+v, want only event b", got)
	}
	if err := late.Unregister(); err != nil {
		t.Fatalf("Unregister: %v", err)
	}
	_, err = late.NextBatch(0)
	wantStatus(t, err, pgq.ErrNotSubscribed)
}
