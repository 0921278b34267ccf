package pgq_test

import (
	"errors"
	"testing"

	pgq "github.com/libpgq/libpgq/bindings/go"
)

func TestTxCommitPublishesEventsWithBusinessData(t *testing.T) {
	c, dsn := openClient(t)
	setupQueue(t, c, "orders", "mailer")
	psql(t, dsn, "create table orders (id int primary key, what text)")

	tx, err := c.Begin()
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	defer tx.Rollback()
	if err := tx.Exec("insert into orders values (1, 'book'); insert into orders values (2, 'pen')"); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	id1, err := tx.Send("orders", pgq.TextEvent("order.created", "1"))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if err := tx.SendMany("orders", []pgq.NewEvent{pgq.TextEvent("order.created", "2")}); err != nil {
		t.Fatalf("SendMany: %v", err)
	}
	// Not committed yet: invisible to others.
	if n := psql(t, dsn, "select count(*) from orders"); n != "0" {
		t.Fatalf("uncommitted rows visible: %s", n)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatalf("Rollback after Commit: %v", err)
	}
	wantStatus(t, tx.Commit(), pgq.ErrInvalidState)
	_, err = tx.Send("orders", pgq.TextEvent("x", "y"))
	wantStatus(t, err, pgq.ErrInvalidState)
	wantStatus(t, tx.Exec("select 1"), pgq.ErrInvalidState)

	if n := psql(t, dsn, "select count(*) from orders"); n != "2" {
		t.Fatalf("committed rows: %s", n)
	}
	tick(t, c, "orders")
	co, err := c.NewConsumer("orders", "mailer")
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	got := consumeAll(t, co)
	if len(got) != 2 || got[0].ID != id1 || *got[1].Data != "2" || got[0].TxID != got[1].TxID {
		t.Fatalf("consumed %+v", got)
	}
}

func TestTxRollbackPublishesNothing(t *testing.T) {
	c, dsn := openClient(t)
	setupQueue(t, c, "q", "c")
	psql(t, dsn, "create table t (x int)")

	tx, err := c.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Exec("insert into t values (1)"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Send("q", pgq.TextEvent("t", "gone")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatalf("second Rollback: %v", err)
	}

	// A failing statement aborts the transaction: nothing of it commits.
	tx2, err := c.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx2.Send("q", pgq.TextEvent("t", "gone too")); err != nil {
		t.Fatal(err)
	}
	err = tx2.Exec("insert into no_such_table values (1)")
	wantStatus(t, err, pgq.ErrDatabase)
	if pe := err.(*pgq.Error); pe.SQLState != "42P01" {
		t.Fatalf("SQLState %q, want 42P01 (undefined_table)", pe.SQLState)
	}
	err = tx2.Commit()
	wantStatus(t, err, pgq.ErrInvalidState)
	if !errors.Is(err, pgq.ErrDatabase) {
		t.Fatalf("Commit error %v does not wrap the failure", err)
	}

	if n := psql(t, dsn, "select count(*) from t"); n != "0" {
		t.Fatalf("rolled back rows visible: %s", n)
	}
	tick(t, c, "q")
	co, err := c.NewConsumer("q", "c")
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	if got := consumeAll(t, co); len(got) != 0 {
		t.Fatalf("rolled back events delivered: %+v", got)
	}
}
