// Package pgq is the Go binding of libpgq: SkyTools PGQ transactional event queues inside
// PostgreSQL, through libpgq's C ABI (cgo).
//
// An event is a row inserted in a transaction, so it is published exactly when that
// transaction commits. A ticker cuts the stream of committed events into batches; every
// registered consumer receives every event once per batch, and a batch that is not finished
// is delivered again.
//
//	client, err := pgq.Open("host=localhost user=app dbname=app")
//	...
//	defer client.Close()
//	client.Install()                          // idempotent
//	client.CreateQueue("orders")
//	client.RegisterConsumer("orders", "mailer")
//	client.Send("orders", pgq.TextEvent("order.created", `{"id": 42}`))
//
// Sending inside a transaction of your own, together with your business data: Client.Begin.
// Consuming: Client.NewConsumer, Consumer.NextBatch, Batch.Next, Batch.Finish.
//
// # Lifetimes and concurrency
//
// Client, Consumer, Batch and Tx hold C resources. Each has an explicit, idempotent Close
// (Tx: Rollback; Batch: Close or Finish); a finalizer releases forgotten ones only as a
// safety net. Calls after Close fail with ErrInvalidState. A Client is safe for concurrent
// use; Consumer, Batch and Tx serialise their calls but are meant for one goroutine at a
// time.
//
// # Errors
//
// Every failure is an *Error with a Status (matched with errors.Is against the Err*
// constants), PostgreSQL's SQLSTATE when the server reported it, and a message.
//
// # Building
//
// The package links against the repository's own build of libpgq: run `cargo build` at the
// repository root first (it produces target/debug/libpgq.so and include/pgq.h); test and
// program binaries find the library through an rpath. To link against an installed libpgq
// instead, build with `-tags pgq_pkgconfig` (pkg-config module "pgq"). Only Go's standard
// library is used; Go 1.19 or newer.
package pgq
