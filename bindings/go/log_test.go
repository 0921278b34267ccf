package pgq_test

import (
	"strings"
	"sync"
	"testing"

	pgq "github.com/libpgq/libpgq/bindings/go"
)

func TestSetLogger(t *testing.T) {
	type record struct {
		level       pgq.LogLevel
		target, msg string
	}
	var mu sync.Mutex
	var records []record
	err := pgq.SetLogger(pgq.LogInfo, func(level pgq.LogLevel, target, msg string) {
		mu.Lock()
		defer mu.Unlock()
		records = append(records, record{level, target, msg})
	})
	if err != nil {
		t.Fatalf("SetLogger: %v", err)
	}
	defer pgq.SetLogger(pgq.LogOff, nil)

	openClient(t) // installs the schema, which logs what it did
	mu.Lock()
	found := false
	for _, r := range records {
		if r.level > pgq.LogInfo {
			t.Errorf("record above the maximum level: %+v", r)
		}
		if r.level == pgq.LogInfo && strings.HasPrefix(r.target, "pgq") && strings.Contains(r.msg, "schema") {
			found = true
		}
	}
	mu.Unlock()
	if !found {
		t.Fatalf("no INFO record about the schema install among %+v", records)
	}

	// A panicking logger is contained; replacing and turning off work.
	if err := pgq.SetLogger(pgq.LogTrace, func(pgq.LogLevel, string, string) { panic("logger") }); err != nil {
		t.Fatalf("SetLogger again: %v", err)
	}
	openClient(t)
	if err := pgq.SetLogger(pgq.LogOff, nil); err != nil {
		t.Fatalf("SetLogger(LogOff): %v", err)
	}
	wantStatus(t, pgq.SetLogger(pgq.LogLevel(99), func(pgq.LogLevel, string, string) {}), pgq.ErrInvalidInput)
	if pgq.LogWarn.String() != "WARN" || pgq.LogLevel(9).String() != "LEVEL(9)" {
		t.Fatalf("LogLevel strings %q %q", pgq.LogWarn, pgq.LogLevel(9))
	}
}
