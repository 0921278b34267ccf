//go:build !pgq_pkgconfig && !pgq_release

package cabench

// The same link flags as package pgq (../../link_repo.go).

// #cgo CFLAGS: -I${SRCDIR}/../../../../include
// #cgo LDFLAGS: ${SRCDIR}/../../../../target/debug/libpgq.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
import "C"
