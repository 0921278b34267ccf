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
// Sending inside a transaction together with your business data: Client.Begin. (Within a
// database/sql or pgx transaction of your own, call PGQ's SQL function in it instead:
// SELECT pgq.insert_event('orders', 'order.created', '{"id": 42}').)
// Consuming by pulling: Client.NewConsumer, Consumer.NextBatch, Batch.Next, Batch.Finish.
// Consuming with a handler called once per batch on the library's worker threads:
// Client.StartWorker. Cutting batches (what pgqd does): Client.StartTicker, or Client.Tick.
//
// # Lifetimes and concurrency
//
// Client, Consumer, Batch and Tx hold C resources. Each has an explicit, idempotent Close
// (Tx: Rollback; Batch: Close or Finish); a finalizer releases forgotten ones only as a
// safety net. Calls after Close fail with ErrInvalidState. Worker and Ticker run threads and,
// like goroutines, run until stopped (Close, Stop), referenced or not. A Client, Worker and
// Ticker are safe for concurrent use; Consumer, Batch and Tx serialise their calls but are
// meant for one goroutine at a time.
//
// # Errors
//
// Every failure is an *Error with a Status (matched with errors.Is against the Err*
// constants), PostgreSQL's SQLSTATE when the server reported it, and a message.
//
// # Building
//
// By default the package links the repository's own debug build of libpgq statically: run
// `cargo build` at the repository root first (it produces target/debug/libpgq.a; the
// header is include/pgq.h), then `go test` or `go build` here; the binaries need nothing
// at run time. `-tags pgq_release` links target/release/libpgq.a instead (`cargo build
// --release`; for benchmarks). To link an installed shared libpgq, install it with
// `scripts/install-lib.sh PREFIX` and build with `-tags pgq_pkgconfig` and
// PKG_CONFIG_PATH=PREFIX/lib/pkgconfig; the program then loads libpgq.so.0 from the
// loader's path (LD_LIBRARY_PATH, or ldconfig for a system prefix). Only Go's standard
// library is used; Go 1.19 or newer.
package pgq
