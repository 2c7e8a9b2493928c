//! The pg-status binary; everything lives in the library so tests can build the same program.

fn main() {
    pg_status::main()
}
