//! The pg-status program built as a binary of this package, so integration tests find it through cargo
//! (`CARGO_BIN_EXE_pg-status-under-test`) without building another package's binary by hand.

fn main() {
    pg_status::main()
}
