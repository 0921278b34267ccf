module github.com/libpgq/libpgq/benches/go_consume

go 1.19

require github.com/libpgq/libpgq/bindings/go v0.0.0

replace github.com/libpgq/libpgq/bindings/go => ../../bindings/go
