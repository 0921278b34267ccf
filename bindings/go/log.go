package pgq

/*
#include <stdint.h>
#include <pgq.h>

extern void pgqGoLog(void *user_data, pgq_log_level level, char *target, size_t target_len,
                     char *msg, size_t msg_len);
extern void pgqGoFreeHandle(void *user_data);

static void pgq_go_log(void *ud, pgq_log_level level, const char *target, size_t target_len,
                       const char *msg, size_t msg_len) {
	pgqGoLog(ud, level, (char *)target, target_len, (char *)msg, msg_len);
}

static pgq_status pgq_go_set_logger(uintptr_t handle, pgq_log_level max_level, pgq_error **err) {
	if (handle == 0) return pgq_set_logger(NULL, NULL, NULL, PGQ_LOG_OFF, err);
	return pgq_set_logger(pgq_go_log, (void *)handle, pgqGoFreeHandle, max_level, err);
}
*/
import "C"

import (
	"runtime/cgo"
	"strconv"
	"unsafe"
)

// LogLevel is the severity of a library log record.
type LogLevel uint32

// Log levels, most severe first.
const (
	LogOff   LogLevel = 0
	LogError LogLevel = 1
	LogWarn  LogLevel = 2
	LogInfo  LogLevel = 3
	LogDebug LogLevel = 4
	LogTrace LogLevel = 5
)

func (l LogLevel) String() string {
	switch l {
	case LogOff:
		return "OFF"
	case LogError:
		return "ERROR"
	case LogWarn:
		return "WARN"
	case LogInfo:
		return "INFO"
	case LogDebug:
		return "DEBUG"
	case LogTrace:
		return "TRACE"
	}
	return "LEVEL(" + strconv.Itoa(int(l)) + ")"
}

// LogFunc receives one library log record: its level, its target (the library module, e.g.
// "pgq::consumer") and its message. It is called on whichever thread logs, possibly on
// several at once, so it must be safe for concurrent use, and should be quick. A panic in it
// is swallowed.
type LogFunc func(level LogLevel, target, msg string)

// SetLogger sends the library's log records up to maxLevel to f, for the whole process,
// replacing any earlier logger. SetLogger(LogOff, nil) turns logging off. It fails with
// ErrInvalidState when other code in the process already installed a Rust logger.
//
// For example, to the standard log package:
//
//	pgq.SetLogger(pgq.LogInfo, func(level pgq.LogLevel, target, msg string) {
//		log.Printf("%s %s: %s", level, target, msg)
//	})
func SetLogger(maxLevel LogLevel, f LogFunc) error {
	var cerr *C.pgq_error
	if f == nil || maxLevel == LogOff {
		return check(C.pgq_go_set_logger(0, C.PGQ_LOG_OFF, &cerr), cerr)
	}
	h := cgo.NewHandle(f)
	st := C.pgq_go_set_logger(C.uintptr_t(h), C.pgq_log_level(maxLevel), &cerr)
	if st != C.PGQ_STATUS_OK {
		h.Delete() // on failure the library keeps nothing
		return takeError(st, cerr)
	}
	return nil
}

// goStringN copies (p, n) into a Go string.
func goStringN(p *C.char, n C.size_t) string {
	if p == nil || n == 0 {
		return ""
	}
	return string(unsafe.Slice((*byte)(unsafe.Pointer(p)), int(n)))
}
