module github.com/libpgq/libpgq/bindings/go

go 1.19
