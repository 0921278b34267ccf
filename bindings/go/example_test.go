package pgq_test

import (
	"errors"
	"fmt"
	"log"
	"time"

	pgq "github.com/libpgq/libpgq/bindings/go"
)

// The whole cycle: install, create a queue, register a consumer, send, tick, consume.
func Example() {
	dsn := exampleDSN() // a database of its own, e.g. "host=localhost user=app dbname=app"

	client, err := pgq.Open(dsn)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	if err := client.Install(); err != nil { // idempotent
		log.Fatal(err)
	}
	if _, err := client.CreateQueue("orders"); err != nil {
		log.Fatal(err)
	}
	if _, err := client.RegisterConsumer("orders", "mailer"); err != nil {
		log.Fatal(err)
	}

	// Produce: each Send commits on its own.
	for _, id := range []int{41, 42} {
		if _, err := client.Send("orders", pgq.TextEvent("order.created", fmt.Sprintf(`{"id": %d}`, id))); err != nil {
			log.Fatal(err)
		}
	}

	// Tick: cut a batch boundary (a Ticker or pgqd normally does this).
	if err := client.ForceTick("orders"); err != nil {
		log.Fatal(err)
	}
	if _, err := client.Tick(); err != nil {
		log.Fatal(err)
	}

	// Consume: a batch holds exactly the events committed between two ticks.
	consumer, err := client.NewConsumer("orders", "mailer")
	if err != nil {
		log.Fatal(err)
	}
	defer consumer.Close()
	batch, err := consumer.NextBatch(5 * time.Second)
	if err != nil {
		log.Fatal(err)
	}
	if batch == nil {
		log.Fatal("no batch")
	}
	defer batch.Close() // unfinished batches are delivered again
	for {
		ev, err := batch.Next()
		if err != nil {
			log.Fatal(err)
		}
		if ev == nil {
			break
		}
		fmt.Println(*ev.Type, *ev.Data)
	}
	if err := batch.Finish(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// order.created {"id": 41}
	// order.created {"id": 42}
}

// Events and business data commit together, or not at all.
func ExampleClient_Begin() {
	client, err := pgq.Open(exampleDSN())
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	if err := client.Install(); err != nil {
		log.Fatal(err)
	}
	if _, err := client.CreateQueue("orders"); err != nil {
		log.Fatal(err)
	}
	if _, err := client.RegisterConsumer("orders", "billing"); err != nil {
		log.Fatal(err)
	}

	placeOrder := func(id int, fail bool) error {
		tx, err := client.Begin()
		if err != nil {
			return err
		}
		defer tx.Rollback() // no-op after Commit
		if err := tx.Exec(fmt.Sprintf("create table if not exists orders (id int primary key); insert into orders values (%d)", id)); err != nil {
			return err
		}
		if _, err := tx.Send("orders", pgq.TextEvent("order.created", fmt.Sprint(id))); err != nil {
			return err
		}
		if fail {
			return errors.New("payment declined") // rolled back: no row, no event
		}
		return tx.Commit()
	}
	fmt.Println(placeOrder(1, false))
	fmt.Println(placeOrder(2, true))

	// Only the committed order's event reaches the consumer.
	if err := client.ForceTick("orders"); err != nil {
		log.Fatal(err)
	}
	if _, err := client.Tick(); err != nil {
		log.Fatal(err)
	}
	consumer, err := client.NewConsumer("orders", "billing")
	if err != nil {
		log.Fatal(err)
	}
	defer consumer.Close()
	batch, err := consumer.NextBatch(time.Second)
	if err != nil || batch == nil {
		log.Fatal("no batch: ", err)
	}
	events, err := batch.Events()
	if err != nil {
		log.Fatal(err)
	}
	for _, ev := range events {
		fmt.Println("event:", *ev.Type, *ev.Data)
	}
	if err := batch.Finish(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// <nil>
	// payment declined
	// event: order.created 1
}

// Errors carry a Status to match with errors.Is, and PostgreSQL's SQLSTATE.
func ExampleError() {
	client, err := pgq.Open(exampleDSN())
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	if err := client.Install(); err != nil {
		log.Fatal(err)
	}

	_, err = client.Send("no_such_queue", pgq.TextEvent("t", "d"))
	fmt.Println(errors.Is(err, pgq.ErrNoSuchQueue))
	var pe *pgq.Error
	if errors.As(err, &pe) {
		fmt.Println(pe.Status, pe.SQLState)
	}
	// Output:
	// true
	// no such queue P0001
}

// Retry puts one event back for later; the rest of the batch is done.
func ExampleBatch_Retry() {
	client, err := pgq.Open(exampleDSN())
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	for _, step := range []func() error{
		client.Install,
		func() error { _, err := client.CreateQueue("jobs"); return err },
		func() error { _, err := client.RegisterConsumer("jobs", "worker"); return err },
		func() error {
			return client.SendMany("jobs", []pgq.NewEvent{pgq.TextEvent("job", "ok"), pgq.TextEvent("job", "flaky")})
		},
		func() error { return client.ForceTick("jobs") },
		func() error { _, err := client.Tick(); return err },
	} {
		if err := step(); err != nil {
			log.Fatal(err)
		}
	}

	consumer, err := client.NewConsumer("jobs", "worker")
	if err != nil {
		log.Fatal(err)
	}
	defer consumer.Close()
	batch, err := consumer.NextBatch(time.Second)
	if err != nil || batch == nil {
		log.Fatal("no batch: ", err)
	}
	events, err := batch.Events()
	if err != nil {
		log.Fatal(err)
	}
	for _, ev := range events {
		if *ev.Data == "flaky" {
			if err := batch.Retry(ev.ID, 0); err != nil {
				log.Fatal(err)
			}
			fmt.Println("retry", *ev.Data)
		} else {
			fmt.Println("done", *ev.Data)
		}
	}
	if err := batch.Finish(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// done ok
	// retry flaky
}
