package pgq

// #include <pgq.h>
import "C"

import (
	"time"
)

// QueueInfo describes a queue (SQL pgq.get_queue_info).
type QueueInfo struct {
	Name             string
	NTables          int           // event tables the queue rotates through
	CurTable         int           // the table inserts currently go to
	RotationPeriod   time.Duration // how often the tables rotate
	SwitchTime       time.Time     // when they last rotated
	ExternalTicker   bool          // ticks come from elsewhere (e.g. a master database)
	TickerPaused     bool          // the ticker skips this queue
	TickerMaxCount   int           // a tick is due after this many events ...
	TickerMaxLag     time.Duration // ... or when the last tick is this old and events wait
	TickerIdlePeriod time.Duration // a tick is due this long after the last one anyway
	TickerLag        time.Duration // age of the last tick; negative: unknown
	EventsPerSec     float64       // recent insert rate; negative: unknown
	NewEvents        int64         // events inserted since the last tick
	LastTickID       int64         // id of the last tick; -1: none
}

// ConsumerInfo describes one consumer of a queue (SQL pgq.get_consumer_info).
type ConsumerInfo struct {
	Queue, Name   string
	Lag           time.Duration // age of the last tick it finished; negative: unknown
	LastSeen      time.Duration // time since it last finished a batch; negative: unknown
	LastTick      int64         // the last tick it finished; -1: none
	CurrentBatch  int64         // the batch it holds open; -1: none
	NextTick      int64         // the tick that ends the open batch; -1: none
	PendingEvents int64         // events waiting for it; -1: unknown
}

// msDuration converts the C ABI's milliseconds (negative: unknown) to a Duration (-1).
func msDuration(ms C.int64_t) time.Duration {
	if ms < 0 {
		return -1
	}
	return time.Duration(ms) * time.Millisecond
}

func queueInfoFrom(p *C.pgq_queue_info) QueueInfo {
	name, _ := goStr(C.pgq_queue_info_name(p))
	return QueueInfo{
		Name:             name,
		NTables:          int(C.pgq_queue_info_ntables(p)),
		CurTable:         int(C.pgq_queue_info_cur_table(p)),
		RotationPeriod:   msDuration(C.pgq_queue_info_rotation_period_ms(p)),
		SwitchTime:       time.UnixMicro(int64(C.pgq_queue_info_switch_time_us(p))),
		ExternalTicker:   bool(C.pgq_queue_info_external_ticker(p)),
		TickerPaused:     bool(C.pgq_queue_info_ticker_paused(p)),
		TickerMaxCount:   int(C.pgq_queue_info_ticker_max_count(p)),
		TickerMaxLag:     msDuration(C.pgq_queue_info_ticker_max_lag_ms(p)),
		TickerIdlePeriod: msDuration(C.pgq_queue_info_ticker_idle_period_ms(p)),
		TickerLag:        msDuration(C.pgq_queue_info_ticker_lag_ms(p)),
		EventsPerSec:     float64(C.pgq_queue_info_ev_per_sec(p)),
		NewEvents:        int64(C.pgq_queue_info_ev_new(p)),
		LastTickID:       int64(C.pgq_queue_info_last_tick_id(p)),
	}
}

// QueueInfo describes one queue; ErrNoSuchQueue if it does not exist.
func (c *Client) QueueInfo(queue string) (QueueInfo, error) {
	q, ql := strArg(queue)
	var info QueueInfo
	err := c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		var out *C.pgq_queue_info
		st := C.pgq_queue_info_get(p, q, ql, &out, e)
		if st == C.PGQ_STATUS_OK {
			info = queueInfoFrom(out)
			C.pgq_queue_info_free(out)
		}
		return st
	})
	return info, err
}

// Queues describes every queue, ordered by name.
func (c *Client) Queues() ([]QueueInfo, error) {
	var infos []QueueInfo
	err := c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		var list *C.pgq_queue_list
		st := C.pgq_queue_list_get(p, &list, e)
		if st == C.PGQ_STATUS_OK {
			n := C.pgq_queue_list_len(list)
			infos = make([]QueueInfo, 0, int(n))
			for i := C.size_t(0); i < n; i++ {
				infos = append(infos, queueInfoFrom(C.pgq_queue_list_at(list, i)))
			}
			C.pgq_queue_list_free(list)
		}
		return st
	})
	return infos, err
}

// Consumers describes the consumers of queue, or of every queue when queue is "".
func (c *Client) Consumers(queue string) ([]ConsumerInfo, error) {
	q, ql := strArg(queue)
	if queue == "" {
		q, ql = nil, 0 // NULL: all queues
	}
	var infos []ConsumerInfo
	err := c.call(func(p *C.pgq_client, e **C.pgq_error) C.pgq_status {
		var list *C.pgq_consumer_list
		st := C.pgq_consumer_list_get(p, q, ql, &list, e)
		if st == C.PGQ_STATUS_OK {
			n := C.pgq_consumer_list_len(list)
			infos = make([]ConsumerInfo, 0, int(n))
			for i := C.size_t(0); i < n; i++ {
				ci := C.pgq_consumer_list_at(list, i)
				qn, _ := goStr(C.pgq_consumer_info_queue(ci))
				cn, _ := goStr(C.pgq_consumer_info_name(ci))
				infos = append(infos, ConsumerInfo{
					Queue:         qn,
					Name:          cn,
					Lag:           msDuration(C.pgq_consumer_info_lag_ms(ci)),
					LastSeen:      msDuration(C.pgq_consumer_info_last_seen_ms(ci)),
					LastTick:      int64(C.pgq_consumer_info_last_tick(ci)),
					CurrentBatch:  int64(C.pgq_consumer_info_current_batch(ci)),
					NextTick:      int64(C.pgq_consumer_info_next_tick(ci)),
					PendingEvents: int64(C.pgq_consumer_info_pending_events(ci)),
				})
			}
			C.pgq_consumer_list_free(list)
		}
		return st
	})
	return infos, err
}
