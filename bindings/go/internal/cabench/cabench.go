// Package cabench consumes a queue through libpgq's C ABI from C alone, as the baseline the
// Go binding's consume benchmark is compared with (BenchmarkConsumeCABI). Not an API.
package cabench

/*
#include <stdlib.h>
#include <pgq.h>

typedef struct cabench { pgq_client *client; pgq_consumer *consumer; } cabench;

static pgq_status cabench_open(const char *dsn, size_t dsn_len, const char *q, size_t q_len,
                               const char *name, size_t name_len, uint32_t fetch,
                               cabench *out, pgq_error **err) {
	pgq_status st = pgq_client_connect(dsn, dsn_len, NULL, &out->client, err);
	if (st != PGQ_STATUS_OK) return st;
	st = pgq_consumer_new(out->client, q, q_len, name, name_len, &out->consumer, err);
	if (st == PGQ_STATUS_OK) st = pgq_consumer_set_fetch_size(out->consumer, fetch, err);
	if (st != PGQ_STATUS_OK) {
		pgq_consumer_free(out->consumer);
		pgq_client_free(out->client);
		out->consumer = NULL;
		out->client = NULL;
	}
	return st;
}

static void cabench_close(cabench *b) {
	pgq_consumer_free(b->consumer);
	pgq_client_free(b->client);
}

// Consumes batches until `want` events were read (reading every field of each event) and
// their batches finished. *got: events read; *sum: a checksum so no read is optimised away.
static pgq_status cabench_consume(cabench *b, int64_t want, int64_t *got, uint64_t *sum,
                                  pgq_error **err) {
	*got = 0;
	*sum = 0;
	while (*got < want) {
		pgq_batch *batch = NULL;
		pgq_status st = pgq_consumer_next_batch(b->consumer, 1000, &batch, err);
		if (st != PGQ_STATUS_OK) return st;
		if (batch == NULL) return PGQ_STATUS_TIMEOUT;
		for (;;) {
			const pgq_event *ev = NULL;
			st = pgq_batch_next_event(batch, &ev, err);
			if (st != PGQ_STATUS_OK) {
				pgq_batch_free(batch);
				return st;
			}
			if (ev == NULL) break;
			*sum += (uint64_t)pgq_event_id(ev) + (uint64_t)pgq_event_time_us(ev) +
			        (uint64_t)pgq_event_txid(ev) + (uint64_t)pgq_event_retry(ev) +
			        pgq_event_type(ev).len + pgq_event_data(ev).len + pgq_event_extra1(ev).len +
			        pgq_event_extra2(ev).len + pgq_event_extra3(ev).len + pgq_event_extra4(ev).len;
			(*got)++;
		}
		st = pgq_batch_finish(batch, err);
		if (st != PGQ_STATUS_OK) return st;
	}
	return PGQ_STATUS_OK;
}
*/
import "C"

import (
	"errors"
	"unsafe"
)

// Consumer is a C-side pull consumer.
type Consumer struct{ b C.cabench }

func errorOf(st C.pgq_status, e *C.pgq_error) error {
	msg := "status " + C.GoString(C.pgq_status_name(C.uint32_t(st)))
	if e != nil {
		msg += ": " + C.GoString(C.pgq_error_message(e))
		C.pgq_error_free(e)
	}
	return errors.New("cabench: " + msg)
}

// Open connects and makes a consumer with the given fetch size.
func Open(dsn, queue, name string, fetch uint32) (*Consumer, error) {
	cd, cq, cn := C.CString(dsn), C.CString(queue), C.CString(name)
	defer C.free(unsafe.Pointer(cd))
	defer C.free(unsafe.Pointer(cq))
	defer C.free(unsafe.Pointer(cn))
	c := &Consumer{}
	var e *C.pgq_error
	st := C.cabench_open(cd, C.size_t(len(dsn)), cq, C.size_t(len(queue)), cn, C.size_t(len(name)), C.uint32_t(fetch), &c.b, &e)
	if st != C.PGQ_STATUS_OK {
		return nil, errorOf(st, e)
	}
	return c, nil
}

// Consume reads want events in C and finishes their batches; it returns the events read.
func (c *Consumer) Consume(want int64) (int64, error) {
	var got C.int64_t
	var sum C.uint64_t
	var e *C.pgq_error
	st := C.cabench_consume(&c.b, C.int64_t(want), &got, &sum, &e)
	if st != C.PGQ_STATUS_OK {
		return int64(got), errorOf(st, e)
	}
	return int64(got), nil
}

// Close frees the consumer and its client.
func (c *Consumer) Close() { C.cabench_close(&c.b) }
